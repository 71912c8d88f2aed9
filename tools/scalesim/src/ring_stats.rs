//! Partition balance and movement, computed by the project's own `Ring::build` over random
//! node ids (node ids are random 64-bit numbers in a real cluster too).

use std::collections::HashSet;

use ringkv::ring::membership::Settings;
use ringkv::ring::{NodeId, Ring, RingError, RingNode};

use crate::rng::Rng;

/// The ring settings under study (the server's defaults unless a flag says otherwise).
#[derive(Debug, Clone, Copy)]
pub struct RingShape {
    pub partitions: u32,
    pub vnodes: u32,
    pub n: usize,
}

impl RingShape {
    /// A node's `Membership` settings for this shape, the rest at the server's defaults
    /// (siblings mode, hinted handoff on).
    pub fn settings(&self) -> Settings {
        Settings {
            partitions: self.partitions,
            vnodes: self.vnodes,
            n: self.n,
            w: ringkv::config::DEFAULT_W as usize,
            r: ringkv::config::DEFAULT_R as usize,
            lww: false,
            hinted_handoff: true,
            phi_convict_threshold: ringkv::config::DEFAULT_PHI_CONVICT_THRESHOLD,
        }
    }
}

impl Default for RingShape {
    fn default() -> RingShape {
        RingShape {
            partitions: ringkv::config::DEFAULT_PARTITIONS,
            vnodes: ringkv::config::DEFAULT_VNODES,
            n: ringkv::config::DEFAULT_N as usize,
        }
    }
}

/// How evenly one ring spreads partitions over its nodes.
#[derive(Debug, Clone)]
pub struct Balance {
    pub nodes: usize,
    /// Partitions a node heads (it is first in their preference list): mean, min, max.
    pub primary_mean: f64,
    pub primary_min: usize,
    pub primary_max: usize,
    /// Nodes that head no partition at all.
    pub primary_none: usize,
    /// Partitions whose preference list holds a node anywhere (its share of replicas).
    pub replica_mean: f64,
    pub replica_min: usize,
    pub replica_max: usize,
}

impl Balance {
    pub fn primary_max_over_mean(&self) -> f64 {
        self.primary_max as f64 / self.primary_mean
    }
    pub fn replica_max_over_mean(&self) -> f64 {
        self.replica_max as f64 / self.replica_mean
    }
    pub fn replica_min_over_mean(&self) -> f64 {
        self.replica_min as f64 / self.replica_mean
    }
}

/// `count` distinct random node ids.
pub fn node_ids(rng: &mut Rng, count: usize) -> Vec<NodeId> {
    let mut seen = HashSet::with_capacity(count);
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let id = rng.next_u64();
        if id != 0 && seen.insert(id) {
            ids.push(id);
        }
    }
    ids
}

/// The ring of `ids` (one zone) in `shape`.
pub fn ring_of(shape: RingShape, ids: &[NodeId]) -> Result<Ring, RingError> {
    let nodes: Vec<RingNode> = ids
        .iter()
        .map(|&id| RingNode {
            id,
            zone: String::new(),
        })
        .collect();
    Ring::build(shape.partitions, shape.vnodes, shape.n, &nodes)
}

/// The balance of a ring of `ids`.
pub fn balance(shape: RingShape, ids: &[NodeId]) -> Result<Balance, RingError> {
    let ring = ring_of(shape, ids)?;
    let primary: Vec<usize> = ids.iter().map(|&id| ring.primary_owned(id)).collect();
    let replica: Vec<usize> = ids.iter().map(|&id| ring.owned(id)).collect();
    let count = ids.len().max(1) as f64;
    Ok(Balance {
        nodes: ids.len(),
        primary_mean: primary.iter().sum::<usize>() as f64 / count,
        primary_min: primary.iter().copied().min().unwrap_or(0),
        primary_max: primary.iter().copied().max().unwrap_or(0),
        primary_none: primary.iter().filter(|&&c| c == 0).count(),
        replica_mean: replica.iter().sum::<usize>() as f64 / count,
        replica_min: replica.iter().copied().min().unwrap_or(0),
        replica_max: replica.iter().copied().max().unwrap_or(0),
    })
}

/// What one node joining a ring of `n` moves, over several joins.
#[derive(Debug, Clone)]
pub struct Movement {
    pub nodes: usize,
    pub joins: usize,
    /// Share of replica assignments (partition, node) that change owner: mean and max over
    /// the joins.
    pub replica_moved_mean: f64,
    pub replica_moved_max: f64,
    /// Share of partitions whose first replica changes.
    pub primary_moved_mean: f64,
    /// The least any scheme can move: the newcomer's fair share, 1/(n+1).
    pub ideal: f64,
    /// Moved assignments that did not go to the newcomer (a replica shuffled between two old
    /// nodes): summed over the joins. 0 means every move is one the join needs.
    pub collateral: usize,
}

impl Movement {
    /// How many times the ideal the mean moved share is.
    pub fn over_ideal(&self) -> f64 {
        self.replica_moved_mean / self.ideal
    }
}

/// Joins `joins` different new nodes, one at a time, each to the same ring of `ids`, and
/// counts what moves (the preference lists before and after, both by `Ring::build`).
pub fn join_movement(
    shape: RingShape,
    ids: &[NodeId],
    rng: &mut Rng,
    joins: usize,
) -> Result<Movement, RingError> {
    let before = ring_of(shape, ids)?;
    let mut existing: HashSet<NodeId> = ids.iter().copied().collect();
    let mut with = ids.to_vec();
    let (mut sum, mut max, mut psum, mut collateral) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    for _ in 0..joins {
        let newcomer = loop {
            let id = rng.next_u64();
            if id != 0 && existing.insert(id) {
                break id;
            }
        };
        with.push(newcomer);
        let after = ring_of(shape, &with)?;
        with.pop();
        let (mut moved, mut total, mut pmoved) = (0usize, 0usize, 0usize);
        for p in 0..before.partitions() {
            let (old, new) = (before.preference(p), after.preference(p));
            total += new.len();
            for id in new {
                if !old.contains(id) {
                    moved += 1;
                    if *id != newcomer {
                        collateral += 1;
                    }
                }
            }
            if old.first() != new.first() {
                pmoved += 1;
            }
        }
        let share = moved as f64 / total.max(1) as f64;
        sum += share;
        max = max.max(share);
        psum += pmoved as f64 / before.partitions() as f64;
    }
    let joins_f = joins.max(1) as f64;
    Ok(Movement {
        nodes: ids.len(),
        joins,
        replica_moved_mean: sum / joins_f,
        replica_moved_max: max,
        primary_moved_mean: psum / joins_f,
        ideal: 1.0 / (ids.len() as f64 + 1.0),
        collateral,
    })
}
