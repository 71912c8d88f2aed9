//! The hex examples of protocol.md, byte for byte. If one of these fails, either the codec or
//! the specification changed: update both together.

use bytes::{Bytes, BytesMut};
use ringkv_proto::frame::decode_frame;
use ringkv_proto::{
    FrameWriter, Opcode, ProtoError, Protocol, ReplySink, Request, RespLimits, RespRequest, Status,
    Value, HEADER_LEN,
};
use smallvec::smallvec;

/// Parses hex with any whitespace and `|` separators in it (as laid out in protocol.md).
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'|')
        .collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn request(req: &Request<'_>, id: u64) -> Vec<u8> {
    let mut out = BytesMut::new();
    req.encode(id, &mut out);
    out.to_vec()
}

fn reply(id: u64, opcode: u8, f: impl FnOnce(&mut FrameWriter<'_>)) -> Vec<u8> {
    let mut out = BytesMut::new();
    let mut w = FrameWriter::new(&mut out, id, opcode);
    f(&mut w);
    w.finish();
    out.to_vec()
}

/// Decodes a whole reply frame: (request id, opcode, flags, status, value).
fn decode_reply(frame: &[u8]) -> (u64, u8, u8, u8, Value) {
    let (h, payload, used) = decode_frame(frame, 1 << 20).unwrap().unwrap();
    assert_eq!(used, frame.len());
    let v = Value::decode(&Bytes::copy_from_slice(payload)).unwrap();
    (h.request_id, h.opcode, h.flags, h.status, v)
}

#[test]
fn hello_request() {
    let bytes = request(
        &Request::Hello {
            min_version: 1,
            max_version: 1,
            password: b"pw",
            client_name: b"kvsh",
        },
        1,
    );
    let expected = hex("0000001e 0000000000000001 01 00 00 00 \
         0001 0001 | 00000002 7077 | 00000004 6b767368");
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), 34);
    assert_eq!(Protocol::detect(bytes[0]), Protocol::Binary);
    let (h, payload, _) = decode_frame(&bytes, 1 << 20).unwrap().unwrap();
    assert_eq!(
        Request::parse(h.opcode, payload, 16).unwrap(),
        Request::Hello {
            min_version: 1,
            max_version: 1,
            password: b"pw",
            client_name: b"kvsh",
        }
    );
}

#[test]
fn hello_reply() {
    let bytes = reply(1, Opcode::Hello as u8, |w| {
        w.array(4);
        w.int(1);
        w.bulk(b"ringkv");
        w.bulk(b"0.1.0");
        w.int(3);
    });
    let expected = hex("00000038 0000000000000001 01 01 00 00 \
         05 00000004 \
         03 0000000000000001 \
         04 00000006 72696e676b76 \
         04 00000005 302e312e30 \
         03 0000000000000003");
    assert_eq!(bytes, expected);
    let (id, op, flags, status, v) = decode_reply(&bytes);
    assert_eq!((id, op, flags, status), (1, 0x01, 0x01, Status::Ok as u8));
    assert_eq!(
        v,
        Value::Array(vec![
            Value::Int(1),
            Value::Bulk(Bytes::from_static(b"ringkv")),
            Value::Bulk(Bytes::from_static(b"0.1.0")),
            Value::Int(3),
        ])
    );
}

#[test]
fn get_request_and_replies() {
    let bytes = request(&Request::Get { key: b"a" }, 7);
    assert_eq!(
        bytes,
        hex("00000011 0000000000000007 10 00 00 00 | 00000001 61")
    );

    // Hit: value "1", with an (illustrative) 4-byte causal context.
    let hit = reply(7, Opcode::Get as u8, |w| {
        w.versioned(&[0xa1, 0xb2, 0xc3, 0xd4], &[b"1"])
    });
    assert_eq!(
        hit,
        hex("0000001e 0000000000000007 10 01 00 00 | \
             06 00000004 a1b2c3d4 00000001 00000001 31")
    );
    let (_, _, _, status, v) = decode_reply(&hit);
    assert_eq!(status, 0);
    assert_eq!(
        v,
        Value::Versioned {
            context: Bytes::from_static(&[0xa1, 0xb2, 0xc3, 0xd4]),
            values: vec![Bytes::from_static(b"1")],
        }
    );

    // Miss.
    let miss = reply(7, Opcode::Get as u8, |w| w.nil());
    assert_eq!(miss, hex("0000000d 0000000000000007 10 01 00 00 | 00"));
}

#[test]
fn command_set_and_reply() {
    let bytes = request(
        &Request::Command {
            args: smallvec![&b"SET"[..], &b"k"[..], &b"v"[..]],
        },
        8,
    );
    assert_eq!(
        bytes,
        hex("00000021 0000000000000008 20 00 00 00 | \
             00000003 | 00000003 534554 | 00000001 6b | 00000001 76")
    );
    let ok = reply(8, Opcode::Command as u8, |w| w.simple("OK"));
    assert_eq!(
        ok,
        hex("00000013 0000000000000008 20 01 00 00 | 01 00000002 4f4b")
    );
}

#[test]
fn error_replies() {
    // A command error: status 1, the payload is an Error value.
    let bytes = reply(9, Opcode::Command as u8, |w| {
        w.error("ERR value is not an integer or out of range")
    });
    assert_eq!(
        bytes,
        hex("0000003c 0000000000000009 20 01 01 00 | 02 0000002b \
             455252 2076616c7565 206973 206e6f74 20616e 20696e7465676572 \
             206f72 206f7574 206f66 2072616e6765")
    );

    // Unknown opcode 0x33 in a request with id 10: the error text comes from the codec.
    let err = Request::parse(0x33, &[], 16).unwrap_err();
    assert_eq!(err, ProtoError::UnknownOpcode(0x33));
    let text = format!("ERR {err}");
    assert_eq!(text, "ERR unknown opcode 0x33");
    let bytes = reply(10, 0x33, |w| w.error(&text));
    assert_eq!(
        bytes,
        hex("00000028 000000000000000a 33 01 01 00 | 02 00000017 \
             45525220756e6b6e6f776e206f70636f6465203078 3333")
    );

    // A fatal frame: status 2, then the server closes the connection.
    let mut out = BytesMut::new();
    FrameWriter::new(&mut out, 5, Opcode::Get as u8)
        .fatal("ERR protocol error: the first frame must be HELLO");
    let (id, op, flags, status, v) = decode_reply(&out);
    assert_eq!(
        (id, op, flags, status),
        (5, 0x10, 0x01, Status::Fatal as u8)
    );
    assert_eq!(
        v,
        Value::Error(Bytes::from_static(
            b"ERR protocol error: the first frame must be HELLO"
        ))
    );
}

#[test]
fn framing_limits() {
    // The length field counts the 12 header bytes after it plus the payload.
    let ping = request(&Request::Ping, 2);
    assert_eq!(ping, hex("0000000c 0000000000000002 02 00 00 00"));
    assert_eq!(ping.len(), HEADER_LEN);

    // Too large: refused from the 4 length bytes alone, before the frame is buffered.
    let max = 64 * 1024 * 1024;
    let huge = hex("04000000");
    assert_eq!(
        decode_frame(&huge, max).unwrap_err(),
        ProtoError::FrameTooLarge {
            len: 4 + 0x0400_0000,
            max: max as u64
        }
    );
    // Exactly the limit is accepted (and incomplete here).
    assert_eq!(decode_frame(&hex("03fffffc"), max).unwrap(), None);
    // Shorter than the header.
    assert_eq!(
        decode_frame(&hex("0000000b"), max).unwrap_err(),
        ProtoError::FrameTooShort(11)
    );
    assert_eq!(
        ProtoError::FrameTooShort(11).to_string(),
        "frame length 11 is shorter than the 12-byte header"
    );
}

/// The error texts of protocol.md §2.2–2.3 are `ERR ` + the codec's messages.
#[test]
fn error_texts() {
    let max = 64 * 1024 * 1024;
    let too_large = decode_frame(&hex("04000000"), max).unwrap_err();
    assert_eq!(
        format!("ERR {too_large}"),
        "ERR frame of 67108868 bytes exceeds the limit of 67108864 bytes (raise --max-frame-bytes)"
    );
    let version = ProtoError::Version {
        min: 2,
        max: 3,
        server: ringkv_proto::PROTOCOL_VERSION,
    };
    assert_eq!(
        format!("ERR {version}"),
        "ERR unsupported protocol version range 2..=3 (server speaks 1)"
    );
    let e = |op: u8, payload: &[u8], max_args: usize| {
        format!("ERR {}", Request::parse(op, payload, max_args).unwrap_err())
    };
    assert_eq!(
        e(0x10, &hex("00000002 61"), 16),
        "ERR malformed GET payload: truncated"
    );
    assert_eq!(
        e(0x02, &hex("00"), 16),
        "ERR malformed PING payload: trailing bytes"
    );
    assert_eq!(
        e(0x20, &hex("00000000"), 16),
        "ERR malformed COMMAND payload: no arguments"
    );
    assert_eq!(
        e(0x20, &hex("00000002 00000000 00000000"), 1),
        "ERR malformed COMMAND payload: too many arguments"
    );
    assert_eq!(
        e(0x01, &hex("0001 0001 00000000"), 16),
        "ERR malformed HELLO payload: truncated"
    );
}

#[test]
fn resp_examples() {
    let l = RespLimits::default();
    let buf = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n";
    let (req, used) = ringkv_proto::resp::parse_request(buf, &l).unwrap().unwrap();
    assert_eq!(used, buf.len());
    assert_eq!(req, RespRequest::Args(smallvec![&b"GET"[..], &b"a"[..]]));
    assert_eq!(Protocol::detect(buf[0]), Protocol::Resp);
}
