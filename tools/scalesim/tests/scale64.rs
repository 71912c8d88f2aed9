//! The 64-node claims of docs/scale.md, checked on every CI run (simulated time only: each run
//! takes a few seconds of real time and asserts nothing about it).

use ringkv::ring::membership::HEARTBEAT_INTERVAL_MS;
use scalesim::gossip::{self, GossipConfig, NetModel};
use scalesim::ring_stats::{self, node_ids, RingShape};
use scalesim::rng::Rng;

const NODES: usize = 64;
const SEEDS: [u64; 3] = [1, 2, 3];
/// Slack over one heartbeat interval for a change to arrive: the network delay (0.25 ms plus
/// an exponential of mean 0.25 ms, so far below this).
const DELIVERY_SLACK_MS: f64 = 50.0;
/// docs/scale.md: at the defaults, every live node convicts a killed node 1.25 to 2.7 s
/// after the kill.
const CONVICT_MIN_MS: f64 = 1_250.0;
const CONVICT_MAX_MS: f64 = 2_700.0;

fn config(seed: u64) -> GossipConfig {
    let mut c = GossipConfig::new(NODES, seed);
    c.observers = NODES;
    c
}

#[test]
fn changes_reach_every_node_within_one_interval_and_a_kill_is_convicted_by_all() {
    for seed in SEEDS {
        let r = gossip::run(&config(seed));
        assert_eq!(r.changes.len(), 5, "seed {seed}: every change was timed");
        for c in &r.changes {
            let bound = HEARTBEAT_INTERVAL_MS as f64 + DELIVERY_SLACK_MS;
            assert!(c.reach_all_ms <= bound, "seed {seed}: {c:?}");
            assert!(c.origin_converged_ms <= bound, "seed {seed}: {c:?}");
            // A change costs each node about one full layout to each peer, not more than two.
            let full = r.layout_bytes as f64 * (NODES - 1) as f64;
            assert!(c.bytes_per_node <= 2.0 * full, "seed {seed}: {c:?}");
            assert!(c.bytes_per_node >= 0.5 * full, "seed {seed}: {c:?}");
        }
        let k = &r.kill;
        assert_eq!(k.live, NODES - 1);
        assert_eq!(k.not_convicted, 0, "seed {seed}: {k:?}");
        assert!(
            k.down_ms[0] >= CONVICT_MIN_MS && k.down_ms[2] <= CONVICT_MAX_MS,
            "seed {seed}: {k:?}"
        );
        assert!(k.suspect_ms[0] <= k.down_ms[0], "seed {seed}: {k:?}");
        // No loss: no live peer is ever suspected, let alone convicted.
        assert_eq!((r.false_suspect, r.false_down), (0, 0), "seed {seed}");
        assert!(r.max_phi_live < 0.01, "seed {seed}: {}", r.max_phi_live);
        assert!(r.pair_seconds > 60.0 * (NODES * (NODES - 1)) as f64);
        // Full mesh: per peer per interval, one request sent and one answered.
        let per_s = 1000.0 / HEARTBEAT_INTERVAL_MS as f64;
        let msgs = 2.0 * per_s * (NODES - 1) as f64;
        assert!((r.msgs_per_node_s - msgs).abs() / msgs < 0.01, "{r:?}");
        // Digest-only messages: 28-byte requests, 33-byte replies.
        let bytes = per_s * (NODES - 1) as f64 * (28.0 + 33.0);
        assert!((r.bytes_per_node_s - bytes).abs() / bytes < 0.01, "{r:?}");
    }
}

#[test]
fn one_percent_loss_convicts_no_live_node_and_still_converges() {
    let mut c = config(1);
    c.net = NetModel {
        loss: 0.01,
        ..NetModel::default()
    };
    let r = gossip::run(&c);
    assert_eq!(r.false_down, 0, "{r:?}");
    assert_eq!(r.kill.not_convicted, 0, "{r:?}");
    for ch in &r.changes {
        // A lost message waits for the next interval; others relay meanwhile.
        assert!(
            ch.reach_all_ms <= 2.0 * HEARTBEAT_INTERVAL_MS as f64,
            "{ch:?}"
        );
    }
}

#[test]
fn a_lossy_network_does_produce_false_suspicions() {
    // The false-positive counter must be able to see one: at 50% loss, silences of a second
    // or more between a pair are common.
    let mut c = config(1);
    c.net = NetModel {
        loss: 0.5,
        ..NetModel::default()
    };
    c.quiet_ms = 10_000;
    let r = gossip::run(&c);
    assert!(r.false_suspect > 0, "{r:?}");
}

#[test]
fn balance_and_movement_at_64_nodes() {
    let shape = RingShape::default();
    for seed in SEEDS {
        let mut rng = Rng::new(seed);
        let ids = node_ids(&mut rng.fork(1), NODES);
        let b = ring_stats::balance(shape, &ids).expect("default shape builds");
        // docs/scale.md: at 64 nodes no node holds more than 1.4x the mean replicas or less
        // than 0.45x, and heads at most 1.7x the mean primaries.
        assert!(b.replica_max_over_mean() <= 1.4, "seed {seed}: {b:?}");
        assert!(b.replica_min_over_mean() >= 0.45, "seed {seed}: {b:?}");
        assert!(b.primary_max_over_mean() <= 1.7, "seed {seed}: {b:?}");
        assert_eq!(b.primary_none, 0, "seed {seed}: {b:?}");
        let m = ring_stats::join_movement(shape, &ids, &mut rng.fork(4), 20).expect("builds");
        // docs/scale.md: a join moves within 1.25x of the ideal 1/(n+1), and every moved
        // replica goes to the newcomer.
        assert!(
            m.over_ideal() <= 1.25 && m.over_ideal() >= 0.75,
            "seed {seed}: {m:?}"
        );
        assert_eq!(m.collateral, 0, "seed {seed}: {m:?}");
    }
}
