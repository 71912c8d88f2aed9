//! The hex examples of protocol.md, byte for byte, read from protocol.md itself (each is a
//! fenced block labelled `hex <name>`). If one of these fails, either the codec or the
//! specification changed: update both together. An example removed from protocol.md, or one
//! added without a check here, fails too.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use ringkv_proto::frame::decode_frame;
use ringkv_proto::{
    FrameWriter, Opcode, ProtoError, Protocol, ReplySink, Request, RespLimits, RespRequest, Status,
    Value, HEADER_LEN,
};
use smallvec::smallvec;

mod common;

use common::{example, hex, hex_line, spec_examples};

/// Every example of protocol.md: the client ones are checked in this file, the peer ones (§6)
/// in peer_spec_examples.rs. protocol.md must have exactly these.
const EXAMPLES: &[&str] = &[
    "hello-request",
    "hello-reply",
    "get-request",
    "get-reply-hit",
    "get-reply-miss",
    "command-set-request",
    "command-set-reply",
    "unknown-opcode-reply",
    "command-error-reply",
    "ping-request",
    "peer-hello-request",
    "peer-hello-reply",
    "peer-auth-request",
    "peer-auth-reply",
    "peer-auth-failed-reply",
    "gossip-request",
    "gossip-reply",
    "replicate-request",
    "fetch-request",
    "forward-request",
    "forward-reply",
    "peer-ping-request",
    "scan-partition-request",
    "scan-partition-reply",
    "count-keys-request",
    "count-keys-reply",
    "tomb-offer-request",
    "tomb-offer-reply",
    "tomb-purge-request",
    "tomb-purge-reply",
    "stream-read-request",
    "stream-read-reply",
    "stream-status-request",
    "stream-status-reply",
    "aae-roots-request",
    "aae-roots-reply",
    "aae-branches-request",
    "aae-leaves-request",
    "aae-keys-request",
    "aae-keys-reply",
];

#[test]
fn protocol_md_has_exactly_the_checked_examples() {
    let names: Vec<String> = spec_examples().into_iter().map(|(n, _, _)| n).collect();
    let unique: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        unique.len(),
        names.len(),
        "duplicate example names: {names:?}"
    );
    let want: BTreeSet<&str> = EXAMPLES.iter().copied().collect();
    assert_eq!(
        unique, want,
        "protocol.md's ```hex examples and the ones checked here differ"
    );
}

#[test]
fn the_example_reader_rejects_bad_lines() {
    assert_eq!(
        hex_line("00 0a ff   comment 12 34", "t"),
        vec![0, 0x0a, 0xff]
    );
    assert_eq!(hex_line("de ad", "t"), vec![0xde, 0xad]);
    let bad = std::panic::catch_unwind(|| hex_line("00 0g  comment", "t"));
    assert!(bad.is_err(), "a non-hex token in the bytes part must fail");
    let bad = std::panic::catch_unwind(|| hex_line("00 abc", "t"));
    assert!(bad.is_err(), "a 3-digit token must fail");
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
    assert_eq!(bytes, example("hello-request"));
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
    assert_eq!(bytes, example("hello-reply"));
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
    assert_eq!(bytes, example("get-request"));

    // Hit: value "1", with an (illustrative) 4-byte causal context.
    let hit = reply(7, Opcode::Get as u8, |w| {
        w.versioned(&[0xa1, 0xb2, 0xc3, 0xd4], &[b"1"])
    });
    assert_eq!(hit, example("get-reply-hit"));
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
    assert_eq!(miss, example("get-reply-miss"));
}

#[test]
fn command_set_and_reply() {
    let bytes = request(
        &Request::Command {
            args: smallvec![&b"SET"[..], &b"k"[..], &b"v"[..]],
        },
        8,
    );
    assert_eq!(bytes, example("command-set-request"));
    let ok = reply(8, Opcode::Command as u8, |w| w.simple("OK"));
    assert_eq!(ok, example("command-set-reply"));
}

#[test]
fn error_replies() {
    // A command error: status 1, the payload is an Error value.
    let bytes = reply(9, Opcode::Command as u8, |w| {
        w.error("ERR value is not an integer or out of range")
    });
    assert_eq!(bytes, example("command-error-reply"));

    // Unknown opcode 0x33 in a request with id 10: the error text comes from the codec.
    let err = Request::parse(0x33, &[], 16).unwrap_err();
    assert_eq!(err, ProtoError::UnknownOpcode(0x33));
    let text = format!("ERR {err}");
    assert_eq!(text, "ERR unknown opcode 0x33");
    let bytes = reply(10, 0x33, |w| w.error(&text));
    assert_eq!(bytes, example("unknown-opcode-reply"));

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
    assert_eq!(ping, example("ping-request"));
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
    // Peer opcodes on a client connection (§2.4, §6.5): the whole range, assigned or not.
    for op in [0x40, 0x46, 0x47, 0x7f] {
        assert_eq!(
            e(op, &[], 16),
            format!("ERR peer opcode 0x{op:02x} is only accepted on an authenticated peer link")
        );
    }
    assert_eq!(e(0x3f, &[], 16), "ERR unknown opcode 0x3f");
    assert_eq!(e(0x80, &[], 16), "ERR unknown opcode 0x80");
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
