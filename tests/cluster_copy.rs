//! COPY across partitions on a cluster (cluster::scratch: the source read at R, the copy
//! written back as a coordinated SET) while a node is killed mid-way: every acknowledged copy
//! holds the source's value, and no source is ever lost (never neither key).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::Cluster;
use common::resp::{Conn, Reply};
use common::*;

const KEYS: usize = 300;

#[test]
fn copies_survive_a_node_killed_mid_way() {
    let mut c = Cluster::start(3, &["--n", "3", "--w", "2", "--r", "2"]);
    c.wait_converged();
    let mut a = c.conn(0);
    for i in 0..KEYS {
        assert_eq!(
            a.call_str(&["SET", &format!("src{i}"), &format!("value{i}")]),
            Reply::Simple("OK".into())
        );
    }
    // Copies run through node 0 while node 2 is killed under them.
    let done = Arc::new(AtomicUsize::new(0));
    let copier = {
        let (addr, done) = (c.node(0).addr, done.clone());
        std::thread::spawn(move || {
            let mut conn = Conn::connect(addr);
            let mut replies = Vec::with_capacity(KEYS);
            for i in 0..KEYS {
                let r = conn.call_str(&["COPY", &format!("src{i}"), &format!("dst{i}")]);
                replies.push(r);
                done.fetch_add(1, SeqCst);
            }
            replies
        })
    };
    wait_until("a third of the copies", Duration::from_secs(60), || {
        done.load(SeqCst) >= KEYS / 3
    });
    c.kill(2);
    let replies = copier.join().expect("copier");
    c.restart(2);
    c.wait_converged();
    let mut acked = 0;
    for (i, r) in replies.iter().enumerate() {
        let src = a.call_str(&["GET", &format!("src{i}")]);
        let want = Reply::Bulk(Some(format!("value{i}").into_bytes()));
        assert_eq!(src, want, "src{i} is never lost (COPY reply {r:?})");
        if *r == Reply::Int(1) {
            acked += 1;
            assert_eq!(
                a.call_str(&["GET", &format!("dst{i}")]),
                want,
                "dst{i}: an acknowledged copy"
            );
        }
    }
    assert!(
        acked > KEYS / 2,
        "W=2 of 3 keeps copying with one node down: {acked} of {KEYS}"
    );
}
