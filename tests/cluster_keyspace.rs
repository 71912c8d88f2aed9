//! Cluster-wide key space commands on real nodes (issue 11, item 3): SCAN walks every
//! partition once with a cursor that outlives a restart, KEYS and DBSIZE aggregate each key
//! once, RANDOMKEY picks an existing key, FLUSHALL deletes through the replicated write path
//! so a node that was down does not bring keys back.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::cluster::{Cluster, CONVERGE};
use common::resp::{Conn, Reply};
use common::*;

/// Keys per MSET when loading.
const LOAD_BATCH: usize = 1_000;

fn key(i: usize) -> String {
    format!("key:{i}")
}

/// MSETs in flight at once on one connection while loading (each is split into one write per
/// key, all in flight together: more would queue past the request timeout on a shared machine).
const LOAD_WINDOW: usize = 2;

/// Writes `key(0..n)` through `conn`, MSETs pipelined a few at a time.
fn load(conn: &mut Conn, n: usize) {
    load_range(conn, 0, n)
}

fn load_range(conn: &mut Conn, from: usize, to: usize) {
    let cmds: Vec<Vec<String>> = (from..to)
        .step_by(LOAD_BATCH)
        .map(|start| {
            let mut c = vec!["MSET".to_string()];
            for i in start..(start + LOAD_BATCH).min(to) {
                c.push(key(i));
                c.push(format!("v{i}"));
            }
            c
        })
        .collect();
    for (w, window) in cmds.chunks(LOAD_WINDOW).enumerate() {
        conn.send_pipeline(window).unwrap();
        for _ in window {
            assert_eq!(conn.recv(), Reply::Simple("OK".into()), "MSET window {w}");
        }
    }
}

/// Writes `key(0..n)` through every node of `c` at once (a third each).
fn load_cluster(c: &Cluster, n: usize) {
    let nodes = c.running();
    let per = n.div_ceil(nodes.len());
    std::thread::scope(|s| {
        for (j, &i) in nodes.iter().enumerate() {
            let mut conn = c.conn(i);
            s.spawn(move || load_range(&mut conn, j * per, ((j + 1) * per).min(n)));
        }
    });
}

/// One SCAN call: (next cursor, keys).
fn scan_once(conn: &mut Conn, cursor: &str, extra: &[&str]) -> (String, Vec<String>) {
    let mut args = vec!["SCAN", cursor];
    args.extend_from_slice(extra);
    match conn.call_str(&args) {
        Reply::Array(Some(v)) if v.len() == 2 => {
            let Reply::Bulk(Some(c)) = &v[0] else {
                panic!("SCAN cursor: {:?}", v[0])
            };
            let Reply::Array(Some(ks)) = &v[1] else {
                panic!("SCAN keys: {:?}", v[1])
            };
            let keys = ks
                .iter()
                .map(|k| match k {
                    Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
                    other => panic!("SCAN key {other:?}"),
                })
                .collect();
            (String::from_utf8_lossy(c).into_owned(), keys)
        }
        other => panic!("SCAN {cursor}: {other:?}"),
    }
}

/// A whole SCAN iteration: every key returned (with repeats), and how many calls it took.
fn scan_all(conn: &mut Conn, extra: &[&str]) -> (Vec<String>, usize) {
    let (mut cursor, mut keys, mut calls) = ("0".to_string(), Vec::new(), 0);
    loop {
        let (next, ks) = scan_once(conn, &cursor, extra);
        keys.extend(ks);
        calls += 1;
        assert!(calls < 1_000_000, "SCAN does not end");
        if next == "0" {
            return (keys, calls);
        }
        cursor = next;
    }
}

fn int(r: Reply, what: &str) -> i64 {
    match r {
        Reply::Int(n) => n,
        other => panic!("{what}: {other:?}"),
    }
}

fn assert_every_key(got: &[String], n: usize, what: &str) {
    let set: HashSet<&str> = got.iter().map(|s| s.as_str()).collect();
    let missing: Vec<String> = (0..n)
        .map(key)
        .filter(|k| !set.contains(k.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: {} of {n} keys missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(set.len(), n, "{what}: keys that were never written");
}

/// 100,000 keys on 3 nodes (N=3): a full SCAN through any node returns each at least once, also
/// while a node is down; KEYS and DBSIZE count each exactly once on the quiet cluster; MATCH
/// and TYPE filter as on a single node.
#[test]
fn scan_keys_and_dbsize_cover_every_key_also_with_a_node_down() {
    const N: usize = 100_000;
    // Loading is not what is tested: a generous deadline for the writes on a busy machine.
    let mut c = Cluster::start(3, &["--request-timeout-ms", "30000"]);
    c.wait_converged();
    load_cluster(&c, N);

    let used_memory = |i: usize| -> u64 {
        match c.conn(i).call_str(&["INFO", "memory"]) {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b)
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("used_memory in INFO memory"),
            other => panic!("INFO memory: {other:?}"),
        }
    };
    let before = used_memory(1);
    let (keys, calls) = scan_all(&mut c.conn(1), &["COUNT", "1000"]);
    // The hash order the walk built on node 1 (16 bytes a key) is counted in INFO memory.
    let after = used_memory(1);
    assert!(after >= before + 16 * N as u64, "{before} -> {after}");
    assert_every_key(&keys, N, "SCAN COUNT 1000 through node 1");
    assert!(
        calls >= N / 1000,
        "COUNT bounds a call's keys: {calls} calls"
    );
    assert_eq!(int(c.conn(2).call_str(&["DBSIZE"]), "DBSIZE"), N as i64);
    match c.conn(0).call_str(&["KEYS", "*"]) {
        Reply::Array(Some(ks)) => {
            assert_eq!(ks.len(), N, "KEYS * returns each key once");
            let ks: Vec<String> = ks
                .iter()
                .map(|k| match k {
                    Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
                    other => panic!("KEYS key {other:?}"),
                })
                .collect();
            assert_every_key(&ks, N, "KEYS *");
        }
        other => panic!("KEYS *: {other:?}"),
    }
    match c.conn(0).call_str(&["KEYS", "key:1234?"]) {
        Reply::Array(Some(ks)) => assert_eq!(ks.len(), 10, "KEYS key:1234?"),
        other => panic!("KEYS: {other:?}"),
    }
    let (matched, _) = scan_all(&mut c.conn(0), &["MATCH", "key:9999*", "COUNT", "5000"]);
    let set: HashSet<String> = matched.into_iter().collect();
    let want: HashSet<String> = (0..N)
        .map(key)
        .filter(|k| k.starts_with("key:9999"))
        .collect();
    assert_eq!(set, want, "SCAN MATCH");
    let (none, _) = scan_all(&mut c.conn(0), &["TYPE", "hash"]);
    assert!(none.is_empty(), "no key is a hash: {none:?}");
    // INFO keyspace: this node's own keys (N=3 on 3 nodes: all of them); INFO cluster: the
    // total the last DBSIZE on this node counted.
    assert_eq!(int(c.conn(0).call_str(&["DBSIZE"]), "DBSIZE"), N as i64);
    let info = match c.conn(0).call_str(&["INFO", "all"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO: {other:?}"),
    };
    assert!(
        info.contains(&format!("db0:keys={N},expires=0,avg_ttl=0\r\n")),
        "{info}"
    );
    assert!(info.contains(&format!("cluster_keys:{N}\r\n")), "{info}");

    c.kill(2);
    c.wait_converged();
    let (keys, _) = scan_all(&mut c.conn(0), &["COUNT", "2000"]);
    assert_every_key(&keys, N, "SCAN through node 0 with node 2 down");
    let (keys, _) = scan_all(&mut c.conn(1), &[]);
    assert_every_key(&keys, N, "SCAN (COUNT 10) through node 1 with node 2 down");
    assert_eq!(
        int(c.conn(1).call_str(&["DBSIZE"]), "DBSIZE, a node down"),
        N as i64
    );
}

/// A cursor handed out before a restart of the node scanned through goes on from where it
/// was after it, and on any other node: positions are key hashes, not slots.
#[test]
fn a_scan_cursor_stays_valid_across_a_restart() {
    const N: usize = 5_000;
    let mut c = Cluster::start(3, &["--fsync", "always"]);
    c.wait_converged();
    load(&mut c.conn(0), N);
    let mut seen = Vec::new();
    let mut cursor = "0".to_string();
    let mut conn = c.conn(1);
    while seen.len() < N / 2 {
        let (next, ks) = scan_once(&mut conn, &cursor, &["COUNT", "100"]);
        seen.extend(ks);
        assert_ne!(next, "0", "the walk is not over at half the keys");
        cursor = next;
    }
    drop(conn);
    c.kill(1);
    c.restart(1);
    c.wait_converged();
    // Continued through the restarted node, then through each node in turn: a cursor names
    // no node.
    let mut conns = [c.conn(1), c.conn(2), c.conn(0)];
    for call in 0.. {
        let conn = &mut conns[if call < 5 { 0 } else { call % 3 }];
        let (next, ks) = scan_once(conn, &cursor, &["COUNT", "100"]);
        seen.extend(ks);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert_every_key(&seen, N, "a SCAN continued after a restart");
    // Hash order: a key comes back at most once when nothing changes meanwhile.
    assert_eq!(seen.len(), N, "no key returned twice");
}

/// FLUSHALL while a node is down: the keys are gone everywhere, and the node, restarted,
/// gets the tombstones from the hints instead of bringing its keys back.
#[test]
fn flushall_with_a_node_down_does_not_resurrect_keys() {
    const N: usize = 2_000;
    let mut c = Cluster::start(3, &[]);
    c.wait_converged();
    load(&mut c.conn(0), N);
    c.kill(2);
    c.wait_converged();
    assert_eq!(
        c.conn(0).call_str(&["FLUSHALL", "ASYNC"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        int(c.conn(1).call_str(&["DBSIZE"]), "DBSIZE after FLUSHALL"),
        0
    );
    assert_eq!(c.conn(0).call_str(&["RANDOMKEY"]), Reply::Bulk(None));
    c.restart(2);
    c.wait_converged();
    // Node 2 reads its own copy first: 0 only once the hints' tombstones reached it.
    wait_until("node 2 to have no live key", CONVERGE, || {
        c.conn(2).call_str(&["DBSIZE"]) == Reply::Int(0)
    });
    assert_eq!(
        c.conn(2).call_str(&["KEYS", "*"]),
        Reply::Array(Some(vec![]))
    );
    for i in (0..N).step_by(97) {
        assert_eq!(
            c.local(2, key(i).as_bytes()),
            None,
            "node 2's own copy of {}",
            key(i)
        );
        assert_eq!(c.conn(2).call_str(&["GET", &key(i)]), Reply::Bulk(None));
    }
    // FLUSHDB takes the same path; SYNC is accepted.
    load(&mut c.conn(1), 100);
    assert_eq!(
        c.conn(2).call_str(&["FLUSHDB", "SYNC"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        int(c.conn(0).call_str(&["DBSIZE"]), "DBSIZE after FLUSHDB"),
        0
    );
}

/// RANDOMKEY: nil on an empty cluster, else one of the keys.
#[test]
fn randomkey_returns_an_existing_key_or_nil() {
    let c = Cluster::start(3, &[]);
    c.wait_converged();
    let mut conn = c.conn(0);
    // INFO cluster has no key count before the first DBSIZE or RANDOMKEY on this node.
    match conn.call_str(&["INFO", "cluster"]) {
        Reply::Bulk(Some(b)) => {
            let text = String::from_utf8_lossy(&b);
            assert!(
                text.contains("cluster_keys:-1\r\ncluster_keys_age_ms:-1\r\n"),
                "{text}"
            );
        }
        other => panic!("INFO cluster: {other:?}"),
    }
    assert_eq!(conn.call_str(&["RANDOMKEY"]), Reply::Bulk(None));
    // One SCAN call visits at most 64 partitions (of 1,024): on an empty cluster it answers
    // at once with the start of partition 64 as its cursor.
    let (cursor, keys) = scan_once(&mut conn, "0", &["COUNT", "100000"]);
    assert!(keys.is_empty());
    assert_eq!(cursor, (64u64 << 54).to_string());
    load(&mut conn, 50);
    let mut picked = HashSet::new();
    for _ in 0..40 {
        match conn.call_str(&["RANDOMKEY"]) {
            Reply::Bulk(Some(k)) => {
                let k = String::from_utf8_lossy(&k).into_owned();
                let i: usize = k
                    .strip_prefix("key:")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(usize::MAX);
                assert!(i < 50, "RANDOMKEY {k} was never written");
                picked.insert(k);
            }
            other => panic!("RANDOMKEY: {other:?}"),
        }
    }
    assert!(picked.len() > 5, "RANDOMKEY spreads: {picked:?}");
}

/// A partition whose replicas are all down: SCAN, KEYS and DBSIZE say so (CLUSTERDOWN), they
/// do not answer a partial key space as if it were whole.
#[test]
fn a_partition_without_a_live_replica_is_an_error() {
    let mut c = Cluster::start(2, &["--n", "1", "--w", "1", "--r", "1"]);
    c.wait_converged();
    c.kill(1);
    c.wait_converged();
    let mut conn = c.conn(0);
    for cmd in [
        vec!["SCAN", "0", "COUNT", "100000"],
        vec!["KEYS", "*"],
        vec!["DBSIZE"],
        vec!["RANDOMKEY"],
        vec!["FLUSHALL"],
    ] {
        match conn.call_str(&cmd) {
            Reply::Error(e) => assert!(
                e.contains("CLUSTERDOWN no replica of partition "),
                "{cmd:?}: {e}"
            ),
            other => panic!("{cmd:?}: {other:?}"),
        }
    }
    // Within the time a client waits: the peer timeout bounds each call.
    let t = std::time::Instant::now();
    let _ = conn.call_str(&["DBSIZE"]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// One partition's slice stops once its keys pass 4 MiB (MAX_SCAN_REPLY_BYTES), at a key
/// boundary, and says where to go on: with one partition, 160 keys of 32 KiB take two SCAN
/// calls although COUNT allows all of them in one.
#[test]
fn a_partition_slice_is_bounded_in_bytes() {
    const KEY_BYTES: usize = 32 << 10;
    let c = Cluster::start(
        1,
        &["--n", "1", "--w", "1", "--r", "1", "--partitions", "1"],
    );
    c.wait_converged();
    let mut conn = c.conn(0);
    let key = |i: usize| format!("{i:0>width$}", width = KEY_BYTES);
    for i in 0..160 {
        assert_eq!(
            conn.call_str(&["SET", &key(i), "v"]),
            Reply::Simple("OK".into())
        );
    }
    let (cursor, first) = scan_once(&mut conn, "0", &["COUNT", "1000"]);
    // 128 keys are exactly 4 MiB, not past it: the 129th is taken, the 130th is not.
    assert_eq!(first.len(), 129, "keys in the first call");
    assert_ne!(cursor, "0");
    let (cursor, rest) = scan_once(&mut conn, &cursor, &["COUNT", "1000"]);
    assert_eq!(cursor, "0");
    let all: HashSet<String> = first.into_iter().chain(rest).collect();
    assert_eq!(all.len(), 160);
}
