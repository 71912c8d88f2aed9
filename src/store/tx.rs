//! A set of locked shards, the scope in which a command runs.

use std::sync::MutexGuard;

use smallvec::SmallVec;

use super::{Shard, Store};

/// A command used a key whose shard it did not lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "internal error: shard {shard} used without being locked (the command's route misses a \
     key; please report this bug)"
)]
pub struct NotLocked {
    pub shard: usize,
}

/// The shards one command may touch, locked in ascending index order so that two commands
/// locking overlapping sets can't deadlock.
pub struct Tx<'s> {
    store: &'s Store,
    /// (shard, guard, WAL sequence number when locked)
    guards: SmallVec<[(usize, MutexGuard<'s, Shard>, u64); 2]>,
}

impl<'s> Tx<'s> {
    /// Locks the shards of the given key hashes.
    pub fn for_hashes(store: &'s Store, hashes: impl IntoIterator<Item = u64>) -> Tx<'s> {
        let mut ids: SmallVec<[usize; 4]> = hashes.into_iter().map(|h| store.shard_of(h)).collect();
        ids.sort_unstable();
        ids.dedup();
        Tx {
            store,
            guards: ids
                .into_iter()
                .map(|i| {
                    let g = store.lock(i);
                    let seq = g.wal.seq;
                    (i, g, seq)
                })
                .collect(),
        }
    }

    pub fn for_shard(store: &'s Store, shard: usize) -> Tx<'s> {
        let mut guards = SmallVec::new();
        let g = store.lock(shard);
        let seq = g.wal.seq;
        guards.push((shard, g, seq));
        Tx { store, guards }
    }

    /// The locked shard holding `hash`. A command may only use keys it declared in its route,
    /// so every shard it needs was locked up front, in ascending order; a shard not locked is
    /// a bug in the command's route and is reported, never locked late (out of order, which
    /// could deadlock with another multi-shard command).
    #[inline]
    pub fn shard(&mut self, hash: u64) -> Result<&mut Shard, NotLocked> {
        let id = self.store.shard_of(hash);
        match self.guards.iter_mut().find(|(i, _, _)| *i == id) {
            Some((_, g, _)) => Ok(g),
            None => Err(NotLocked { shard: id }),
        }
    }

    /// The WAL records this command produced: (shard, last sequence number) per shard written.
    pub fn marks(&self) -> Marks {
        self.guards
            .iter()
            .filter(|(_, g, before)| g.wal.seq > *before)
            .map(|(i, g, _)| (*i as u32, g.wal.seq))
            .collect()
    }
}

impl Tx<'_> {
    /// The WAL position of every locked shard, read or written: a reply that shows what these
    /// shards hold waits until it is durable (no dirty reads, `net::replies`). Where nothing
    /// is pending the wait is free (the position is already durable).
    pub fn read_marks(&self) -> Marks {
        self.guards
            .iter()
            .filter(|(_, g, _)| g.wal.enabled)
            .map(|(i, g, _)| (*i as u32, g.wal.seq))
            .collect()
    }
}

/// Writes a command made: (shard, sequence number of its last record there).
pub type Marks = SmallVec<[(u32, u64); 2]>;

/// Records `(shard, seq)`, keeping the highest seq per shard.
pub fn add_mark(marks: &mut Marks, shard: u32, seq: u64) {
    match marks.iter_mut().find(|(s, _)| *s == shard) {
        Some(m) => m.1 = m.1.max(seq),
        None => marks.push((shard, seq)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_not_locked_is_an_error_not_a_late_lock() {
        let store = Store::new(16);
        let a = 0u64;
        let other = (0..u64::MAX)
            .map(|i| i << 40)
            .find(|h| store.shard_of(*h) != store.shard_of(a))
            .unwrap_or(1 << 40);
        let mut tx = Tx::for_hashes(&store, [a]);
        assert!(tx.shard(a).is_ok());
        let missing = store.shard_of(other);
        assert_eq!(tx.shard(other).err(), Some(NotLocked { shard: missing }));
        // Nothing was locked behind the command's back: the shard is still free.
        assert!(store.shards[missing].try_lock().is_ok());
    }
}
