//! Purges that wait for approval. With `VersionPolicy::purge_needs_approval` (a cluster node)
//! a dead key past its grace is not removed by `purge_cycle` but handed over as a candidate;
//! whoever approves purges (the cluster's tombstone collector) checks what it must elsewhere
//! and then removes the key only if it still holds the very tombstone that was approved.
//! The shard knows nothing of why: it offers candidates, compares entries and removes keys.

use ringkv_proto::key_hash;

use super::{Purge, Shard};
use crate::store::entry::Entry;

/// Candidates a shard keeps waiting for approval; past it `purge_cycle` stops handing out more
/// (the rest stay in its queue), so an approver that falls behind costs bounded memory.
pub const MAX_PURGE_CANDIDATES: usize = 10_000;

impl Shard {
    /// Takes the keys due for purging that wait for approval.
    pub fn take_purge_candidates(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.candidates)
    }

    /// The stored entry of `key` if it may still be purged at `now_ms` (every version dead for
    /// the grace), for an approver to offer elsewhere.
    pub fn purge_candidate(&self, key: &[u8], now_ms: u64) -> Option<Entry> {
        let e = self.entry(key_hash(key), key)?;
        self.purgeable(e, now_ms).then(|| e.clone())
    }

    /// Whether the stored entry of `tomb`'s key is that tombstone: the same causal context
    /// (nothing newer was written or merged) and every version dead.
    pub fn holds_tombstone(&self, tomb: &Entry, now_ms: u64) -> bool {
        let key = tomb.key();
        self.entry(key_hash(key), key).is_some_and(|e| {
            e.dead_since(now_ms).is_some() && (e == tomb || e.context() == tomb.context())
        })
    }

    /// Purges `tomb`'s key if the stored entry is still that tombstone (see
    /// [`Shard::holds_tombstone`]). Not logged, as every purge: a replay that brings the
    /// tombstone back only makes it a candidate again.
    pub fn purge_if_held(&mut self, tomb: &Entry, now_ms: u64) -> bool {
        if !self.holds_tombstone(tomb, now_ms) {
            return false;
        }
        let key = tomb.key();
        self.remove_quiet(key_hash(key), key);
        self.purged += 1;
        true
    }

    /// Puts a candidate that was not approved back in the purge queue, due again at `due_ms`
    /// (if it is still dead by then it becomes a candidate again).
    pub fn retry_purge(&mut self, key: &[u8], due_ms: u64) {
        let hash = key_hash(key);
        let Some(slot) = self.find(hash, key) else {
            return;
        };
        self.purge.push_back(Purge {
            due_ms,
            // Its record was durable when it became a candidate; a record written since is at
            // most this one.
            seq: self.wal.seq,
            hash,
            slot,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::write::{Supersede, VersionPolicy};
    use crate::store::VersionRef;

    fn gated(actor: u64) -> Shard {
        Shard::with_policy(VersionPolicy {
            actor,
            tombstone_grace_ms: 100,
            purge_needs_approval: true,
            ..VersionPolicy::default()
        })
    }

    fn write(s: &mut Shard, key: &[u8], v: VersionRef<'_>) -> Entry {
        let mut seen = None;
        s.write(key_hash(key), key, Supersede::Local, v, |e| {
            seen = Some(e.clone())
        })
        .expect("write");
        seen.expect("seen")
    }

    /// A gated shard never purges by itself: due tombstones become candidates, bounded, and
    /// go only through purge_if_held, which refuses a key written or deleted again since.
    #[test]
    fn gated_purges_wait_for_approval_and_match_the_tombstone() {
        let mut s = gated(1);
        write(&mut s, b"a", VersionRef::value(b"v", 1, None));
        let tomb_a = write(&mut s, b"a", VersionRef::tombstone(2));
        let tomb_b = write(&mut s, b"b", VersionRef::tombstone(3));
        assert_eq!(s.purge_cycle(50, u64::MAX, 100), 0, "grace not over");
        assert_eq!(s.purge_cycle(1_000, u64::MAX, 100), 2);
        assert_eq!(s.tombstones(), 2, "candidates are not purged");
        let mut c = s.take_purge_candidates();
        c.sort();
        assert_eq!(c, vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(s.take_purge_candidates().is_empty());
        assert!(s.purge_candidate(b"a", 1_000).is_some());
        // b is written again: its old tombstone no longer matches.
        write(&mut s, b"b", VersionRef::value(b"new", 4, None));
        assert!(s.purge_candidate(b"b", 1_000).is_none());
        assert!(!s.purge_if_held(&tomb_b, 1_000));
        assert!(s.purge_if_held(&tomb_a, 1_000));
        assert_eq!((s.tombstones(), s.len(), s.purged), (0, 1, 1));
    }

    /// A tombstone merged from another replica with the same context counts as held; one
    /// that the shard has superseded does not.
    #[test]
    fn held_means_same_context_and_dead() {
        let mut a = gated(1);
        let mut b = gated(2);
        let v = write(&mut a, b"k", VersionRef::value(b"v", 1, None));
        b.merge(key_hash(b"k"), &v);
        assert!(
            !b.holds_tombstone(&v, 10),
            "a live value is not a tombstone"
        );
        let t = write(&mut a, b"k", VersionRef::tombstone(2));
        b.merge(key_hash(b"k"), &t);
        assert!(b.holds_tombstone(&t, 10));
        let t2 = write(&mut b, b"k", VersionRef::tombstone(3));
        assert!(!b.holds_tombstone(&t, 10), "b deleted again: newer");
        assert!(b.holds_tombstone(&t2, 10));
    }

    /// The candidate queue is bounded: past MAX_PURGE_CANDIDATES the rest wait in the queue.
    #[test]
    fn candidates_are_bounded_and_retried() {
        let mut s = gated(1);
        for i in 0..(MAX_PURGE_CANDIDATES + 50) as u64 {
            write(&mut s, &i.to_be_bytes(), VersionRef::tombstone(i % 10));
        }
        while s.purge_cycle(10_000, u64::MAX, 1_000) > 0 {}
        let c = s.take_purge_candidates();
        assert_eq!(c.len(), MAX_PURGE_CANDIDATES);
        assert_eq!(s.purge_cycle(10_000, u64::MAX, 1_000), 50);
        s.take_purge_candidates();
        s.retry_purge(&c[0], 20_000);
        assert_eq!(s.purge_cycle(19_999, u64::MAX, 1_000), 0);
        assert_eq!(s.purge_cycle(20_000, u64::MAX, 1_000), 1);
        assert_eq!(s.take_purge_candidates(), vec![c[0].clone()]);
    }
}
