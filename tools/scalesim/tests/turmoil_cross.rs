//! The discrete-event loop (tools/scalesim/src/gossip.rs) against turmoil hosts running the
//! real `Membership`: the same size and seed must give the same picture (docs/scale.md,
//! "Two simulators"). At 32 nodes to keep CI short; `scalesim --nodes 64 --turmoil` runs the
//! same comparison at 64.

use ringkv::ring::membership::HEARTBEAT_INTERVAL_MS;
use scalesim::gossip::{self, GossipConfig};
use scalesim::turmoil_sim::{self, TurmoilConfig};

const NODES: usize = 32;
const SEED: u64 = 1;
/// turmoil delivers at step boundaries (1 ms) with up to 2 ms of latency.
const SLACK_MS: f64 = 50.0;
/// docs/scale.md: every live node convicts a killed node 1.25 to 2.7 s after the kill.
const CONVICT_MS: std::ops::RangeInclusive<f64> = 1_250.0..=2_700.0;
/// How far apart the two simulators' median conviction times may be.
const MEDIAN_TOLERANCE: f64 = 0.2;

#[test]
fn turmoil_with_the_real_membership_agrees_with_the_event_loop() {
    let mut tc = TurmoilConfig::new(NODES, SEED);
    tc.warmup_ms = 6_000;
    tc.after_kill_ms = 4_000;
    let t = turmoil_sim::run(&tc).expect("the turmoil simulation runs");
    let mut gc = GossipConfig::new(NODES, SEED);
    gc.observers = NODES;
    gc.changes = 1;
    let d = gossip::run(&gc);
    println!("turmoil: {t:?}\nevent loop: {:?} {:?}", d.changes, d.kill);

    let bound = HEARTBEAT_INTERVAL_MS as f64 + SLACK_MS;
    assert!(t.reach_all_ms <= bound, "turmoil: {t:?}");
    assert!(t.origin_converged_ms <= bound, "turmoil: {t:?}");
    assert!(d.changes[0].reach_all_ms <= bound, "{:?}", d.changes);

    assert_eq!(t.not_convicted, 0, "turmoil: {t:?}");
    assert_eq!(d.kill.not_convicted, 0, "{:?}", d.kill);
    for v in [
        t.down_ms[0],
        t.down_ms[2],
        d.kill.down_ms[0],
        d.kill.down_ms[2],
    ] {
        assert!(
            CONVICT_MS.contains(&v),
            "{v} ms: turmoil {t:?}, loop {:?}",
            d.kill
        );
    }
    let (a, b) = (t.down_ms[1], d.kill.down_ms[1]);
    assert!((a - b).abs() <= MEDIAN_TOLERANCE * b, "medians {a} vs {b}");

    assert_eq!(t.false_down, 0, "turmoil: {t:?}");
    assert_eq!(d.false_down, 0);
}
