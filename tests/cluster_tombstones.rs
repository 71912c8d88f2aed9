//! Tombstone collection without resurrection (docs/cluster.md, "Deletes and tombstones"):
//! real nodes on loopback, a short --tombstone-grace-secs.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::resp::{Conn, Reply};
use common::wait_until;

/// The grace the tests run with, in seconds (the default is 10 days).
const GRACE_SECS: &str = "2";
/// Long enough for several collection rounds past the grace on a loaded 2-core machine.
const COLLECT: Duration = Duration::from_secs(60);

fn info_field(conn: &mut Conn, section: &str, field: &str) -> u64 {
    let Reply::Bulk(Some(text)) = conn.call_str(&["INFO", section]) else {
        panic!("INFO {section} is not a bulk");
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    let prefix = format!("{field}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {field} in INFO {section}:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{field} in INFO {section}: {e}"))
}

fn stat(c: &Cluster, i: usize, section: &str, field: &str) -> u64 {
    info_field(&mut c.conn(i), section, field)
}

/// Sends one command per key, pipelined, and checks every reply.
fn each_key(conn: &mut Conn, keys: &[String], cmd: &[&str], want: &Reply) {
    let cmds: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            let mut v: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
            v.insert(1, k.clone());
            v
        })
        .collect();
    conn.send_pipeline(&cmds).expect("send the pipeline");
    for k in keys {
        let got = conn.recv();
        assert_eq!(&got, want, "{} {k}", cmd[0]);
    }
}

/// Anti-entropy between the replicas: one Merkle anti-entropy round started on node `via`
/// (CLUSTER AAE), then read repair, by reading every key through it.
fn anti_entropy(c: &Cluster, via: usize, keys: &[String]) {
    let rounds = stat(c, via, "cluster", "cluster_aae_rounds");
    assert_eq!(
        c.conn(via).call_str(&["CLUSTER", "AAE"]),
        Reply::Simple("OK".into())
    );
    wait_until("an anti-entropy round", COLLECT, || {
        stat(c, via, "cluster", "cluster_aae_rounds") > rounds
    });
    each_key(&mut c.conn(via), keys, &["GET"], &Reply::Bulk(None));
}

/// The issue's "no resurrection": 1,000 keys deleted while one replica is down. Past the grace
/// the tombstones are NOT collected while that replica lacks them; it comes back (after an
/// absence longer than the grace, which it logs), holding the old values: the keys stay
/// deleted on every node, and the tombstones are then collected everywhere (INFO count and
/// used_memory_dataset drop).
/// Every test's cluster: the short grace, and a peer deadline that a down node costs.
const FLAGS: &[&str] = &[
    "--tombstone-grace-secs",
    GRACE_SECS,
    "--peer-timeout-ms",
    "1000",
];

#[test]
fn deletes_made_while_a_replica_was_down_stay_deleted_and_are_collected_once_it_is_back() {
    let mut c = Cluster::start(3, FLAGS);
    c.wait_converged();
    let keys: Vec<String> = (0..1000).map(|i| format!("gone{i}")).collect();
    let ok = Reply::Simple("OK".into());
    each_key(&mut c.conn(0), &keys, &["SET", "old"], &ok);
    // Node 2 holds every old value before it goes (W=2: its copy may trail the reply).
    wait_until("node 2 to hold every value", COLLECT, || {
        keys.iter().all(|k| c.local(2, k.as_bytes()).is_some())
    });
    c.kill(2);
    c.wait_converged();
    each_key(&mut c.conn(0), &keys, &["DEL"], &Reply::Int(1));
    for i in [0, 1] {
        assert_eq!(stat(&c, i, "stats", "tombstones"), 1000, "node {i}");
    }
    // Past the grace the collector tries, and refuses: node 2 can't confirm.
    wait_until(
        "the grace to pass and node 0 and 1 to refuse collection",
        COLLECT,
        || {
            [0, 1]
                .iter()
                .all(|&i| stat(&c, i, "cluster", "cluster_gc_refused") >= 1000)
        },
    );
    for i in [0, 1] {
        assert_eq!(
            stat(&c, i, "stats", "tombstones"),
            1000,
            "node {i} collected tombstones that node 2 lacks"
        );
        assert_eq!(stat(&c, i, "cluster", "cluster_gc_purged"), 0, "node {i}");
    }
    let bytes_before = stat(&c, 0, "stats", "tombstone_bytes");
    let dataset_before = stat(&c, 0, "memory", "used_memory_dataset");
    assert!(bytes_before > 1000 * 8, "tombstone_bytes {bytes_before}");
    assert!(
        dataset_before >= bytes_before,
        "used_memory_dataset {dataset_before}"
    );

    c.restart(2);
    c.wait_converged();
    // Node 2 was away longer than the grace: it says so.
    wait_until("node 2 to log its absence", COLLECT, || {
        c.node(2)
            .log_text()
            .contains("away longer than the tombstone grace")
    });
    assert_eq!(stat(&c, 2, "cluster", "cluster_stale_start"), 1);
    assert!(stat(&c, 2, "cluster", "cluster_last_absence_ms") > 2000);
    for via in 0..3 {
        anti_entropy(&c, via, &keys);
    }
    wait_until("every node to collect the tombstones", COLLECT, || {
        (0..3).all(|i| stat(&c, i, "stats", "tombstones") == 0)
    });
    // Collected, and not brought back: no node holds any of the keys, and reads through
    // every node find none of them.
    for i in 0..3 {
        for k in &keys {
            assert_eq!(c.local(i, k.as_bytes()), None, "node {i} holds {k}");
        }
        anti_entropy(&c, i, &keys);
        assert_eq!(stat(&c, i, "stats", "tombstone_bytes"), 0, "node {i}");
    }
    assert!(stat(&c, 0, "cluster", "cluster_gc_purged") > 0);
    // The entries' bytes drop by exactly the tombstones' (node 0 holds nothing else). The
    // structures around them (slot and index capacity, anti-entropy's hash order) are kept for
    // the next keys, so used_memory as a whole need not drop by as much, or at once.
    let dataset_after = stat(&c, 0, "memory", "used_memory_dataset");
    assert_eq!(dataset_after, dataset_before - bytes_before);
    eprintln!(
        "INFO memory: used_memory_dataset {dataset_before} -> {dataset_after} \
         ({bytes_before} tombstone bytes collected)"
    );

    // Purges are not logged: a restart replays the deletes, and the tombstones are back on
    // node 0. They are offered and collected again, and the keys stay deleted.
    c.kill(0);
    c.restart(0);
    c.wait_converged();
    wait_until("node 0 to collect its replayed tombstones", COLLECT, || {
        stat(&c, 0, "cluster", "cluster_gc_purged") >= 1000
            && (0..3).all(|i| stat(&c, i, "stats", "tombstones") == 0)
    });
    for i in 0..3 {
        for k in &keys {
            assert_eq!(
                c.local(i, k.as_bytes()),
                None,
                "node {i} holds {k} after a replay"
            );
        }
    }
}

/// The server's wall clock (TIME), in ms.
fn server_ms(c: &Cluster, i: usize) -> u64 {
    match c.conn(i).call_str(&["TIME"]) {
        Reply::Array(Some(v)) => match (&v[0], &v[1]) {
            (Reply::Bulk(Some(s)), Reply::Bulk(Some(us))) => {
                let s: u64 = String::from_utf8_lossy(s).parse().expect("seconds");
                let us: u64 = String::from_utf8_lossy(us).parse().expect("micros");
                s * 1000 + us / 1000
            }
            other => panic!("TIME: {other:?}"),
        },
        other => panic!("TIME: {other:?}"),
    }
}

/// A node away longer than the grace pushes nothing old into the cluster through hints: the
/// hints kept for it are older than the grace by the time it is back, and are dropped unsent
/// (their tombstones may be collected by then: delivering them could resurrect a key). It
/// logs its absence; INFO counts the dropped hints.
#[test]
fn hints_older_than_the_grace_are_dropped_not_delivered() {
    let mut c = Cluster::start(3, FLAGS);
    c.wait_converged();
    c.kill(2);
    c.wait_converged();
    let keys: Vec<String> = (0..100).map(|i| format!("hinted{i}")).collect();
    each_key(
        &mut c.conn(0),
        &keys,
        &["SET", "v"],
        &Reply::Simple("OK".into()),
    );
    // With no node past the three, node 0 keeps the hints for node 2 itself.
    wait_until("node 0 to hold a hint per write", COLLECT, || {
        stat(&c, 0, "cluster", "cluster_hints_pending") >= 100
    });
    let written = server_ms(&c, 0);
    wait_until("the grace to pass on node 0's clock", COLLECT, || {
        server_ms(&c, 0) > written + 2_500
    });
    c.restart(2);
    c.wait_converged();
    wait_until("node 0 to be done with node 2's hints", COLLECT, || {
        stat(&c, 0, "cluster", "cluster_hints_pending") == 0
    });
    assert!(stat(&c, 0, "cluster", "cluster_hints_expired") >= 100);
    assert_eq!(stat(&c, 0, "cluster", "cluster_hints_delivered"), 0);
    // No read went through: only a hint could have brought the values to node 2.
    for k in &keys {
        assert_eq!(c.local(2, k.as_bytes()), None, "a stale hint delivered {k}");
    }
    assert!(c
        .node(0)
        .log_text()
        .contains("dropped hints older than the tombstone grace"));
    assert!(c
        .node(2)
        .log_text()
        .contains("away longer than the tombstone grace"));
}

/// TOMB_OFFER and TOMB_PURGE on the wire (protocol.md §6.2), from a fake peer: an offered
/// tombstone the node lacks is merged and held; one that does not cover the node's own newer
/// write is answered "newer" and changes nothing visible; TOMB_PURGE purges only a key still
/// holding that tombstone; a malformed entry is refused as a whole.
#[test]
fn tomb_offer_and_purge_on_a_peer_link() {
    use ringkv::store::{Entry, VersionRef};
    use ringkv_proto::peer::{self, TOMB_HELD, TOMB_NEWER};
    use ringkv_proto::Value;

    let s = common::Server::start(&[
        "--cluster-secret",
        common::cluster::SECRET,
        "--tombstone-grace-secs",
        "600",
        "--w",
        "1",
        "--r",
        "1",
    ]);
    let mut conn = Conn::connect(s.addr);
    assert_eq!(
        conn.call_str(&["SET", "mine", "v"]),
        Reply::Simple("OK".into())
    );
    let fake = 0x77;
    let mut p = common::peer::PeerConn::connect(s.addr, fake);
    let lacked = Entry::with_one(b"lacked", fake, VersionRef::tombstone(1_000));
    let stale = Entry::with_one(b"mine", fake, VersionRef::tombstone(1_000));
    let entries = [lacked.as_bytes(), stale.as_bytes()];
    let got = p.call(|id, out| peer::encode_tomb_offer(id, &entries, out));
    let Ok(Value::Bulk(b)) = got else {
        panic!("TOMB_OFFER: {got:?}")
    };
    assert_eq!(
        peer::decode_states(&b).unwrap(),
        vec![TOMB_HELD, TOMB_NEWER]
    );
    // "lacked" is now a tombstone here; "mine" keeps its value (the offer covered none of it).
    assert_eq!(info_field(&mut conn, "stats", "tombstones"), 1);
    assert_eq!(
        conn.call_str(&["GET", "mine"]),
        Reply::Bulk(Some(b"v".to_vec()))
    );

    let purge = |p: &mut common::peer::PeerConn, e: &[&[u8]]| {
        p.call(|id, out| peer::encode_tomb_purge(id, e, out))
    };
    assert_eq!(purge(&mut p, &[stale.as_bytes()]), Ok(Value::Int(0)));
    assert_eq!(purge(&mut p, &[lacked.as_bytes()]), Ok(Value::Int(1)));
    assert_eq!(purge(&mut p, &[lacked.as_bytes()]), Ok(Value::Int(0)));
    assert_eq!(info_field(&mut conn, "stats", "tombstones"), 0);
    assert_eq!(
        conn.call_str(&["GET", "mine"]),
        Reply::Bulk(Some(b"v".to_vec()))
    );

    let junk: [&[u8]; 2] = [lacked.as_bytes(), b"\xffjunk"];
    let got = p.call(|id, out| peer::encode_tomb_offer(id, &junk, out));
    assert_eq!(got, Err("ERR malformed entry in TOMB_OFFER".into()));
    assert_eq!(
        info_field(&mut conn, "stats", "tombstones"),
        0,
        "nothing merged"
    );
}

/// A tombstone that another replica has superseded (a write made while its holder was down) is
/// not collected, and the newer value stays: the replicas answer "newer", the holder keeps its
/// stale tombstone (counted as refused) until read repair brings it the value.
#[test]
fn a_tombstone_superseded_on_another_replica_is_not_collected() {
    let mut c = Cluster::start(
        3,
        &[
            "--tombstone-grace-secs",
            "5",
            "--peer-timeout-ms",
            "1000",
            "--hinted-handoff",
            "off",
            // Only read repair may bring node 0 the newer value (below), not a round that
            // comes before its offer on a loaded machine.
            "--aae",
            "off",
        ],
    );
    c.wait_converged();
    let mut a = c.conn(1);
    assert_eq!(a.call_str(&["SET", "k", "v1"]), Reply::Simple("OK".into()));
    assert_eq!(a.call_str(&["DEL", "k"]), Reply::Int(1));
    wait_until("every node to hold the tombstone", COLLECT, || {
        (0..3).all(|i| stat(&c, i, "stats", "tombstones") == 1)
    });
    // INFO shows memory, not the disk: CLUSTER GETLOCAL answers once what it shows is
    // durable, so the kill below can't take node 0's tombstone with it.
    assert_eq!(c.local(0, b"k"), None);
    // Node 0 keeps the tombstone; the others get a newer value while it is down.
    c.kill(0);
    // Seen down first: a write sent to it now would wait for its link and reach it on return.
    c.wait_converged();
    assert_eq!(a.call_str(&["SET", "k", "v2"]), Reply::Simple("OK".into()));
    wait_until("nodes 1 and 2 to hold v2", COLLECT, || {
        [1, 2]
            .iter()
            .all(|&i| c.local(i, b"k") == Some(b"v2".to_vec()))
    });
    c.restart(0);
    assert_eq!(stat(&c, 0, "stats", "tombstones"), 1, "node 0 replayed it");
    c.wait_converged();
    wait_until(
        "node 0 to offer its tombstone past the grace",
        COLLECT,
        || stat(&c, 0, "cluster", "cluster_gc_refused") >= 1,
    );
    assert_eq!(stat(&c, 0, "stats", "tombstones"), 1, "collected anyway");
    assert_eq!(stat(&c, 0, "cluster", "cluster_gc_purged"), 0);
    for i in [1, 2] {
        assert_eq!(c.local(i, b"k"), Some(b"v2".to_vec()), "node {i}");
    }
    // A read through node 0 repairs it.
    assert_eq!(
        c.conn(0).call_str(&["GET", "k"]),
        Reply::Bulk(Some(b"v2".to_vec()))
    );
    wait_until("node 0 to be repaired", COLLECT, || {
        c.local(0, b"k") == Some(b"v2".to_vec())
    });
    assert_eq!(stat(&c, 0, "stats", "tombstones"), 0);
}
