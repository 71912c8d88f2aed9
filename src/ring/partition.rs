//! The token ring: fixed partitions, virtual-node tokens, preference lists and fallbacks.
//!
//! The rules (the cluster design's "Ring rules"), which every node applies to the same
//! membership and so computes the same lists:
//! - `P` partitions (a power of two), `bits = log2(P)`; a key hash's partition is its top
//!   `bits` bits, and partition `p` starts at `p << (64 - bits)` on the ring.
//! - Each node places `V` tokens, [`token`]`(id, i)` for `i < V`.
//! - The preference list of `p`: walk the tokens clockwise from `p`'s start (the first token
//!   `>= start`, wrapping) and take the first `N` distinct nodes. Zone-aware when any node has
//!   a non-empty zone (the empty zone then counts as one more zone): first only nodes of zones
//!   not used yet; if the walk ends with fewer than `N`, fill with the remaining distinct nodes
//!   in clockwise order. With fewer than `N` nodes the list holds all of them.
//! - Fallbacks of `p` (sloppy-quorum stand-ins): the distinct nodes of the same walk that are
//!   not in the preference list, in clockwise order.

use super::NodeId;
use crate::util::{mix64, SPLITMIX_GAMMA};
use thiserror::Error;

/// Most partitions a ring may have (`--partitions`): 16 bits of the key hash.
pub const MAX_PARTITIONS: u32 = 1 << 16;
/// Most tokens per node (`--vnodes`).
pub const MAX_VNODES: u32 = 4096;

/// A member of the ring: its id and its zone (empty: no zone).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RingNode {
    pub id: NodeId,
    pub zone: String,
}

/// Why a ring could not be built.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RingError {
    #[error(
        "partitions must be a power of two from 1 to {MAX_PARTITIONS}, got {0}; \
         pick one such as 1024 (--partitions)"
    )]
    Partitions(u32),
    #[error("vnodes must be from 1 to {MAX_VNODES}, got {0}; the default is 256 (--vnodes)")]
    Vnodes(u32),
    #[error("the replication factor n must be at least 1, got 0 (--n)")]
    ZeroN,
    #[error("node id {0} is listed twice in the ring's membership; node ids must be unique")]
    DuplicateNode(NodeId),
}

/// The position of node `id`'s `i`-th token: the `i`-th output of a splitmix64 generator
/// seeded with the mixed node id. A pure function of `(id, i)`, so every node places every
/// other node's tokens without being told, and a node's first `V` tokens stay its tokens when
/// `V` grows.
pub fn token(id: NodeId, i: u32) -> u64 {
    let seed = mix64(id.wrapping_add(SPLITMIX_GAMMA));
    mix64(seed.wrapping_add((u64::from(i) + 1).wrapping_mul(SPLITMIX_GAMMA)))
}

/// The partition of a 64-bit key hash on a ring of `2^bits` partitions: its top `bits` bits.
pub fn partition_of(hash: u64, bits: u32) -> u32 {
    if bits == 0 {
        0
    } else {
        (hash >> (64 - bits)) as u32
    }
}

/// Where partition `p` starts on a ring of `2^bits` partitions.
pub fn partition_start(p: u32, bits: u32) -> u64 {
    if bits == 0 {
        0
    } else {
        u64::from(p) << (64 - bits)
    }
}

/// The ring for one membership: every partition's preference list, computed once at build.
#[derive(Debug, Clone)]
pub struct Ring {
    bits: u32,
    n: usize,
    /// Members, sorted by id (indexes below point here).
    nodes: Vec<RingNode>,
    /// All tokens, sorted (ties by node id, so the order is the same on every node).
    tokens: Vec<u64>,
    /// `owners[k]`: the index in `nodes` of the node that placed `tokens[k]`.
    owners: Vec<u32>,
    /// Length of every preference list: `min(n, nodes)`.
    width: usize,
    /// Preference lists, `width` entries per partition.
    prefs: Vec<NodeId>,
    /// Per node (by index): partitions whose list holds it, and those it heads.
    owned: Vec<u32>,
    primary: Vec<u32>,
}

/// Scratch state of one preference walk, reused across partitions to avoid allocating.
struct Walk {
    taken: Vec<bool>,
    zone_used: Vec<bool>,
    list: Vec<u32>,
    zones: Vec<u32>,
}

impl Ring {
    /// Builds the ring of `nodes` (any order; ids unique) with `partitions` partitions, `vnodes`
    /// tokens per node and preference lists of `n` nodes. An empty membership is allowed: every
    /// preference list is then empty.
    pub fn build(
        partitions: u32,
        vnodes: u32,
        n: usize,
        nodes: &[RingNode],
    ) -> Result<Ring, RingError> {
        if partitions == 0 || !partitions.is_power_of_two() || partitions > MAX_PARTITIONS {
            return Err(RingError::Partitions(partitions));
        }
        if vnodes == 0 || vnodes > MAX_VNODES {
            return Err(RingError::Vnodes(vnodes));
        }
        if n == 0 {
            return Err(RingError::ZeroN);
        }
        let mut sorted = nodes.to_vec();
        sorted.sort_by_key(|node| node.id);
        if let Some(pair) = sorted.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(RingError::DuplicateNode(pair[0].id));
        }
        let mut placed: Vec<(u64, u32)> = Vec::with_capacity(sorted.len() * vnodes as usize);
        for (idx, node) in sorted.iter().enumerate() {
            placed.extend((0..vnodes).map(|i| (token(node.id, i), idx as u32)));
        }
        // Node indexes follow sorted ids, so equal tokens order the same way on every node.
        placed.sort_unstable();
        let mut ring = Ring {
            bits: partitions.trailing_zeros(),
            n,
            width: n.min(sorted.len()),
            tokens: placed.iter().map(|&(t, _)| t).collect(),
            owners: placed.iter().map(|&(_, o)| o).collect(),
            prefs: Vec::new(),
            owned: vec![0; sorted.len()],
            primary: vec![0; sorted.len()],
            nodes: sorted,
        };
        ring.compute_preferences();
        Ok(ring)
    }

    fn compute_preferences(&mut self) {
        // Zone indexes: the distinct zones in sorted order (the same on every node).
        let zone_aware = self.nodes.iter().any(|node| !node.zone.is_empty());
        let mut zone_names: Vec<&str> = self.nodes.iter().map(|n| n.zone.as_str()).collect();
        zone_names.sort_unstable();
        zone_names.dedup();
        let zone_of: Vec<u32> = self
            .nodes
            .iter()
            .map(|node| zone_names.partition_point(|z| *z < node.zone.as_str()) as u32)
            .collect();
        let mut walk = Walk {
            taken: vec![false; self.nodes.len()],
            zone_used: vec![false; zone_names.len()],
            list: Vec::with_capacity(self.width),
            zones: Vec::with_capacity(self.width),
        };
        let partitions = 1u32 << self.bits;
        let mut prefs = Vec::with_capacity(partitions as usize * self.width);
        for p in 0..partitions {
            self.walk_preference(p, zone_aware.then_some(&zone_of), &mut walk);
            for (pos, &idx) in walk.list.iter().enumerate() {
                prefs.push(self.nodes[idx as usize].id);
                self.owned[idx as usize] += 1;
                if pos == 0 {
                    self.primary[idx as usize] += 1;
                }
                walk.taken[idx as usize] = false;
            }
            for &z in &walk.zones {
                walk.zone_used[z as usize] = false;
            }
        }
        self.prefs = prefs;
    }

    /// Fills `walk.list` with the node indexes of `p`'s preference list (marking them in
    /// `walk.taken`, and their zones in `walk.zone_used`; the caller clears both).
    fn walk_preference(&self, p: u32, zone_of: Option<&Vec<u32>>, walk: &mut Walk) {
        walk.list.clear();
        walk.zones.clear();
        let len = self.tokens.len();
        let start = self.walk_start(p);
        if let Some(zone_of) = zone_of {
            let zone_count = walk.zone_used.len();
            for step in 0..len {
                if walk.list.len() == self.width || walk.zones.len() == zone_count {
                    break;
                }
                let idx = self.owners[(start + step) % len];
                let zone = zone_of[idx as usize];
                if !walk.taken[idx as usize] && !walk.zone_used[zone as usize] {
                    walk.taken[idx as usize] = true;
                    walk.zone_used[zone as usize] = true;
                    walk.list.push(idx);
                    walk.zones.push(zone);
                }
            }
        }
        // Without zones this is the whole walk; with zones it fills what distinct zones left.
        for step in 0..len {
            if walk.list.len() == self.width {
                break;
            }
            let idx = self.owners[(start + step) % len];
            if !walk.taken[idx as usize] {
                walk.taken[idx as usize] = true;
                walk.list.push(idx);
            }
        }
    }

    /// The index of the first token at or after `p`'s start (wrapping to 0).
    fn walk_start(&self, p: u32) -> usize {
        let start = partition_start(p, self.bits);
        let k = self.tokens.partition_point(|&t| t < start);
        if k == self.tokens.len() {
            0
        } else {
            k
        }
    }

    /// The partition of a 64-bit key hash on this ring.
    pub fn partition_of(&self, hash: u64) -> u32 {
        partition_of(hash, self.bits)
    }

    /// How many partitions the ring has (`2^partition_bits`).
    pub fn partitions(&self) -> u32 {
        1 << self.bits
    }

    /// log2 of the partition count: how many top bits of a hash name its partition.
    pub fn partition_bits(&self) -> u32 {
        self.bits
    }

    /// The replication factor the ring was built with (lists are shorter with fewer nodes).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The members, sorted by id.
    pub fn nodes(&self) -> &[RingNode] {
        &self.nodes
    }

    /// Partition `p`'s preference list, first replica first: `min(n, nodes)` distinct nodes.
    /// Empty for a partition beyond the ring (a caller's bug, not worth a panic).
    pub fn preference(&self, p: u32) -> &[NodeId] {
        let from = p as usize * self.width;
        self.prefs.get(from..from + self.width).unwrap_or(&[])
    }

    /// Partition `p`'s fallbacks: every node not in its preference list, in the clockwise
    /// order of the same walk. Computed on demand (it allocates a bitmap of the members): only
    /// a request that found a replica down asks. None for a partition beyond the ring.
    pub fn fallbacks(&self, p: u32) -> impl Iterator<Item = NodeId> + '_ {
        let pref = self.preference(p);
        let len = self.tokens.len();
        let start = if len == 0 { 0 } else { self.walk_start(p) };
        let mut seen = vec![false; self.nodes.len()];
        let mut left = if p < self.partitions() {
            self.nodes.len() - pref.len()
        } else {
            0
        };
        let mut step = 0;
        std::iter::from_fn(move || {
            while left > 0 && step < len {
                let idx = self.owners[(start + step) % len] as usize;
                step += 1;
                if seen[idx] {
                    continue;
                }
                seen[idx] = true;
                let id = self.nodes[idx].id;
                if !pref.contains(&id) {
                    left -= 1;
                    return Some(id);
                }
            }
            None
        })
    }

    fn index_of(&self, id: NodeId) -> Option<usize> {
        self.nodes.binary_search_by_key(&id, |node| node.id).ok()
    }

    /// How many partitions have `id` anywhere in their preference list (0 for a non-member).
    pub fn owned(&self, id: NodeId) -> usize {
        self.index_of(id).map_or(0, |i| self.owned[i] as usize)
    }

    /// How many partitions have `id` first in their preference list (0 for a non-member).
    pub fn primary_owned(&self, id: NodeId) -> usize {
        self.index_of(id).map_or(0, |i| self.primary[i] as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[NodeId]) -> Vec<RingNode> {
        ids.iter()
            .map(|&id| RingNode {
                id,
                zone: String::new(),
            })
            .collect()
    }

    fn zoned(spec: &[(NodeId, &str)]) -> Vec<RingNode> {
        spec.iter()
            .map(|&(id, zone)| RingNode {
                id,
                zone: zone.to_string(),
            })
            .collect()
    }

    fn ring(ids: &[NodeId]) -> Ring {
        Ring::build(1024, 256, 3, &members(ids)).expect("valid ring parameters")
    }

    /// (max / mean, min / mean) of a per-node count.
    fn spread(counts: &[usize]) -> (f64, f64) {
        let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
        let max = *counts.iter().max().expect("nodes") as f64;
        let min = *counts.iter().min().expect("nodes") as f64;
        (max / mean, min / mean)
    }

    #[test]
    fn bad_parameters_are_refused_with_the_value() {
        let m = members(&[1, 2, 3]);
        for p in [0, 3, 1000, 1 << 17] {
            assert_eq!(
                Ring::build(p, 256, 3, &m).err(),
                Some(RingError::Partitions(p))
            );
        }
        for v in [0, MAX_VNODES + 1] {
            assert_eq!(
                Ring::build(1024, v, 3, &m).err(),
                Some(RingError::Vnodes(v))
            );
        }
        assert_eq!(Ring::build(1024, 256, 0, &m).err(), Some(RingError::ZeroN));
        assert_eq!(
            Ring::build(1024, 256, 3, &members(&[4, 7, 4])).err(),
            Some(RingError::DuplicateNode(4))
        );
        let msg = RingError::Partitions(1000).to_string();
        assert!(
            msg.contains("1000") && msg.contains("--partitions"),
            "{msg}"
        );
        for p in [1, 2, MAX_PARTITIONS] {
            assert!(Ring::build(p, 1, 1, &m).is_ok(), "{p} partitions");
        }
    }

    #[test]
    fn a_partition_is_the_top_bits_of_the_hash() {
        assert_eq!(partition_of(u64::MAX, 0), 0);
        assert_eq!(partition_of(0, 10), 0);
        assert_eq!(partition_of(u64::MAX, 10), 1023);
        assert_eq!(partition_of(1 << 54, 10), 1);
        assert_eq!(partition_of((1 << 54) - 1, 10), 0);
        assert_eq!(partition_of(u64::MAX, 16), 65535);
        for p in [0, 1, 511, 1023] {
            assert_eq!(partition_of(partition_start(p, 10), 10), p);
            assert_eq!(
                partition_of(partition_start(p, 10).wrapping_sub(1), 10),
                (p + 1023) % 1024
            );
        }
        let r = ring(&[1, 2]);
        assert_eq!((r.partitions(), r.partition_bits(), r.n()), (1024, 10, 3));
        assert_eq!(r.partition_of(u64::MAX), 1023);
    }

    #[test]
    fn tokens_are_a_fixed_function_of_id_and_index() {
        // Pinned values: a change here moves every key of every existing cluster.
        assert_eq!(token(1, 0), 6_791_897_765_849_424_158);
        assert_eq!(token(42, 255), 11_367_426_340_363_700_365);
        // mix64 is splitmix64's: its first output from seed 0 is the published 0xe220a8397b1dcdaf.
        assert_eq!(mix64(SPLITMIX_GAMMA), 0xe220_a839_7b1d_cdaf);
        let mut all: Vec<u64> = (1..=50)
            .flat_map(|id| (0..256).map(move |i| token(id, i)))
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 50 * 256, "tokens of distinct (id, i) collide");
        assert_ne!(token(1, 1), token(2, 0));
    }

    #[test]
    fn lists_hold_min_n_distinct_nodes() {
        for count in 0..=7u64 {
            let ids: Vec<NodeId> = (1..=count).map(|i| i * 7919).collect();
            let r = ring(&ids);
            for p in 0..r.partitions() {
                let list = r.preference(p);
                assert_eq!(list.len(), 3.min(ids.len()), "{count} nodes, partition {p}");
                let mut d = list.to_vec();
                d.sort_unstable();
                d.dedup();
                assert_eq!(d.len(), list.len(), "repeated node in {list:?}");
                assert!(list.iter().all(|id| ids.contains(id)));
                let fb: Vec<NodeId> = r.fallbacks(p).collect();
                assert_eq!(fb.len() + list.len(), ids.len(), "fallbacks {fb:?}");
                assert!(fb.iter().all(|id| !list.contains(id)));
            }
        }
        let r = ring(&[1, 2, 3, 4]);
        assert!(r.preference(1024).is_empty(), "beyond the ring");
        assert_eq!(r.fallbacks(1024).count(), 0);
        assert_eq!(r.owned(77), 0, "not a member");
        let empty = ring(&[]);
        assert!(empty.preference(0).is_empty());
        assert_eq!(empty.fallbacks(0).count(), 0);
        assert_eq!(empty.owned(1), 0);
    }

    #[test]
    fn the_list_is_the_first_distinct_nodes_clockwise() {
        // Two nodes with one token each: the partition just past a token is owned by it.
        let r = Ring::build(1024, 1, 2, &members(&[10, 20])).expect("ring");
        let (t10, t20) = (token(10, 0), token(20, 0));
        let (first, second) = if t10 < t20 { (10, 20) } else { (20, 10) };
        let lo = t10.min(t20);
        // The partition whose start is the first start after the lower token.
        let p = partition_of(lo, 10) + 1;
        assert!(partition_start(p, 10) > lo);
        if partition_start(p, 10) <= t10.max(t20) {
            assert_eq!(r.preference(p), &[second, first]);
        }
        // Partition 0 starts at 0, before both tokens: the lower token's node comes first.
        assert_eq!(r.preference(0), &[first, second]);
    }

    #[test]
    fn zone_aware_lists_use_distinct_zones_first() {
        let nodes = zoned(&[
            (1, "a"),
            (2, "a"),
            (3, "a"),
            (4, "b"),
            (5, "b"),
            (6, "b"),
            (7, "c"),
            (8, "c"),
            (9, "c"),
        ]);
        let zone = |id: NodeId| nodes.iter().find(|n| n.id == id).map(|n| n.zone.clone());
        let r = Ring::build(1024, 64, 3, &nodes).expect("ring");
        for p in 0..r.partitions() {
            let mut zones: Vec<_> = r.preference(p).iter().map(|&id| zone(id)).collect();
            zones.sort();
            zones.dedup();
            assert_eq!(zones.len(), 3, "partition {p}: {:?}", r.preference(p));
        }
        // Two zones for N=3: both zones, then the next distinct node clockwise.
        let two = zoned(&[(1, "a"), (2, "a"), (3, "b"), (4, "b")]);
        let r = Ring::build(256, 64, 3, &two).expect("ring");
        for p in 0..r.partitions() {
            let list = r.preference(p);
            assert_eq!(list.len(), 3);
            let a = list.iter().filter(|&&id| id <= 2).count();
            assert!(a == 1 || a == 2, "partition {p}: {list:?}");
            assert_ne!(list[0] <= 2, list[1] <= 2, "first two from distinct zones");
        }
    }

    #[test]
    fn input_order_does_not_change_the_lists() {
        let ids = [5, 3, 99, 1 << 40, 17, 2];
        let a = ring(&ids);
        let mut rev = ids;
        rev.reverse();
        let b = ring(&rev);
        for p in 0..a.partitions() {
            assert_eq!(a.preference(p), b.preference(p));
            assert!(a.fallbacks(p).eq(b.fallbacks(p)));
        }
    }

    #[test]
    fn five_nodes_own_within_ten_percent_of_the_mean() {
        // Several memberships, so the bound is not a property of one lucky id set.
        let sets: [[NodeId; 5]; 4] = [
            [1, 2, 3, 4, 5],
            [10, 20, 30, 40, 50],
            [0x0123_4567, 0x89ab_cdef, 42, 7, 1 << 50],
            [1001, 1002, 1003, 1004, 1005],
        ];
        for ids in sets {
            let r = ring(&ids);
            let owned: Vec<usize> = ids.iter().map(|&id| r.owned(id)).collect();
            let primary: Vec<usize> = ids.iter().map(|&id| r.primary_owned(id)).collect();
            assert_eq!(owned.iter().sum::<usize>(), 1024 * 3);
            assert_eq!(primary.iter().sum::<usize>(), 1024);
            let (max, min) = spread(&owned);
            let (pmax, pmin) = spread(&primary);
            println!(
                "ids {ids:?}: owned (any of N=3) {owned:?} max/mean {max:.3} min/mean {min:.3}; \
                 primary {primary:?} max/mean {pmax:.3} min/mean {pmin:.3}"
            );
            assert!(
                max <= 1.10,
                "owned max/mean {max:.3} for {ids:?}: {owned:?}"
            );
        }
    }

    #[test]
    fn a_sixth_node_moves_about_n_over_n_plus_one_of_the_lists() {
        let five = ring(&[1, 2, 3, 4, 5]);
        let six = ring(&[1, 2, 3, 4, 5, 6]);
        let changed = (0..1024)
            .filter(|&p| five.preference(p) != six.preference(p))
            .count();
        let gained = six.owned(6);
        // Every list that changed gained node 6 and nothing else moved.
        for p in 0..1024 {
            let (old, new) = (five.preference(p), six.preference(p));
            if old != new {
                assert!(new.contains(&6), "partition {p}: {old:?} -> {new:?}");
                let kept: Vec<_> = new.iter().filter(|&&id| id != 6).collect();
                let old_kept: Vec<_> = old.iter().filter(|id| new.contains(id)).collect();
                assert_eq!(kept, old_kept, "partition {p}: survivors keep their order");
            }
        }
        let frac = changed as f64 / 1024.0;
        println!(
            "6th node joins 5: {changed} of 1024 lists changed ({frac:.3}; N/(n+1) = {:.3}), \
             node 6 owns {gained}",
            3.0 / 6.0
        );
        assert_eq!(changed, gained);
        assert!((0.35..=0.65).contains(&frac), "{frac}");
    }

    #[test]
    #[ignore = "timing; run with --release --ignored --nocapture"]
    fn build_time_for_a_thousand_nodes() {
        let nodes = members(&(1..=1000).collect::<Vec<_>>());
        let t = std::time::Instant::now();
        let r = Ring::build(1024, 256, 3, &nodes).expect("ring");
        let took = t.elapsed();
        println!("1000 nodes x 256 vnodes x 1024 partitions: build {took:?}");
        assert_eq!(r.preference(0).len(), 3);
        let zones = ["a", "b", "c"];
        let zoned: Vec<RingNode> = (1..=1000u64)
            .map(|id| RingNode {
                id,
                zone: zones[id as usize % 3].to_string(),
            })
            .collect();
        let t = std::time::Instant::now();
        let r = Ring::build(1024, 256, 3, &zoned).expect("ring");
        println!("the same in 3 zones: build {:?}", t.elapsed());
        assert_eq!(r.preference(0).len(), 3);
    }
}
