//! Merkle anti-entropy between real nodes (issue 12 item 3, docs/cluster.md "Anti-entropy"):
//! with hinted handoff and read repair off, nothing but anti-entropy can bring a replica the
//! writes it missed; these tests check, key by key on each node's own copy, that it does.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, CONVERGE};
use common::resp::{Conn, Reply};
use common::*;

/// How long a replica may take to converge once anti-entropy can run (1 s rounds, debug
/// build, 2 shared cores).
const AAE_CONVERGE: Duration = Duration::from_secs(90);

/// Node `i`'s own copy of each key (pipelined CLUSTER GETLOCAL: no coordinator, no repair).
fn locals(c: &Cluster, i: usize, keys: &[String]) -> Vec<Option<Vec<u8>>> {
    let mut conn = c.conn(i);
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(1000) {
        let cmds: Vec<Vec<&[u8]>> = chunk
            .iter()
            .map(|k| vec![&b"CLUSTER"[..], b"GETLOCAL", k.as_bytes()])
            .collect();
        conn.send_pipeline(&cmds).expect("send GETLOCALs");
        for k in chunk {
            match conn.read().expect("GETLOCAL reply") {
                Reply::Bulk(b) => out.push(b),
                other => panic!("CLUSTER GETLOCAL {k} on node {i}: {other:?}"),
            }
        }
    }
    out
}

/// The keys of `want` node `i` does not hold as wanted (None: deleted).
fn differing(c: &Cluster, i: usize, keys: &[String], want: &[Option<Vec<u8>>]) -> usize {
    locals(c, i, keys)
        .iter()
        .zip(want)
        .filter(|(got, want)| got != want)
        .count()
}

/// Runs pipelined commands on one connection and checks every reply is `ok`.
fn pipeline(conn: &mut Conn, cmds: &[Vec<String>], ok: impl Fn(&Reply) -> bool) {
    for chunk in cmds.chunks(500) {
        conn.send_pipeline(chunk).expect("send");
        for cmd in chunk {
            let r = conn.read().expect("reply");
            assert!(ok(&r), "{cmd:?}: {r:?}");
        }
    }
}

fn info_field(c: &Cluster, i: usize, name: &str) -> u64 {
    let text = match c.conn(i).call_str(&["INFO", "cluster"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO cluster on node {i}: {other:?}"),
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in INFO cluster of node {i}: {text}"))
}

/// Must-show: a node down during 10,000 writes (overwrites and deletes among them) converges to
/// the others key by key after its restart, with hinted handoff and read repair off, within a
/// deadline; and once in sync, a round finds no differing segment.
#[test]
fn a_node_down_during_10000_writes_converges_by_anti_entropy() {
    let mut c = Cluster::start(
        3,
        &[
            "--hinted-handoff",
            "off",
            "--read-repair",
            "off",
            "--aae-interval-ms",
            "1000",
            "--aae-rate",
            "0",
        ],
    );
    c.wait_converged();
    let mut a = c.conn(0);
    let is_ok = |r: &Reply| *r == Reply::Simple("OK".into());
    let before: Vec<Vec<String>> = (0..1000)
        .map(|i| vec!["SET".into(), format!("k{i}"), "old".into()])
        .collect();
    pipeline(&mut a, &before, is_ok);
    let keys: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
    wait_until("node 2 to hold the first writes", CONVERGE, || {
        locals(&c, 2, &keys[..1000]).iter().all(|v| v.is_some())
    });
    c.kill(2);
    c.wait_converged();
    // 10,000 writes node 2 misses: 1,000 overwrites, 9,000 new keys, then 200 deletes.
    let writes: Vec<Vec<String>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| vec!["SET".into(), k.clone(), format!("v{i}")])
        .collect();
    pipeline(&mut a, &writes, is_ok);
    let dels: Vec<Vec<String>> = keys[..200]
        .iter()
        .map(|k| vec!["DEL".into(), k.clone()])
        .collect();
    pipeline(&mut a, &dels, |r| *r == Reply::Int(1));
    let want: Vec<Option<Vec<u8>>> = (0..10_000)
        .map(|i| (i >= 200).then(|| format!("v{i}").into_bytes()))
        .collect();
    assert_eq!(
        differing(&c, 0, &keys, &want),
        0,
        "node 0 holds every write"
    );
    assert_eq!(
        differing(&c, 1, &keys, &want),
        0,
        "node 1 holds every write"
    );
    c.restart(2);
    // No reads through a coordinator from here on: only anti-entropy can repair node 2.
    let mut left = usize::MAX;
    wait_until(
        "node 2 to hold every key as nodes 0 and 1 do",
        AAE_CONVERGE,
        || {
            left = differing(&c, 2, &keys, &want);
            left == 0
        },
    );
    let repaired: u64 = (0..3)
        .map(|i| info_field(&c, i, "cluster_aae_keys_repaired"))
        .sum();
    assert!(
        repaired >= 10_000,
        "anti-entropy counts the keys it exchanged: {repaired}"
    );
    assert!(
        c.running()
            .iter()
            .any(|&i| c.node(i).log_text().contains("anti-entropy repaired keys")),
        "a node logs the keys a round repaired"
    );
    // In sync: a round started now compares trees and finds nothing to repair.
    let rounds = info_field(&c, 2, "cluster_aae_rounds");
    let diff = info_field(&c, 2, "cluster_aae_segments_differing");
    let compared = info_field(&c, 2, "cluster_aae_trees_compared");
    assert_eq!(
        c.conn(2).call_str(&["CLUSTER", "AAE"]),
        Reply::Simple("OK".into())
    );
    wait_until("node 2 to finish a round", CONVERGE, || {
        info_field(&c, 2, "cluster_aae_rounds") > rounds + 1
    });
    assert!(info_field(&c, 2, "cluster_aae_trees_compared") > compared);
    assert_eq!(
        info_field(&c, 2, "cluster_aae_segments_differing"),
        diff,
        "replicas in sync differ in no segment"
    );
    assert!(info_field(&c, 2, "cluster_aae_oldest_exchange_age_ms") < 60_000);
    assert!(info_field(&c, 2, "cluster_aae_newest_exchange_age_ms") < 60_000);
    assert!(info_field(&c, 2, "cluster_aae_last_round_ms") < AAE_CONVERGE.as_millis() as u64);
    // Present (failed calls while node 2 restarted may have counted on any node).
    info_field(&c, 2, "cluster_aae_errors");
}

/// Bytes per second anti-entropy may move in the lost-data test: slow enough that the
/// throttle shows in the round's duration.
const RATE: u64 = 250_000;

/// A replica that lost its data (its WAL and snapshots removed while it was down) is restored
/// by one anti-entropy round started with CLUSTER AAE; with --aae off nothing else runs one.
/// The round keeps to --aae-rate: it lasts at least its bytes over the rate.
#[test]
fn a_replica_that_lost_its_data_is_restored_on_cluster_aae() {
    let mut c = Cluster::start(
        3,
        &[
            "--hinted-handoff",
            "off",
            "--read-repair",
            "off",
            "--aae",
            "off",
            "--aae-rate",
            &RATE.to_string(),
        ],
    );
    c.wait_converged();
    let mut a = c.conn(0);
    let keys: Vec<String> = (0..2_000).map(|i| format!("key:{i}")).collect();
    let writes: Vec<Vec<String>> = keys
        .iter()
        .map(|k| vec!["SET".into(), k.clone(), format!("value of {k}")])
        .collect();
    pipeline(&mut a, &writes, |r| *r == Reply::Simple("OK".into()));
    let want: Vec<Option<Vec<u8>>> = keys
        .iter()
        .map(|k| Some(format!("value of {k}").into_bytes()))
        .collect();
    wait_until("every node to hold every key", CONVERGE, || {
        (0..3).all(|i| differing(&c, i, &keys, &want) == 0)
    });
    c.kill(2);
    // Everything but the node's identity goes: its WAL segments and snapshots.
    let dir = c.dir(2);
    for e in std::fs::read_dir(&dir).expect("read the data directory") {
        let path = e.expect("dir entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name == "meta" || name == "LOCK" {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("remove");
        } else {
            std::fs::remove_file(&path).expect("remove");
        }
    }
    c.restart(2);
    c.wait_converged();
    assert_eq!(
        differing(&c, 2, &keys, &want),
        keys.len(),
        "node 2 lost every key"
    );
    let rounds = info_field(&c, 2, "cluster_aae_rounds");
    assert_eq!(rounds, 0, "--aae off runs no periodic round");
    assert_eq!(
        c.conn(2).call_str(&["CLUSTER", "AAE"]),
        Reply::Simple("OK".into())
    );
    wait_until("node 2 to finish its round", CONVERGE, || {
        info_field(&c, 2, "cluster_aae_rounds") > rounds
    });
    assert_eq!(
        differing(&c, 2, &keys, &want),
        0,
        "one round restores every key"
    );
    assert!(info_field(&c, 2, "cluster_aae_keys_repaired") >= keys.len() as u64);
    let bytes = info_field(&c, 2, "cluster_aae_bytes_exchanged");
    let ms = info_field(&c, 2, "cluster_aae_last_round_ms");
    // The throttle sleeps off its debt once it reaches 50 ms of the rate: at most that much
    // of the round's bytes is not slept off.
    let slept_at_least_ms = (bytes.saturating_sub(RATE / 20)) * 1000 / RATE;
    assert!(
        bytes > RATE && ms >= slept_at_least_ms,
        "{bytes} bytes at --aae-rate {RATE} in {ms} ms"
    );
}

/// The anti-entropy and read repair flags: defaults, values, and the rule on the interval.
#[test]
fn aae_and_read_repair_flags() {
    use clap::Parser;
    use ringkv::config::{Cli, Config};
    let cfg = |args: &[&str]| -> Result<Config, String> {
        let argv = ["ringkv", "--threads", "1"].iter().chain(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        Config::from_cli(cli).map_err(|e| e.to_string())
    };
    let d = cfg(&[]).expect("defaults").cluster;
    assert!(d.read_repair && d.aae);
    assert_eq!((d.aae_interval_ms, d.aae_rate), (60_000, 8 << 20));
    let c = cfg(&[
        "--read-repair",
        "off",
        "--aae",
        "off",
        "--aae-interval-ms",
        "250",
        "--aae-rate",
        "0",
    ])
    .expect("valid flags")
    .cluster;
    assert!(!c.read_repair && !c.aae);
    assert_eq!((c.aae_interval_ms, c.aae_rate), (250, 0));
    let e = cfg(&["--aae-interval-ms", "10"]).expect_err("too short");
    assert!(
        e.contains("--aae-interval-ms 10 must be at least 100"),
        "{e}"
    );
    assert!(cfg(&["--read-repair", "maybe"]).is_err());
}
