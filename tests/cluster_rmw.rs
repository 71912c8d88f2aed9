//! Read-modify-write commands on a cluster (issue 11, items 2 and 4): a concurrent change made
//! elsewhere becomes a sibling instead of being overwritten, SET NX checks "absent at R",
//! GETSET answers what it read at R, MSETNX and RENAME/RENAMENX across partitions (never
//! neither key), and TTLs decided by the expiry stored in the version, measured on each
//! reader's clock, with replicas whose clocks differ (`--test-clock-skew-ms`, a test-only flag).
//!
//! Isolation is made with kills and restarts under `--hinted-handoff off`, so every step is
//! deterministic: a node that is down can't see a write, and a write at R=1 on a node reads
//! only its own copy (the coordinator's copy answers first and R=1 is then reached).

mod common;

use std::time::{Duration, Instant};

use common::cluster::with_context as with;
use common::cluster::Cluster;
use common::resp::{Conn, Reply};
use common::*;
use ringkv_client::Bytes;

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn bulk(v: &str) -> Reply {
    Reply::Bulk(Some(v.as_bytes().to_vec()))
}

fn nil() -> Reply {
    Reply::Bulk(None)
}

/// A RESP connection to node `i` with its own quorums (CLUSTER QUORUM r w).
fn conn_q(c: &Cluster, i: usize, r: u8, w: u8) -> Conn {
    let mut conn = c.conn(i);
    let (r, w) = (r.to_string(), w.to_string());
    assert_eq!(conn.call_str(&["CLUSTER", "QUORUM", &r, &w]), ok());
    conn
}

/// Every live sibling of `key`, sorted, read through node `i` with the binary protocol (at
/// the node's default R).
async fn siblings(c: &Cluster, i: usize, key: &str) -> Vec<Bytes> {
    let client = c.client(i).await;
    let mut v = match client.get(key).await.expect("binary GET") {
        Some(read) => read.values,
        None => Vec::new(),
    };
    v.sort();
    v
}

fn bytes(v: &[&'static str]) -> Vec<Bytes> {
    v.iter().map(|s| Bytes::from_static(s.as_bytes())).collect()
}

/// APPEND through a coordinator that can't see a concurrent APPEND made through another (each
/// alone, at R=1 W=1) leaves both results as siblings; RESP sees the newest; the next APPEND,
/// which reads at R=3, appends to that winner and its version supersedes both siblings.
#[tokio::test(flavor = "current_thread")]
async fn a_concurrent_change_elsewhere_becomes_a_sibling() {
    let mut c = Cluster::start(3, &["--hinted-handoff", "off", "--r", "3", "--w", "3"]);
    c.wait_converged();
    assert_eq!(c.conn(0).call_str(&["SET", "k", "base"]), ok());
    // Node 0 alone appends.
    c.kill(1);
    c.kill(2);
    c.wait_converged();
    assert_eq!(
        conn_q(&c, 0, 1, 1).call_str(&["APPEND", "k", "-a"]),
        Reply::Int(6)
    );
    // Node 2 alone (node 0 down, node 1 still down) appends to the base it holds.
    c.kill(0);
    c.restart(2);
    assert_eq!(c.local(2, b"k"), Some(b"base".to_vec()), "node 2 missed -a");
    assert_eq!(
        conn_q(&c, 2, 1, 1).call_str(&["APPEND", "k", "-c"]),
        Reply::Int(6)
    );
    c.restart(0);
    c.restart(1);
    c.wait_converged();
    assert_eq!(
        siblings(&c, 1, "k").await,
        bytes(&["base-a", "base-c"]),
        "neither append overwrote the other"
    );
    assert_eq!(
        c.conn(1).call_str(&["GET", "k"]),
        bulk("base-c"),
        "RESP sees the newest sibling"
    );
    // A binary COMMAND GET carries every sibling its context covers, as the GET opcode does.
    match c.client(1).await.command(&["GET", "k"]).await {
        Ok(ringkv_client::Value::Versioned { mut values, .. }) => {
            values.sort();
            assert_eq!(values, bytes(&["base-a", "base-c"]), "COMMAND GET");
        }
        other => panic!("COMMAND GET replied {other:?}"),
    }
    assert_eq!(c.conn(1).call_str(&["APPEND", "k", "-z"]), Reply::Int(8));
    assert_eq!(
        siblings(&c, 2, "k").await,
        bytes(&["base-c-z"]),
        "an RMW appends to the winner and supersedes every sibling it read"
    );
}

/// SET NX checks that the key is absent at the R replicas it reads, no more: a value only
/// node 0 holds is not seen by node 1 at R=1, whose SET NX succeeds and becomes a sibling.
/// At R=3 SET NX sees the key. GETSET answers the winner read at R and replaces every sibling;
/// GETDEL answers what it read and deletes every sibling.
#[tokio::test(flavor = "current_thread")]
async fn set_nx_is_absent_at_r_replicas_when_checked() {
    let mut c = Cluster::start(3, &["--hinted-handoff", "off"]);
    c.wait_converged();
    c.kill(1);
    c.kill(2);
    // Node 0 must see them down, or its write waits on their links and reaches them once
    // they are back.
    c.wait_converged();
    assert_eq!(conn_q(&c, 0, 1, 1).call_str(&["SET", "k", "a"]), ok());
    c.restart(1);
    c.restart(2);
    c.wait_converged();
    assert_eq!(c.local(1, b"k"), None, "node 1 missed the write");
    assert_eq!(
        conn_q(&c, 1, 1, 1).call_str(&["SET", "k", "b", "NX"]),
        ok(),
        "at R=1 node 1 sees only its own copy: absent"
    );
    assert_eq!(
        conn_q(&c, 2, 3, 3).call_str(&["SET", "k", "c", "NX"]),
        nil(),
        "at R=3 the key exists"
    );
    assert_eq!(siblings(&c, 2, "k").await, bytes(&["a", "b"]));
    let mut all = conn_q(&c, 2, 3, 3);
    assert_eq!(all.call_str(&["GETSET", "k", "d"]), bulk("b"), "the winner");
    assert_eq!(siblings(&c, 0, "k").await, bytes(&["d"]));
    assert_eq!(all.call_str(&["GETDEL", "k"]), bulk("d"));
    assert_eq!(siblings(&c, 1, "k").await, Vec::<Bytes>::new());
    assert_eq!(all.call_str(&["EXISTS", "k"]), Reply::Int(0));
}

/// Each read-modify-write command on a key with two siblings (written through two
/// coordinators with the same context) acts on the winner, the value RESP GET shows, answers
/// it where the command returns the old value, and leaves one version that replaces both.
/// RENAME moves the winner and deletes both.
#[tokio::test(flavor = "current_thread")]
async fn rmw_commands_on_siblings_act_on_the_winner() {
    let c = Cluster::start(3, &[]);
    c.wait_converged();
    let (a, b) = (c.client(0).await, c.client(1).await);
    let mut resp = c.conn(2);
    // (command, reply given the winner, the one value left given the winner)
    type Want = fn(&str) -> (Reply, String);
    let cases: [(&[&str], Want); 7] = [
        (&["APPEND", "-z"], |w| {
            (Reply::Int(w.len() as i64 + 2), format!("{w}-z"))
        }),
        (&["SETRANGE", "0", "W"], |w| {
            (Reply::Int(w.len() as i64), format!("W{}", &w[1..]))
        }),
        (&["GETSET", "n"], |w| (bulk(w), "n".into())),
        (&["SET", "n", "GET"], |w| (bulk(w), "n".into())),
        (&["SET", "n", "XX"], |_| (ok(), "n".into())),
        (&["GETEX", "PX", "100000"], |w| (bulk(w), w.into())),
        (&["EXPIRE", "100"], |w| (Reply::Int(1), w.into())),
    ];
    for (i, (cmd, want)) in cases.iter().enumerate() {
        let key = format!("sib{i}");
        let ctx = a.put(&key, "base").await.expect("put");
        a.put_with(&key, "from-a", with(&ctx)).await.expect("put a");
        b.put_with(&key, "from-b", with(&ctx)).await.expect("put b");
        assert_eq!(siblings(&c, 2, &key).await, bytes(&["from-a", "from-b"]));
        let Reply::Bulk(Some(winner)) = resp.call_str(&["GET", &key]) else {
            panic!("GET {key}")
        };
        let winner = String::from_utf8(winner).expect("utf-8");
        let mut args = vec![cmd[0], key.as_str()];
        args.extend(&cmd[1..]);
        let (reply, left) = want(&winner);
        assert_eq!(
            resp.call_str(&args),
            reply,
            "{args:?} on siblings, winner {winner}"
        );
        assert_eq!(
            siblings(&c, 0, &key).await,
            vec![Bytes::from(left.clone())],
            "{args:?} leaves one version"
        );
    }
    // RENAME moves the winner and deletes every sibling it read.
    let ctx = a.put("rsrc", "base").await.expect("put");
    a.put_with("rsrc", "from-a", with(&ctx))
        .await
        .expect("put a");
    b.put_with("rsrc", "from-b", with(&ctx))
        .await
        .expect("put b");
    let winner = resp.call_str(&["GET", "rsrc"]);
    assert_eq!(resp.call_str(&["RENAME", "rsrc", "rdst"]), ok());
    assert_eq!(resp.call_str(&["GET", "rdst"]), winner);
    assert_eq!(siblings(&c, 1, "rdst").await.len(), 1);
    assert_eq!(siblings(&c, 0, "rsrc").await, Vec::<Bytes>::new());
}

/// MSETNX across partitions: 1 and every key written when none existed at R, 0 and nothing
/// written when one did; with a node down (W=2 of 3 still possible) it still writes.
#[test]
fn msetnx_across_partitions() {
    let mut c = Cluster::start(3, &["--hinted-handoff", "off"]);
    c.wait_converged();
    let mut a = c.conn(0);
    let keys: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    let mut args = vec!["MSETNX".to_string()];
    for k in &keys {
        args.push(k.clone());
        args.push(format!("v-{k}"));
    }
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(a.call_str(&args_ref), Reply::Int(1));
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(c.conn(i % 3).call_str(&["GET", k]), bulk(&format!("v-{k}")));
    }
    assert_eq!(
        a.call_str(&["MSETNX", "fresh1", "x", "m3", "y", "fresh2", "z"]),
        Reply::Int(0)
    );
    assert_eq!(a.call_str(&["EXISTS", "fresh1", "fresh2"]), Reply::Int(0));
    assert_eq!(a.call_str(&["GET", "m3"]), bulk("v-m3"), "unchanged");
    assert_eq!(
        a.call_str(&["MSETNX", "one", "1"]),
        Reply::Int(1),
        "one key"
    );
    c.kill(2);
    c.wait_converged();
    assert_eq!(
        c.conn(1)
            .call_str(&["MSETNX", "n1", "1", "n2", "2", "n3", "3"]),
        Reply::Int(1)
    );
    assert_eq!(
        c.conn(0).call_str(&["MGET", "n1", "n2", "n3"]),
        Reply::Array(Some(vec![bulk("1"), bulk("2"), bulk("3")]))
    );
}

/// RENAME and RENAMENX across partitions keep Redis's replies and carry the value and its
/// expiry; with a node down, a rename whose keys keep W replicas works; one whose old key
/// lost its write quorum after the new key was written answers the error, and the new key
/// stays: never neither key, also once the node is back.
#[test]
fn rename_across_partitions_never_loses_both_keys() {
    // N=2 of 3 nodes: some keys have no replica on node 2.
    let args = [
        "--n",
        "2",
        "--w",
        "2",
        "--r",
        "2",
        "--hinted-handoff",
        "off",
    ];
    let mut c = Cluster::start(3, &args);
    c.wait_converged();
    let src = c.key_on("src", &[0, 2]);
    let dst = c.key_on("dst", &[1, 2]);
    let mut a = c.conn(0);
    assert_eq!(a.call_str(&["SET", &src, "v", "PX", "600000"]), ok());
    let Reply::Int(at) = a.call_str(&["PEXPIRETIME", &src]) else {
        panic!("PEXPIRETIME")
    };
    assert_eq!(a.call_str(&["RENAME", &src, &dst]), ok());
    assert_eq!(a.call_str(&["GET", &src]), nil());
    assert_eq!(c.conn(1).call_str(&["GET", &dst]), bulk("v"));
    assert_eq!(
        a.call_str(&["PEXPIRETIME", &dst]),
        Reply::Int(at),
        "the expiry moves with the value"
    );
    assert_eq!(
        a.call_str(&["RENAME", &src, &dst]),
        Reply::Error("ERR no such key".into())
    );
    assert_eq!(
        a.call_str(&["RENAMENX", &src, &dst]),
        Reply::Error("ERR no such key".into())
    );
    assert_eq!(a.call_str(&["RENAME", &dst, &dst]), ok(), "onto itself");
    assert_eq!(a.call_str(&["RENAMENX", &dst, &dst]), Reply::Int(0));
    assert_eq!(a.call_str(&["SET", "other", "o"]), ok());
    assert_eq!(a.call_str(&["RENAMENX", "other", &dst]), Reply::Int(0));
    assert_eq!(
        a.call_str(&["GET", "other"]),
        bulk("o"),
        "RENAMENX changed nothing"
    );
    assert_eq!(a.call_str(&["RENAMENX", "other", &src]), Reply::Int(1));
    assert_eq!(
        a.call_str(&["MGET", "other", &src]),
        Reply::Array(Some(vec![nil(), bulk("o")]))
    );

    // Node 2 down: keys on nodes 0 and 1 only still rename at W=2.
    let old = c.key_on("old", &[0, 2]);
    let (a2, b2) = (c.key_on("a", &[0, 1]), c.key_on("b", &[0, 1]));
    let new = c.key_on("new", &[0, 1]);
    assert_eq!(a.call_str(&["SET", &old, "kept"]), ok());
    assert_eq!(a.call_str(&["SET", &a2, "moved"]), ok());
    c.kill(2);
    c.wait_converged();
    let mut a = c.conn(0);
    assert_eq!(a.call_str(&["RENAME", &a2, &b2]), ok());
    assert_eq!(
        a.call_str(&["MGET", &a2, &b2]),
        Reply::Array(Some(vec![nil(), bulk("moved")]))
    );
    // The new key's write can't reach W (node 2 holds one of its replicas): that is the
    // reply, and the old key is untouched.
    let far = c.key_on("far", &[1, 2]);
    match a.call_str(&["RENAME", &b2, &far]) {
        Reply::Error(e) => assert!(
            e.starts_with("NOQUORUM") && !e.contains("the new key was written"),
            "{e}"
        ),
        r => panic!("RENAME onto a key without W replicas: {r:?}"),
    }
    assert_eq!(
        a.call_str(&["GET", &b2]),
        bulk("moved"),
        "the old key stays"
    );
    // MSETNX whose check passes at R=1 but one of whose writes can't reach W=2: its error,
    // and the other key may be written (here it is: its replicas are up).
    let (ok1, down) = (c.key_on("mok", &[0, 1]), c.key_on("mdown", &[1, 2]));
    match conn_q(&c, 0, 1, 2).call_str(&["MSETNX", &ok1, "1", &down, "2"]) {
        Reply::Error(e) => assert!(e.starts_with("NOQUORUM"), "{e}"),
        r => panic!("MSETNX with a key short of W: {r:?}"),
    }
    assert_eq!(a.call_str(&["GET", &ok1]), bulk("1"));
    // The old key has one live replica: readable at R=1, but its delete can't reach W=2 once
    // the new key (on nodes 0 and 1) is written.
    let mut r1 = conn_q(&c, 0, 1, 2);
    match r1.call_str(&["RENAME", &old, &new]) {
        Reply::Error(e) => assert!(
            e.starts_with("NOQUORUM") && e.contains("the new key was written"),
            "{e}"
        ),
        r => panic!("RENAME whose delete lost its quorum: {r:?}"),
    }
    // The delete's outcome is unknown, as for any NOQUORUM write (here node 0, the old
    // key's coordinating replica, applied it): the new key is there in any case.
    assert_eq!(r1.call_str(&["GET", &new]), bulk("kept"), "the new key");
    c.restart(2);
    c.wait_converged();
    let mut all = c.conn(2);
    assert_eq!(
        all.call_str(&["GET", &new]),
        bulk("kept"),
        "the new key, once every node is back"
    );
    // Node 2's copy of the old key, which missed the delete, does not come back over it.
    assert_eq!(
        c.local(2, old.as_bytes()),
        Some(b"kept".to_vec()),
        "node 2 missed it"
    );
    assert_eq!(all.call_str(&["GET", &old]), nil());
}

/// RENAME deletes the old key with the context it read: a version of it that the read did
/// not see (node 0, back from a kill, reads only its own stale copy at R=1) is not deleted,
/// and stays as a live sibling of the delete (binary GET shows it; RESP shows the newest
/// version, the delete).
#[tokio::test(flavor = "current_thread")]
async fn rename_deletes_only_what_it_read() {
    let mut c = Cluster::start(3, &["--hinted-handoff", "off"]);
    c.wait_converged();
    // W=3: node 0 holds it durably before the kill (a copy only in its memory could be lost).
    assert_eq!(conn_q(&c, 1, 2, 3).call_str(&["SET", "src", "base"]), ok());
    c.kill(0);
    c.wait_converged();
    assert_eq!(c.conn(1).call_str(&["SET", "src", "unseen"]), ok());
    c.restart(0);
    c.wait_converged();
    assert_eq!(
        c.local(0, b"src"),
        Some(b"base".to_vec()),
        "node 0 is stale"
    );
    assert_eq!(
        conn_q(&c, 0, 1, 3).call_str(&["RENAME", "src", "dst"]),
        ok()
    );
    let mut all = conn_q(&c, 2, 3, 3);
    assert_eq!(
        all.call_str(&["GET", "dst"]),
        bulk("base"),
        "what the read saw"
    );
    assert_eq!(
        siblings(&c, 1, "src").await,
        bytes(&["unseen"]),
        "not deleted"
    );
    assert_eq!(
        all.call_str(&["GET", "src"]),
        nil(),
        "RESP shows the delete"
    );
}

/// Milliseconds since `t0`.
fn ms_since(t0: Instant) -> i64 {
    t0.elapsed().as_millis() as i64
}

/// PTTL of `key` read through node `i`.
fn pttl(c: &Cluster, i: usize, key: &str) -> i64 {
    match c.conn(i).call_str(&["PTTL", key]) {
        Reply::Int(n) => n,
        r => panic!("PTTL {key} through node {i}: {r:?}"),
    }
}

/// Node clocks −3 s, 0 and +3 s. A key written through node 1 expires at node 1's clock at
/// the write plus the TTL, and every node measures that on its own clock: PTTL through node i
/// is the TTL minus its skew minus the time elapsed (never less: no replica expires it by a
/// timer of its own). A 2 s key is thus gone at once through node 2 (3 s ahead, more than
/// the TTL), at 2 s through node 1, at 5 s through node 0, and then expired on all three,
/// read through each node and in each node's own copy (CLUSTER GETLOCAL).
#[test]
fn ttl_is_the_versions_expiry_on_every_replicas_clock() {
    const SKEW_MS: [i64; 3] = [-3000, 0, 3000];
    const MARGIN_MS: i64 = 300;
    let c = Cluster::start_each(3, &[], |i| {
        vec!["--test-clock-skew-ms".into(), SKEW_MS[i].to_string()]
    });
    c.wait_converged();
    let mut one = c.conn(1);
    let t0 = Instant::now();
    assert_eq!(one.call_str(&["SET", "long", "v", "PX", "20000"]), ok());
    assert_eq!(one.call_str(&["SET", "t", "v", "PX", "2000"]), ok());
    // Node 1 set the expiry between t0 and t1: "live" is checked from t0, "expired" from t1.
    let t1 = Instant::now();
    for (i, skew) in SKEW_MS.iter().enumerate() {
        let got = pttl(&c, i, "long");
        // Whole milliseconds on both sides: the node's clock readings and `e` each lose up
        // to 1 ms to truncation.
        let e = ms_since(t0) + 2;
        let hi = 20_000 - skew;
        assert!(
            (hi - e..=hi).contains(&got),
            "PTTL through node {i} (skew {skew} ms) is {got}, {e} ms after the write: \
             want within [{}, {hi}]",
            hi - e
        );
    }
    assert_eq!(
        c.conn(2).call_str(&["GET", "t"]),
        nil(),
        "node 2 is 3 s ahead"
    );
    assert_eq!(c.local(2, b"t"), None);
    // Node 0 holds the version (the write reached it, or reaches it now).
    wait_until("node 0 to hold t", Duration::from_secs(2), || {
        c.local(0, b"t").is_some()
    });
    // Elapsed time taken after the read: a read that answered nil before 2 s is early.
    let before = c.conn(1).call_str(&["GET", "t"]);
    let e = ms_since(t0);
    assert!(
        before == bulk("v") || e >= 2000 - 10,
        "through node 1 after {e} ms: {before:?}"
    );
    // Past node 1's expiry, before node 0's.
    wait_until("2 s to pass", Duration::from_secs(5), || {
        ms_since(t1) >= 2000 + MARGIN_MS
    });
    assert_eq!(c.conn(1).call_str(&["GET", "t"]), nil());
    assert_eq!(c.local(1, b"t"), None, "node 1's own copy");
    let through0 = c.conn(0).call_str(&["GET", "t"]);
    let local0 = c.local(0, b"t");
    let e = ms_since(t0);
    if e < 5000 - 10 {
        assert_eq!(through0, bulk("v"), "node 0 is 3 s behind ({e} ms)");
        assert_eq!(local0, Some(b"v".to_vec()), "node 0's own copy ({e} ms)");
    }
    wait_until("5 s to pass", Duration::from_secs(8), || {
        ms_since(t1) >= 5000 + MARGIN_MS
    });
    for i in 0..3 {
        assert_eq!(c.conn(i).call_str(&["GET", "t"]), nil(), "through node {i}");
        assert_eq!(c.local(i, b"t"), None, "node {i}'s own copy");
        assert_eq!(c.conn(i).call_str(&["EXISTS", "t"]), Reply::Int(0));
    }
}
