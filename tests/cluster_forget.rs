//! Replacing a dead node (issue "Rebalancing", item 2) and the operator's controls of a move:
//! CLUSTER FORGET re-replicates a dead node's partitions from the remaining replicas while a
//! replacement joins; CANCEL stops a move; JOIN and LEAVE refuse what would lose data.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::resp::Reply;
use common::*;

const KEYS: usize = 2000;
const MOVE: Duration = Duration::from_secs(90);
const FLAGS: &[&str] = &["--request-timeout-ms", "1500"];

fn id_of(c: &Cluster, i: usize) -> String {
    match c.conn(i).call_str(&["CLUSTER", "MYID"]) {
        Reply::Bulk(Some(b)) => String::from_utf8(b).expect("utf-8"),
        other => panic!("{other:?}"),
    }
}

/// The state node `i` shows for node `id` (CLUSTER NODES), if listed.
fn state_seen(c: &Cluster, i: usize, id: &str) -> Option<String> {
    c.nodes_of(i)
        .iter()
        .find(|l| l.starts_with(id))
        .and_then(|l| l.split(' ').nth(3).map(str::to_string))
}

/// Node `i`'s own copies of `keys` (CLUSTER GETLOCAL).
fn held(c: &Cluster, i: usize, keys: &[String]) -> usize {
    let mut conn = c.conn(i);
    keys.iter()
        .filter(|k| {
            matches!(
                conn.call(&[b"CLUSTER", b"GETLOCAL", k.as_bytes()]),
                Reply::Bulk(Some(_))
            )
        })
        .count()
}

#[test]
fn forget_rereplicates_a_dead_nodes_partitions_while_a_replacement_joins() {
    let mut c = Cluster::start(4, FLAGS);
    c.wait_converged();
    let mut conn = c.conn(0);
    let keys: Vec<String> = (0..KEYS).map(|n| format!("f{n}")).collect();
    for k in &keys {
        assert_eq!(
            conn.call(&[b"SET", k.as_bytes(), b"v"]),
            Reply::Simple("OK".into())
        );
    }
    let dead = id_of(&c, 3);
    c.kill(3);
    wait_until("node 3 to be seen down", MOVE, || {
        c.liveness_seen(0, c.ports[3]).as_deref() == Some("down")
    });
    // Refused for a node that is up; accepted for the dead one.
    let up = id_of(&c, 1);
    match c.conn(0).call_str(&["CLUSTER", "FORGET", &up]) {
        Reply::Error(e) => assert!(e.contains("is up: use CLUSTER LEAVE"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.conn(0).call_str(&["CLUSTER", "FORGET", &dead]),
        Reply::Simple("OK".into())
    );
    // The replacement starts before the forget completes.
    let new = c.add(&[]);
    let new_id = {
        wait_until("the replacement to answer", MOVE, || {
            c.info(new, "cluster_my_id").is_some()
        });
        c.info(new, "cluster_my_id").expect("its id")
    };
    wait_until(
        "the dead node removed and the new one active everywhere",
        MOVE,
        || {
            [0, 1, 2, new].iter().all(|&i| {
                state_seen(&c, i, &dead).as_deref() == Some("removed")
                    && state_seen(&c, i, &new_id).as_deref() == Some("active")
            })
        },
    );
    // Every key is back on N = 3 live replicas (node 3's copies came from the others).
    let map = c.map(0);
    wait_until("every key on exactly its 3 owners", MOVE, || {
        let per: Vec<usize> = [0, 1, 2, new].iter().map(|&i| held(&c, i, &keys)).collect();
        per.iter().sum::<usize>() == 3 * KEYS
    });
    for k in keys.iter().step_by(97) {
        let owners = map.owners(k.as_bytes());
        assert_eq!(owners.len(), 3);
        assert!(!owners.contains(&c.ports[3]), "{k} still on the dead node");
        for (i, port) in c.ports.iter().enumerate() {
            if owners.contains(port) {
                assert!(
                    c.local(i, k.as_bytes()).is_some(),
                    "{k} missing on node {i}"
                );
            }
        }
    }
}

#[test]
fn cancel_stops_a_join_and_its_copies_are_dropped() {
    let mut c = Cluster::start(3, FLAGS);
    c.wait_converged();
    let keys: Vec<String> = (0..200).map(|n| format!("c{n}")).collect();
    let mut conn = c.conn(0);
    for k in &keys {
        assert_eq!(
            conn.call(&[b"SET", k.as_bytes(), &[b'x'; 1000]]),
            Reply::Simple("OK".into())
        );
    }
    // Copying at 2 kB/s: still copying when cancelled.
    let new = c.add(&["--stream-rate", "2000"]);
    wait_until("the new node to copy", MOVE, || {
        c.info(new, "cluster_stream_phase").as_deref() == Some("copying")
            && held(&c, new, &keys) > 0
    });
    match c.conn(0).call_str(&["CLUSTER", "CANCEL"]) {
        Reply::Error(e) => assert!(e.contains("not joining or leaving"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.conn(new).call_str(&["CLUSTER", "CANCEL"]),
        Reply::Simple("OK".into())
    );
    let id = c.info(new, "cluster_my_id").expect("its id");
    wait_until(
        "the cancelled node removed everywhere, its copies dropped",
        MOVE,
        || {
            (0..=new).all(|i| state_seen(&c, i, &id).as_deref() == Some("removed"))
                && held(&c, new, &keys) == 0
        },
    );
    for i in 0..3 {
        assert_eq!(held(&c, i, &keys), keys.len(), "node {i} keeps every key");
    }
}

#[test]
fn the_last_owner_cannot_leave_and_a_node_with_keys_cannot_join() {
    let c = Cluster::start(1, &["--n", "1", "--w", "1", "--r", "1"]);
    let mut conn = c.conn(0);
    match conn.call_str(&["CLUSTER", "LEAVE"]) {
        Reply::Error(e) => assert!(e.contains("is the last owner"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        conn.call_str(&["SET", "k", "v"]),
        Reply::Simple("OK".into())
    );
    match conn.call_str(&["CLUSTER", "JOIN", "127.0.0.1:1"]) {
        Reply::Error(e) => assert!(
            e.contains("holds 1 keys; only an empty node can join"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        conn.call_str(&["GET", "k"]),
        Reply::Bulk(Some(b"v".to_vec()))
    );
}
