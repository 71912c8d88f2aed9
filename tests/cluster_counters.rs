//! Counters on a cluster (issue "Every command in a cluster", item 1): increments through any
//! coordinator, concurrently, while a node is killed and restarted, converge on every node to
//! the sum of the acknowledged increments.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::Cluster;
use common::resp::{Conn, Reply};
use common::*;

const CLIENTS: usize = 8;
const KEYS: usize = 16;
/// Acknowledged increments per phase (all up / one node down / after its restart).
const PER_PHASE: u64 = 1500;
const NONE: usize = usize::MAX;

struct Shared {
    addrs: Vec<SocketAddr>,
    /// The node clients must not use (it is about to be, or is, down), or NONE.
    avoid: AtomicUsize,
    /// Per client, the `avoid` value it has seen before its current request (so the test
    /// knows when no request is in flight to the node it kills).
    seen: Vec<AtomicUsize>,
    stop: AtomicBool,
    acked: AtomicU64,
    sums: Mutex<HashMap<String, i64>>,
    /// Requests whose outcome is unknown (an error or a lost connection).
    unknown: Mutex<Vec<String>>,
}

fn client(sh: Arc<Shared>, me: usize) {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (me as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut conns: Vec<Option<Conn>> = (0..sh.addrs.len()).map(|_| None).collect();
    while !sh.stop.load(SeqCst) {
        let avoid = sh.avoid.load(SeqCst);
        sh.seen[me].store(avoid, SeqCst);
        let node = (next() % sh.addrs.len() as u64) as usize;
        if node == avoid {
            conns[node] = None; // it restarts: connect anew afterwards
            continue;
        }
        let key = format!("ctr{}", next() % KEYS as u64);
        let by = (next() % 2001) as i64 - 1000;
        let conn = match &mut conns[node] {
            Some(c) => c,
            slot => match Conn::try_connect(sh.addrs[node]) {
                Ok(c) => slot.insert(c),
                Err(e) => panic!("client {me} can't reach node {node}: {e}"),
            },
        };
        match conn.try_call(&[b"INCRBY", key.as_bytes(), by.to_string().as_bytes()]) {
            Ok(Reply::Int(_)) => {
                *sh.sums.lock().unwrap().entry(key).or_default() += by;
                sh.acked.fetch_add(1, SeqCst);
            }
            other => {
                sh.unknown
                    .lock()
                    .unwrap()
                    .push(format!("INCRBY {key} {by} on node {node}: {other:?}"));
                conns[node] = None;
            }
        }
    }
}

fn wait_acked(sh: &Shared, at_least: u64) {
    wait_until(
        "increments to be acknowledged",
        Duration::from_secs(120),
        || sh.acked.load(SeqCst) >= at_least,
    );
}

fn local(c: &Cluster, i: usize, key: &str) -> Option<i64> {
    c.local(i, key.as_bytes())
        .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
}

#[test]
fn increments_through_every_node_survive_a_kill_and_restart() {
    let mut c = Cluster::start(3, &["--n", "3", "--w", "2", "--r", "2"]);
    c.wait_converged();
    let sh = Arc::new(Shared {
        addrs: (0..3).map(|i| c.node(i).addr).collect(),
        avoid: AtomicUsize::new(NONE),
        seen: (0..CLIENTS).map(|_| AtomicUsize::new(NONE)).collect(),
        stop: AtomicBool::new(false),
        acked: AtomicU64::new(0),
        sums: Mutex::new(HashMap::new()),
        unknown: Mutex::new(Vec::new()),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|me| {
            let sh = sh.clone();
            std::thread::spawn(move || client(sh, me))
        })
        .collect();
    // Stops the clients however the test ends.
    struct StopOnDrop(Arc<Shared>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.stop.store(true, SeqCst);
        }
    }
    let _stop = StopOnDrop(sh.clone());

    wait_acked(&sh, PER_PHASE);
    // Node 2 goes down with no request of these clients in flight to it (their outcome would
    // be unknown); the writes the others coordinate meanwhile leave hints for it.
    sh.avoid.store(2, SeqCst);
    wait_until(
        "clients to stop using node 2",
        Duration::from_secs(30),
        || sh.seen.iter().all(|s| s.load(SeqCst) == 2),
    );
    let nokill = std::env::var("NOKILL").is_ok();
    if !nokill {
        c.kill(2);
    }
    let at = sh.acked.load(SeqCst);
    wait_acked(&sh, at + PER_PHASE);
    if !nokill {
        c.restart(2);
    }
    c.wait_converged();
    sh.avoid.store(NONE, SeqCst);
    let at = sh.acked.load(SeqCst);
    wait_acked(&sh, at + PER_PHASE);
    sh.stop.store(true, SeqCst);
    for t in clients {
        t.join().expect("client thread");
    }
    let unknown = sh.unknown.lock().unwrap().clone();
    assert!(unknown.is_empty(), "requests failed: {unknown:?}");
    let sums = sh.sums.lock().unwrap().clone();
    assert!(sums.len() > KEYS / 2, "keys used: {sums:?}");
    // Every replica's own copy (no read, no coordinator) reaches the exact sums: the
    // restarted node through its hints.
    let c = &c;
    let off = || -> Vec<String> {
        sums.iter()
            .flat_map(|(k, &sum)| {
                (0..3).filter_map(move |i| {
                    let got = local(c, i, k);
                    (got != Some(sum)).then(|| format!("{k} on node {i}: {got:?}, not {sum}"))
                })
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let wrong = off();
        if wrong.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "copies still differ from the acknowledged sums after 60 s: {wrong:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // And every node answers the sum through the coordinator.
    for i in 0..3 {
        let mut conn = c.conn(i);
        for (k, &sum) in &sums {
            assert_eq!(
                conn.call(&[b"GET", k.as_bytes()]),
                Reply::Bulk(Some(sum.to_string().into_bytes())),
                "GET {k} through node {i}"
            );
        }
    }
}
