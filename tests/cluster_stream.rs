//! Partitions move when a node joins or leaves (issue "Rebalancing", item 1): under a running
//! writer and reader, a 4th node joins 3 (and later one of 4 leaves); afterwards every
//! acknowledged key is on exactly its N new replicas, checked node by node with CLUSTER
//! GETLOCAL, and no read during the move answered "not found" for an acknowledged key. A
//! receiving node killed mid-copy resumes where it stopped.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::cluster::Cluster;
use common::resp::{Conn, Reply};
use common::*;

/// Keys written before the move.
const PRELOAD: usize = 3000;
/// How long a move (settle, copy, commit, cleanup) may take in these tests.
const MOVE: Duration = Duration::from_secs(90);
/// Flags for every node: a short request deadline, so the settle times (one deadline each)
/// keep the tests short.
const FLAGS: &[&str] = &["--request-timeout-ms", "1500"];

#[derive(Default)]
struct Load {
    stop: AtomicBool,
    acked: Mutex<Vec<String>>,
    write_errors: Mutex<Vec<String>>,
    reads: AtomicU64,
    /// Reads of an acknowledged key that answered nil.
    missing: Mutex<Vec<String>>,
}

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

fn conn_to<'a>(conns: &'a mut [Option<Conn>], addrs: &[SocketAddr], i: usize) -> &'a mut Conn {
    conns[i].get_or_insert_with(|| Conn::connect(addrs[i]))
}

/// Writes new keys `prefix<n>` through the nodes in turn until stopped.
fn writer(addrs: Vec<SocketAddr>, load: Arc<Load>, prefix: &'static str) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut conns: Vec<Option<Conn>> = addrs.iter().map(|_| None).collect();
        let mut n = 0usize;
        while !load.stop.load(SeqCst) {
            let i = n % addrs.len();
            let key = format!("{prefix}{n}");
            let c = conn_to(&mut conns, &addrs, i);
            match c.try_call(&[b"SET", key.as_bytes(), key.as_bytes()]) {
                Ok(Reply::Simple(s)) if s == "OK" => load.acked.lock().unwrap().push(key),
                other => {
                    load.write_errors
                        .lock()
                        .unwrap()
                        .push(format!("SET {key} via node {i}: {other:?}"));
                    conns[i] = None;
                }
            }
            n += 1;
        }
    })
}

/// Reads random acknowledged keys through random nodes until stopped.
fn reader(addrs: Vec<SocketAddr>, load: Arc<Load>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut conns: Vec<Option<Conn>> = addrs.iter().map(|_| None).collect();
        let mut next = xorshift(0x5eed);
        while !load.stop.load(SeqCst) {
            let key = {
                let acked = load.acked.lock().unwrap();
                if acked.is_empty() {
                    continue;
                }
                acked[(next() % acked.len() as u64) as usize].clone()
            };
            let i = (next() % addrs.len() as u64) as usize;
            let c = conn_to(&mut conns, &addrs, i);
            match c.try_call(&[b"GET", key.as_bytes()]) {
                Ok(Reply::Bulk(Some(v))) => assert_eq!(v, key.as_bytes(), "GET {key}"),
                Ok(Reply::Bulk(None)) => load
                    .missing
                    .lock()
                    .unwrap()
                    .push(format!("GET {key} via node {i}")),
                // An error (a timeout) is not "not found"; the key is checked at the end.
                _ => conns[i] = None,
            }
            load.reads.fetch_add(1, SeqCst);
        }
    })
}

fn preload(c: &Cluster, nodes: &[usize]) -> Vec<String> {
    let mut conns: Vec<Conn> = nodes.iter().map(|&i| c.conn(i)).collect();
    (0..PRELOAD)
        .map(|n| {
            let key = format!("pre{n}");
            let k = conns.len();
            // A SET of the same value may be retried: a busy machine can time one out.
            let ok = (0..5).any(|_| {
                conns[n % k]
                    .try_call(&[b"SET", key.as_bytes(), key.as_bytes()])
                    .is_ok_and(|r| r == Reply::Simple("OK".into()))
            });
            assert!(ok, "SET {key} failed 5 times");
            key
        })
        .collect()
}

/// Waits until each key is held (CLUSTER GETLOCAL) by exactly the nodes CLUSTER MAP lists for
/// it, among `nodes`, and none of the others: stale copies are dropped after a move.
fn wait_exactly_on_owners(c: &Cluster, nodes: &[usize], keys: &[String]) {
    let map = c.map(nodes[0]);
    let mut conns: Vec<Conn> = nodes.iter().map(|&i| c.conn(i)).collect();
    wait_for("every key exactly on its owners", MOVE, || {
        let mut wrong = 0usize;
        let mut first = String::new();
        for key in keys {
            let want: BTreeSet<u16> = map.owners(key.as_bytes()).iter().copied().collect();
            let mut have = BTreeSet::new();
            for (j, conn) in conns.iter_mut().enumerate() {
                match conn.call(&[b"CLUSTER", b"GETLOCAL", key.as_bytes()]) {
                    Reply::Bulk(Some(_)) => {
                        have.insert(c.ports[nodes[j]]);
                    }
                    Reply::Bulk(None) => {}
                    other => panic!("GETLOCAL {key}: {other:?}"),
                }
            }
            if have != want {
                if wrong == 0 {
                    first = format!("{key}: on {have:?}, owners {want:?}");
                }
                wrong += 1;
            }
        }
        match wrong {
            0 => Ok(()),
            n => Err(format!("{n} of {} keys are not, e.g. {first}", keys.len())),
        }
    });
}

fn addrs(c: &Cluster, nodes: &[usize]) -> Vec<SocketAddr> {
    nodes.iter().map(|&i| c.node(i).addr).collect()
}

fn stop(load: &Load, threads: Vec<JoinHandle<()>>) {
    load.stop.store(true, SeqCst);
    for t in threads {
        t.join().expect("load thread");
    }
}

fn report(what: &str, load: &Load) {
    eprintln!(
        "{what}: {} writes acknowledged, {} failed, {} reads",
        load.acked.lock().unwrap().len(),
        load.write_errors.lock().unwrap().len(),
        load.reads.load(SeqCst)
    );
    let missing = load.missing.lock().unwrap();
    assert!(
        missing.is_empty(),
        "{} reads missed an acknowledged key: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn a_fourth_node_joins_under_load() {
    let mut c = Cluster::start(3, FLAGS);
    c.wait_converged();
    let mut keys = preload(&c, &[0, 1, 2]);
    let load = Arc::new(Load::default());
    load.acked.lock().unwrap().extend(keys.iter().cloned());
    let threads = vec![
        writer(addrs(&c, &[0, 1, 2]), load.clone(), "w"),
        reader(addrs(&c, &[0, 1, 2]), load.clone()),
        reader(addrs(&c, &[2, 1, 0]), load.clone()),
    ];
    let new = c.add(&[]);
    // The new node first joins: it owns nothing while its partitions are copied.
    wait_until("the new node to be listed as joining", MOVE, || {
        c.nodes_of(0)
            .iter()
            .any(|l| l.contains(&format!(":{} ", c.ports[new])))
    });
    c.wait_converged();
    let moved: u64 = c
        .info(new, "cluster_stream_keys")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    stop(&load, threads);
    report("join", &load);
    assert!(moved > 0, "the new node copied no key");
    keys = load.acked.lock().unwrap().clone();
    wait_exactly_on_owners(&c, &[0, 1, 2, 3], &keys);
    // The new node owns about a quarter of the copies now.
    let owned = c.nodes_of(0);
    assert!(
        owned
            .iter()
            .all(|l| l.split(' ').nth(5).is_some_and(|p| p != "0")),
        "{owned:?}"
    );
}

#[test]
fn a_node_leaves_under_load() {
    let c = Cluster::start(4, FLAGS);
    c.wait_converged();
    let keys = preload(&c, &[0, 1, 2, 3]);
    let load = Arc::new(Load::default());
    load.acked.lock().unwrap().extend(keys.iter().cloned());
    let threads = vec![
        writer(addrs(&c, &[0, 1, 2]), load.clone(), "w"),
        reader(addrs(&c, &[0, 1, 2]), load.clone()),
    ];
    assert_eq!(
        c.conn(3).call_str(&["CLUSTER", "LEAVE"]),
        Reply::Simple("OK".into())
    );
    let gone = format!(":{} ", c.ports[3]);
    let t = std::time::Instant::now();
    wait_until("node 3 to be removed everywhere", MOVE, || {
        (0..4).all(|i| {
            c.nodes_of(i)
                .iter()
                .any(|l| l.contains(&gone) && l.contains(" removed "))
        })
    });
    eprintln!("leave: committed everywhere after {:?}", t.elapsed());
    stop(&load, threads);
    report("leave", &load);
    let keys = load.acked.lock().unwrap().clone();
    let t = std::time::Instant::now();
    // Node 3 owns nothing: it keeps no copy.
    wait_exactly_on_owners(&c, &[0, 1, 2, 3], &keys);
    eprintln!(
        "leave: every key exactly on its owners after {:?} more",
        t.elapsed()
    );
    wait_until("node 3's copies to show idle", MOVE, || {
        c.info(3, "cluster_stream_phase").as_deref() == Some("idle")
    });
}

#[test]
fn a_receiver_killed_mid_copy_resumes_where_it_stopped() {
    let mut c = Cluster::start(3, FLAGS);
    c.wait_converged();
    // About 6 MB of values, copied at 400 kB/s: the copy takes several seconds.
    let value = vec![b'v'; 2000];
    let mut conn = c.conn(0);
    for n in 0..PRELOAD {
        let key = format!("big{n}");
        assert_eq!(
            conn.call(&[b"SET", key.as_bytes(), &value]),
            Reply::Simple("OK".into())
        );
    }
    let new = c.add(&["--stream-rate", "400000"]);
    let int =
        |c: &Cluster, f: &str| -> u64 { c.info(new, f).and_then(|v| v.parse().ok()).unwrap_or(0) };
    wait_until("the copy to start", MOVE, || {
        c.info(new, "cluster_stream_phase").as_deref() == Some("copying")
    });
    let copying_since = std::time::Instant::now();
    wait_until("a part of the copy to be done", MOVE, || {
        let (done, all) = (
            int(&c, "cluster_stream_partitions_done"),
            int(&c, "cluster_stream_partitions"),
        );
        all > 0 && done * 5 >= all
    });
    let before = int(&c, "cluster_stream_bytes");
    assert!(before > 0);
    // --stream-rate holds: no more than the rate allows since the copy started (plus half a
    // second of slack for noticing the start, and a batch).
    let allowed = 400_000.0 * (copying_since.elapsed().as_secs_f64() + 0.5) + 40_000.0;
    assert!(
        (before as f64) <= allowed,
        "{before} bytes copied in {:?} at --stream-rate 400000",
        copying_since.elapsed()
    );
    c.kill(new);
    c.restart(new);
    // It resumes from its persisted progress: what it had copied is still counted as copied.
    wait_until("the restarted node to copy again", MOVE, || {
        c.info(new, "cluster_stream_phase").as_deref() == Some("copying")
    });
    let at_resume = int(&c, "cluster_stream_bytes");
    let done_at_resume = int(&c, "cluster_stream_partitions_done");
    assert!(at_resume >= before, "{at_resume} < {before}: progress lost");
    // A source restarts mid-copy too: the copy goes on (from another owner meanwhile).
    wait_until("more partitions copied", MOVE, || {
        int(&c, "cluster_stream_partitions_done") > done_at_resume
    });
    c.kill(0);
    c.restart(0);
    c.wait_converged();
    let total = int(&c, "cluster_stream_bytes");
    let this_run = int(&c, "cluster_stream_bytes_this_run");
    let resent = int(&c, "cluster_stream_bytes_resent");
    eprintln!(
        "copied {before} bytes before the kill, {this_run} after, {total} in all, {resent} resent"
    );
    assert!(
        this_run < total,
        "the restarted node copied {this_run} of {total} bytes: it did not resume"
    );
    // At most the batches in flight at the kill are copied again.
    assert!(resent <= 2 * 40_000, "{resent} bytes resent");
    // Every field docs/cluster.md lists for a move is in CLUSTER INFO, as a number (the phase:
    // a name).
    for f in [
        "cluster_moving_partitions",
        "cluster_stream_partitions",
        "cluster_stream_partitions_done",
        "cluster_stream_bytes",
        "cluster_stream_keys",
        "cluster_stream_bytes_this_run",
        "cluster_stream_bytes_resent",
        "cluster_stream_rate_bps",
        "cluster_stream_eta_secs",
        "cluster_moves_partitions",
        "cluster_moves_partitions_done",
        "cluster_moves_bytes",
        "cluster_moves_rate_bps",
        "cluster_unowned_keys_dropped",
    ] {
        let v = c.info(new, f).unwrap_or_else(|| panic!("{f} missing"));
        assert!(v.parse::<u64>().is_ok(), "{f}:{v}");
    }
    wait_until("the new node's copies to show idle", MOVE, || {
        c.info(new, "cluster_stream_phase").as_deref() == Some("idle")
    });
    let keys: Vec<String> = (0..PRELOAD).map(|n| format!("big{n}")).collect();
    wait_exactly_on_owners(&c, &[0, 1, 2, 3], &keys);
    // The old owners dropped what they gave away.
    let dropped: u64 = (0..3)
        .map(|i| {
            c.info(i, "cluster_unowned_keys_dropped")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        })
        .sum();
    assert!(dropped > 0, "no old owner dropped a key");
}
