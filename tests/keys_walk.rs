//! KEYS and SCAN can't freeze the node: glob patterns match in polynomial time (Redis
//! CVE-2022-36021), and a walk over a large keyspace yields to other clients between slices.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::resp::{Conn, Reply};
use common::*;

/// The pattern of Redis's regression test for CVE-2022-36021. Before the fix one loop spun on
/// it for 13 minutes (until killed) while holding its shard lock.
const CVE_PATTERN: &str = "a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";

/// A generous deadline for an answer that now takes microseconds and used to take minutes:
/// a correctness bound, not a speed claim.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn cve_2022_36021_pattern_answers_and_the_node_stays_up() {
    let server = Server::start(&["--threads", "2", "--fsync", "off"]);
    let mut c = Conn::connect(server.addr);
    let key = "a".repeat(40);
    assert_eq!(c.call_str(&["SET", &key, "1"]), Reply::Simple("OK".into()));
    // The matcher runs on a helper thread so that a regression fails the test at the
    // deadline instead of hanging it.
    let addr = server.addr;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut c = Conn::connect(addr);
        let keys = c.call_str(&["KEYS", CVE_PATTERN]);
        let scan = c.call_str(&["SCAN", "0", "MATCH", CVE_PATTERN, "COUNT", "1000"]);
        let _ = tx.send((keys, scan));
    });
    let (keys, scan) = rx
        .recv_timeout(ANSWER_DEADLINE)
        .expect("KEYS/SCAN with the CVE-2022-36021 pattern did not answer");
    assert_eq!(keys, Reply::Array(Some(vec![])));
    assert_eq!(
        scan,
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"0".to_vec())),
            Reply::Array(Some(vec![]))
        ]))
    );
    // A pattern of the same shape that does match still does.
    let matching = CVE_PATTERN.trim_end_matches('b');
    assert_eq!(
        c.call_str(&["KEYS", matching]),
        Reply::Array(Some(vec![Reply::Bulk(Some(key.into_bytes()))]))
    );
    assert_serving(&server);
}

/// Fills the node with `n` keys, 1,000 per MSET.
fn fill(c: &mut Conn, n: usize) {
    let mut pipeline = Vec::new();
    for chunk in 0..n / 1000 {
        let mut args = vec!["MSET".to_string()];
        for i in chunk * 1000..(chunk + 1) * 1000 {
            args.push(format!("key:{i}"));
            args.push("v".into());
        }
        common::resp::encode(&mut pipeline, &args);
    }
    c.stream().write_all_checked(&pipeline);
    for _ in 0..n / 1000 {
        assert_eq!(c.recv(), Reply::Simple("OK".into()));
    }
}

trait WriteAll {
    fn write_all_checked(&mut self, b: &[u8]);
}

impl WriteAll for std::net::TcpStream {
    fn write_all_checked(&mut self, b: &[u8]) {
        use std::io::Write;
        self.write_all(b).expect("write");
    }
}

/// With one event loop, a client's PING shares the loop with a KEYS over 1,000,000 keys: it
/// must be answered while the KEYS is still running, many times over, not after it.
#[test]
fn ping_is_served_while_keys_walks_a_million_keys() {
    let server = Server::start(&["--threads", "1", "--fsync", "off"]);
    let mut c = Conn::connect(server.addr);
    let n = 1_000_000;
    fill(&mut c, n);
    assert_eq!(c.call_str(&["DBSIZE"]), Reply::Int(n as i64));
    let mut ping = Conn::connect(server.addr);
    assert_eq!(ping.call_str(&["PING"]), Reply::Simple("PONG".into()));

    // A pattern that matches nothing but makes the matcher work on every key.
    let done = Arc::new(AtomicBool::new(false));
    let (sent_tx, sent_rx) = mpsc::channel();
    let walker = {
        let done = done.clone();
        let addr = server.addr;
        std::thread::spawn(move || {
            let mut k = Conn::connect(addr);
            k.send(&[b"KEYS", b"*a*b*c*d*e*f*"]).unwrap();
            let _ = sent_tx.send(());
            let r = k.recv();
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    sent_rx.recv_timeout(ANSWER_DEADLINE).expect("KEYS sent");
    let started = Instant::now();
    let mut during = 0;
    while !done.load(Ordering::SeqCst) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "KEYS never ended"
        );
        assert_eq!(ping.call_str(&["PING"]), Reply::Simple("PONG".into()));
        if !done.load(Ordering::SeqCst) {
            during += 1;
        }
    }
    let keys = walker.join().unwrap();
    assert_eq!(keys, Reply::Array(Some(vec![])));
    eprintln!(
        "{during} PINGs answered during a KEYS over {n} keys ({:?})",
        started.elapsed()
    );
    // Run to completion in one go, the KEYS would answer at most the one PING that got in
    // before it started.
    assert!(
        during >= 3,
        "only {during} PINGs answered while KEYS ran: the walk does not yield"
    );

    // KEYS * returns every key exactly once, although it was walked in slices.
    let Reply::Array(Some(all)) = c.call_str(&["KEYS", "*"]) else {
        panic!("KEYS * is not an array");
    };
    assert_eq!(all.len(), n);
    let mut seen: Vec<Vec<u8>> = all
        .into_iter()
        .map(|r| match r {
            Reply::Bulk(Some(k)) => k,
            other => panic!("{other:?}"),
        })
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), n, "KEYS * returned duplicates");
}

/// SCAN with a huge COUNT is sliced too, and a full iteration returns every key.
#[test]
fn scan_with_huge_count_is_complete() {
    let server = Server::start(&["--threads", "2", "--shards", "4", "--fsync", "off"]);
    let mut c = Conn::connect(server.addr);
    let n = 50_000;
    fill(&mut c, n);
    let mut cursor = "0".to_string();
    let mut seen = std::collections::HashSet::new();
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 1000, "SCAN does not end");
        let Reply::Array(Some(parts)) = c.call_str(&["SCAN", &cursor, "COUNT", "7777"]) else {
            panic!("SCAN reply");
        };
        let [Reply::Bulk(Some(next)), Reply::Array(Some(keys))] = &parts[..] else {
            panic!("SCAN reply shape: {parts:?}");
        };
        for k in keys {
            let Reply::Bulk(Some(k)) = k else { panic!() };
            seen.insert(k.clone());
        }
        cursor = String::from_utf8(next.clone()).unwrap();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), n);
    // COUNT 1,000,000 covers the whole keyspace in one call.
    let Reply::Array(Some(parts)) = c.call_str(&["SCAN", "0", "COUNT", "1000000"]) else {
        panic!("SCAN reply");
    };
    assert_eq!(parts[0], Reply::Bulk(Some(b"0".to_vec())));
    assert!(matches!(&parts[1], Reply::Array(Some(k)) if k.len() == n));
}

/// KEYS refuses, rather than builds, a reply larger than the client's output buffer limit.
#[test]
fn keys_reply_over_the_output_limit_is_an_error() {
    let server = Server::start(&["--max-output-buffer-bytes", "65536", "--fsync", "off"]);
    let mut c = Conn::connect(server.addr);
    fill(&mut c, 20_000);
    match c.call_str(&["KEYS", "*"]) {
        Reply::Error(e) => assert!(e.contains("--max-output-buffer-bytes"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(matches!(c.call_str(&["KEYS", "key:1999?"]), Reply::Array(Some(k)) if k.len() == 10));
}
