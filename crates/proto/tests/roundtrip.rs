//! Property tests of the wire codec: encode → decode round trips under arbitrary stream
//! splitting, and "never panics" properties of every decoder on arbitrary input.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use ringkv_proto::frame::{decode_frame, FLAG_REPLY};
use ringkv_proto::resp::{parse_request, MAX_INLINE};
use ringkv_proto::{FrameWriter, ReplySink, Request, RespLimits, RespRequest, Status, Value};

const MAX_FRAME: usize = 1 << 20;
const MAX_ARGS: usize = 1024;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

fn blob(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

// ---------------------------------------------------------------------------------------------
// Binary requests

/// An owned request, so the strategy can generate it; [`OwnedReq::as_req`] borrows it.
#[derive(Debug, Clone)]
enum OwnedReq {
    Hello(u16, u16, Vec<u8>, Vec<u8>),
    Ping,
    Get(Vec<u8>),
    Put(Vec<u8>, Vec<u8>, Vec<u8>, u64),
    Delete(Vec<u8>, Vec<u8>),
    Command(Vec<Vec<u8>>),
}

impl OwnedReq {
    fn as_req(&self) -> Request<'_> {
        match self {
            OwnedReq::Hello(min, max, pw, name) => Request::Hello {
                min_version: *min,
                max_version: *max,
                password: pw,
                client_name: name,
            },
            OwnedReq::Ping => Request::Ping,
            OwnedReq::Get(key) => Request::Get { key },
            OwnedReq::Put(key, value, context, ttl_ms) => Request::Put {
                key,
                value,
                context,
                ttl_ms: *ttl_ms,
            },
            OwnedReq::Delete(key, context) => Request::Delete { key, context },
            OwnedReq::Command(args) => Request::Command {
                args: args.iter().map(|a| a.as_slice()).collect(),
            },
        }
    }
}

fn any_request() -> impl Strategy<Value = OwnedReq> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), blob(32), blob(32))
            .prop_map(|(a, b, c, d)| OwnedReq::Hello(a, b, c, d)),
        Just(OwnedReq::Ping),
        blob(64).prop_map(OwnedReq::Get),
        (blob(64), blob(256), blob(32), any::<u64>())
            .prop_map(|(k, v, c, t)| OwnedReq::Put(k, v, c, t)),
        (blob(64), blob(32)).prop_map(|(k, c)| OwnedReq::Delete(k, c)),
        vec(blob(48), 1..12).prop_map(OwnedReq::Command),
    ]
}

/// Checks that `frame` (exactly one encoded frame) is incomplete at every strict prefix and
/// whole at its full length; returns the decoded request.
fn check_prefixes_and_parse<'a>(frame: &'a [u8], id: u64) -> Request<'a> {
    for cut in 0..frame.len() {
        assert_eq!(
            decode_frame(&frame[..cut], MAX_FRAME).unwrap(),
            None,
            "prefix of {cut} bytes of {}",
            frame.len()
        );
    }
    let (h, payload, used) = decode_frame(frame, MAX_FRAME).unwrap().unwrap();
    assert_eq!(used, frame.len());
    assert_eq!(h.request_id, id);
    assert_eq!(h.flags, 0);
    assert!(!h.is_reply());
    assert_eq!(h.status, 0);
    Request::parse(h.opcode, payload, MAX_ARGS).unwrap()
}

/// Feeds `stream` to a decoder in chunks ending at `cuts`, as reads off a socket would,
/// consuming whole frames as they complete. Returns (header, payload) of every frame.
fn decode_stream(stream: &[u8], cuts: &[usize]) -> Vec<(ringkv_proto::FrameHeader, Vec<u8>)> {
    let mut ends: Vec<usize> = cuts.iter().map(|&c| c % (stream.len() + 1)).collect();
    ends.push(stream.len());
    ends.sort_unstable();
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut frames = Vec::new();
    for end in ends {
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        while let Some((h, payload, used)) = decode_frame(&buf, MAX_FRAME).unwrap() {
            assert!(used >= ringkv_proto::HEADER_LEN && used <= buf.len());
            frames.push((h, payload.to_vec()));
            let _ = buf.split_to(used);
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    frames
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_round_trip(req in any_request(), id in any::<u64>()) {
        let mut out = BytesMut::new();
        let req = req.as_req();
        req.encode(id, &mut out);
        let parsed = check_prefixes_and_parse(&out, id);
        prop_assert_eq!(parsed.opcode(), req.opcode());
        prop_assert_eq!(parsed, req);
    }

    #[test]
    fn request_stream_round_trip(
        reqs in vec((any_request(), any::<u64>()), 1..8),
        cuts in vec(any::<usize>(), 0..16),
    ) {
        let mut stream = BytesMut::new();
        for (r, id) in &reqs {
            r.as_req().encode(*id, &mut stream);
        }
        let frames = decode_stream(&stream, &cuts);
        prop_assert_eq!(frames.len(), reqs.len());
        for ((h, payload), (r, id)) in frames.iter().zip(&reqs) {
            prop_assert_eq!(h.request_id, *id);
            prop_assert_eq!(Request::parse(h.opcode, payload, MAX_ARGS).unwrap(), r.as_req());
        }
    }

    /// Truncating or extending a payload is a per-request error, never a panic or a success
    /// with different fields.
    #[test]
    fn request_payload_damage_is_an_error(req in any_request(), extra in 1usize..8) {
        let req = req.as_req();
        let mut out = BytesMut::new();
        req.encode(1, &mut out);
        let (h, payload, _) = decode_frame(&out, MAX_FRAME).unwrap().unwrap();
        if !payload.is_empty() {
            let cut = payload.len() - extra.min(payload.len());
            prop_assert!(Request::parse(h.opcode, &payload[..cut], MAX_ARGS).is_err());
        }
        let mut longer = payload.to_vec();
        longer.resize(longer.len() + extra, 0);
        prop_assert!(Request::parse(h.opcode, &longer, MAX_ARGS).is_err());
    }
}

#[test]
fn command_arg_limits() {
    let args: Vec<&[u8]> = vec![b"x"; 5];
    let mut out = BytesMut::new();
    Request::Command {
        args: args.iter().copied().collect(),
    }
    .encode(1, &mut out);
    let (h, payload, _) = decode_frame(&out, MAX_FRAME).unwrap().unwrap();
    assert!(Request::parse(h.opcode, payload, 5).is_ok());
    assert!(Request::parse(h.opcode, payload, 4).is_err());
    // argc 0, and a huge argc with no data behind it: errors, no allocation.
    assert!(Request::parse(0x20, &[0, 0, 0, 0], MAX_ARGS).is_err());
    assert!(Request::parse(0x20, &[0xff, 0xff, 0xff, 0xff], usize::MAX).is_err());
}

// ---------------------------------------------------------------------------------------------
// Reply values

/// Simple and error strings are single-line text (the [`ReplySink`] contract), so they can
/// also be written through the sink; bulk strings and contexts are arbitrary bytes.
fn line_text() -> impl Strategy<Value = Bytes> {
    "[ -~]{0,24}".prop_map(Bytes::from)
}

fn bytes_val(max: usize) -> impl Strategy<Value = Bytes> {
    blob(max).prop_map(Bytes::from)
}

fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        line_text().prop_map(Value::Simple),
        line_text().prop_map(Value::Error),
        any::<i64>().prop_map(Value::Int),
        bytes_val(64).prop_map(Value::Bulk),
        (bytes_val(24), vec(bytes_val(32), 0..4))
            .prop_map(|(context, values)| Value::Versioned { context, values }),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| vec(inner, 0..8).prop_map(Value::Array))
}

/// Writes `v` through the [`ReplySink`] interface, as command code does.
fn emit(v: &Value, sink: &mut impl ReplySink) {
    match v {
        Value::Nil => sink.nil(),
        Value::Simple(s) => sink.simple(std::str::from_utf8(s).unwrap()),
        Value::Error(s) => sink.error(std::str::from_utf8(s).unwrap()),
        Value::Int(i) => sink.int(*i),
        Value::Bulk(b) => sink.bulk(b),
        Value::Array(items) => {
            sink.array(items.len());
            for i in items {
                emit(i, sink);
            }
        }
        Value::Versioned { context, values } => {
            let vs: Vec<&[u8]> = values.iter().map(|b| b.as_ref()).collect();
            sink.versioned(context, &vs);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn value_round_trip(v in any_value()) {
        let mut out = BytesMut::new();
        v.encode(&mut out);
        let bytes = out.freeze();
        prop_assert_eq!(Value::decode(&bytes).unwrap(), v.clone());
        // A value must fill the payload exactly: any truncation or trailing byte is an error.
        for cut in 0..bytes.len() {
            prop_assert!(Value::decode(&bytes.slice(..cut)).is_err());
        }
        let mut longer = BytesMut::from(&bytes[..]);
        longer.extend_from_slice(&[0]);
        prop_assert!(Value::decode(&longer.freeze()).is_err());
    }

    #[test]
    fn frame_writer_matches_value_encoding(v in any_value(), id in any::<u64>(), op in any::<u8>()) {
        let mut out = BytesMut::new();
        let mut w = FrameWriter::new(&mut out, id, op);
        emit(&v, &mut w);
        w.finish();

        let (h, payload, used) = decode_frame(&out, MAX_FRAME).unwrap().unwrap();
        prop_assert_eq!(used, out.len());
        prop_assert_eq!(h.request_id, id);
        prop_assert_eq!(h.opcode, op);
        prop_assert_eq!(h.flags, FLAG_REPLY);
        prop_assert!(h.is_reply());
        // Only a top-level error marks the frame as failed; errors nested in arrays don't.
        let status = if matches!(v, Value::Error(_)) { Status::Error } else { Status::Ok };
        prop_assert_eq!(h.status, status as u8);

        let mut direct = BytesMut::new();
        v.encode(&mut direct);
        prop_assert_eq!(payload, &direct[..]);
        prop_assert_eq!(Value::decode(&Bytes::copy_from_slice(payload)).unwrap(), v);
    }

    #[test]
    fn frame_writer_fatal(msg in "[ -~]{0,40}", id in any::<u64>()) {
        let mut out = BytesMut::new();
        FrameWriter::new(&mut out, id, 0).fatal(&msg);
        let (h, payload, _) = decode_frame(&out, MAX_FRAME).unwrap().unwrap();
        prop_assert_eq!(h.status, Status::Fatal as u8);
        prop_assert_eq!(h.request_id, id);
        prop_assert_eq!(
            Value::decode(&Bytes::copy_from_slice(payload)).unwrap(),
            Value::Error(Bytes::from(msg))
        );
    }
}

#[test]
fn value_depth_limit() {
    let mut v = Value::Nil;
    for _ in 0..ringkv_proto::value::MAX_DEPTH {
        v = Value::Array(vec![v]);
    }
    let mut out = BytesMut::new();
    v.encode(&mut out);
    assert_eq!(Value::decode(&out.freeze()).unwrap(), v);
    let v = Value::Array(vec![v]);
    let mut out = BytesMut::new();
    v.encode(&mut out);
    assert!(Value::decode(&out.freeze()).is_err());
}

// ---------------------------------------------------------------------------------------------
// RESP2 requests

fn multibulk(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// An inline line quoting every argument in double quotes, escaping anything that is not
/// printable ASCII (and `"` and `\`) as `\xHH`.
fn inline_quoted(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.push(b'"');
        for &b in a {
            if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
                out.push(b);
            } else {
                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            }
        }
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn owned_args(req: &RespRequest<'_>) -> Vec<Vec<u8>> {
    match req {
        RespRequest::Args(a) => a.iter().map(|s| s.to_vec()).collect(),
        RespRequest::Owned(a) => a.clone(),
        RespRequest::Empty => Vec::new(),
    }
}

fn resp_args() -> impl Strategy<Value = Vec<Vec<u8>>> {
    vec(blob(40), 1..10)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn multibulk_round_trip(args in resp_args()) {
        let l = RespLimits::default();
        let buf = multibulk(&args);
        for cut in 0..buf.len() {
            prop_assert_eq!(parse_request(&buf[..cut], &l).unwrap(), None, "prefix {}", cut);
        }
        let (req, used) = parse_request(&buf, &l).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert!(matches!(req, RespRequest::Args(_)));
        prop_assert_eq!(owned_args(&req), args);
    }

    #[test]
    fn multibulk_pipeline(cmds in vec(resp_args(), 1..6), cuts in vec(any::<usize>(), 0..16)) {
        let l = RespLimits::default();
        let stream: Vec<u8> = cmds.iter().flat_map(|c| multibulk(c)).collect();
        let mut ends: Vec<usize> = cuts.iter().map(|&c| c % (stream.len() + 1)).collect();
        ends.push(stream.len());
        ends.sort_unstable();
        let mut buf = Vec::new();
        let mut fed = 0;
        let mut got = Vec::new();
        for end in ends {
            buf.extend_from_slice(&stream[fed..end]);
            fed = end;
            loop {
                let used = match parse_request(&buf, &l).unwrap() {
                    Some((req, used)) => {
                        got.push(owned_args(&req));
                        used
                    }
                    None => break,
                };
                prop_assert!(used > 0 && used <= buf.len());
                buf.drain(..used);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, cmds);
    }

    #[test]
    fn inline_plain_round_trip(args in vec("[!-~&&[^\"'*]]{1,12}", 1..10), sep in "[ \t]{1,3}") {
        let l = RespLimits::default();
        let mut line = args.join(&sep).into_bytes();
        line.extend_from_slice(b"\r\n");
        prop_assert_eq!(parse_request(&line[..line.len() - 2], &l).unwrap(), None);
        let (req, used) = parse_request(&line, &l).unwrap().unwrap();
        prop_assert_eq!(used, line.len());
        prop_assert!(matches!(req, RespRequest::Args(_)));
        let want: Vec<Vec<u8>> = args.into_iter().map(String::into_bytes).collect();
        prop_assert_eq!(owned_args(&req), want);
    }

    #[test]
    fn inline_quoted_round_trip(args in resp_args()) {
        let l = RespLimits::default();
        let line = inline_quoted(&args);
        let (req, used) = parse_request(&line, &l).unwrap().unwrap();
        prop_assert_eq!(used, line.len());
        prop_assert_eq!(owned_args(&req), args);
    }

    #[test]
    fn pre_auth_limits(n in 1usize..24, len in 0usize..40_000) {
        let l = RespLimits {
            max_args: 10,
            max_bulk: 16 * 1024,
            unauthenticated: true,
            ..RespLimits::default()
        };
        let count = format!("*{n}\r\n");
        let r = parse_request(count.as_bytes(), &l);
        if n > 10 {
            prop_assert_eq!(
                r.unwrap_err().to_string(),
                "Protocol error: unauthenticated multibulk length"
            );
        } else {
            prop_assert_eq!(r.unwrap(), None);
            let head = format!("*{n}\r\n${len}\r\n");
            let r = parse_request(head.as_bytes(), &l);
            if len > 16 * 1024 {
                prop_assert_eq!(
                    r.unwrap_err().to_string(),
                    "Protocol error: unauthenticated bulk length"
                );
            } else {
                prop_assert_eq!(r.unwrap(), None);
            }
        }
    }
}

#[test]
fn resp_error_texts() {
    let l = RespLimits::default();
    let e = |buf: &[u8], l: &RespLimits| parse_request(buf, l).unwrap_err().to_string();
    assert_eq!(e(b"*x\r\n", &l), "Protocol error: invalid multibulk length");
    assert_eq!(
        e(b"*2147483648\r\n", &l),
        "Protocol error: invalid multibulk length"
    );
    assert_eq!(
        e(b"*1\r\n+x\r\n", &l),
        "Protocol error: expected '$', got '+'"
    );
    assert_eq!(
        e(b"*1\r\n$-1\r\n", &l),
        "Protocol error: invalid bulk length"
    );
    assert_eq!(
        e(b"*1\r\n$536870913\r\n", &l),
        "Protocol error: invalid bulk length"
    );
    assert_eq!(
        e(b"*1\r\n$1\r\nab\r\n", &l),
        "Protocol error: expected CRLF after bulk string"
    );
    assert_eq!(
        e(b"SET a \"b\r\n", &l),
        "Protocol error: unbalanced quotes in request"
    );
    assert_eq!(
        e(b"SET a \"b\"c\r\n", &l),
        "Protocol error: unbalanced quotes in request"
    );
    assert_eq!(
        e(&vec![b'a'; MAX_INLINE + 1], &l),
        "Protocol error: too big inline request"
    );
    let mut mb = b"*".to_vec();
    mb.extend(vec![b'1'; MAX_INLINE + 1]);
    assert_eq!(e(&mb, &l), "Protocol error: too big mbulk count string");
    let mut bb = b"*1\r\n$".to_vec();
    bb.extend(vec![b'1'; MAX_INLINE + 1]);
    assert_eq!(e(&bb, &l), "Protocol error: too big bulk count string");

    // Before AUTH, a malformed length is still "invalid", as in Redis; only a well-formed
    // length over the small pre-auth limit is "unauthenticated".
    let pre = RespLimits {
        max_args: 10,
        max_bulk: 16 * 1024,
        unauthenticated: true,
        ..RespLimits::default()
    };
    assert_eq!(
        e(b"*1\r\n$-1\r\n", &pre),
        "Protocol error: invalid bulk length"
    );
    assert_eq!(
        e(b"*1\r\n$x\r\n", &pre),
        "Protocol error: invalid bulk length"
    );
    assert_eq!(
        e(b"*x\r\n", &pre),
        "Protocol error: invalid multibulk length"
    );

    // Empty lines and `*0` / `*-1` are consumed and ignored.
    assert_eq!(
        parse_request(b"\r\n", &l).unwrap(),
        Some((RespRequest::Empty, 2))
    );
    assert_eq!(
        parse_request(b"*0\r\n", &l).unwrap(),
        Some((RespRequest::Empty, 4))
    );
    assert_eq!(
        parse_request(b"*-1\r\n", &l).unwrap(),
        Some((RespRequest::Empty, 5))
    );
}

/// An inline line of exactly the maximum length is accepted wherever its CRLF is split.
#[test]
fn inline_max_length_streaming() {
    let l = RespLimits::default();
    let mut line = b"ECHO ".to_vec();
    line.resize(MAX_INLINE, b'x');
    line.extend_from_slice(b"\r\n");
    for cut in [MAX_INLINE - 1, MAX_INLINE, MAX_INLINE + 1] {
        assert_eq!(
            parse_request(&line[..cut], &l).unwrap(),
            None,
            "prefix {cut}"
        );
    }
    let (req, used) = parse_request(&line, &l).unwrap().unwrap();
    assert_eq!(used, line.len());
    assert_eq!(owned_args(&req).len(), 2);

    // One byte more is refused, with or without its line end.
    let mut long = line[..MAX_INLINE].to_vec();
    long.push(b'x');
    assert!(parse_request(&long, &l).is_err());
    long.extend_from_slice(b"\r\n");
    assert!(parse_request(&long, &l).is_err());
}

/// A NUL in a quoted inline line ends it, as in Redis (a C string); this used to loop
/// forever, pushing empty arguments until memory ran out.
#[test]
fn inline_quoted_nul() {
    let l = RespLimits::default();
    let (req, used) = parse_request(b"SET \"a\" b\0c d\r\n", &l).unwrap().unwrap();
    assert_eq!(used, 15);
    assert_eq!(
        owned_args(&req),
        vec![b"SET".to_vec(), b"a".to_vec(), b"b".to_vec()]
    );
    assert_eq!(
        parse_request(b"'a' \0\r\n", &l)
            .unwrap()
            .map(|(r, _)| owned_args(&r)),
        Some(vec![b"a".to_vec()])
    );
    assert_eq!(
        parse_request(b"SET \"a\0\"\r\n", &l)
            .unwrap_err()
            .to_string(),
        "Protocol error: unbalanced quotes in request"
    );
}

// ---------------------------------------------------------------------------------------------
// No panics on arbitrary input

/// Byte strings built from protocol-ish tokens, to get past the first checks more often than
/// uniformly random bytes do.
fn resp_noise() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"*".to_vec()),
        Just(b"$".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"'".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"\\x".to_vec()),
        Just(b"\0".to_vec()),
        Just(b" ".to_vec()),
        Just(b"-".to_vec()),
        "[0-9]{1,3}".prop_map(String::into_bytes),
        Just(b"9223372036854775808".to_vec()),
        Just(b"2147483648".to_vec()),
        blob(6),
    ];
    vec(token, 0..40).prop_map(|t| t.concat())
}

fn resp_limits() -> impl Strategy<Value = RespLimits> {
    (0usize..16, 0usize..64, 0usize..128, any::<bool>()).prop_map(
        |(max_args, max_bulk, max_inline, unauthenticated)| RespLimits {
            max_args,
            max_bulk,
            max_inline,
            unauthenticated,
        },
    )
}

/// Valid encodings with a few bytes overwritten, inserted or removed.
fn damaged(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (valid, vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4)).prop_map(|(mut b, edits)| {
        for (at, byte, kind) in edits {
            let i = at % (b.len() + 1);
            match kind {
                0 if i < b.len() => b[i] = byte,
                1 => b.insert(i, byte),
                _ if i < b.len() => {
                    b.remove(i);
                }
                _ => {}
            }
        }
        b
    })
}

fn encoded_value() -> impl Strategy<Value = Vec<u8>> {
    any_value().prop_map(|v| {
        let mut out = BytesMut::new();
        v.encode(&mut out);
        out.to_vec()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decode_frame_never_panics(buf in blob(64), max in prop_oneof![Just(MAX_FRAME), 0usize..64]) {
        if let Ok(Some((_, payload, used))) = decode_frame(&buf, max) {
            prop_assert!(used <= buf.len() && used <= max);
            prop_assert_eq!(payload.len(), used - ringkv_proto::HEADER_LEN);
        }
    }

    #[test]
    fn request_parse_never_panics(op in any::<u8>(), payload in blob(96), max_args in 0usize..64) {
        let _ = Request::parse(op, &payload, max_args);
    }

    #[test]
    fn request_parse_damaged_never_panics(
        req in any_request(),
        edits in vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let req = req.as_req();
        let mut out = BytesMut::new();
        req.encode(0, &mut out);
        let mut payload = out[ringkv_proto::HEADER_LEN..].to_vec();
        for (at, byte) in edits {
            if !payload.is_empty() {
                let i = at % payload.len();
                payload[i] = byte;
            }
        }
        let _ = Request::parse(req.opcode() as u8, &payload, MAX_ARGS);
    }

    #[test]
    fn value_decode_never_panics(buf in prop_oneof![blob(96), damaged(encoded_value())]) {
        let _ = Value::decode(&Bytes::from(buf));
    }

    #[test]
    fn resp_parse_never_panics(
        buf in prop_oneof![blob(96), resp_noise(), damaged(resp_args().prop_map(|a| multibulk(&a)))],
        limits in prop_oneof![Just(RespLimits::default()), resp_limits()],
    ) {
        if let Ok(Some((req, used))) = parse_request(&buf, &limits) {
            prop_assert!(used > 0 && used <= buf.len());
            if let RespRequest::Args(a) = &req {
                prop_assert!(!a.is_empty() && a.len() <= limits.max_args);
            }
        }
    }
}
