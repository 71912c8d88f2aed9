//! docs/scale.md's balance claims at 256 and 1,000 nodes: the default 1024 partitions are too
//! few for such clusters, and 65536 (the most `--partitions` allows) spread them well. Each is
//! one `Ring::build`, cheap enough for CI in a debug build.

use scalesim::ring_stats::{self, node_ids, Balance, RingShape};
use scalesim::rng::Rng;

const SEEDS: [u64; 3] = [1, 2, 3];
const MOST_PARTITIONS: u32 = ringkv::config::MAX_PARTITIONS;

fn balance(nodes: usize, partitions: u32, seed: u64) -> Balance {
    let shape = RingShape {
        partitions,
        ..RingShape::default()
    };
    let ids = node_ids(&mut Rng::new(seed).fork(1), nodes);
    ring_stats::balance(shape, &ids).expect("the ring builds")
}

#[test]
fn the_default_partition_count_leaves_nodes_idle_past_a_few_hundred_nodes() {
    let default = RingShape::default().partitions;
    for seed in SEEDS {
        let b = balance(256, default, seed);
        // 256 nodes: some nodes head nothing; the busiest holds over 1.5x the mean.
        assert!(b.primary_none > 0, "seed {seed}: {b:?}");
        assert!(b.replica_max_over_mean() > 1.5, "seed {seed}: {b:?}");
        let b = balance(1000, default, seed);
        // 1000 nodes: about a third head nothing (1.02 partitions each on average), and
        // some hold no replica at all: they would store nothing.
        assert!(b.primary_none * 10 >= 1000 * 3, "seed {seed}: {b:?}");
        assert_eq!(b.replica_min, 0, "seed {seed}: {b:?}");
        assert!(b.replica_max_over_mean() > 2.5, "seed {seed}: {b:?}");
    }
}

#[test]
fn the_most_partitions_spread_1000_nodes_within_a_quarter_of_the_mean() {
    for seed in SEEDS {
        let b = balance(1000, MOST_PARTITIONS, seed);
        assert_eq!(b.primary_none, 0, "seed {seed}: {b:?}");
        assert!(b.replica_max_over_mean() <= 1.25, "seed {seed}: {b:?}");
        assert!(b.replica_min_over_mean() >= 0.75, "seed {seed}: {b:?}");
        let b = balance(256, MOST_PARTITIONS, seed);
        assert!(b.replica_max_over_mean() <= 1.2, "seed {seed}: {b:?}");
        assert!(b.replica_min_over_mean() >= 0.8, "seed {seed}: {b:?}");
    }
}
