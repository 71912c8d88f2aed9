//! Reply order and atomicity across event loops: pipelined RESP over raw sockets (one write
//! holding many commands whose keys live on different loops), concurrent MSET/MGET and RENAME,
//! and the same through the binary client.
//!
//! Every test runs a real server with `--threads 2 --shards 16`, so most pipelines mix local
//! commands, commands forwarded to the other loop, and multi-key barriers.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::resp::{assert_reply, encode, Conn, Reply};
use common::*;
use futures::future::join_all;
use ringkv_client::{Bytes, Client, ClientConfig, Value};

const FLAGS: &[&str] = &["--threads", "2", "--shards", "16"];
const THREADS: u64 = 2;
const SHARDS: u64 = 16;

/// The loop that owns `key` on a `--threads 2 --shards 16` server (a new data directory:
/// placement by the default partitions). Mirrors `LoopCtx::owner`; used only to pick keys that
/// span both loops, the assertions hold whatever the placement.
fn owner_loop(key: &[u8]) -> u64 {
    let placement = ringkv::store::Placement::partitioned(ringkv::config::DEFAULT_PARTITIONS)
        .expect("a power of two");
    placement.shard(ringkv_proto::key_hash(key), SHARDS as usize) as u64 % THREADS
}

// ----- requests and replies (over the shared RESP2 client) -----

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn bulk(s: impl AsRef<[u8]>) -> Reply {
    Reply::Bulk(Some(s.as_ref().to_vec()))
}

fn nil() -> Reply {
    Reply::Bulk(None)
}

fn cmd(args: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&mut out, args);
    out
}

/// Sends `bytes` in one `write_all` from another thread (so that a pipeline larger than the
/// socket buffers can't deadlock against unread replies) and returns the reading side.
fn pipeline(server: &Server, bytes: Vec<u8>) -> (Conn, thread::JoinHandle<()>) {
    let s = server.tcp();
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || w.write_all(&bytes).expect("pipelined write"));
    (Conn::from_stream(s), writer)
}

// ----- tests -----

#[test]
fn pipelined_set_get_mget_del_exists_over_500_keys() {
    pipelined_500_keys(&Server::start(FLAGS));
}

/// The same with connections dealt to the loops by loop 0 instead of the kernel.
#[test]
fn pipelined_500_keys_with_accept_handoff() {
    let mut flags = FLAGS.to_vec();
    flags.extend(["--accept", "handoff"]);
    let server = Server::start(&flags);
    for _ in 0..2 {
        // Two connections in turn: with round-robin hand-off they land on different loops.
        pipelined_500_keys(&server);
    }
}

fn pipelined_500_keys(server: &Server) {
    const N: usize = 500;
    let key = |i: usize| format!("k{i}");
    let val = |i: usize| format!("v{i}");
    let loops: std::collections::HashSet<u64> =
        (0..N).map(|i| owner_loop(key(i).as_bytes())).collect();
    assert_eq!(loops.len(), 2, "the keys should span both loops");

    let mut req = cmd(&["FLUSHDB"]);
    let mut expected = vec![ok()];
    for i in 0..N {
        req.extend(cmd(&["SET", &key(i), &val(i)]));
        expected.push(ok());
        req.extend(cmd(&["GET", &key(i)]));
        expected.push(bulk(val(i)));
    }
    // MGET of every key plus a missing one: a multi-key barrier after forwarded SETs.
    let keys: Vec<String> = (0..N).map(key).collect();
    let mut mget: Vec<&str> = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    mget.push("missing");
    req.extend(cmd(&mget));
    let mut all: Vec<Reply> = (0..N).map(|i| bulk(val(i))).collect();
    all.push(nil());
    expected.push(Reply::Array(Some(all)));
    // DEL the even keys in one command.
    let mut del: Vec<&str> = vec!["DEL"];
    del.extend(keys.iter().step_by(2).map(String::as_str));
    req.extend(cmd(&del));
    expected.push(Reply::Int((N / 2) as i64));
    // Single-key commands after the barrier: each sees the DEL.
    for i in 0..N {
        req.extend(cmd(&["GET", &key(i)]));
        expected.push(if i % 2 == 0 { nil() } else { bulk(val(i)) });
        req.extend(cmd(&["EXISTS", &key(i)]));
        expected.push(Reply::Int((i % 2) as i64));
    }
    // EXISTS of all (each key once, one twice).
    let mut exists: Vec<&str> = vec!["EXISTS"];
    exists.extend(keys.iter().map(String::as_str));
    exists.push(&keys[1]);
    req.extend(cmd(&exists));
    expected.push(Reply::Int((N / 2 + 1) as i64));
    // Writes after the multi-key commands, then the keyspace size.
    for i in (0..N).step_by(2) {
        req.extend(cmd(&["SET", &key(i), "again"]));
        expected.push(ok());
    }
    req.extend(cmd(&["DBSIZE"]));
    expected.push(Reply::Int(N as i64));
    req.extend(cmd(&["GET", &key(0)]));
    expected.push(bulk("again"));

    let (mut r, writer) = pipeline(server, req);
    r.expect_all(&expected, "500-key pipeline");
    writer.join().unwrap();
    // Nothing more than expected.
    assert_eq!(r.call_str(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn same_key_incr_many_times_in_one_pipeline() {
    const N: usize = 1000;
    let server = Server::start(FLAGS);
    // One counter on each loop, interleaved, so that one of them is forwarded whichever loop
    // the connection landed on.
    let c = "c";
    let d = (0..)
        .map(|i| format!("d{i}"))
        .find(|d| owner_loop(d.as_bytes()) != owner_loop(c.as_bytes()))
        .unwrap();

    let mut req = Vec::new();
    let mut expected = Vec::new();
    for i in 1..=N {
        req.extend(cmd(&["INCR", c]));
        expected.push(Reply::Int(i as i64));
        req.extend(cmd(&["INCR", &d]));
        expected.push(Reply::Int(i as i64));
    }
    req.extend(cmd(&["GET", c]));
    expected.push(bulk(N.to_string()));
    req.extend(cmd(&["GET", &d]));
    expected.push(bulk(N.to_string()));
    req.extend(cmd(&["MGET", c, &d]));
    expected.push(Reply::Array(Some(vec![
        bulk(N.to_string()),
        bulk(N.to_string()),
    ])));

    let (mut r, writer) = pipeline(&server, req);
    r.expect_all(&expected, "INCR pipeline");
    writer.join().unwrap();
}

#[test]
fn mset_is_atomic_against_concurrent_mget() {
    const WRITERS: usize = 4;
    const READERS: usize = 2;
    const WRITES: usize = 2000;
    const MAX_READS: u64 = 200_000;
    let server = Server::start(FLAGS);

    // Pairs whose two keys live on different loops, so MSET and MGET span loops.
    let pairs: Vec<(String, String)> = (0..)
        .map(|j| (format!("a{j}"), format!("b{j}")))
        .filter(|(a, b)| owner_loop(a.as_bytes()) != owner_loop(b.as_bytes()))
        .take(8)
        .collect();
    let pairs = Arc::new(pairs);
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(60);

    let writers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let pairs = pairs.clone();
            let mut r = Conn::from_stream(server.tcp());
            thread::spawn(move || {
                for n in 0..WRITES {
                    let (a, b) = &pairs[n % pairs.len()];
                    let v = format!("w{t}-{n}");
                    assert_eq!(r.call_str(&["MSET", a, &v, b, &v]), ok());
                    assert!(Instant::now() < deadline, "writers too slow");
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (pairs, done, reads) = (pairs.clone(), done.clone(), reads.clone());
            let mut r = Conn::from_stream(server.tcp());
            thread::spawn(move || {
                let mut n = 0u64;
                while !done.load(Ordering::Acquire) && n < MAX_READS {
                    let (a, b) = &pairs[n as usize % pairs.len()];
                    match r.call_str(&["MGET", a, b]) {
                        Reply::Array(Some(v)) if v.len() == 2 => {
                            assert_eq!(v[0], v[1], "MGET {a} {b} saw a half-applied MSET")
                        }
                        other => panic!("MGET reply {other:?}"),
                    }
                    n += 1;
                }
                reads.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let mut failed = None;
    for w in writers {
        if let Err(e) = w.join() {
            failed = Some(e);
        }
    }
    done.store(true, Ordering::Release);
    for r in readers {
        if let Err(e) = r.join() {
            failed = Some(e);
        }
    }
    if let Some(e) = failed {
        std::panic::resume_unwind(e);
    }
    assert!(reads.load(Ordering::Relaxed) > 0, "the readers never ran");

    // Afterwards every pair holds one value in both keys, written by some writer.
    let mut r = Conn::from_stream(server.tcp());
    for (a, b) in pairs.iter() {
        match r.call_str(&["MGET", a, b]) {
            Reply::Array(Some(v)) => {
                assert_eq!(v[0], v[1]);
                assert!(matches!(&v[0], Reply::Bulk(Some(x)) if x.starts_with(b"w")));
            }
            other => panic!("MGET reply {other:?}"),
        }
    }
}

#[test]
fn rename_chain_across_shards() {
    const KEYS: usize = 100;
    const ROUNDS: usize = 5;
    let server = Server::start(FLAGS);
    let name = |i: usize| format!("r{i}");
    let names: Vec<String> = (0..=KEYS).map(name).collect();

    // One pipelined chain r0 -> r1 -> ... -> r100: each RENAME needs the previous one done.
    let mut r = Conn::from_stream(server.tcp());
    assert_eq!(r.call_str(&["SET", "r0", "payload"]), ok());
    let mut req = Vec::new();
    let mut expected = Vec::new();
    for i in 0..KEYS {
        req.extend(cmd(&["RENAME", &name(i), &name(i + 1)]));
        expected.push(ok());
        // A forwarded single-key read right after each RENAME sees it.
        req.extend(cmd(&["EXISTS", &name(i)]));
        expected.push(Reply::Int(0));
        req.extend(cmd(&["GET", &name(i + 1)]));
        expected.push(bulk("payload"));
    }
    req.extend(cmd(&["DBSIZE"]));
    expected.push(Reply::Int(1));
    let (mut p, writer) = pipeline(&server, req);
    p.expect_all(&expected, "pipelined RENAME chain");
    writer.join().unwrap();
    assert_eq!(r.call_str(&["GET", &name(KEYS)]), bulk("payload"));
    assert_eq!(
        r.call_str(&["RENAME", "r0", "r1"]),
        Reply::Error("ERR no such key".into())
    );

    // Sequential renames around the ring while readers check, atomically over all the
    // names, that the value is in exactly one place.
    assert_eq!(r.call_str(&["RENAME", &name(KEYS), "r0"]), ok());
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        let names = names.clone();
        let mut r = Conn::from_stream(server.tcp());
        thread::spawn(move || {
            let mut exists: Vec<&str> = vec!["EXISTS"];
            exists.extend(names.iter().map(String::as_str));
            let mut mget: Vec<&str> = vec!["MGET"];
            mget.extend(names.iter().map(String::as_str));
            let mut n = 0u64;
            while !done.load(Ordering::Acquire) && n < 100_000 {
                assert_eq!(r.call_str(&exists), Reply::Int(1), "EXISTS over all names");
                match r.call_str(&mget) {
                    Reply::Array(Some(v)) => {
                        let present: Vec<_> = v.iter().filter(|x| **x != nil()).collect();
                        assert_eq!(present, vec![&bulk("payload")], "MGET over all names");
                    }
                    other => panic!("MGET reply {other:?}"),
                }
                n += 1;
            }
            n
        })
    };
    let mut at = 0;
    for _ in 0..ROUNDS {
        for _ in 0..=KEYS {
            let next = (at + 1) % (KEYS + 1);
            assert_eq!(r.call_str(&["RENAME", &name(at), &name(next)]), ok());
            at = next;
        }
    }
    done.store(true, Ordering::Release);
    let reads = reader
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert!(reads > 0);
    assert_eq!(at, 0);
    assert_eq!(r.call_str(&["DBSIZE"]), Reply::Int(1));
    assert_eq!(r.call_str(&["GET", "r0"]), bulk("payload"));
}

#[test]
fn twenty_thousand_sets_in_one_write() {
    const N: usize = 20_000;
    let server = Server::start(FLAGS);
    let val = |i: usize| format!("{i:06}-{}", "v".repeat(60));

    let mut req = Vec::new();
    let mut expected = Vec::new();
    for i in 0..N {
        req.extend(cmd(&["SET", &format!("big:{i}"), &val(i)]));
        expected.push(ok());
    }
    for i in 0..N {
        req.extend(cmd(&["GET", &format!("big:{i}")]));
        expected.push(bulk(val(i)));
    }
    req.extend(cmd(&["DBSIZE"]));
    expected.push(Reply::Int(N as i64));
    let request_bytes = req.len();

    let (mut r, writer) = pipeline(&server, req);
    let mut reply_bytes = 0usize;
    for (i, want) in expected.iter().enumerate() {
        let got = r.recv();
        reply_bytes += match &got {
            Reply::Simple(s) => s.len() + 3,
            Reply::Bulk(Some(b)) => b.len() + 5 + b.len().to_string().len(),
            _ => 0,
        };
        assert_reply(&got, want, &format!("reply #{i} out of order or wrong"));
    }
    writer.join().unwrap();
    assert!(
        request_bytes > 1 << 20,
        "request only {request_bytes} bytes"
    );
    assert!(reply_bytes > 1 << 20, "replies only {reply_bytes} bytes");
}

// ----- binary protocol, through the client -----

type Op = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<Value>, ringkv_client::ClientError>>>,
>;

#[tokio::test(flavor = "current_thread")]
async fn binary_pipeline_keeps_request_order() {
    let server = Server::start(FLAGS);
    let client = Client::connect(server.addr, ClientConfig::default())
        .await
        .unwrap();

    // Issued together, without awaiting each: the client writes them in issue order and the
    // server must execute them in that order, whichever loop owns each key.
    let c = "bc";
    let d = (0..)
        .map(|i| format!("bd{i}"))
        .find(|d| owner_loop(d.as_bytes()) != owner_loop(c.as_bytes()))
        .unwrap();
    let incrs = (0..1000).map(|i| client.incr(if i % 2 == 0 { c } else { d.as_str() }));
    let got: Vec<i64> = join_all(incrs)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let want: Vec<i64> = (0..1000).map(|i| i / 2 + 1).collect();
    assert_eq!(got, want);

    // SET then GET of the same few keys, interleaved with a multi-key MGET barrier.
    let keys: Vec<String> = (0..7).map(|k| format!("o{k}")).collect();
    let mut ops = Vec::new();
    for i in 0..300usize {
        let k = keys[i % keys.len()].clone();
        let cl = client.clone();
        ops.push(Box::pin(
            async move { cl.command(&["SET", &k, &i.to_string()]).await.map(|_| None) },
        ) as Op);
        let k = keys[i % keys.len()].clone();
        let cl = client.clone();
        ops.push(Box::pin(
            async move { cl.command(&["GET", &k]).await.map(Some) },
        ));
        if i % 50 == 49 {
            let cl = client.clone();
            let keys = keys.clone();
            ops.push(Box::pin(async move {
                cl.mget(&keys).await.map(|v| {
                    Some(Value::Array(
                        v.into_iter()
                            .map(|x| x.map_or(Value::Nil, Value::Bulk))
                            .collect(),
                    ))
                })
            }));
        }
    }
    let results = join_all(ops).await;
    let mut last: Vec<Option<usize>> = vec![None; keys.len()];
    let mut it = results.into_iter();
    for i in 0..300usize {
        let k = i % keys.len();
        assert_eq!(it.next().unwrap().unwrap(), None, "SET #{i}");
        last[k] = Some(i);
        let got = it.next().unwrap().unwrap().unwrap();
        let got = match got {
            Value::Versioned { values, .. } => values[0].clone(),
            Value::Bulk(b) => b,
            other => panic!("GET reply {other:?}"),
        };
        assert_eq!(got, Bytes::from(i.to_string()), "GET after SET #{i}");
        if i % 50 == 49 {
            let want = Value::Array(
                last.iter()
                    .map(|l| l.map_or(Value::Nil, |n| Value::Bulk(Bytes::from(n.to_string()))))
                    .collect(),
            );
            assert_eq!(it.next().unwrap().unwrap(), Some(want), "MGET after #{i}");
        }
    }
    assert!(it.next().is_none());
}

// ----- binary protocol, raw frames -----

/// Encodes one binary request frame.
fn frame(id: u64, req: &ringkv_proto::Request<'_>) -> Vec<u8> {
    let mut b = bytes::BytesMut::new();
    req.encode(id, &mut b);
    b.to_vec()
}

/// Reads reply frames until the peer closes; returns (request id, status, payload) of each.
fn read_frames_until_close(s: &mut TcpStream) -> Vec<(u64, u8, Vec<u8>)> {
    let mut all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 65536];
    loop {
        assert!(
            Instant::now() < deadline,
            "server did not close the connection"
        );
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    let mut frames = Vec::new();
    let mut rest = &all[..];
    while rest.len() >= 16 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        assert!(rest.len() >= 4 + len, "truncated reply frame");
        let id = u64::from_be_bytes(rest[4..12].try_into().unwrap());
        frames.push((id, rest[14], rest[16..4 + len].to_vec()));
        rest = &rest[4 + len..];
    }
    assert!(rest.is_empty(), "trailing bytes after the last frame");
    frames
}

/// Opens a binary connection and completes HELLO.
fn binary_conn(server: &Server) -> TcpStream {
    let mut s = server.tcp();
    let hello = ringkv_proto::Request::Hello {
        min_version: 1,
        max_version: 1,
        password: b"",
        client_name: b"",
    };
    s.write_all(&frame(1, &hello)).unwrap();
    // The HELLO reply: one whole frame (read_n may return more than asked for).
    let mut hello_reply = read_n(&mut s, 4);
    assert!(hello_reply.len() >= 4, "no HELLO reply");
    let len = u32::from_be_bytes(hello_reply[..4].try_into().unwrap()) as usize;
    while hello_reply.len() < 4 + len {
        let more = read_n(&mut s, 4 + len - hello_reply.len());
        assert!(!more.is_empty(), "HELLO reply truncated");
        hello_reply.extend(more);
    }
    assert_eq!(hello_reply.len(), 4 + len);
    assert_eq!(hello_reply[14], 0, "HELLO refused");
    s
}

/// Requests whose replies sit in different places when a fatal frame is written: some
/// forwarded to the other loop, some run locally after a forwarded one. The fatal frame must
/// come once, after each of them has been answered exactly once (binary replies may come in
/// any order: a local reply need not wait for a forwarded one before it).
#[test]
fn binary_fatal_frame_after_forwarded_requests_keeps_each_reply_once() {
    use ringkv_proto::Request;
    let server = Server::start(FLAGS);
    let a = "fa";
    let b = (0..)
        .map(|i| format!("fb{i}"))
        .find(|k| owner_loop(k.as_bytes()) != owner_loop(a.as_bytes()))
        .unwrap();
    let bad_hello = frame(
        99,
        &Request::Hello {
            min_version: 7,
            max_version: 9,
            password: b"",
            client_name: b"",
        },
    );
    // Two ways to end the stream: a length field shorter than the header (fatal with id 0),
    // and a HELLO with an unsupported version (fatal echoing its id).
    let endings: [(&str, Vec<u8>, u64); 2] = [
        ("short frame", vec![0, 0, 0, 5, 0, 0, 0, 0, 0], 0),
        ("bad HELLO version", bad_hello, 99),
    ];
    for (what, ending, fatal_id) in endings {
        let mut s = binary_conn(&server);
        let mut req = Vec::new();
        for id in 2..10u64 {
            let key = if id % 2 == 0 { a } else { b.as_str() };
            req.extend(frame(
                id,
                &Request::Get {
                    key: key.as_bytes(),
                },
            ));
        }
        req.extend(ending);
        s.write_all(&req).unwrap();
        let frames = read_frames_until_close(&mut s);
        let mut ids: Vec<u64> = frames.iter().map(|f| f.0).collect();
        assert_eq!(
            ids.pop(),
            Some(fatal_id),
            "{what}: the fatal frame comes last"
        );
        ids.sort_unstable();
        assert_eq!(
            ids,
            vec![2, 3, 4, 5, 6, 7, 8, 9],
            "{what}: each request answered once before the fatal frame"
        );
        assert_eq!(frames.last().unwrap().1, 2, "{what}: last frame is Fatal");
    }
    assert_serving(&server);
}
