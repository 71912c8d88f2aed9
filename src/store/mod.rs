//! The in-memory store: shards of versioned values. Knows nothing of sockets or peers.
//!
//! A shard is owned by one event loop, which is the only one to touch it on the data path;
//! each sits behind an uncontended mutex so that a command spanning shards of several loops
//! (MSET, RENAME, ...) can lock them all, in index order, and stay atomic on the node.

pub mod clock;
pub mod counter;
pub mod dvv;
pub mod entry;
pub mod glob;
pub mod legacy;
pub mod merkle;
pub mod placement;
pub mod range;
pub mod shard;
pub mod tx;
pub mod write;

use std::sync::{Mutex, MutexGuard};

pub use clock::{NodeId, VectorClock, MAX_NODE_ID};
pub use dvv::{TooManySiblings, VersionVector};
pub use entry::{Entry, VersionRef};
pub use placement::{partition_of, Placement};
pub use shard::{sync_entries, Live, Merged, Shard};
pub use tx::{add_mark, Marks, Tx};
pub use write::{Conflicts, Supersede, VersionPolicy};

/// Partitions of a store made by [`Store::new`] (tests): the server's default, `--partitions`.
pub const TEST_PARTITIONS: u32 = 1024;

/// All shards of a node.
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    placement: Placement,
}

impl Store {
    /// A store placing keys by [`TEST_PARTITIONS`] partitions, with the default version policy
    /// (tests; the server passes its own).
    pub fn new(nshards: usize) -> Store {
        let placement = Placement::Partitioned {
            bits: TEST_PARTITIONS.trailing_zeros() as u8,
        };
        Self::with_policy(nshards, placement, VersionPolicy::default())
    }

    pub fn with_policy(nshards: usize, placement: Placement, policy: VersionPolicy) -> Store {
        Store {
            shards: (0..nshards)
                .map(|_| Mutex::new(Shard::with_policy(policy)))
                .collect(),
            placement,
        }
    }

    /// The actor of the dots this node mints (every shard has the same).
    pub fn actor(&self) -> NodeId {
        self.lock(0).actor()
    }

    /// How keys are spread over the shards (fixed by the data directory).
    pub fn placement(&self) -> Placement {
        self.placement
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Keys stored in every shard (tombstones included: they are data a replica holds).
    pub fn stored_keys(&self) -> usize {
        (0..self.shards.len())
            .map(|s| {
                let g = self.lock(s);
                g.len() + g.tombstones()
            })
            .sum()
    }

    /// Which shard a key hash belongs to: its partition's (or, in a legacy directory, by bits
    /// 40.. of the hash). The shard's own table doesn't use these bits (see
    /// `shard::table_hash`).
    #[inline]
    pub fn shard_of(&self, hash: u64) -> usize {
        self.placement.shard(hash, self.shards.len())
    }

    /// Locks every shard, in ascending index order (the order every multi-shard lock takes,
    /// see [`Tx`]), for a command that changes all of them at one instant (FLUSHDB).
    pub fn lock_all(&self) -> Vec<MutexGuard<'_, Shard>> {
        (0..self.shards.len()).map(|i| self.lock(i)).collect()
    }

    /// Tries to lock one shard without waiting (tests only: the data path always waits).
    #[cfg(test)]
    pub fn try_lock(&self, shard: usize) -> std::sync::TryLockResult<MutexGuard<'_, Shard>> {
        self.shards[shard].try_lock()
    }

    /// Locks one shard. A poisoned lock means a command panicked mid-way; the data is still
    /// structurally valid (every mutation is a single table operation), so keep serving.
    #[inline]
    pub fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        match self.shards[shard].lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}
