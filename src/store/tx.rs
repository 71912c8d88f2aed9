//! A set of locked shards, the scope in which a command runs.

use std::sync::MutexGuard;

use smallvec::SmallVec;

use super::{Shard, Store};

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

    /// The locked shard holding `hash`. Commands only ask for keys they declared, so a miss
    /// is a bug; it locks the shard on the spot rather than panic (still ordered per command
    /// as the only other lock holders are single shards).
    #[inline]
    pub fn shard(&mut self, hash: u64) -> &mut Shard {
        let id = self.store.shard_of(hash);
        let pos = match self.guards.iter().position(|(i, _, _)| *i == id) {
            Some(p) => p,
            None => {
                debug_assert!(false, "shard {id} used without being locked");
                let g = self.store.lock(id);
                let seq = g.wal.seq;
                self.guards.push((id, g, seq));
                self.guards.len() - 1
            }
        };
        &mut self.guards[pos].1
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

/// Writes a command made: (shard, sequence number of its last record there).
pub type Marks = SmallVec<[(u32, u64); 2]>;

/// Records `(shard, seq)`, keeping the highest seq per shard.
pub fn add_mark(marks: &mut Marks, shard: u32, seq: u64) {
    match marks.iter_mut().find(|(s, _)| *s == shard) {
        Some(m) => m.1 = m.1.max(seq),
        None => marks.push((shard, seq)),
    }
}
