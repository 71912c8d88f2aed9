//! Cluster behaviour an operator or a Redis user meets (issue "Cluster"): forwarding by a
//! node that is not a replica, multi-key commands split per key, the quorum error, settings
//! mismatches, INFO and metrics.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, SECRET};
use common::resp::Reply;
use common::*;

fn bulk(v: &str) -> Reply {
    Reply::Bulk(Some(v.as_bytes().to_vec()))
}

/// With N=1 on two nodes each key lives on exactly one: a node that is not its replica
/// forwards (one hop), and both nodes answer every key.
#[test]
fn a_node_that_is_not_a_replica_forwards() {
    let c = Cluster::start(2, &["--n", "1", "--w", "1", "--r", "1"]);
    c.wait_converged();
    let mut a = c.conn(0);
    for i in 0..100 {
        assert_eq!(
            a.call_str(&["SET", &format!("f{i}"), &format!("v{i}")]),
            Reply::Simple("OK".into())
        );
    }
    let mut b = c.conn(1);
    let (mut on0, mut on1) = (0, 0);
    for i in 0..100 {
        let k = format!("f{i}");
        assert_eq!(
            b.call_str(&["GET", &k]),
            bulk(&format!("v{i}")),
            "{k} through node 1"
        );
        let (l0, l1) = (c.local(0, k.as_bytes()), c.local(1, k.as_bytes()));
        assert!(
            l0.is_some() != l1.is_some(),
            "{k} lives on exactly one node: {l0:?} {l1:?}"
        );
        on0 += l0.is_some() as usize;
        on1 += l1.is_some() as usize;
    }
    assert!(on0 > 20 && on1 > 20, "both nodes own keys: {on0} / {on1}");
    let info = c.conn(1).call_str(&["INFO", "cluster"]);
    let Reply::Bulk(Some(text)) = info else {
        panic!("{info:?}")
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    assert!(
        !text.contains("cluster_forwarded:0\r\n"),
        "node 0 forwarded to node 1:\n{text}"
    );
}

/// MGET, MSET, DEL and EXISTS over keys on different nodes answer as Redis does.
#[test]
fn multi_key_commands_are_split_per_key() {
    let c = Cluster::start(2, &["--n", "1", "--w", "1", "--r", "1"]);
    c.wait_converged();
    let mut a = c.conn(0);
    let keys: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    let mut mset = vec!["MSET".to_string()];
    for k in &keys {
        mset.push(k.clone());
        mset.push(format!("{k}-v"));
    }
    let mset: Vec<&str> = mset.iter().map(|s| s.as_str()).collect();
    assert_eq!(a.call_str(&mset), Reply::Simple("OK".into()));
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(|s| s.as_str()));
    mget.push("missing");
    let Reply::Array(Some(items)) = c.conn(1).call_str(&mget) else {
        panic!("MGET is an array")
    };
    assert_eq!(items.len(), 21);
    for (k, v) in keys.iter().zip(&items) {
        assert_eq!(v, &bulk(&format!("{k}-v")));
    }
    assert_eq!(items[20], Reply::Bulk(None));
    assert_eq!(
        a.call_str(&["EXISTS", "m0", "m1", "missing", "m0"]),
        Reply::Int(3)
    );
    assert_eq!(a.call_str(&["DEL", "m0", "m1", "missing"]), Reply::Int(2));
    assert_eq!(
        c.conn(1).call_str(&["EXISTS", "m0", "m1", "m2"]),
        Reply::Int(1)
    );
}

/// Without W reachable replicas (and no hinted handoff), a write fails with NOQUORUM naming
/// the acks it got; a multi-key command's error is Redis's.
#[test]
fn quorum_errors_are_clear() {
    let mut c = Cluster::start(3, &["--hinted-handoff", "off"]);
    c.wait_converged();
    let mut a = c.conn(0);
    match a.call_str(&["RENAME", "a", "b"]) {
        Reply::Error(e) => assert_eq!(e, "ERR no such key"),
        r => panic!("RENAME: {r:?}"),
    }
    c.kill(1);
    c.kill(2);
    c.wait_converged();
    match a.call_str(&["SET", "k", "v"]) {
        Reply::Error(e) => assert!(e.starts_with("NOQUORUM") && e.contains("1 of the 2"), "{e}"),
        r => panic!("SET without a quorum: {r:?}"),
    }
    match a.call_str(&["GET", "k"]) {
        Reply::Error(e) => assert!(e.starts_with("NOQUORUM"), "{e}"),
        r => panic!("GET without a quorum: {r:?}"),
    }
    let metrics_info = a.call_str(&["INFO", "cluster"]);
    let Reply::Bulk(Some(text)) = metrics_info else {
        panic!()
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    assert!(text.contains("cluster_write_quorum_failures:1"), "{text}");
    assert!(text.contains("cluster_read_quorum_failures:1"), "{text}");
    assert!(text.contains("cluster_nodes_down:2"), "{text}");
}

/// A node whose N differs refuses to link, naming both values, and does not join.
#[test]
fn different_settings_refuse_to_join() {
    let c = Cluster::start(1, &[]);
    let other = Server::start(&[
        "--cluster-secret",
        SECRET,
        "--n",
        "2",
        "--w",
        "1",
        "--r",
        "1",
        "--peers",
        &format!("127.0.0.1:{}", c.ports[0]),
    ]);
    let want = "cluster settings differ: this node has --n 3, the connecting node --n 2";
    wait_until("the refusal in both logs", Duration::from_secs(10), || {
        other.log_text().contains(want) && c.node(0).log_text().contains(want)
    });
    assert_eq!(c.nodes_of(0).len(), 1);
    // Alone, with N=3 and W=2: writes say why they can't be acknowledged.
    match c.conn(0).call_str(&["SET", "k", "v"]) {
        Reply::Error(e) => assert!(e.contains("fewer nodes than N"), "{e}"),
        r => panic!("{r:?}"),
    }
}

/// W+R ≤ N is allowed and reported as not read-your-writes; Prometheus shows the cluster.
#[test]
fn info_and_metrics_describe_the_cluster() {
    let metrics_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{metrics_port}");
    let c = Cluster::start_each(2, &["--w", "1", "--r", "1"], |i| {
        if i == 0 {
            vec!["--metrics-addr".into(), addr.clone()]
        } else {
            Vec::new()
        }
    });
    c.wait_converged();
    let Reply::Bulk(Some(text)) = c.conn(0).call_str(&["CLUSTER", "INFO"]) else {
        panic!()
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    for want in [
        "cluster_n:3",
        "cluster_w:1",
        "cluster_r:1",
        "cluster_read_your_writes:no",
        "cluster_conflicts:siblings",
        "cluster_partitions:1024",
        "cluster_hints_pending:0",
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
    c.conn(0).call_str(&["SET", "k", "v"]);
    let metrics = || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        std::io::Read::read_to_string(&mut s, &mut body).unwrap();
        body
    };
    // With W=1 the reply may come before the other replica answered the REPLICATE.
    wait_until(
        "the REPLICATE to the peer to be counted",
        Duration::from_secs(5),
        || metrics().contains("ringkv_cluster_peer_calls_total{peer="),
    );
    let body = metrics();
    for want in [
        "ringkv_cluster_peers{state=\"up\"} 2",
        "ringkv_cluster_peer_calls_total{peer=",
        "ringkv_cluster_quorum_failures_total{kind=\"write\"} 0",
        "ringkv_cluster_read_repairs_total",
    ] {
        assert!(body.contains(want), "{want} in metrics:\n{body}");
    }
}

/// A running node joins with CLUSTER JOIN; CLUSTER LEAVE <id> sent to another node removes
/// one, and every node's view says so (it owns no partition any more).
#[test]
fn join_and_leave_change_every_nodes_layout() {
    let c = Cluster::start(2, &[]);
    let late = Server::start(&["--cluster-secret", SECRET, "--threads", "1"]);
    let mut l = resp::Conn::connect(late.addr);
    assert_eq!(
        l.call_str(&["CLUSTER", "JOIN", &format!("127.0.0.1:{}", c.ports[0])]),
        Reply::Simple("OK".into())
    );
    let count = |addr| match resp::Conn::connect(addr).call_str(&["CLUSTER", "NODES"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b)
            .lines()
            .filter(|l| l.contains(" active up "))
            .count(),
        r => panic!("{r:?}"),
    };
    wait_until(
        "three active nodes everywhere",
        Duration::from_secs(20),
        || count(late.addr) == 3 && count(c.node(0).addr) == 3 && count(c.node(1).addr) == 3,
    );
    let Reply::Bulk(Some(id)) = l.call_str(&["CLUSTER", "MYID"]) else {
        panic!()
    };
    let id = String::from_utf8(id).unwrap();
    assert_eq!(
        c.conn(0).call_str(&["CLUSTER", "LEAVE", &id]),
        Reply::Simple("OK".into())
    );
    wait_until("the removal to spread", Duration::from_secs(20), || {
        [c.node(1).addr, late.addr].iter().all(|a| {
            match resp::Conn::connect(*a).call_str(&["CLUSTER", "NODES"]) {
                Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).lines().any(|line| {
                    line.starts_with(&id)
                        && line.contains(" removed ")
                        && line.split(' ').nth(5) == Some("0")
                }),
                _ => false,
            }
        })
    });
    match c
        .conn(0)
        .call_str(&["CLUSTER", "LEAVE", "00000000000000ff"])
    {
        Reply::Error(e) => assert!(e.contains("unknown node"), "{e}"),
        r => panic!("{r:?}"),
    }
}

/// One connection's pipelined commands take effect in order, read-modify-write ones included.
#[test]
fn a_connections_pipeline_keeps_its_order() {
    let c = Cluster::start(3, &[]);
    c.wait_converged();
    let mut a = c.conn(1);
    let cmds: Vec<Vec<&str>> = vec![
        vec!["SET", "p", "1"],
        vec!["INCR", "p"],
        vec!["GET", "p"],
        vec!["APPEND", "p", "x"],
        vec!["DEL", "p"],
        vec!["GET", "p"],
        vec!["SET", "p", "last"],
        vec!["GET", "p"],
    ];
    a.send_pipeline(&cmds).unwrap();
    let want = [
        Reply::Simple("OK".into()),
        Reply::Int(2),
        bulk("2"),
        Reply::Int(2),
        Reply::Int(1),
        Reply::Bulk(None),
        Reply::Simple("OK".into()),
        bulk("last"),
    ];
    a.expect_all(&want, "pipelined commands on a cluster");
}

/// CLUSTER on a standalone node says cluster support is off; a key whose only replica is down
/// gets CLUSTERDOWN from another node. (Every command runs on a cluster: none answers "not
/// supported" any more; `redis_diff` runs them all against a cluster node.)
#[test]
fn cluster_off_and_unreachable_keys() {
    let mut c = Cluster::start(2, &["--n", "1", "--w", "1", "--r", "1"]);
    c.wait_converged();
    let mut a = c.conn(0);
    assert_eq!(a.call_str(&["SET", "a", "1"]), Reply::Simple("OK".into()));
    // A key owned by node 1 only, asked of node 0 once node 1 is down.
    let key = (0..1000)
        .map(|i| format!("owned{i}"))
        .find(|k| {
            a.call_str(&["SET", k, "v"]);
            c.local(1, k.as_bytes()).is_some()
        })
        .expect("node 1 owns some key");
    c.kill(1);
    c.wait_converged();
    match c.conn(0).call_str(&["GET", &key]) {
        Reply::Error(e) => assert!(e.starts_with("CLUSTERDOWN"), "{e}"),
        r => panic!("GET {key} with its only replica down: {r:?}"),
    }
    let standalone = Server::start(&[]);
    match resp::Conn::connect(standalone.addr).call_str(&["CLUSTER", "NODES"]) {
        Reply::Error(e) => assert!(e.contains("cluster support disabled"), "{e}"),
        r => panic!("{r:?}"),
    }
}

/// Quorums per connection (CLUSTER QUORUM, for RESP) and per request (binary header byte 15):
/// with two of three nodes down, W=1 and R=1 still work where the defaults (2) fail.
#[test]
fn quorum_per_connection_and_per_request() {
    let mut c = Cluster::start(3, &["--hinted-handoff", "off"]);
    c.wait_converged();
    let mut a = c.conn(0);
    assert_eq!(
        a.call_str(&["CLUSTER", "QUORUM"]),
        Reply::Array(Some(vec![Reply::Int(2), Reply::Int(2)]))
    );
    match a.call_str(&["CLUSTER", "QUORUM", "4", "1"]) {
        Reply::Error(e) => assert!(e.contains("at most N (3)"), "{e}"),
        r => panic!("{r:?}"),
    }
    c.kill(1);
    c.kill(2);
    c.wait_converged();
    let mut a = c.conn(0);
    assert!(matches!(a.call_str(&["SET", "q", "1"]), Reply::Error(e) if e.starts_with("NOQUORUM")));
    assert_eq!(
        a.call_str(&["CLUSTER", "QUORUM", "1", "1"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(a.call_str(&["SET", "q", "2"]), Reply::Simple("OK".into()));
    assert_eq!(a.call_str(&["GET", "q"]), bulk("2"));
    // Binary: HELLO, then COMMAND SET with quorum byte 0x11 (R=1, W=1), then without (0).
    let frame = |id: u64, op: u8, quorum: u8, payload: &[u8]| {
        let mut f = ((12 + payload.len()) as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[op, 0, 0, quorum]);
        f.extend_from_slice(payload);
        f
    };
    let command = |args: &[&[u8]]| {
        let mut p = (args.len() as u32).to_be_bytes().to_vec();
        for a in args {
            p.extend_from_slice(&(a.len() as u32).to_be_bytes());
            p.extend_from_slice(a);
        }
        p
    };
    let mut s = c.node(0).tcp();
    for f in [
        frame(1, 0x01, 0, &[0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
        frame(2, 0x20, 0x11, &command(&[b"SET", b"b", b"1"])),
        frame(3, 0x20, 0x00, &command(&[b"SET", b"b", b"2"])),
    ] {
        std::io::Write::write_all(&mut s, &f).unwrap();
    }
    let mut replies = std::collections::BTreeMap::new();
    for _ in 0..3 {
        let mut len = [0u8; 4];
        std::io::Read::read_exact(&mut s, &mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        std::io::Read::read_exact(&mut s, &mut body).unwrap();
        let id = u64::from_be_bytes(body[..8].try_into().unwrap());
        replies.insert(
            id,
            (body[10], String::from_utf8_lossy(&body[12..]).into_owned()),
        );
    }
    assert_eq!(
        replies[&2].0, 0,
        "W=1 in the header: the write succeeds: {:?}",
        replies[&2]
    );
    assert_eq!(
        replies[&3].0, 1,
        "the node's W=2: NOQUORUM: {:?}",
        replies[&3]
    );
    assert!(replies[&3].1.contains("NOQUORUM"), "{:?}", replies[&3]);
}

/// WAIT numreplicas timeout counts the replicas that durably hold the connection's last write:
/// all three once they acknowledged it; with one node down, two after the timeout.
#[test]
fn wait_counts_replicas_holding_the_last_write() {
    let mut c = Cluster::start(3, &["--hinted-handoff", "off"]);
    c.wait_converged();
    let mut a = c.conn(0);
    assert_eq!(
        a.call_str(&["WAIT", "1", "100"]),
        Reply::Int(0),
        "no write yet"
    );
    assert_eq!(a.call_str(&["SET", "w", "1"]), Reply::Simple("OK".into()));
    assert_eq!(a.call_str(&["WAIT", "3", "5000"]), Reply::Int(3));
    c.kill(2);
    c.wait_converged();
    assert_eq!(a.call_str(&["SET", "w", "2"]), Reply::Simple("OK".into()));
    assert_eq!(
        a.call_str(&["WAIT", "3", "300"]),
        Reply::Int(2),
        "the third is down"
    );
    match a.call_str(&["WAIT", "1", "-1"]) {
        Reply::Error(e) => assert_eq!(e, "ERR timeout is negative"),
        r => panic!("{r:?}"),
    }
}

/// Replica writes take no hop between event loops: with two loops and two shards per node, a
/// peer's REPLICATE (and a coordinated command) runs on the loop that received it, which
/// locks the key's shard directly, so INFO's forwarded_requests (batches handed to another
/// loop) stays 0 on every node while a standalone node with the same loops hands off about
/// half its keys.
#[test]
fn replica_writes_take_no_cross_loop_hop() {
    let c = Cluster::start(3, &["--threads", "2", "--shards", "2"]);
    c.wait_converged();
    let forwarded = |addr| match resp::Conn::connect(addr).call_str(&["INFO", "stats"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b)
            .lines()
            .find_map(|l| {
                l.strip_prefix("forwarded_requests:")
                    .map(|v| v.trim().parse::<u64>().unwrap())
            })
            .unwrap(),
        r => panic!("{r:?}"),
    };
    let mut a = c.conn(0);
    for i in 0..200 {
        assert_eq!(
            a.call_str(&["SET", &format!("h{i}"), "v"]),
            Reply::Simple("OK".into())
        );
    }
    for i in 0..3 {
        assert_eq!(forwarded(c.node(i).addr), 0, "node {i}");
    }
    let standalone = Server::start(&["--threads", "2", "--shards", "2"]);
    let mut s = resp::Conn::connect(standalone.addr);
    for i in 0..200 {
        s.call_str(&["SET", &format!("h{i}"), "v"]);
    }
    assert!(
        forwarded(standalone.addr) > 0,
        "the standalone path hands keys to their loop"
    );
}

/// A node with peer links open in both directions still exits promptly on SIGTERM: peer links
/// are not clients, and the shutdown drain does not wait for them.
#[test]
fn a_node_with_peer_links_exits_promptly_on_sigterm() {
    let mut c = Cluster::start(3, &[]);
    c.wait_converged();
    assert_eq!(
        c.conn(0).call_str(&["SET", "k", "v"]),
        Reply::Simple("OK".into())
    );
    let node = c.nodes[0].take().expect("node 0 runs");
    let t0 = std::time::Instant::now();
    let status = node.terminate();
    let took = t0.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM took {took:?} with peer links open"
    );
}

/// In cluster mode a connection holds a client slot while it has not said what it is yet:
/// connections that send nothing count against --max-clients as they do on a single node,
/// instead of piling up past it (only peer links, once they say PEER_HELLO, are not clients).
/// One loop, so the silent connection is admitted before any probe (accept order).
#[test]
fn silent_connections_count_against_max_clients_in_cluster_mode() {
    let s = Server::start(&[
        "--cluster-secret",
        SECRET,
        "--max-clients",
        "1",
        "--threads",
        "1",
    ]);
    let silent = s.tcp();
    wait_until(
        "a client past --max-clients to be refused",
        Duration::from_secs(10),
        || {
            let mut c = s.tcp();
            let _ = std::io::Write::write_all(&mut c, b"PING\r\n");
            read_reply(&mut c).starts_with("-ERR max number of clients reached")
        },
    );
    drop(silent);
    wait_until("a slot to be free again", Duration::from_secs(10), || {
        let mut c = s.tcp();
        let _ = std::io::Write::write_all(&mut c, b"PING\r\n");
        read_reply(&mut c) == "+PONG\r\n"
    });
}

/// Peer handshakes don't count against --max-clients, so the ones in progress are bounded: with
/// 64 strangers holding a half-sent PEER_HELLO, the next is refused at once.
#[test]
fn unauthenticated_peer_handshakes_are_bounded() {
    let c = Cluster::start(1, &["--n", "1", "--peer-timeout-ms", "20000"]);
    // A PEER_HELLO header announcing 100 bytes of payload that never come.
    let mut hello = 112u32.to_be_bytes().to_vec();
    hello.extend_from_slice(&1u64.to_be_bytes());
    hello.extend_from_slice(&[0x40, 0, 0, 0]);
    let held: Vec<std::net::TcpStream> = (0..64)
        .map(|_| {
            let mut s = c.node(0).tcp();
            std::io::Write::write_all(&mut s, &hello).unwrap();
            s
        })
        .collect();
    let mut refused = String::new();
    wait_until(
        "a handshake past the bound to be refused",
        Duration::from_secs(10),
        || {
            let mut s = c.node(0).tcp();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            std::io::Write::write_all(&mut s, &hello).unwrap();
            let mut buf = [0u8; 256];
            let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
            refused = String::from_utf8_lossy(&buf[..n]).into_owned();
            refused.contains("too many peer handshakes")
        },
    );
    assert_eq!(held.len(), 64);
    // Clients are served meanwhile.
    assert_eq!(c.conn(0).call_str(&["PING"]), Reply::Simple("PONG".into()));
}

fn signal(sig: &str, pid: u32) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
    // SIGSTOP takes effect asynchronously: wait until every thread of the process is stopped
    // (state T in /proc), or a request sent right after may still be served.
    if sig == "-STOP" {
        wait_until("the process to be stopped", Duration::from_secs(10), || {
            let dir = format!("/proc/{pid}/task");
            std::fs::read_dir(&dir).is_ok_and(|tasks| {
                tasks.flatten().all(|t| {
                    std::fs::read_to_string(t.path().join("stat")).is_ok_and(|st| {
                        st.rsplit_once(") ")
                            .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
                    })
                })
            })
        });
    }
}

/// Three nodes with a 300 ms peer deadline, `p` written, node 2 stopped (SIGSTOP: its
/// sockets stay open); a connection to node 0. (The cluster's drop guard kills node 2 even
/// stopped.)
fn node_2_paused() -> (Cluster, common::resp::Conn) {
    let c = Cluster::start(3, &["--peer-timeout-ms", "300", "--hinted-handoff", "off"]);
    c.wait_converged();
    let mut a = c.conn(0);
    assert_eq!(a.call_str(&["SET", "p", "1"]), Reply::Simple("OK".into()));
    signal("-STOP", c.node(2).pid());
    (c, a)
}

/// A replica that stops answering while its sockets stay open (SIGSTOP) costs a request at
/// most the peer deadline (--peer-timeout-ms, kept by each link's sweep): a read or write that
/// needs its answer fails with NOQUORUM instead of hanging, one that doesn't succeeds.
#[test]
fn a_paused_replica_costs_a_request_at_most_the_peer_deadline() {
    let (c, mut a) = node_2_paused();
    let ok = Reply::Simple("OK".into());
    // Asked right away, before the detector convicts it: the calls to it are in flight and
    // only their deadline ends them (the connection's own read timeout is 10 s).
    assert_eq!(a.call_str(&["CLUSTER", "QUORUM", "3", "3"]), ok);
    // At most 2 of 3 answer (on a loaded machine a live replica may miss the 300 ms deadline
    // too: 1 of 3); what matters is the NOQUORUM within the deadline instead of a hang.
    let short = |e: &str| {
        e.starts_with("NOQUORUM") && (e.contains("2 of the 3") || e.contains("1 of the 3"))
    };
    match a.call_str(&["GET", "p"]) {
        Reply::Error(e) => assert!(short(&e), "{e}"),
        r => panic!("GET with R=3 and a paused replica: {r:?}"),
    }
    match a.call_str(&["SET", "p", "2"]) {
        Reply::Error(e) => assert!(short(&e), "{e}"),
        r => panic!("SET with W=3 and a paused replica: {r:?}"),
    }
    assert_eq!(a.call_str(&["CLUSTER", "QUORUM", "2", "2"]), ok);
    assert_eq!(a.call_str(&["SET", "q", "1"]), ok);
    assert_eq!(a.call_str(&["GET", "q"]), bulk("1"));
    signal("-CONT", c.node(2).pid());
}

/// Once the link's socket is full (the paused peer reads nothing) and its pending calls have
/// all been swept, a call queued behind the blocked write must still end by its deadline: the
/// sweep runs while a write is in progress (it did not: the read then waited for the request
/// timeout and answered TIMEOUT, reads having no timer of their own).
#[test]
fn a_paused_replica_behind_a_full_socket_costs_a_read_the_peer_deadline() {
    let (c, mut a) = node_2_paused();
    let ok = Reply::Simple("OK".into());
    assert_eq!(a.call_str(&["CLUSTER", "QUORUM", "1", "1"]), ok);
    let big = vec![b'x'; 1 << 20];
    for i in 0..40 {
        let k = format!("big{i}");
        assert_eq!(a.call(&[b"SET", k.as_bytes(), &big]), ok);
    }
    // What is waited for here is a deadline itself: every REPLICATE to node 2 (300 ms) must
    // have passed it and been swept, so that no call is pending when the GET is queued (no
    // observable condition says so from outside the node).
    std::thread::sleep(Duration::from_millis(450));
    assert_eq!(a.call_str(&["CLUSTER", "QUORUM", "3", "3"]), ok);
    // NOQUORUM (the FETCH to node 2 ended by its deadline), not TIMEOUT (the request's).
    let r = a.try_call(&[b"GET", b"p"]);
    signal("-CONT", c.node(2).pid());
    match r {
        Ok(Reply::Error(e)) if e.starts_with("NOQUORUM") => {}
        r => panic!("GET with R=3 and a paused replica: {r:?}"),
    }
}
