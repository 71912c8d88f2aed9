//! Hostile clients against the real server (issue "Hardening", item 2). Each case checks,
//! *while the attack runs*, that a well-behaved client on another connection keeps getting
//! answers, and that the server's resident memory stays under a bound the case asserts.
//!
//! Bounds are generous against the real numbers (a few MiB) but far below what the attack
//! would cost if the limit it tests were missing (hundreds of MiB to GiB).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::resp::{Conn, Reply};
use common::*;

const MIB: u64 = 1024 * 1024;

/// Resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS line");
    kb * 1024
}

/// A client that connected before the attack and must be served throughout it.
struct Witness {
    conn: Conn,
    pid: u32,
    base_rss: u64,
    max_rss: u64,
    pings: u64,
}

impl Witness {
    fn new(server: &Server) -> Witness {
        let mut conn = Conn::connect(server.addr);
        assert_eq!(conn.call_str(&["PING"]), Reply::Simple("PONG".into()));
        let base_rss = rss_bytes(server.pid());
        Witness {
            conn,
            pid: server.pid(),
            base_rss,
            max_rss: base_rss,
            pings: 0,
        }
    }

    /// One PING, answered within the connection's timeout, and one memory sample.
    fn check(&mut self) {
        let t = Instant::now();
        let r = self.conn.call_str(&["PING"]);
        assert_eq!(r, Reply::Simple("PONG".into()), "witness not served");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "witness waited {:?} for PONG",
            t.elapsed()
        );
        self.pings += 1;
        self.max_rss = self.max_rss.max(rss_bytes(self.pid));
    }

    /// Asserts the RSS never grew by more than `bound` bytes over the start.
    fn assert_rss_within(&self, bound: u64, what: &str) {
        let grew = self.max_rss.saturating_sub(self.base_rss);
        assert!(
            grew <= bound,
            "{what}: RSS grew by {} MiB (from {} MiB), bound {} MiB",
            grew / MIB,
            self.base_rss / MIB,
            bound / MIB
        );
        eprintln!(
            "{what}: RSS grew by {:.1} MiB (bound {} MiB), witness served {} times",
            grew as f64 / MIB as f64,
            bound / MIB,
            self.pings
        );
    }
}

/// Polls `done` with the witness checked between polls, until it holds or `limit` passes.
fn until(w: &mut Witness, limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        w.check();
        if done() {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
    }
}

/// Whether the server closed `s` (EOF or reset); doesn't block when nothing arrived.
fn is_closed(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 65536];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    s.set_nonblocking(false).unwrap();
    closed
}

fn info_field(conn: &mut Conn, section: &str, field: &str) -> String {
    let Reply::Bulk(Some(text)) = conn.call_str(&["INFO", section]) else {
        panic!("INFO {section} is not a bulk");
    };
    let text = String::from_utf8(text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("INFO {section} has no {field}:\n{text}"))
        .trim()
        .to_string()
}

#[test]
fn slowloris_requests_are_cut_off() {
    let server = Server::start(&["--request-read-timeout-ms", "1000", "--fsync", "off"]);
    let mut w = Witness::new(&server);
    let cmd = b"*3\r\n$3\r\nSET\r\n$4\r\nslow\r\n$5\r\nvalue\r\n";
    let mut attackers: Vec<TcpStream> = (0..50).map(|_| server.tcp()).collect();
    let mut sent = 0;
    let started = Instant::now();
    // One byte per attacker per round, paced by the witness's own round trips; never the
    // whole command.
    until(
        &mut w,
        Duration::from_secs(20),
        "slowloris connections closed",
        || {
            if sent < cmd.len() - 1 {
                for a in attackers.iter_mut() {
                    let _ = a.write_all(&cmd[sent..sent + 1]);
                }
                sent += 1;
            }
            attackers.iter_mut().all(is_closed)
        },
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the deadline: {:?}",
        started.elapsed()
    );
    w.assert_rss_within(32 * MIB, "slowloris");
    assert_eq!(w.conn.call_str(&["GET", "slow"]), Reply::Bulk(None));
}

#[test]
fn a_complete_slow_pipeline_is_not_cut_off() {
    // The deadline is per request: a client that keeps completing requests is never closed,
    // however long it stays.
    let server = Server::start(&["--request-read-timeout-ms", "300", "--fsync", "off"]);
    let mut w = Witness::new(&server);
    let mut c = Conn::connect(server.addr);
    let started = Instant::now();
    let mut n = 0;
    until(&mut w, Duration::from_secs(20), "1 s of requests", || {
        n += 1;
        assert_eq!(c.call_str(&["INCR", "n"]), Reply::Int(n));
        started.elapsed() > Duration::from_secs(1)
    });
}

#[test]
fn idle_connections_are_closed_by_timeout() {
    let server = Server::start(&["--timeout", "1", "--fsync", "off"]);
    let mut w = Witness::new(&server);
    let mut idle: Vec<TcpStream> = (0..100).map(|_| server.tcp()).collect();
    // Half of them did something once, then went quiet.
    for s in idle.iter_mut().step_by(2) {
        s.write_all(b"PING\r\n").unwrap();
        assert_eq!(read_n(s, 7), b"+PONG\r\n");
    }
    let started = Instant::now();
    until(
        &mut w,
        Duration::from_secs(20),
        "idle connections closed",
        || idle.iter_mut().all(is_closed),
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    w.assert_rss_within(32 * MIB, "idle connections");
    // The witness stayed busy, so it was never idle.
    assert_eq!(info_field(&mut w.conn, "clients", "connected_clients"), "1");
    let bulk = |s: &str| Reply::Bulk(Some(s.as_bytes().to_vec()));
    assert_eq!(
        w.conn.call_str(&["CONFIG", "GET", "timeout"]),
        Reply::Array(Some(vec![bulk("timeout"), bulk("1")]))
    );
    assert_eq!(
        w.conn
            .call_str(&["CONFIG", "GET", "client-output-buffer-limit"]),
        Reply::Array(Some(vec![
            bulk("client-output-buffer-limit"),
            bulk("normal 268435456 0 0")
        ]))
    );
}

/// Keys whose shard (of 2) is `shard`, as the server places them (a new data directory:
/// placement by the default partitions).
fn keys_of_shard(shard: u64, n: usize) -> Vec<String> {
    let placement = ringkv::store::Placement::partitioned(ringkv::config::DEFAULT_PARTITIONS)
        .expect("a power of two");
    (0..)
        .map(|i| format!("big{i}"))
        .filter(|k| placement.shard(ringkv_proto::key_hash(k.as_bytes()), 2) as u64 == shard)
        .take(n)
        .collect()
}

/// Pipelines GETs of `keys` on `s` from a thread, never reading a reply.
fn flood_gets(
    s: &TcpStream,
    keys: &[String],
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let mut pipeline = Vec::new();
    for i in 0..20_000 {
        common::resp::encode(&mut pipeline, &["GET", &keys[i % keys.len()]]);
    }
    let mut s = s.try_clone().unwrap();
    let stop = stop.clone();
    std::thread::spawn(move || {
        s.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut off = 0;
        while off < pipeline.len() && !stop.load(Ordering::Relaxed) {
            match s.write(&pipeline[off..(off + 65536).min(pipeline.len())]) {
                Ok(0) => break,
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(_) => break,
            }
        }
    })
}

#[test]
fn a_client_that_never_reads_is_bounded_and_disconnected() {
    // With --accept handoff, loop 0 deals connections out in turn: the witness goes to loop
    // 1, the first attacker to loop 0 and the second to loop 1. Both ask for keys of shard
    // 1 (loop 1's): the first attacker's replies are all computed by the other loop
    // (forwarded), the second's by its own loop.
    let server = Server::start(&[
        "--threads",
        "2",
        "--accept",
        "handoff",
        "--max-output-buffer-bytes",
        "4194304",
        "--timeout",
        "2",
        "--fsync",
        "off",
    ]);
    let mut w = Witness::new(&server);
    let keys = keys_of_shard(1, 8);
    let big = vec![b'v'; MIB as usize];
    for k in &keys {
        assert_eq!(
            w.conn.call(&[b"SET", k.as_bytes(), &big]),
            Reply::Simple("OK".into())
        );
    }
    w.base_rss = rss_bytes(w.pid);
    w.max_rss = w.base_rss;
    let mut remote = server.tcp();
    let mut local = server.tcp();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = [
        flood_gets(&remote, &keys, &stop),
        flood_gets(&local, &keys, &stop),
    ];
    until(
        &mut w,
        Duration::from_secs(30),
        "the forwarded-replies client closed",
        || is_closed(&mut remote),
    );
    // The local one is never read (reading it would make it active): the server's client
    // count (the witness and this probe) says when --timeout closed it.
    let mut probe = Conn::connect(server.addr);
    until(
        &mut w,
        Duration::from_secs(30),
        "the local client closed by --timeout",
        || info_field(&mut probe, "clients", "connected_clients") == "2",
    );
    assert!(is_closed(&mut local));
    stop.store(true, Ordering::Relaxed);
    for t in writers {
        t.join().unwrap();
    }
    // Without the limit, one read's worth of forwarded GETs (hundreds of MiB) would be
    // buffered; the local one holds one batch until --timeout closes it.
    w.assert_rss_within(64 * MIB, "never-reading clients");
    let n: u64 = info_field(
        &mut w.conn,
        "stats",
        "client_output_buffer_limit_disconnections",
    )
    .parse()
    .unwrap();
    assert_eq!(n, 1, "the forwarded-replies client passes the output limit");
}

#[test]
fn mget_amplification_is_refused() {
    let server = Server::start(&["--max-output-buffer-bytes", "4194304", "--fsync", "off"]);
    let mut w = Witness::new(&server);
    let big = vec![b'v'; MIB as usize];
    assert_eq!(
        w.conn.call(&[b"SET", b"big", &big]),
        Reply::Simple("OK".into())
    );
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(std::iter::repeat_n(&b"big"[..], 1000));
    match w.conn.call(&args) {
        Reply::Error(e) => assert!(e.contains("output buffer limit"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
    let four = w.conn.call(&[b"MGET", b"big", b"big", b"big"]);
    assert!(matches!(four, Reply::Array(Some(ref a)) if a.len() == 3));
    w.check();
    w.assert_rss_within(64 * MIB, "MGET amplification");
}

#[test]
fn huge_multibulk_in_small_writes() {
    let server = Server::start(&["--fsync", "off"]);
    let mut w = Witness::new(&server);
    let pairs = 200_000;
    let mut req = format!("*{}\r\n$4\r\nMSET\r\n", 1 + 2 * pairs).into_bytes();
    for i in 0..pairs {
        let k = format!("k{i}");
        req.extend_from_slice(format!("${}\r\n{k}\r\n$1\r\nv\r\n", k.len()).as_bytes());
    }
    let mut c = Conn::connect(server.addr);
    let mut chunks = req.chunks(4096);
    until(&mut w, Duration::from_secs(60), "MSET sent", || {
        // A few chunks per witness round trip.
        for _ in 0..16 {
            match chunks.next() {
                Some(ch) => c.stream().write_all(ch).unwrap(),
                None => return true,
            }
        }
        false
    });
    assert_eq!(c.recv(), Reply::Simple("OK".into()));
    assert_eq!(w.conn.call_str(&["DBSIZE"]), Reply::Int(pairs as i64));
    // More arguments than the 1,048,576 of earlier releases: the limit is Redis's.
    let n = 1_200_000;
    let mut exists = format!("*{}\r\n$6\r\nEXISTS\r\n", n + 1).into_bytes();
    exists.extend_from_slice(&b"$1\r\nx\r\n".repeat(n));
    c.stream().write_all(&exists).unwrap();
    assert_eq!(c.recv(), Reply::Int(0));
    // The requests are ~3 and ~8 MiB; their argument lists and keys a few more.
    w.check();
    w.assert_rss_within(160 * MIB, "huge multibulk");
}

#[test]
fn query_buffer_limit_refuses_oversized_requests_at_once() {
    let server = Server::start(&["--max-query-buffer-bytes", "1048576"]);
    let mut w = Witness::new(&server);
    // 1,000,000 arguments need at least 5 MB: refused from the header alone.
    let mut s = server.tcp();
    s.write_all(b"*1000000\r\n$3\r\nSET\r\n").unwrap();
    let reply = String::from_utf8(read_n(&mut s, 200)).unwrap();
    assert!(
        reply.starts_with("-ERR Protocol error: this request needs at least"),
        "{reply}"
    );
    assert!(reply.contains("--max-query-buffer-bytes"), "{reply}");
    assert!(closed_by_peer(&mut s));
    // A bulk that would pass the limit, announced by its length, is refused too.
    let mut s = server.tcp();
    s.write_all(b"*2\r\n$3\r\nGET\r\n$2000000\r\nab").unwrap();
    let reply = String::from_utf8(read_n(&mut s, 200)).unwrap();
    assert!(reply.contains("query buffer limit"), "{reply}");
    w.check();
    assert_eq!(
        info_field(
            &mut w.conn,
            "stats",
            "client_query_buffer_limit_disconnections"
        ),
        "2"
    );
    w.assert_rss_within(32 * MIB, "query buffer limit");
}

#[test]
fn ten_thousand_connections_opened_and_dropped() {
    let server = Server::start(&["--fsync", "off"]);
    let mut w = Witness::new(&server);
    let mut opened = 0;
    until(
        &mut w,
        Duration::from_secs(120),
        "10,000 connections",
        || {
            // 500 at a time, some of them sending half a command before they go.
            let batch: Vec<TcpStream> = (0..500)
                .map(|i| {
                    let mut s = TcpStream::connect(server.addr).expect("connect");
                    if i % 3 == 0 {
                        let _ = s.write_all(b"*2\r\n$3\r\nGET\r\n$1");
                    }
                    s
                })
                .collect();
            opened += batch.len();
            drop(batch);
            opened >= 10_000
        },
    );
    let mut probe = Conn::connect(server.addr);
    until(
        &mut w,
        Duration::from_secs(30),
        "connections released",
        || info_field(&mut probe, "clients", "connected_clients") == "2",
    );
    w.assert_rss_within(64 * MIB, "10,000 connections");
}

#[test]
fn max_clients_refusals_keep_existing_clients_served() {
    let server = Server::start(&["--max-clients", "20", "--fsync", "off"]);
    let mut w = Witness::new(&server);
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        let mut s = server.tcp();
        s.write_all(b"PING\r\n").unwrap();
        let r = read_n(&mut s, 7);
        if r == b"+PONG\r\n" {
            held.push(s);
        } else {
            assert_eq!(
                String::from_utf8_lossy(&r),
                "-ERR max number of clients reached\r\n"[..r.len()]
            );
            refused += 1;
        }
        w.check();
    }
    assert_eq!(held.len(), 19, "the witness holds the 20th slot");
    assert_eq!(refused, 181);
    w.assert_rss_within(32 * MIB, "max-clients refusals");
}

/// Reads one binary frame and returns it without its 4-byte length.
fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut rest = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut rest).unwrap();
    rest
}

/// A binary connection after a successful HELLO with this password and client name.
fn hello(server: &Server, password: &[u8], client_name: &[u8]) -> TcpStream {
    let mut s = server.tcp();
    let mut frame = bytes::BytesMut::new();
    ringkv_proto::Request::Hello {
        min_version: 1,
        max_version: 1,
        password,
        client_name,
    }
    .encode(1, &mut frame);
    s.write_all(&frame).unwrap();
    assert_eq!(read_frame(&mut s)[10], 0, "HELLO failed");
    s
}

#[test]
fn frames_and_bulks_claiming_4_gib() {
    let server = Server::start(&["--fsync", "off"]);
    let mut w = Witness::new(&server);
    for _ in 0..20 {
        let mut s = hello(&server, b"", b"");
        let mut hdr = Vec::new();
        hdr.extend_from_slice(&u32::MAX.to_be_bytes());
        hdr.extend_from_slice(&7u64.to_be_bytes());
        hdr.extend_from_slice(&[0x20, 0, 0, 0]);
        s.write_all(&hdr).unwrap();
        assert!(closed_by_peer(&mut s));
        let mut r = server.tcp();
        r.write_all(b"*2\r\n$3\r\nGET\r\n$4294967296\r\n").unwrap();
        let reply = read_n(&mut r, 100);
        assert_eq!(reply, b"-ERR Protocol error: invalid bulk length\r\n");
        w.check();
    }
    w.assert_rss_within(32 * MIB, "4 GiB claims");
}

#[test]
fn multibulk_count_2147483648_and_deep_nesting() {
    let server = Server::start(&["--fsync", "off"]);
    let mut w = Witness::new(&server);
    let mut s = server.tcp();
    s.write_all(b"*2147483648\r\n").unwrap();
    assert_eq!(
        read_n(&mut s, 100),
        b"-ERR Protocol error: invalid multibulk length\r\n"
    );
    // RESP requests don't nest: 100,000 levels are refused at the second one.
    let mut s = server.tcp();
    let nested = b"*1\r\n".repeat(100_000);
    let _ = s.write_all(&nested);
    assert_eq!(
        read_n(&mut s, 100),
        b"-ERR Protocol error: expected '$', got '*'\r\n"
    );
    w.check();
    w.assert_rss_within(32 * MIB, "nesting");
}

#[test]
fn random_bytes_on_many_connections() {
    let server = Server::start(&["--fsync", "off"]);
    let mut w = Witness::new(&server);
    // xorshift: reproducible garbage.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for round in 0..200 {
        let mut s = server.tcp();
        let mut junk = vec![0u8; 64 * 1024];
        for b in junk.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        // Half binary (first byte 0), half RESP-looking.
        junk[0] = if round % 2 == 0 { 0 } else { b'*' };
        let _ = s.write_all(&junk);
        w.check();
    }
    assert_serving(&server);
    w.assert_rss_within(64 * MIB, "random bytes");
    assert!(!server.log_text().contains("panicked"));
}

#[test]
fn preauth_binary_frames_are_as_tight_as_resp() {
    let server = Server::start(&["--password", "secret", "--fsync", "off"]);
    let mut w = Conn::connect(server.addr);
    assert_eq!(w.call_str(&["AUTH", "secret"]), Reply::Simple("OK".into()));
    let mut witness = Witness {
        base_rss: rss_bytes(server.pid()),
        max_rss: 0,
        pid: server.pid(),
        pings: 0,
        conn: w,
    };
    witness.max_rss = witness.base_rss;
    for _ in 0..20 {
        // A HELLO announcing a 1 MiB password: refused from its header, before any payload.
        let mut s = server.tcp();
        let mut hdr = Vec::new();
        hdr.extend_from_slice(&(1u32 << 20).to_be_bytes());
        hdr.extend_from_slice(&1u64.to_be_bytes());
        hdr.extend_from_slice(&[0x01, 0, 0, 0]);
        s.write_all(&hdr).unwrap();
        let rest = read_frame(&mut s);
        let text = String::from_utf8_lossy(&rest);
        assert!(
            text.contains("before authentication"),
            "unexpected reply: {text}"
        );
        assert!(closed_by_peer(&mut s));
        witness.check();
    }
    // A HELLO of ordinary size still authenticates.
    hello(&server, b"secret", &[b'n'; 1000]);
    witness.assert_rss_within(32 * MIB, "pre-auth frames");
}
