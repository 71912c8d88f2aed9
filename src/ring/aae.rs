//! Anti-entropy counters and its trigger, shared by the loops of a node (the exchange itself is
//! `cluster::aae`; INFO and CLUSTER AAE reach these through the membership).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// What anti-entropy did on this node since it started (INFO cluster `cluster_aae_*`).
#[derive(Default)]
pub struct AaeStats {
    /// Rounds finished (one round compares every partition this node replicates with each of
    /// its other reachable replicas).
    pub rounds: AtomicU64,
    /// Partition trees compared (one per partition and peer: their roots).
    pub trees_compared: AtomicU64,
    /// Segments found different (after the branches narrowed the search).
    pub segments_differing: AtomicU64,
    /// Keys whose entries differed and were exchanged (fetched and merged here, pushed there).
    pub keys_repaired: AtomicU64,
    /// Bytes of anti-entropy requests and replies, both ways, counted on this node's side.
    pub bytes_exchanged: AtomicU64,
    /// Calls of a round that failed (the partition is retried next round).
    pub errors: AtomicU64,
    /// Duration of the last round, milliseconds.
    pub last_round_ms: AtomicU64,
    /// When each partition was last compared with every reachable replica, ms since the epoch
    /// (0: never), indexed by partition.
    last_exchange_ms: Mutex<Vec<u64>>,
    /// Set by CLUSTER AAE: run a round now.
    pub trigger: tokio::sync::Notify,
}

impl AaeStats {
    pub fn exchanged(&self, partition: u32, partitions: u32, now_ms: u64) {
        let mut v = self
            .last_exchange_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if v.len() != partitions as usize {
            v.resize(partitions as usize, 0);
        }
        if let Some(t) = v.get_mut(partition as usize) {
            *t = now_ms;
        }
    }

    /// (oldest, newest) last exchange among the partitions `replicated` names (0: never).
    pub fn oldest_newest(&self, replicated: impl Iterator<Item = u32>) -> (u64, u64) {
        let v = self
            .last_exchange_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut oldest = u64::MAX;
        let mut newest = 0;
        let mut any = false;
        for p in replicated {
            any = true;
            let t = v.get(p as usize).copied().unwrap_or(0);
            oldest = oldest.min(t);
            newest = newest.max(t);
        }
        if any {
            (oldest, newest)
        } else {
            (0, 0)
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}
