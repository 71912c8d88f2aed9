//! The cluster-aware client (`ringkv_client::ClusterClient`) against real nodes: each key goes
//! straight to a replica (no node forwards), a dead replica is skipped, and a node that joins
//! is found by the periodic map refresh.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, CONVERGE, SECRET};
use common::resp::{Conn, Reply};
use common::*;
use ringkv_client::{ClientConfig, ClusterClient, ClusterError};

/// The `name:value` field of INFO cluster of the node behind `conn`.
fn info_field(conn: &mut Conn, name: &str) -> String {
    let Reply::Bulk(Some(text)) = conn.call_str(&["INFO", "cluster"]) else {
        panic!("INFO cluster is a bulk string")
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    let prefix = format!("{name}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in INFO cluster:\n{text}"))
        .trim()
        .to_string()
}

fn forwarded(conn: &mut Conn) -> u64 {
    info_field(conn, "cluster_forwarded")
        .parse()
        .expect("a count")
}

async fn connect(seed: std::net::SocketAddr) -> ClusterClient {
    ClusterClient::connect([seed.to_string()], ClientConfig::default())
        .await
        .expect("fetch the partition map")
}

/// N=1 on three nodes: every key lives on one node. 200 keys put through the client land on
/// the node the map names, read back, and no node ever forwards.
#[tokio::test(flavor = "current_thread")]
async fn each_key_goes_straight_to_its_owner() {
    let c = Cluster::start(3, &["--n", "1", "--w", "1", "--r", "1"]);
    c.wait_converged();
    let client = connect(c.node(0).addr).await;
    assert_eq!(client.nodes().len(), 3, "{:?}", client.nodes());
    let mut owned = [0usize; 3];
    for i in 0..200 {
        let (k, v) = (format!("direct{i}"), format!("value{i}"));
        client.put(&k, &v).await.expect("put");
        let got = client.get(&k).await.expect("get").expect("the key exists");
        assert_eq!(got.value().map(|b| b.as_ref()), Some(v.as_bytes()), "{k}");
        let owner = client.replicas_of(&k);
        assert_eq!(owner.len(), 1, "N=1: one replica for {k}: {owner:?}");
        let j = c
            .ports
            .iter()
            .position(|p| owner[0].ends_with(&format!(":{p}")))
            .unwrap_or_else(|| panic!("{k}'s replica {owner:?} is a node of the cluster"));
        owned[j] += 1;
        for n in 0..3 {
            let local = c.local(n, k.as_bytes());
            if n == j {
                assert_eq!(local.as_deref(), Some(v.as_bytes()), "{k} on its owner {n}");
            } else {
                assert_eq!(local, None, "{k} only on its owner {j}, not on {n}");
            }
        }
    }
    assert!(
        owned.iter().all(|&o| o > 20),
        "every node owns keys: {owned:?}"
    );
    for n in 0..3 {
        assert_eq!(forwarded(&mut c.conn(n)), 0, "node {n} forwarded a request");
    }
    match client.command(&["GET", "direct7"]).await.expect("GET") {
        ringkv_client::Value::Versioned { values, .. } => {
            assert_eq!(values, ["value7"], "a keyed command is routed as well")
        }
        other => panic!("GET through the cluster client: {other:?}"),
    }
    for n in 0..3 {
        assert_eq!(forwarded(&mut c.conn(n)), 0, "node {n} forwarded GET");
    }
}

/// N=3 W=2 R=2 with the seed node SIGKILLed: reads and writes through the client keep
/// working (the dead preferred replica is skipped), and everything written reads back.
#[tokio::test(flavor = "current_thread")]
async fn a_dead_replica_is_skipped() {
    let mut c = Cluster::start(3, &[]);
    c.wait_converged();
    let client = connect(c.node(0).addr).await;
    let dead = format!("127.0.0.1:{}", c.ports[0]);
    for i in 0..60 {
        client
            .put(format!("before{i}"), format!("b{i}"))
            .await
            .expect("put with every node up");
    }
    c.kill(0);
    c.wait_converged();
    // Reads first: a read that meets the dead node's broken connection is retried elsewhere.
    let mut preferred_dead = 0;
    for i in 0..60 {
        let k = format!("before{i}");
        preferred_dead += (client.replicas_of(&k)[0] == dead) as usize;
        let got = client
            .get(&k)
            .await
            .unwrap_or_else(|e| panic!("get {k}: {e}"));
        let want = format!("b{i}");
        assert_eq!(
            got.as_ref().and_then(|v| v.value()).map(|b| b.as_ref()),
            Some(want.as_bytes()),
            "{k}"
        );
    }
    assert!(
        preferred_dead > 5,
        "some keys prefer the dead node: {preferred_dead}"
    );
    for i in 0..60 {
        let k = format!("after{i}");
        client
            .put(&k, format!("a{i}"))
            .await
            .unwrap_or_else(|e| panic!("put {k} with node 0 down: {e}"));
    }
    for i in 0..60 {
        let k = format!("after{i}");
        let got = client.get(&k).await.expect("get").expect("exists");
        assert_eq!(
            got.value().map(|b| b.to_vec()),
            Some(format!("a{i}").into_bytes())
        );
    }
    // Every node up again: the client talks to the restarted one again.
    c.restart(0);
    c.wait_converged();
    for i in 0..60 {
        client
            .put(format!("back{i}"), "x")
            .await
            .expect("put after the restart");
    }
}

/// A node that joins a running cluster is picked up by the client's periodic map refresh, and
/// the keys it owns then go straight to it.
#[tokio::test(flavor = "current_thread")]
async fn a_joined_node_is_picked_up() {
    let c = Cluster::start(2, &["--n", "1", "--w", "1", "--r", "1"]);
    c.wait_converged();
    let client = connect(c.node(0).addr).await;
    assert_eq!(client.nodes().len(), 2);
    let before = client.layout_version();

    let peers = format!("127.0.0.1:{},127.0.0.1:{}", c.ports[0], c.ports[1]);
    let new = Server::start(&[
        "--cluster-secret",
        SECRET,
        "--threads",
        "1",
        "--peers",
        &peers,
        "--n",
        "1",
        "--w",
        "1",
        "--r",
        "1",
    ]);
    let version_of = |addr| info_field(&mut Conn::connect(addr), "cluster_layout_version");
    // It joins, then owns partitions once they are copied (active).
    wait_until("every node to know the new one as active", CONVERGE, || {
        let v = version_of(new.addr);
        (0..2).all(|i| {
            let nodes = c.nodes_of(i);
            nodes.len() == 3
                && nodes.iter().all(|l| l.contains(" active "))
                && version_of(c.node(i).addr) == v
        })
    });
    let want: u64 = version_of(new.addr).parse().expect("a version");
    // Requests drive the refresh (every MAP_REFRESH_INTERVAL); no explicit refresh here.
    wait_until_async(
        "the client to fetch the new layout",
        Duration::from_secs(30),
        || async {
            let _ = client.get("probe").await;
            client.layout_version() == want
        },
    )
    .await;
    assert!(want > before, "the layout changed: {before} -> {want}");
    assert_eq!(client.nodes().len(), 3, "{:?}", client.nodes());

    let fwd: Vec<u64> = (0..2)
        .map(|i| forwarded(&mut c.conn(i)))
        .chain([forwarded(&mut Conn::connect(new.addr))])
        .collect();
    let new_addr = new.addr.to_string();
    let mut on_new = 0;
    for i in 0..200 {
        let k = format!("joined{i}");
        client.put(&k, "v").await.expect("put");
        if client.replicas_of(&k)[0] == new_addr {
            on_new += 1;
            let mut conn = Conn::connect(new.addr);
            assert_eq!(
                conn.call(&[b"CLUSTER", b"GETLOCAL", k.as_bytes()]),
                Reply::Bulk(Some(b"v".to_vec())),
                "{k} on the new node"
            );
        }
    }
    assert!(on_new > 20, "the new node owns keys: {on_new}");
    let after: Vec<u64> = (0..2)
        .map(|i| forwarded(&mut c.conn(i)))
        .chain([forwarded(&mut Conn::connect(new.addr))])
        .collect();
    assert_eq!(fwd, after, "no node forwarded a request after the refresh");
}

/// A seed that is not a cluster node (no --cluster-secret) gives a typed error naming it.
#[tokio::test(flavor = "current_thread")]
async fn a_standalone_seed_is_a_clear_error() {
    let s = Server::start(&[]);
    let err = ClusterClient::connect([s.addr.to_string()], ClientConfig::default())
        .await
        .expect_err("a standalone node has no partition map");
    assert!(matches!(err, ClusterError::NoMap { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&s.addr.to_string()) && msg.contains("cluster support disabled"),
        "{msg}"
    );
    let none: [&str; 0] = [];
    assert!(matches!(
        ClusterClient::connect(none, ClientConfig::default()).await,
        Err(ClusterError::NoSeeds)
    ));
}

/// kvbench --cluster routes through the cluster client: on N=1 nodes nothing is forwarded,
/// while the same run without --cluster (everything sent to one node) forwards what the other
/// nodes own.
#[test]
fn kvbench_cluster_routes_without_forwarding() {
    let c = Cluster::start(3, &["--n", "1", "--w", "1", "--r", "1"]);
    c.wait_converged();
    let addr = c.node(0).addr.to_string();
    let run = |cluster: bool| {
        let mut cmd = std::process::Command::new(kvbench_binary());
        cmd.args([
            "--addr", &addr, "--proto", "binary", "-c", "2", "-P", "8", "-n", "2000",
        ]);
        cmd.args(["--keys", "1000", "--quiet"]);
        if cluster {
            cmd.arg("--cluster");
        }
        let ran = run_bounded(&mut cmd, Duration::from_secs(60));
        assert!(ran.status.success(), "kvbench (cluster {cluster}): {ran:?}");
    };
    let total = |c: &Cluster| (0..3).map(|i| forwarded(&mut c.conn(i))).sum::<u64>();
    run(true);
    assert_eq!(total(&c), 0, "kvbench --cluster sent each key to its owner");
    run(false);
    assert!(
        total(&c) > 100,
        "without --cluster node 0 forwards the keys it does not own"
    );
}

/// The typed counter and sibling calls of the cluster client: increments through the client
/// add up, siblings made through two writes with one context are read together, and
/// `resolve` replaces them.
#[tokio::test(flavor = "current_thread")]
async fn counters_and_siblings_through_the_cluster_client() {
    let c = Cluster::start(3, &[]);
    c.wait_converged();
    let client = connect(c.node(0).addr).await;
    assert_eq!(client.counter("hits").await.expect("counter"), None);
    let mut sum = 0;
    for by in [5, -2, 40, 7] {
        sum += by;
        assert_eq!(client.incr_by("hits", by).await.expect("incr_by"), sum);
    }
    assert_eq!(client.counter("hits").await.expect("counter"), Some(sum));
    let first = client.put("doc", "v0").await.expect("put");
    for v in ["left", "right"] {
        let opts = ringkv_client::PutOptions {
            context: Some(first.clone()),
            ttl: None,
        };
        client.put_with("doc", v, opts).await.expect("put_with");
    }
    let got = client.get("doc").await.expect("get").expect("exists");
    assert!(got.has_siblings(), "{got:?}");
    client.resolve("doc", "merged").await.expect("resolve");
    let got = client.get("doc").await.expect("get").expect("exists");
    assert_eq!(got.values, vec![bytes::Bytes::from_static(b"merged")]);
}
