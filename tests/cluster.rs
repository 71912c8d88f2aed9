//! A cluster of real nodes on loopback (issue "Cluster"): membership and failure detection,
//! quorum writes that survive a killed node, hinted handoff, the Go prototype's stale-read
//! failure, read repair, siblings across coordinators, and peer authentication.

mod common;

use std::time::Duration;

use common::cluster::with_context as with;
use common::cluster::{Cluster, CONVERGE};
use common::resp::{Conn, Reply};
use common::*;
use ringkv_client::Bytes;

fn ok(r: Reply, what: &str) {
    assert_eq!(r, Reply::Simple("OK".into()), "{what}");
}

fn bulk(v: &str) -> Reply {
    Reply::Bulk(Some(v.as_bytes().to_vec()))
}

/// Three nodes started as in the quick start agree on CLUSTER NODES; a killed node is seen
/// down by the others, and up again after its restart.
#[test]
fn three_nodes_agree_and_detect_a_dead_node() {
    let mut c = Cluster::start(3, &[]);
    c.wait_converged();
    for i in 0..3 {
        let lines = c.nodes_of(i);
        assert_eq!(lines.len(), 3, "node {i}: {lines:?}");
        assert!(
            lines.iter().all(|l| l.contains(" active up ")),
            "node {i}: {lines:?}"
        );
        assert_eq!(lines.iter().filter(|l| l.ends_with(" myself")).count(), 1);
    }
    c.kill(2);
    c.wait_converged();
    assert_eq!(c.liveness_seen(0, c.ports[2]).as_deref(), Some("down"));
    c.restart(2);
    c.wait_converged();
    assert_eq!(c.liveness_seen(0, c.ports[2]).as_deref(), Some("up"));
    let log = c.node(0).log_text();
    assert!(
        log.contains("peer liveness changed"),
        "liveness changes are logged:\n{log}"
    );
}

/// N=3 W=2 R=2: every write acknowledged while a node is SIGKILLed is readable afterwards, and
/// the killed node, restarted, gets every key it missed from hints, without any read.
#[test]
fn acknowledged_writes_survive_a_killed_node_and_hints_catch_it_up() {
    let mut c = Cluster::start(3, &["--fsync", "always"]);
    c.wait_converged();
    let mut a = c.conn(0);
    for i in 0..100 {
        ok(
            a.call_str(&["SET", &format!("before{i}"), "v"]),
            "write with all nodes up",
        );
    }
    c.kill(2);
    let mut acked = Vec::new();
    for i in 0..300 {
        let k = format!("during{i}");
        if a.call_str(&["SET", &k, &format!("v{i}")]) == Reply::Simple("OK".into()) {
            acked.push(k);
        }
    }
    assert!(
        acked.len() >= 290,
        "W=2 of 3 keeps accepting writes: {}",
        acked.len()
    );
    for (i, k) in acked.iter().enumerate() {
        let want = format!("v{}", k.trim_start_matches("during"));
        assert_eq!(
            a.call_str(&["GET", k]),
            bulk(&want),
            "read {i} after the kill"
        );
    }
    c.wait_converged();
    // Every write's call to node 2 has failed and left a hint (a call still waiting for the
    // link when node 2 returns would deliver its write directly, which is fine but not what
    // this test counts: under load that window grows).
    let pending = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("cluster_hints_pending:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    wait_until(
        "node 0 to hold a hint for every write node 2 missed",
        CONVERGE,
        || matches!(c.conn(0).call_str(&["INFO", "cluster"]), Reply::Bulk(Some(b)) if pending(&String::from_utf8_lossy(&b)) >= acked.len() as u64),
    );
    c.restart(2);
    // No reads from here on: only hints can bring the keys to node 2.
    wait_until("node 2 to hold every key it missed", CONVERGE, || {
        acked.iter().all(|k| c.local(2, k.as_bytes()).is_some())
    });
    // Node 0 coordinated every write and, with no node past the three, kept the hints itself:
    // it delivered at least one per key the dead node missed, and holds none any more.
    wait_until(
        "node 0 to report no pending hint",
        CONVERGE,
        || matches!(c.conn(0).call_str(&["INFO", "cluster"]), Reply::Bulk(Some(b)) if String::from_utf8_lossy(&b).contains("cluster_hints_pending:0\r\n")),
    );
    let info = c.conn(0).call_str(&["INFO", "cluster"]);
    let Reply::Bulk(Some(text)) = info else {
        panic!("INFO cluster: {info:?}")
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert!(
        field("cluster_hints_delivered:") >= acked.len() as u64,
        "{text}"
    );
    assert_eq!(field("cluster_hints_pending:"), 0, "{text}");
}

/// The prototype's failure: write 1,000 keys, stop a node, overwrite all, restart it, stop
/// another: every quorum read returns the new value.
#[test]
fn overwrites_missed_by_a_node_are_never_read_back_stale() {
    let mut c = Cluster::start(3, &["--hinted-handoff", "off"]);
    c.wait_converged();
    let keys: Vec<String> = (0..1000).map(|i| format!("key{i}")).collect();
    let set_all = |conn: &mut Conn, v: &str| {
        let cmds: Vec<Vec<String>> = keys
            .iter()
            .map(|k| vec!["SET".into(), k.clone(), v.into()])
            .collect();
        conn.send_pipeline(&cmds).unwrap();
        for k in &keys {
            ok(conn.recv(), &format!("SET {k} {v}"));
        }
    };
    set_all(&mut c.conn(0), "old");
    c.kill(2);
    set_all(&mut c.conn(0), "new");
    c.restart(2);
    c.wait_converged();
    c.kill(1);
    c.wait_converged();
    let mut conn = c.conn(2);
    let mut stale = 0;
    for k in &keys {
        match conn.call_str(&["GET", k]) {
            r if r == bulk("new") => {}
            r => {
                stale += 1;
                eprintln!("{k}: {r:?}");
            }
        }
    }
    assert_eq!(
        stale, 0,
        "quorum reads that returned something else than the new value"
    );
}

/// With hinted handoff off, one read repairs a stale replica.
#[test]
fn one_read_repairs_a_stale_replica() {
    let mut c = Cluster::start(3, &["--hinted-handoff", "off"]);
    c.wait_converged();
    ok(c.conn(0).call_str(&["SET", "k", "old"]), "first write");
    // The reply came at W=2: node 2 may get its copy a moment later. It must hold "old"
    // before it is killed, or the check below sees nothing rather than a stale copy.
    wait_until("node 2 to hold the first write", CONVERGE, || {
        c.local(2, b"k") == Some(b"old".to_vec())
    });
    c.kill(2);
    c.wait_converged();
    ok(
        c.conn(0).call_str(&["SET", "k", "new"]),
        "write node 2 misses",
    );
    c.restart(2);
    c.wait_converged();
    assert_eq!(
        c.local(2, b"k"),
        Some(b"old".to_vec()),
        "node 2 is stale before the read"
    );
    assert_eq!(c.conn(2).call_str(&["GET", "k"]), bulk("new"));
    wait_until(
        "read repair to reach node 2",
        Duration::from_secs(10),
        || c.local(2, b"k") == Some(b"new".to_vec()),
    );
}

/// Two writes with the same context through two coordinators are both siblings on a quorum
/// read; a write with the returned context resolves them. With --conflicts lww the newest
/// wins.
#[tokio::test(flavor = "current_thread")]
async fn siblings_across_coordinators() {
    for (mode, want) in [("siblings", 2usize), ("lww", 1)] {
        let c = Cluster::start(3, &["--conflicts", mode]);
        c.wait_converged();
        let (a, b) = (c.client(0).await, c.client(1).await);
        let ctx = a.put("s", "base").await.unwrap();
        a.put_with("s", "from-a", with(&ctx)).await.unwrap();
        b.put_with("s", "from-b", with(&ctx)).await.unwrap();
        let read = c
            .client(2)
            .await
            .get("s")
            .await
            .unwrap()
            .expect("the key exists");
        let mut values = read.values.clone();
        values.sort();
        assert_eq!(values.len(), want, "{mode}: {values:?}");
        if mode == "lww" {
            assert_eq!(values, vec![Bytes::from_static(b"from-b")]);
            continue;
        }
        assert_eq!(
            values,
            vec![Bytes::from_static(b"from-a"), Bytes::from_static(b"from-b")]
        );
        a.put_with("s", "resolved", with(&read.context))
            .await
            .unwrap();
        let after = b.get("s").await.unwrap().expect("exists");
        assert_eq!(after.values, vec![Bytes::from_static(b"resolved")]);
    }
}

/// A node with the wrong secret does not join, and its log says why; a client connection
/// that sends a peer opcode gets an error and nothing is applied.
#[test]
fn wrong_secret_is_refused_and_clients_cannot_speak_peer() {
    let c = Cluster::start(2, &[]);
    c.wait_converged();
    let intruder = Server::start(&[
        "--cluster-secret",
        "not-the-cluster-secret-at-all",
        "--peers",
        &format!("127.0.0.1:{}", c.ports[0]),
    ]);
    wait_until(
        "the intruder to log the refusal",
        Duration::from_secs(10),
        || {
            intruder.log_text().contains("failed authentication")
                || intruder.log_text().contains("cluster secrets differ")
        },
    );
    wait_until("node 0 to log the refusal", Duration::from_secs(10), || {
        c.node(0).log_text().contains("the cluster secrets differ")
    });
    assert_eq!(
        c.nodes_of(0).len(),
        2,
        "the intruder is not a member: {:?}",
        c.nodes_of(0)
    );
    // A client: HELLO, then a REPLICATE (opcode 0x43) carrying a well-formed entry for "x".
    let entry = ringkv::store::Entry::with_one(
        b"x",
        42,
        ringkv::store::VersionRef::value(b"injected", 1, None),
    );
    let mut payload = 0u64.to_be_bytes().to_vec();
    payload.extend_from_slice(&(entry.as_bytes().len() as u32).to_be_bytes());
    payload.extend_from_slice(entry.as_bytes());
    let frame = |id: u64, op: u8, payload: &[u8]| {
        let mut f = ((12 + payload.len()) as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[op, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    };
    let hello = [0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut s = c.node(0).tcp();
    std::io::Write::write_all(&mut s, &frame(1, 0x01, &hello)).unwrap();
    std::io::Write::write_all(&mut s, &frame(2, 0x43, &payload)).unwrap();
    let read_frame = |s: &mut std::net::TcpStream| {
        let mut len = [0u8; 4];
        std::io::Read::read_exact(s, &mut len).expect("a reply frame");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        std::io::Read::read_exact(s, &mut body).expect("a reply frame");
        body
    };
    let hello_reply = read_frame(&mut s);
    assert_eq!(hello_reply[10], 0, "HELLO succeeds: {hello_reply:?}");
    let reply = read_frame(&mut s);
    assert_eq!(reply[8], 0x43, "the reply echoes the opcode");
    assert_eq!(reply[10], 1, "status Error");
    let text = String::from_utf8_lossy(&reply[12..]).into_owned();
    assert!(
        text.contains("only accepted on an authenticated peer link"),
        "{text}"
    );
    assert_eq!(
        c.conn(0).call_str(&["GET", "x"]),
        Reply::Bulk(None),
        "nothing was applied"
    );
    assert_eq!(
        c.conn(1).call_str(&["GET", "x"]),
        Reply::Bulk(None),
        "nothing was applied"
    );
}

/// A delete a replica missed is not undone when that replica returns: in cluster mode a
/// tombstone outlives the replica's absence (the 10-day default grace), so a quorum read of
/// the tombstone and the stale value answers nil, and read repair spreads the tombstone.
#[test]
fn a_delete_missed_by_a_replica_does_not_come_back() {
    let mut c = Cluster::start(3, &["--hinted-handoff", "off"]);
    c.wait_converged();
    ok(c.conn(0).call_str(&["SET", "gone", "v"]), "first write");
    wait_until(
        "every replica to hold the first write",
        Duration::from_secs(5),
        || (0..3).all(|i| c.local(i, b"gone").is_some()),
    );
    c.kill(2);
    c.wait_converged();
    assert_eq!(c.conn(0).call_str(&["DEL", "gone"]), Reply::Int(1));
    // Long enough for a tombstone to be purged if it had no grace (purges run every 100 ms).
    let info = |i: usize| match c.conn(i).call_str(&["INFO", "stats"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        r => panic!("{r:?}"),
    };
    wait_until(
        "the tombstone to be durable and counted",
        Duration::from_secs(5),
        || info(0).contains("tombstones:1"),
    );
    c.restart(2);
    c.kill(1);
    c.wait_converged();
    assert_eq!(
        c.local(2, b"gone"),
        Some(b"v".to_vec()),
        "node 2 still has the old value"
    );
    assert_eq!(c.conn(2).call_str(&["GET", "gone"]), Reply::Bulk(None));
    assert_eq!(c.conn(0).call_str(&["EXISTS", "gone"]), Reply::Int(0));
    wait_until(
        "read repair to delete it on node 2",
        Duration::from_secs(10),
        || c.local(2, b"gone").is_none(),
    );
}

/// Sloppy quorum: with four nodes, N=3 and W=3, a write whose replica is down still gets its
/// third durable ack from a stand-in past the preference list, which keeps a hint and delivers
/// it when the owner is back. With hinted handoff off the same writes fail.
#[test]
fn stand_ins_complete_w_and_deliver_their_hints() {
    for hinted in ["on", "off"] {
        let mut c = Cluster::start(4, &["--w", "3", "--hinted-handoff", hinted]);
        c.wait_converged();
        c.kill(3);
        c.wait_converged();
        let mut a = c.conn(0);
        let (mut acked, mut refused) = (Vec::new(), 0);
        for i in 0..100 {
            let k = format!("s{i}");
            match a.call_str(&["SET", &k, "v"]) {
                Reply::Simple(_) => acked.push(k),
                Reply::Error(e) if e.starts_with("NOQUORUM") => refused += 1,
                r => panic!("SET {k}: {r:?}"),
            }
        }
        if hinted == "off" {
            // About 3/4 of the keys have node 3 among their replicas.
            assert!(
                refused > 40,
                "without stand-ins W=3 fails when a replica is down: {refused}"
            );
            continue;
        }
        assert_eq!(acked.len(), 100, "stand-ins made up the third ack");
        c.restart(3);
        c.wait_converged();
        // Node 3 gets the keys it owns (about 3/4) from the stand-ins' hints, without a read,
        // and no node keeps a hint for it.
        let pending = |i: usize| match c.conn(i).call_str(&["INFO", "cluster"]) {
            Reply::Bulk(Some(b)) => {
                !String::from_utf8_lossy(&b).contains("cluster_hints_pending:0\r\n")
            }
            r => panic!("{r:?}"),
        };
        wait_until("node 3 to receive its hints", CONVERGE, || {
            let held = acked
                .iter()
                .filter(|k| c.local(3, k.as_bytes()).is_some())
                .count();
            held > 50 && (0..3).all(|i| !pending(i))
        });
    }
}

/// A peer link carrying large frames both ways at once (a node replicating big values to a
/// peer while the same peer answers its reads of big values) keeps flowing: each end keeps
/// reading while it writes, so neither stalls with both socket buffers full. The link must
/// still work after the burst.
#[test]
fn a_peer_link_with_large_frames_both_ways_does_not_stall() {
    const VALUE_BYTES: usize = 4 << 20;
    const BURST: usize = 12;
    let c = Cluster::start(2, &["--n", "2", "--w", "2", "--r", "2"]);
    c.wait_converged();
    let big = "b".repeat(VALUE_BYTES);
    ok(
        c.conn(0).call_str(&["SET", "big", &big]),
        "the value to read",
    );
    wait_until("node 1 to hold the big value", CONVERGE, || {
        c.local(1, b"big").map(|v| v.len()) == Some(VALUE_BYTES)
    });
    let addr = c.node(0).addr;
    let reads = std::thread::spawn(move || {
        let mut conn = Conn::connect(addr);
        let cmds: Vec<Vec<String>> = (0..BURST)
            .map(|_| vec!["GET".to_string(), "big".to_string()])
            .collect();
        conn.send_pipeline(&cmds).unwrap();
        (0..BURST).map(|_| conn.read().is_ok()).count()
    });
    let writes = std::thread::spawn(move || {
        let mut conn = Conn::connect(addr);
        let big = "w".repeat(VALUE_BYTES);
        let cmds: Vec<Vec<String>> = (0..BURST)
            .map(|i| vec!["SET".to_string(), format!("w{i}"), big.clone()])
            .collect();
        conn.send_pipeline(&cmds).unwrap();
        (0..BURST).map(|_| conn.read().is_ok()).count()
    });
    let _ = (reads.join(), writes.join());
    // Whatever the burst's replies were, the link must carry a small write afterwards.
    let mut conn = c.conn(0);
    wait_until(
        "a small write to reach W=2 after the burst",
        Duration::from_secs(20),
        || conn.call_str(&["SET", "small", "v"]) == Reply::Simple("OK".into()),
    );
    assert_eq!(c.local(1, b"small"), Some(b"v".to_vec()));
}

/// One replica per key, W=R=1, no stand-ins: which node holds a key is exact.
const ONE_REPLICA: &[&str] = &[
    "--n",
    "1",
    "--w",
    "1",
    "--r",
    "1",
    "--hinted-handoff",
    "off",
];

/// A member restarted while its peers are down comes back knowing the whole layout (saved in
/// its data directory), not alone: it does not coordinate a write for a key it does not
/// replicate on a ring of itself. Before the layout was saved, such a write was acknowledged
/// (W=1) on the restarted node alone and dropped once the peers were back ("copies of
/// partitions this node no longer replicates"): an acknowledged write lost.
#[test]
fn a_restarted_member_routes_on_the_layout_it_saved() {
    let mut c = Cluster::start(3, ONE_REPLICA);
    c.wait_converged();
    // A key node 0 does not replicate (N=1: one owner).
    let key = c.key_on("elsewhere", &[1]);
    // The layout is saved within a commit tick of converging: wait until the file is there.
    let file = c.dir(0).join("cluster-layout");
    wait_until("node 0 to save its layout", CONVERGE, || file.exists());
    for i in [1, 2, 0] {
        c.kill(i);
    }
    c.restart(0);
    let lines = c.nodes_of(0);
    assert_eq!(
        lines.len(),
        3,
        "node 0 restarted with its layout: {lines:?}"
    );
    assert!(c.node(0).log_text().contains("layout restored"));
    let r = c.conn(0).call_str(&["SET", &key, "v"]);
    assert!(
        matches!(r, Reply::Error(_)),
        "a write for a key whose only replica is down must not be acknowledged: {r:?}"
    );
    assert_eq!(c.local(0, key.as_bytes()), None, "node 0 holds {key}");
    // A damaged layout file is refused with a clear error, not silently ignored.
    c.kill(0);
    std::fs::write(&file, b"rkvlay01junk").expect("damage the layout file");
    let flags = [
        "--cluster-secret",
        common::cluster::SECRET,
        "--threads",
        "1",
    ];
    let err = match common::Server::try_start_in(&c.dir(0), &flags) {
        Ok(_) => panic!("started on a damaged layout file"),
        Err(log) => log,
    };
    assert!(err.contains("cluster-layout"), "{err}");
}

/// A node drops its copies of partitions it does not replicate only once their replicas hold
/// every version it has: a version only it holds (as a write it coordinated on an older
/// layout would be) is handed over first, then dropped here.
#[test]
fn copies_are_handed_over_before_they_are_dropped() {
    use ringkv::store::{Entry, VersionRef};
    use ringkv_proto::peer;
    let mut c = Cluster::start(3, ONE_REPLICA);
    c.wait_converged();
    let key = c.key_on("orphan", &[1]);
    // Node 0, not a replica of the key, gets a version of it that no replica has (a REPLICATE
    // from a peer is merged as is).
    let mut p = common::peer::PeerConn::connect_n(c.node(0).addr, 0x77, 1);
    let e = Entry::with_one(
        key.as_bytes(),
        0x77,
        VersionRef::value(b"only-here", 1_000, None),
    );
    let got = p.call(|id, out| peer::encode_replicate(id, 0, e.as_bytes(), out));
    assert!(got.is_ok(), "REPLICATE: {got:?}");
    assert_eq!(c.local(0, key.as_bytes()), Some(b"only-here".to_vec()));
    assert_eq!(c.local(1, key.as_bytes()), None);
    // A restart makes node 0 clean up again: it hands the version to node 1, then drops it.
    c.kill(0);
    c.restart(0);
    c.wait_converged();
    wait_until("node 0 to drop its copy", CONVERGE, || {
        c.local(0, key.as_bytes()).is_none()
    });
    assert_eq!(
        c.local(1, key.as_bytes()),
        Some(b"only-here".to_vec()),
        "the replica got the version before node 0 dropped it"
    );
}
