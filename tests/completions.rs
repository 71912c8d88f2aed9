//! Replies that complete later (issue 9, items 5 and 6), on a real server whose fdatasyncs the
//! test holds (`--test-hold-syncs-file`, feature `test-hooks`): while the hold file exists,
//! every write under `--fsync always` stays un-acknowledged.
//!
//! - binary: GETs pipelined behind a held write are answered before it (any order, by id);
//! - RESP: the same GETs wait behind it (request order);
//! - a request past --request-timeout-ms gets a TIMEOUT error, and its late completion is
//!   dropped;
//! - no dirty reads: a reader never sees a value before its writer's acknowledgement;
//! - --max-inflight: past it the connection is not read.
//!
//! No fixed sleeps: every wait polls a condition until a deadline.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::resp::{encode, Conn, Reply};
use common::*;

const DEADLINE: Duration = Duration::from_secs(10);
const GETS: u64 = 1000;
const SHARDS: u64 = 2;

/// Where the server looks for the hold file (in a directory the test owns).
struct HoldPath {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

/// A hold on the server's fdatasyncs, released when dropped (so a failing test never leaves
/// the server stuck).
struct Hold(PathBuf);

impl Hold {
    fn on(h: &HoldPath) -> Hold {
        std::fs::write(&h.path, b"").expect("create the hold file");
        Hold(h.path.clone())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A server under `--fsync always` whose syncs the test can hold, plus `extra` flags.
fn held_server(extra: &[&str]) -> (Server, HoldPath) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hold");
    let hold = path.to_str().expect("utf-8 path").to_string();
    let mut flags = vec!["--fsync", "always", "--test-hold-syncs-file", &hold];
    flags.extend_from_slice(extra);
    let server = Server::try_start(&flags).unwrap_or_else(|log| panic!("start: {log}"));
    (server, HoldPath { _dir: dir, path })
}

/// The shard of `key` on a server with a new data directory (placement by the default
/// partitions), as `Store::shard_of`.
fn shard_of(key: &str) -> u64 {
    let placement = ringkv::store::Placement::partitioned(ringkv::config::DEFAULT_PARTITIONS)
        .expect("a power of two");
    placement.shard(ringkv_proto::key_hash(key.as_bytes()), SHARDS as usize) as u64
}

/// Two keys in different shards: the GETs must not read the shard the held write is in
/// (they would wait for it, by the no-dirty-reads rule).
fn two_shard_keys() -> (&'static str, &'static str) {
    let (w, r) = ("slow-write", "get-key");
    assert_ne!(shard_of(w), shard_of(r), "pick keys in different shards");
    (w, r)
}

fn frame(out: &mut BytesMut, id: u64, req: ringkv_proto::Request<'_>) {
    req.encode(id, out);
}

/// (request id, status, payload) of the next binary reply frame.
fn read_frame(s: &mut TcpStream) -> (u64, u8, Vec<u8>) {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("read a frame length");
    let mut rest = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut rest).expect("read a frame");
    let id = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
    (id, rest[10], rest[12..].to_vec())
}

fn binary_conn(server: &Server) -> TcpStream {
    let mut s = server.tcp();
    let mut f = BytesMut::new();
    frame(
        &mut f,
        1,
        ringkv_proto::Request::Hello {
            min_version: 1,
            max_version: 1,
            password: b"",
            client_name: b"",
        },
    );
    s.write_all(&f).expect("send HELLO");
    assert_eq!(read_frame(&mut s).1, 0, "HELLO failed");
    s
}

fn put(out: &mut BytesMut, id: u64, key: &str, value: &str) {
    let req = ringkv_proto::Request::Put {
        key: key.as_bytes(),
        value: value.as_bytes(),
        context: b"",
        ttl_ms: 0,
    };
    frame(out, id, req);
}

fn get(out: &mut BytesMut, id: u64, key: &str) {
    frame(
        out,
        id,
        ringkv_proto::Request::Get {
            key: key.as_bytes(),
        },
    );
}

/// `calls` of a command in INFO commandstats (0 if it never ran).
fn calls(c: &mut Conn, name: &str) -> u64 {
    let Reply::Bulk(Some(info)) = c.call(&[b"INFO", b"commandstats"]) else {
        panic!("INFO did not return a bulk string");
    };
    let info = String::from_utf8_lossy(&info).into_owned();
    let prefix = format!("cmdstat_{name}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("calls is a number"))
}

fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    common::wait_until(what, DEADLINE, cond);
}

/// Nothing to read on `s` right now (the server has sent no reply).
fn nothing_to_read(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut b = [0u8; 1];
    let r = s.read(&mut b);
    s.set_nonblocking(false).expect("blocking");
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[test]
fn binary_gets_pipelined_behind_a_held_write_are_answered_first() {
    let (server, hold) = held_server(&["--threads", "1", "--shards", "2"]);
    let (wkey, rkey) = two_shard_keys();
    let mut s = binary_conn(&server);
    let mut f = BytesMut::new();
    put(&mut f, 2, rkey, "v");
    s.write_all(&f).unwrap();
    assert_eq!(read_frame(&mut s).1, 0, "PUT failed");

    let held = Hold::on(&hold);
    let mut f = BytesMut::new();
    put(&mut f, 10, wkey, "slow");
    for i in 0..GETS {
        get(&mut f, 100 + i, rkey);
    }
    let t0 = Instant::now();
    s.write_all(&f).unwrap();
    // Every GET reply arrives while the PUT is still held, in any order.
    let mut seen = vec![false; GETS as usize];
    for _ in 0..GETS {
        let (id, status, _) = read_frame(&mut s);
        assert_ne!(id, 10, "the held PUT was acknowledged before its fdatasync");
        assert!((100..100 + GETS).contains(&id), "unexpected reply id {id}");
        assert_eq!(status, 0, "GET {id} failed");
        seen[(id - 100) as usize] = true;
    }
    assert!(seen.iter().all(|&x| x), "a GET reply is missing");
    println!(
        "{GETS} GETs behind a held write answered in {:?}",
        t0.elapsed()
    );
    drop(held);
    let (id, status, _) = read_frame(&mut s);
    assert_eq!(
        (id, status),
        (10, 0),
        "the PUT is acknowledged once released"
    );
}

#[test]
fn resp_replies_stay_in_request_order_behind_a_held_write() {
    let (server, hold) = held_server(&["--threads", "1", "--shards", "2"]);
    let (wkey, rkey) = two_shard_keys();
    let mut c = Conn::connect(server.addr);
    assert_eq!(c.call_str(&["SET", rkey, "v"]), Reply::Simple("OK".into()));
    let mut stats = Conn::connect(server.addr);
    let gets_before = calls(&mut stats, "get");

    let held = Hold::on(&hold);
    let mut p = Vec::new();
    encode(&mut p, &["SET", wkey, "slow"]);
    for _ in 0..GETS {
        encode(&mut p, &["GET", rkey]);
    }
    c.stream().write_all(&p).unwrap();
    // The GETs ran, but their replies wait behind the SET's.
    wait_until("the GETs to run", || {
        calls(&mut stats, "get") >= gets_before + GETS
    });
    assert!(
        nothing_to_read(c.stream()),
        "a reply left before the held SET's"
    );
    drop(held);
    assert_eq!(
        c.recv(),
        Reply::Simple("OK".into()),
        "the SET's reply first"
    );
    for i in 0..GETS {
        assert_eq!(c.recv(), Reply::Bulk(Some(b"v".to_vec())), "GET {i}");
    }
}

#[test]
fn a_write_held_past_its_deadline_gets_a_timeout_error_and_its_late_reply_is_dropped() {
    let (server, hold) = held_server(&[
        "--threads",
        "1",
        "--shards",
        "2",
        "--request-timeout-ms",
        "300",
    ]);
    let (wkey, rkey) = two_shard_keys();
    let mut s = binary_conn(&server);
    let mut c = Conn::connect(server.addr);
    let held = Hold::on(&hold);

    let mut f = BytesMut::new();
    put(&mut f, 10, wkey, "late");
    s.write_all(&f).unwrap();
    c.send(&[b"SET", wkey.as_bytes(), b"late2"]).unwrap();
    let t0 = Instant::now();
    let (id, status, payload) = read_frame(&mut s);
    assert_eq!((id, status), (10, 1), "an error reply for the held PUT");
    let text = String::from_utf8_lossy(&payload).into_owned();
    assert!(
        text.contains("TIMEOUT") && text.contains("300 ms") && text.contains("outcome is unknown"),
        "timeout error text: {text}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    match c.recv() {
        Reply::Error(e) => assert!(
            e.starts_with("TIMEOUT ") && e.contains("--request-timeout-ms"),
            "RESP timeout error: {e}"
        ),
        other => panic!("expected a TIMEOUT error, got {}", other.show()),
    }

    // A read of the held write's shard waits for it too (no dirty reads), and times out.
    let mut f = BytesMut::new();
    get(&mut f, 12, wkey);
    s.write_all(&f).unwrap();
    let (id, status, payload) = read_frame(&mut s);
    assert_eq!((id, status), (12, 1), "an error reply for the held GET");
    let text = String::from_utf8_lossy(&payload).into_owned();
    assert!(
        text.contains("TIMEOUT no reply within 300 ms (--request-timeout-ms)"),
        "read timeout error text: {text}"
    );

    // Released: the late completions are dropped, the connections stay usable.
    drop(held);
    let mut f = BytesMut::new();
    get(&mut f, 11, rkey);
    s.write_all(&f).unwrap();
    let (id, status, _) = read_frame(&mut s);
    assert_eq!(
        (id, status),
        (11, 0),
        "the next reply is the GET's, not the late PUT's"
    );
    assert_eq!(c.call_str(&["PING"]), Reply::Simple("PONG".into()));
    // INFO counts them.
    let Reply::Bulk(Some(info)) = c.call_str(&["INFO", "stats"]) else {
        panic!("INFO is not a bulk string")
    };
    let info = String::from_utf8_lossy(&info).into_owned();
    let n: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("request_timeouts:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request_timeouts in INFO stats:\n{info}"));
    assert_eq!(n, 3, "the held PUT, the RESP write and the GET timed out");
}

#[test]
fn a_reader_never_sees_a_value_before_its_writer_is_acknowledged() {
    // Two loops, connections dealt round-robin: one reader on the key's loop, one on the
    // other (its GET is forwarded), so both paths go through the reply gate.
    let (server, hold) = held_server(&["--threads", "2", "--shards", "2", "--accept", "handoff"]);
    let mut w = Conn::connect(server.addr);
    let mut readers = [Conn::connect(server.addr), Conn::connect(server.addr)];
    let mut stats = Conn::connect(server.addr);
    assert_eq!(w.call_str(&["SET", "k", "old"]), Reply::Simple("OK".into()));
    for r in &mut readers {
        assert_eq!(
            r.call_str(&["GET", "k"]),
            Reply::Bulk(Some(b"old".to_vec()))
        );
    }

    let held = Hold::on(&hold);
    let sets = calls(&mut stats, "set");
    w.send(&[b"SET", b"k", b"new"]).unwrap();
    wait_until("the SET to be applied", || calls(&mut stats, "set") > sets);
    let gets = calls(&mut stats, "get");
    for r in &mut readers {
        r.send(&[b"GET", b"k"]).unwrap();
    }
    wait_until("the GETs to run", || calls(&mut stats, "get") >= gets + 2);
    assert!(
        nothing_to_read(w.stream()),
        "the SET was acknowledged while held"
    );
    for (i, r) in readers.iter_mut().enumerate() {
        assert!(
            nothing_to_read(r.stream()),
            "reader {i} got a reply exposing an unacknowledged write"
        );
    }
    drop(held);
    assert_eq!(w.recv(), Reply::Simple("OK".into()));
    for r in &mut readers {
        assert_eq!(r.recv(), Reply::Bulk(Some(b"new".to_vec())));
    }
}

#[test]
fn past_max_inflight_the_connection_is_not_read() {
    const MAX: u64 = 8;
    const SETS: u64 = 50;
    let (server, hold) = held_server(&["--threads", "1", "--shards", "1", "--max-inflight", "8"]);
    let mut c = Conn::connect(server.addr);
    let mut stats = Conn::connect(server.addr);
    let held = Hold::on(&hold);
    let mut p = Vec::new();
    for i in 0..SETS {
        encode(&mut p, &["SET", &format!("k{i}"), "v"]);
    }
    c.stream().write_all(&p).unwrap();
    wait_until("the first SETs to run", || calls(&mut stats, "set") >= MAX);
    // Everything arrived in one read: without the bound all 50 would have run by now.
    assert_eq!(
        calls(&mut stats, "set"),
        MAX,
        "SETs ran past --max-inflight"
    );
    assert_eq!(
        calls(&mut stats, "set"),
        MAX,
        "SETs ran past --max-inflight"
    );
    drop(held);
    for i in 0..SETS {
        assert_eq!(c.recv(), Reply::Simple("OK".into()), "SET {i}");
    }
    assert_eq!(calls(&mut stats, "set"), SETS);
}
