//! Hostile and malformed input, over RESP and binary frames, against the real server: every
//! case gets the documented reply (protocol.md §2.2, §3.2, §3.3), the server stays up, and a
//! client that connected before the bad input is still served afterwards.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use ringkv_proto::{Request, Value};

// ---------------------------------------------------------------------------------------------
// Helpers

/// One decoded reply frame.
#[derive(Debug)]
struct Frame {
    id: u64,
    opcode: u8,
    flags: u8,
    status: u8,
    value: Value,
}

impl Frame {
    fn error_text(&self) -> String {
        match &self.value {
            Value::Error(e) => String::from_utf8_lossy(e).into_owned(),
            other => panic!("expected an error value, got {other:?}"),
        }
    }
}

/// Reads one whole reply frame; `None` on EOF, reset or timeout.
fn read_frame(s: &mut TcpStream) -> Option<Frame> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let len = u32::from_be_bytes(len) as usize;
    assert!(
        (12..1 << 24).contains(&len),
        "implausible reply length {len}"
    );
    let mut rest = vec![0u8; len];
    s.read_exact(&mut rest).ok()?;
    let value = Value::decode(&Bytes::copy_from_slice(&rest[12..])).expect("reply value decodes");
    Some(Frame {
        id: u64::from_be_bytes(rest[0..8].try_into().unwrap()),
        opcode: rest[8],
        flags: rest[9],
        status: rest[10],
        value,
    })
}

fn encode(req: &Request<'_>, id: u64) -> Vec<u8> {
    let mut out = BytesMut::new();
    req.encode(id, &mut out);
    out.to_vec()
}

fn hello(id: u64, min: u16, max: u16, password: &[u8]) -> Vec<u8> {
    encode(
        &Request::Hello {
            min_version: min,
            max_version: max,
            password,
            client_name: b"bad-input-test",
        },
        id,
    )
}

fn command(id: u64, args: &[&[u8]]) -> Vec<u8> {
    encode(
        &Request::Command {
            args: args.iter().copied().collect(),
        },
        id,
    )
}

/// A raw frame with any opcode and payload.
fn raw_frame(id: u64, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(16 + payload.len());
    f.extend_from_slice(&(12 + payload.len() as u32).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&[opcode, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A binary connection past a successful HELLO.
fn binary(server: &Server, password: &[u8]) -> TcpStream {
    let mut s = server.tcp();
    s.write_all(&hello(1, 1, 1, password)).unwrap();
    let f = read_frame(&mut s).expect("HELLO reply");
    assert_eq!((f.id, f.status), (1, 0), "HELLO failed: {f:?}");
    s
}

fn assert_binary_ping(s: &mut TcpStream, id: u64) {
    s.write_all(&raw_frame(id, 0x02, b"")).unwrap();
    let f = read_frame(s).expect("PING reply");
    assert_eq!((f.id, f.opcode, f.flags, f.status), (id, 0x02, 1, 0));
    assert_eq!(f.value, Value::Simple(Bytes::from_static(b"PONG")));
}

/// A RESP connection opened (and served once) before the bad input.
fn witness(server: &Server) -> TcpStream {
    let mut w = server.tcp();
    w.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_n(&mut w, 7), b"+PONG\r\n");
    w
}

/// After a case: the process is up, a new client is served, the old one too, no panic logged.
fn check_after(server: &Server, w: &mut TcpStream) {
    assert_serving(server);
    w.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    assert_eq!(
        read_n(w, 7),
        b"+PONG\r\n",
        "the earlier client is no longer served"
    );
    assert_no_panic(server);
}

fn assert_no_panic(server: &Server) {
    let log = server.log_text();
    assert!(
        !log.contains("panicked"),
        "server log shows a panic:\n{log}"
    );
}

/// Sends `send` and expects exactly `reply`, then the connection closed by the server.
fn expect_reply_then_close(s: &mut TcpStream, send: &[u8], reply: &[u8]) {
    // The write may fail if the server closes before reading everything; what matters is the
    // reply and the close.
    let _ = s.write_all(send);
    let got = read_n(s, reply.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(reply)
    );
    assert!(closed_by_peer(s), "connection not closed after the error");
}

fn send_expect(s: &mut TcpStream, send: &[u8], reply: &[u8]) {
    s.write_all(send).unwrap();
    let got = read_n(s, reply.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(reply)
    );
}

/// Tiny xorshift64 generator: reproducible garbage without a crate.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn byte(&mut self) -> u8 {
        (self.next() >> 24) as u8
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Oversized binary frame

#[test]
fn binary_frame_over_the_limit_is_fatal() {
    let server = Server::start(&["--max-frame-bytes", "65536"]);
    let mut w = witness(&server);
    let mut s = binary(&server, b"");
    // Only the header: the length is checked before the rest is buffered.
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&1_000_000u32.to_be_bytes());
    hdr.extend_from_slice(&9u64.to_be_bytes());
    hdr.extend_from_slice(&[0x20, 0, 0, 0]);
    s.write_all(&hdr).unwrap();
    let f = read_frame(&mut s).expect("a Fatal frame");
    assert_eq!((f.id, f.opcode, f.flags, f.status), (0, 0, 1, 2), "{f:?}");
    assert_eq!(
        f.error_text(),
        "ERR frame of 1000004 bytes exceeds the limit of 65536 bytes (raise --max-frame-bytes)"
    );
    assert!(closed_by_peer(&mut s));
    check_after(&server, &mut w);
}

#[test]
fn binary_frame_shorter_than_header_is_fatal() {
    let server = Server::start(&[]);
    let mut w = witness(&server);
    let mut s = binary(&server, b"");
    s.write_all(&[0, 0, 0, 5, 1, 2, 3, 4, 5]).unwrap();
    let f = read_frame(&mut s).expect("a Fatal frame");
    assert_eq!((f.id, f.opcode, f.status), (0, 0, 2), "{f:?}");
    assert_eq!(
        f.error_text(),
        "ERR frame length 5 is shorter than the 12-byte header"
    );
    assert!(closed_by_peer(&mut s));
    check_after(&server, &mut w);
}

// ---------------------------------------------------------------------------------------------
// 2. Truncated requests, then the client goes away

#[test]
fn truncated_frame_then_close() {
    let server = Server::start(&[]);
    let mut w = witness(&server);
    let full = command(5, &[b"SET", b"key", b"some value"]);
    let half = &full[..full.len() / 2];

    // Half a frame, then shut down the write side: the server sees EOF and closes.
    let mut s = binary(&server, b"");
    s.write_all(half).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert!(closed_by_peer(&mut s));

    // Half a frame, then drop the socket.
    let mut s = binary(&server, b"");
    s.write_all(half).unwrap();
    drop(s);

    // Half of the HELLO itself.
    let mut s = server.tcp();
    let h = hello(1, 1, 1, b"");
    s.write_all(&h[..7]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert!(closed_by_peer(&mut s));

    // RESP: half a multibulk, half an inline line.
    for partial in [&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\nabc"[..], b"SET k v"] {
        let mut s = server.tcp();
        s.write_all(partial).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        assert!(closed_by_peer(&mut s));
        let mut s = server.tcp();
        s.write_all(partial).unwrap();
        drop(s);
    }
    check_after(&server, &mut w);
    // The truncated SETs did not take effect.
    send_expect(&mut w, b"EXISTS key k\r\n", b":0\r\n");
}

// ---------------------------------------------------------------------------------------------
// 3. Random garbage

/// Sends `garbage`, half-closes, and requires the server to close within a deadline (it may
/// reply errors first). Returns what it replied.
fn garbage_round(server: &Server, garbage: &[u8]) -> Vec<u8> {
    let mut s = server.tcp();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(garbage);
    let _ = s.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        assert!(
            Instant::now() < deadline,
            "server did not close a garbage connection in time"
        );
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("read failed (hang?): {e}"),
        }
    }
}

#[test]
fn random_garbage_in_both_modes() {
    let server = Server::start(&["--max-frame-bytes", "1048576"]);
    let mut w = witness(&server);
    // Bytes RESP parsers care about, to reach deeper states than uniform noise does.
    const RESP_ALPHABET: &[u8] = b"*$\r\n\r\n0123456789-+: \t\"'\\xabcGETSETPING\x00\xff";
    for seed in 1..=12u64 {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let len = 16 + rng.below(4096) as usize;
        let biased = seed % 2 == 0;
        let mut g: Vec<u8> = (0..len)
            .map(|_| {
                if biased {
                    RESP_ALPHABET[rng.below(RESP_ALPHABET.len() as u64) as usize]
                } else {
                    rng.byte()
                }
            })
            .collect();

        // RESP mode: the first byte must not be 0x00.
        if g[0] == 0 {
            g[0] = if seed % 3 == 0 { b'*' } else { b'G' };
        }
        let reply = garbage_round(&server, &g);
        // Whatever came back is RESP: each reply starts with a RESP type byte.
        if let Some(&b) = reply.first() {
            assert!(b"+-:$*".contains(&b), "seed {seed}: not RESP: {reply:?}");
        }

        // Binary mode: first byte 0x00. Pure noise, and noise after a valid HELLO.
        g[0] = 0;
        let reply = garbage_round(&server, &g);
        if reply.len() >= 4 {
            let len = u32::from_be_bytes(reply[..4].try_into().unwrap());
            assert!(len >= 12, "seed {seed}: bad reply frame {reply:?}");
        }
        let mut framed = hello(1, 1, 1, b"");
        framed.extend_from_slice(&g);
        // A plausible header with a small length makes the noise look like frames.
        framed[34] = 0;
        framed[35] = 0;
        framed[36] = 0;
        framed[37] = 12 + (rng.below(64) as u8);
        garbage_round(&server, &framed);

        check_after(&server, &mut w);
    }
}

// ---------------------------------------------------------------------------------------------
// 4–6. RESP length errors

#[test]
fn resp_multibulk_count_too_large() {
    let server = Server::start(&[]);
    let mut w = witness(&server);
    let mut s = server.tcp();
    expect_reply_then_close(
        &mut s,
        b"*2147483648\r\n",
        b"-ERR Protocol error: invalid multibulk length\r\n",
    );
    check_after(&server, &mut w);
}

#[test]
fn resp_bulk_length_too_large() {
    let server = Server::start(&[]);
    let mut w = witness(&server);
    let mut s = server.tcp();
    expect_reply_then_close(
        &mut s,
        b"*1\r\n$600000000\r\n",
        b"-ERR Protocol error: invalid bulk length\r\n",
    );
    let mut s = server.tcp();
    expect_reply_then_close(
        &mut s,
        b"*1\r\n$-5\r\n",
        b"-ERR Protocol error: invalid bulk length\r\n",
    );
    let mut s = server.tcp();
    expect_reply_then_close(
        &mut s,
        b"*1\r\n:5\r\n",
        b"-ERR Protocol error: expected '$', got ':'\r\n",
    );
    check_after(&server, &mut w);
}

#[test]
fn resp_bulk_limit_is_capped_at_512_mib() {
    // With a frame limit above 512 MiB, one RESP argument is still limited to 512 MiB.
    let server = Server::start(&["--max-frame-bytes", "1073741824"]);
    let mut w = witness(&server);
    let mut s = server.tcp();
    expect_reply_then_close(
        &mut s,
        b"*1\r\n$600000000\r\n",
        b"-ERR Protocol error: invalid bulk length\r\n",
    );
    check_after(&server, &mut w);
}

#[test]
fn resp_inline_line_too_long() {
    let server = Server::start(&[]);
    let mut w = witness(&server);
    let mut s = server.tcp();
    // Just over 64 KiB, no newline: the server has read everything when it refuses.
    let line = vec![b'a'; 64 * 1024 + 1];
    expect_reply_then_close(
        &mut s,
        &line,
        b"-ERR Protocol error: too big inline request\r\n",
    );
    // Much more than the limit, sent while the server already refuses.
    let mut s = server.tcp();
    let line = vec![b'b'; 200 * 1024];
    expect_reply_then_close(
        &mut s,
        &line,
        b"-ERR Protocol error: too big inline request\r\n",
    );
    check_after(&server, &mut w);
}

// ---------------------------------------------------------------------------------------------
// 7. Unknown opcode

#[test]
fn binary_unknown_opcode_keeps_connection() {
    let server = Server::start(&[]);
    let mut w = witness(&server);
    let mut s = binary(&server, b"");
    s.write_all(&raw_frame(42, 0x8e, b"ignored payload"))
        .unwrap();
    let f = read_frame(&mut s).expect("an Error frame");
    assert_eq!(
        (f.id, f.opcode, f.flags, f.status),
        (42, 0x8e, 1, 1),
        "{f:?}"
    );
    assert_eq!(f.error_text(), "ERR unknown opcode 0x8e");
    assert_binary_ping(&mut s, 43);
    // A peer opcode on a client connection (protocol.md §6.4): its own Error, still usable.
    for op in [0x40, 0x43, 0x7e] {
        s.write_all(&raw_frame(46, op, b"ignored payload")).unwrap();
        let f = read_frame(&mut s).expect("an Error frame");
        assert_eq!((f.id, f.opcode, f.status), (46, op, 1), "{f:?}");
        assert_eq!(
            f.error_text(),
            format!("ERR peer opcode 0x{op:02x} is only accepted on an authenticated peer link")
        );
    }
    assert_binary_ping(&mut s, 47);
    // A malformed payload is skipped whole, too.
    s.write_all(&raw_frame(44, 0x10, b"\x00\x00\x00\x09ab"))
        .unwrap();
    let f = read_frame(&mut s).expect("an Error frame");
    assert_eq!((f.id, f.status), (44, 1));
    assert_eq!(f.error_text(), "ERR malformed GET payload: truncated");
    assert_binary_ping(&mut s, 45);
    check_after(&server, &mut w);
}

// ---------------------------------------------------------------------------------------------
// 8. Wrong arity

#[test]
fn wrong_arity_resp_and_binary() {
    let server = Server::start(&[]);
    let mut w = witness(&server);
    let mut s = server.tcp();
    send_expect(
        &mut s,
        b"*1\r\n$3\r\nGET\r\n",
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    send_expect(
        &mut s,
        b"*2\r\n$3\r\nSET\r\n$1\r\na\r\n",
        b"-ERR wrong number of arguments for 'set' command\r\n",
    );
    send_expect(
        &mut s,
        b"get\r\n",
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    send_expect(&mut s, b"SET a 1\r\nGET a\r\n", b"+OK\r\n$1\r\n1\r\n");

    let mut b = binary(&server, b"");
    b.write_all(&command(7, &[b"GET"])).unwrap();
    let f = read_frame(&mut b).expect("reply");
    assert_eq!((f.id, f.opcode, f.status), (7, 0x20, 1));
    assert_eq!(
        f.error_text(),
        "ERR wrong number of arguments for 'get' command"
    );
    b.write_all(&command(8, &[b"SET", b"a"])).unwrap();
    let f = read_frame(&mut b).expect("reply");
    assert_eq!(
        f.error_text(),
        "ERR wrong number of arguments for 'set' command"
    );
    assert_binary_ping(&mut b, 9);
    check_after(&server, &mut w);
}

// ---------------------------------------------------------------------------------------------
// 9. Unknown command

#[test]
fn unknown_command_text_as_redis() {
    let server = Server::start(&[]);
    let mut w = witness(&server);
    let mut s = server.tcp();
    let expect = b"-ERR unknown command 'foo', with args beginning with: 'a' \r\n";
    send_expect(&mut s, b"*2\r\n$3\r\nfoo\r\n$1\r\na\r\n", expect);
    send_expect(&mut s, b"foo a\r\n", expect);
    send_expect(
        &mut s,
        b"foo\r\n",
        b"-ERR unknown command 'foo', with args beginning with: \r\n",
    );
    send_expect(&mut s, b"PING\r\n", b"+PONG\r\n");

    let mut b = binary(&server, b"");
    b.write_all(&command(3, &[b"foo", b"a"])).unwrap();
    let f = read_frame(&mut b).expect("reply");
    assert_eq!((f.id, f.status), (3, 1));
    assert_eq!(
        f.error_text(),
        "ERR unknown command 'foo', with args beginning with: 'a' "
    );
    assert_binary_ping(&mut b, 4);
    check_after(&server, &mut w);
}

// ---------------------------------------------------------------------------------------------
// 10. Handshake errors

#[test]
fn first_frame_must_be_hello_and_version_checked() {
    let server = Server::start(&[]);
    let mut w = witness(&server);

    let mut s = server.tcp();
    s.write_all(&raw_frame(11, 0x02, b"")).unwrap();
    let f = read_frame(&mut s).expect("a Fatal frame");
    assert_eq!(
        (f.id, f.opcode, f.flags, f.status),
        (11, 0x02, 1, 2),
        "{f:?}"
    );
    assert_eq!(
        f.error_text(),
        "ERR protocol error: the first frame must be HELLO"
    );
    assert!(closed_by_peer(&mut s));

    // A command before HELLO, pipelined with more frames: nothing after the Fatal frame.
    let mut s = server.tcp();
    let mut bytes = command(12, &[b"SET", b"x", b"1"]);
    bytes.extend_from_slice(&hello(13, 1, 1, b""));
    s.write_all(&bytes).unwrap();
    let f = read_frame(&mut s).expect("a Fatal frame");
    assert_eq!((f.id, f.status), (12, 2));
    assert!(closed_by_peer(&mut s));

    for (min, max) in [(2u16, 3u16), (0, 0), (5, 1)] {
        let mut s = server.tcp();
        s.write_all(&hello(14, min, max, b"")).unwrap();
        let f = read_frame(&mut s).expect("a Fatal frame");
        assert_eq!((f.id, f.opcode, f.status), (14, 0x01, 2), "{f:?}");
        assert_eq!(
            f.error_text(),
            format!("ERR unsupported protocol version range {min}..={max} (server speaks 1)")
        );
        assert!(closed_by_peer(&mut s));
    }

    // A wider range that includes 1 is fine.
    let mut s = server.tcp();
    s.write_all(&hello(15, 0, 9, b"")).unwrap();
    let f = read_frame(&mut s).expect("HELLO reply");
    assert_eq!((f.id, f.status), (15, 0));
    assert_binary_ping(&mut s, 16);
    send_expect(&mut w, b"EXISTS x\r\n", b":0\r\n");
    check_after(&server, &mut w);
}

// ---------------------------------------------------------------------------------------------
// 11. Limits before authentication

fn assert_serving_auth(server: &Server, w: &mut TcpStream) {
    let mut s = server.tcp();
    send_expect(&mut s, b"AUTH secret\r\nPING\r\n", b"+OK\r\n+PONG\r\n");
    send_expect(w, b"PING\r\n", b"+PONG\r\n");
    assert_no_panic(server);
}

#[test]
fn preauth_limits_and_auth() {
    let server = Server::start(&["--password", "secret"]);
    let mut w = server.tcp();
    send_expect(&mut w, b"AUTH secret\r\nPING\r\n", b"+OK\r\n+PONG\r\n");

    // 11 arguments before AUTH.
    let mut s = server.tcp();
    let mut req = b"*11\r\n".to_vec();
    for _ in 0..11 {
        req.extend_from_slice(b"$1\r\nx\r\n");
    }
    expect_reply_then_close(
        &mut s,
        &req,
        b"-ERR Protocol error: unauthenticated multibulk length\r\n",
    );
    // Inline, the same limit has the multibulk text.
    let mut s = server.tcp();
    expect_reply_then_close(
        &mut s,
        b"a b c d e f g h i j k\r\n",
        b"-ERR Protocol error: invalid multibulk length\r\n",
    );
    // A bulk over 16 KiB before AUTH (only the header is needed to refuse).
    let mut s = server.tcp();
    expect_reply_then_close(
        &mut s,
        b"*2\r\n$3\r\nSET\r\n$16385\r\n",
        b"-ERR Protocol error: unauthenticated bulk length\r\n",
    );

    let mut s = server.tcp();
    send_expect(
        &mut s,
        b"GET a\r\n",
        b"-NOAUTH Authentication required.\r\n",
    );
    send_expect(
        &mut s,
        b"AUTH wrong\r\n",
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    send_expect(
        &mut s,
        b"GET a\r\n",
        b"-NOAUTH Authentication required.\r\n",
    );
    send_expect(&mut s, b"AUTH secret\r\n", b"+OK\r\n");
    send_expect(&mut s, b"GET a\r\n", b"$-1\r\n");
    // Once authenticated, the normal limits apply.
    let mut req = b"*11\r\n$3\r\nDEL\r\n".to_vec();
    for _ in 0..10 {
        req.extend_from_slice(b"$1\r\nx\r\n");
    }
    send_expect(&mut s, &req, b":0\r\n");

    // Binary: HELLO with a wrong password is an Error; the next frame must again be HELLO.
    let mut b = server.tcp();
    b.write_all(&hello(1, 1, 1, b"wrong")).unwrap();
    let f = read_frame(&mut b).expect("reply");
    assert_eq!((f.id, f.status), (1, 1));
    assert_eq!(
        f.error_text(),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    b.write_all(&hello(2, 1, 1, b"secret")).unwrap();
    let f = read_frame(&mut b).expect("reply");
    assert_eq!((f.id, f.status), (2, 0));
    assert_binary_ping(&mut b, 3);

    assert_serving_auth(&server, &mut w);
}

// ---------------------------------------------------------------------------------------------
// 12. Values over the limit

#[test]
fn values_over_the_limit() {
    let server = Server::start(&["--max-frame-bytes", "65536"]);
    let mut w = witness(&server);

    // One argument over the bulk limit: a protocol error, then close.
    let mut s = server.tcp();
    let mut req = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$70000\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'v', 70000));
    req.extend_from_slice(b"\r\n");
    expect_reply_then_close(
        &mut s,
        &req,
        b"-ERR Protocol error: invalid bulk length\r\n",
    );

    // Growing a value past the limit: a command error, the connection stays usable.
    let mut s = server.tcp();
    let big = vec![b'x'; 60000];
    let mut req = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", big.len()).into_bytes();
    req.extend_from_slice(&big);
    req.extend_from_slice(b"\r\n");
    send_expect(&mut s, &req, b"+OK\r\n");
    let tail = vec![b'y'; 6000];
    let mut req = format!("*3\r\n$6\r\nAPPEND\r\n$1\r\nk\r\n${}\r\n", tail.len()).into_bytes();
    req.extend_from_slice(&tail);
    req.extend_from_slice(b"\r\n");
    let too_big = b"-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n";
    send_expect(&mut s, &req, too_big);
    send_expect(&mut s, b"STRLEN k\r\n", b":60000\r\n");
    send_expect(&mut s, b"SETRANGE k 65536 z\r\n", too_big);
    send_expect(&mut s, b"SETRANGE k2 70000 z\r\n", too_big);
    send_expect(&mut s, b"EXISTS k2\r\n", b":0\r\n");
    // Right at the limit is fine.
    send_expect(&mut s, b"SETRANGE k 65535 z\r\n", b":65536\r\n");
    send_expect(&mut s, b"APPEND k z\r\n", too_big);
    send_expect(&mut s, b"PING\r\n", b"+PONG\r\n");

    // Binary PUT of a value whose frame is over the limit: Fatal (the frame is too large).
    let mut b = binary(&server, b"");
    let value = vec![b'v'; 70000];
    let put = encode(
        &Request::Put {
            key: b"bk",
            value: &value,
            context: b"",
            ttl_ms: 0,
        },
        5,
    );
    let _ = b.write_all(&put[..16]);
    let f = read_frame(&mut b).expect("a Fatal frame");
    assert_eq!((f.id, f.status), (0, 2));
    assert!(f.error_text().contains("exceeds the limit"));
    assert!(closed_by_peer(&mut b));
    check_after(&server, &mut w);
}

// ---------------------------------------------------------------------------------------------
// 13. Connection limit

#[test]
fn max_clients_refuses_then_recovers() {
    let server = Server::start(&["--max-clients", "5"]);
    let mut w = witness(&server);
    let mut others: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = server.tcp();
            send_expect(&mut s, b"PING\r\n", b"+PONG\r\n");
            s
        })
        .collect();

    let mut sixth = server.tcp();
    let got = read_n(&mut sixth, 36);
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR max number of clients reached\r\n"
    );
    assert!(closed_by_peer(&mut sixth));

    // Free a slot: a new connection gets in once the server has noticed the close.
    drop(others.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut attempts = 0;
    let mut admitted = loop {
        assert!(
            Instant::now() < deadline,
            "no connection admitted after a slot was freed ({attempts} attempts)"
        );
        attempts += 1;
        let mut s = server.tcp();
        s.write_all(b"PING\r\n").unwrap();
        let got = read_n(&mut s, 7);
        if got == b"+PONG\r\n" {
            break s;
        }
        assert!(
            got.starts_with(b"-ERR max numb"),
            "unexpected reply {:?}",
            String::from_utf8_lossy(&got)
        );
    };
    send_expect(&mut admitted, b"PING\r\n", b"+PONG\r\n");
    // The limit is still enforced.
    let mut extra = server.tcp();
    let got = read_n(&mut extra, 36);
    assert_eq!(&got[..], b"-ERR max number of clients reached\r\n");

    drop(admitted);
    drop(others);
    drop(extra);
    // assert_serving needs a free slot: wait until one is.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "slots never freed");
        let mut s = server.tcp();
        s.write_all(b"PING\r\n").unwrap();
        if read_n(&mut s, 7) == b"+PONG\r\n" {
            break;
        }
    }
    check_after(&server, &mut w);
}

// ---------------------------------------------------------------------------------------------
// 14. Pipelines mixing valid and invalid commands

#[test]
fn pipelined_mixed_commands_keep_order() {
    // Several loops, so that some keys are owned by another loop than the connection's and
    // their replies have to be stitched back in order.
    let server = Server::start(&["--threads", "4", "--shards", "16"]);
    let mut w = witness(&server);
    let mut s = server.tcp();
    let mut send = Vec::new();
    let mut expect = Vec::new();
    for i in 0..200 {
        let v = format!("{i}");
        send.extend_from_slice(format!("SET key:{i} {v}\r\n").as_bytes());
        expect.extend_from_slice(b"+OK\r\n");
        send.extend_from_slice(b"GET\r\n");
        expect.extend_from_slice(b"-ERR wrong number of arguments for 'get' command\r\n");
        send.extend_from_slice(
            format!("*2\r\n$3\r\nGET\r\n${}\r\nkey:{i}\r\n", 4 + v.len()).as_bytes(),
        );
        expect.extend_from_slice(format!("${}\r\n{v}\r\n", v.len()).as_bytes());
        send.extend_from_slice(format!("nosuch key:{i}\r\n").as_bytes());
        expect.extend_from_slice(
            format!("-ERR unknown command 'nosuch', with args beginning with: 'key:{i}' \r\n")
                .as_bytes(),
        );
        send.extend_from_slice(format!("SET str:{i} x\r\nINCR str:{i}\r\n").as_bytes());
        expect.extend_from_slice(b"+OK\r\n-ERR value is not an integer or out of range\r\n");
        send.extend_from_slice(format!("INCR key:{i}\r\n").as_bytes());
        expect.extend_from_slice(format!(":{}\r\n", i + 1).as_bytes());
        send.extend_from_slice(b"\r\n*0\r\n");
        if i % 20 == 0 {
            send.extend_from_slice(format!("MGET key:{i} str:{i} none\r\n").as_bytes());
            expect.extend_from_slice(
                format!(
                    "*3\r\n${}\r\n{}\r\n$1\r\nx\r\n$-1\r\n",
                    (i + 1).to_string().len(),
                    i + 1
                )
                .as_bytes(),
            );
        }
    }
    send.extend_from_slice(b"DBSIZE\r\n");
    expect.extend_from_slice(b":400\r\n");
    // A protocol error at the end: every earlier reply first, then the error, then close.
    send.extend_from_slice(b"*1\r\n$x\r\n");
    expect.extend_from_slice(b"-ERR Protocol error: invalid bulk length\r\n");
    s.write_all(&send).unwrap();
    let got = read_n(&mut s, expect.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expect)
    );
    assert!(closed_by_peer(&mut s));
    check_after(&server, &mut w);
}

#[test]
fn pipelined_binary_mixed_then_fatal() {
    let server = Server::start(&["--threads", "4", "--shards", "16"]);
    let mut w = witness(&server);
    for round in 0..5u64 {
        let mut s = binary(&server, b"");
        let mut send = Vec::new();
        let mut expect: HashMap<u64, (u8, &'static str)> = HashMap::new();
        let mut id = 100;
        for i in 0..60 {
            let key = format!("r{round}:k{i}");
            id += 1;
            send.extend_from_slice(&command(id, &[b"SET", key.as_bytes(), b"v"]));
            expect.insert(id, (0, "OK"));
            id += 1;
            send.extend_from_slice(&raw_frame(id, 0x33, b""));
            expect.insert(id, (1, "ERR unknown opcode 0x33"));
            id += 1;
            send.extend_from_slice(&command(id, &[b"INCR", key.as_bytes()]));
            expect.insert(id, (1, "ERR value is not an integer or out of range"));
            id += 1;
            send.extend_from_slice(&raw_frame(id, 0x02, b""));
            expect.insert(id, (0, "PONG"));
        }
        // A frame over the limit ends the stream: a Fatal frame after all the replies.
        send.extend_from_slice(&u32::MAX.to_be_bytes());
        send.extend_from_slice(&[0; 12]);
        s.write_all(&send).unwrap();
        let mut seen = HashMap::new();
        let fatal = loop {
            let f = read_frame(&mut s).expect("a reply frame or the Fatal frame");
            if f.status == 2 {
                break f;
            }
            let text = match &f.value {
                Value::Simple(t) | Value::Error(t) => String::from_utf8_lossy(t).into_owned(),
                other => panic!("unexpected value {other:?}"),
            };
            let want = expect
                .get(&f.id)
                .unwrap_or_else(|| panic!("reply for unknown id {}", f.id));
            assert_eq!((f.status, text.as_str()), (want.0, want.1), "id {}", f.id);
            assert!(
                seen.insert(f.id, ()).is_none(),
                "two replies for id {}",
                f.id
            );
        };
        assert_eq!(
            seen.len(),
            expect.len(),
            "replies missing before the Fatal frame"
        );
        assert_eq!((fatal.id, fatal.opcode), (0, 0));
        assert!(fatal.error_text().contains("exceeds the limit"));
        assert!(closed_by_peer(&mut s), "bytes after the Fatal frame");
    }
    check_after(&server, &mut w);
}
