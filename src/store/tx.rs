//! A set of locked shards, the scope in which a command runs.

use std::sync::MutexGuard;

use smallvec::SmallVec;
use tracing::warn;

use super::{Shard, Store};
use crate::record::{self, txn};

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
///
/// When the command has written to more than one shard, its records are turned into one TXN
/// record in each of them before the locks are released ([`Tx::marks`], or the drop), so that
/// a crash keeps all of its changes or none (docs/storage.md, "Multi-shard writes").
pub struct Tx<'s> {
    store: &'s Store,
    guards: SmallVec<[Locked<'s>; 2]>,
    committed: bool,
}

/// One locked shard, and where its WAL buffer stood when it was locked.
struct Locked<'s> {
    shard: usize,
    guard: MutexGuard<'s, Shard>,
    seq: u64,
    buf_len: usize,
}

impl<'s> Locked<'s> {
    fn new(store: &'s Store, shard: usize) -> Locked<'s> {
        let guard = store.lock(shard);
        let (seq, buf_len) = (guard.wal.seq, guard.wal.buf.len());
        Locked {
            shard,
            guard,
            seq,
            buf_len,
        }
    }

    fn written(&self) -> bool {
        self.guard.wal.seq > self.seq
    }
}

impl<'s> Tx<'s> {
    /// Locks the shards of the given key hashes.
    pub fn for_hashes(store: &'s Store, hashes: impl IntoIterator<Item = u64>) -> Tx<'s> {
        let mut ids: SmallVec<[usize; 4]> = hashes.into_iter().map(|h| store.shard_of(h)).collect();
        ids.sort_unstable();
        ids.dedup();
        Tx {
            store,
            guards: ids.into_iter().map(|i| Locked::new(store, i)).collect(),
            committed: false,
        }
    }

    pub fn for_shard(store: &'s Store, shard: usize) -> Tx<'s> {
        let mut guards = SmallVec::new();
        guards.push(Locked::new(store, shard));
        Tx {
            store,
            guards,
            committed: false,
        }
    }

    /// The locked shard holding `hash`. A command may only use keys it declared in its route,
    /// so every shard it needs was locked up front, in ascending order; a shard not locked is
    /// a bug in the command's route and is reported, never locked late (out of order, which
    /// could deadlock with another multi-shard command).
    #[inline]
    pub fn shard(&mut self, hash: u64) -> Result<&mut Shard, NotLocked> {
        let id = self.store.shard_of(hash);
        match self.guards.iter_mut().find(|l| l.shard == id) {
            Some(l) => Ok(&mut l.guard),
            None => Err(NotLocked { shard: id }),
        }
    }

    /// Ends the command's writes and returns the WAL records it produced: (shard, last
    /// sequence number) per shard written. Several records become one TXN record in each
    /// shard first (see `commit`).
    pub fn marks(&mut self) -> Marks {
        self.commit();
        self.guards
            .iter()
            .filter(|l| l.written())
            .map(|l| (l.shard as u32, l.guard.wal.seq))
            .collect()
    }

    /// With records in more than one shard: replaces each shard's records by one TXN record
    /// holding every shard's part, so that recovery can complete the transaction from any
    /// participant whose copy survived. With several records in one shard: one TXN record of
    /// one part, so that a torn WAL tail drops all of them or none. One record (SET, DEL of one
    /// key, every write of one version): nothing to do, and nothing paid but this check.
    fn commit(&mut self) {
        if self.committed {
            return;
        }
        let mut written = self.guards.iter().filter(|l| l.written());
        let participants = match (written.next(), written.next()) {
            (None, _) => return,
            (Some(l), None) if l.guard.wal.seq - l.seq < 2 => return,
            (Some(_), None) => 1,
            (Some(_), Some(_)) => 2 + written.count(),
        };
        self.committed = true;
        let mut payload = Vec::new();
        txn::begin(&mut payload, participants as u32);
        let mut most = 0;
        for l in self.guards.iter().filter(|l| l.written()) {
            let at = txn::begin_part(&mut payload, l.shard as u32, l.seq + 1);
            let mut n = 0usize;
            record::for_each_appended(&l.guard.wal.buf[l.buf_len..], |kind, _, p| {
                txn::push_record(&mut payload, kind, p);
                n += 1;
            });
            txn::end_part(&mut payload, at, n as u32);
            most = most.max(n);
        }
        if payload.len() > record::MAX_RECORD
            || participants > txn::MAX_PARTS
            || most > txn::MAX_PART_RECORDS
        {
            // Out of reach of any request the limits admit (it would be near the 2 GiB frame
            // limit): its records stay each shard's own, atomic on the node but not across a
            // crash, rather than a record recovery would refuse.
            warn!(
                bytes = payload.len(),
                "multi-shard write too large for one WAL record; logged per shard"
            );
            return;
        }
        for l in self.guards.iter_mut().filter(|l| l.written()) {
            l.guard.wal.replace_with_txn(l.buf_len, l.seq, &payload);
            if participants > 1 {
                l.guard.wal.txn_seq = l.guard.wal.seq;
            }
        }
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        // A command that never asked for its marks still leaves whole transactions behind.
        self.commit();
    }
}

impl Tx<'_> {
    /// The WAL position of every locked shard, read or written: a reply that shows what these
    /// shards hold waits until it is durable (no dirty reads, `net::replies`). Where nothing
    /// is pending the wait is free (the position is already durable).
    /// Commits first, like [`Tx::marks`]: a multi-record command's records become one TXN
    /// record, and its position is the one to wait for.
    pub fn read_marks(&mut self) -> Marks {
        self.commit();
        self.guards
            .iter()
            .filter(|l| l.guard.wal.enabled)
            .map(|l| (l.shard as u32, l.guard.wal.seq))
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
