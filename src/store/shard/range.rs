//! A shard's live keys of a hash range, in hash order: the store side of a cluster-wide SCAN,
//! KEYS, DBSIZE and RANDOMKEY (`store::range`). Positions are key hashes, not slots, so they
//! mean the same after a restart (slots are reassigned at recovery) and on every replica.
//!
//! The shard keeps no ordered index on the write path; a walk sorts the shard's slots by hash
//! once (O(n log n), 16 bytes a key) and reuses that order. Keys added since are noted on the
//! write path (one push) and merged in at the next walk (a sort of the new ones and one linear
//! merge, not a sort of the shard: anti-entropy lists segments between merges of new keys).
//! Removed keys need no rebuild: their slot is found empty, dead, or holding another key
//! (whose hash differs: skipped); updated keys keep their slot. The order is rebuilt from
//! scratch only when such stale items outnumber the keys.

use ringkv_proto::key_hash;

use super::Shard;

/// Every indexed slot of a shard by key hash, as of `at` (the shard's insertion count).
pub(crate) struct HashOrder {
    at: u64,
    pub(super) items: Vec<(u64, u32)>,
    /// Keys added after `at`, not yet merged into `items`: its first `fresh_sorted` are in
    /// order (a listing sorts what was added since the last one into them).
    fresh: Vec<(u64, u32)>,
    fresh_sorted: usize,
}

/// Merges two sorted runs into one, each (hash, slot) once.
fn merge_sorted(a: Vec<(u64, u32)>, b: Vec<(u64, u32)>) -> Vec<(u64, u32)> {
    let mut merged = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x <= y => a.next(),
            (Some(_), Some(_)) | (None, Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, None) => break,
        };
        merged.extend(next);
    }
    merged.dedup();
    merged
}

/// The run of sorted `items` with a hash in `from..=to`.
fn run(items: &[(u64, u32)], from: u64, to: u64) -> &[(u64, u32)] {
    let start = items.partition_point(|x| x.0 < from);
    let end = start + items[start..].partition_point(|x| x.0 <= to);
    &items[start..end]
}

impl HashOrder {
    /// Keys added since the last merge.
    #[cfg(test)]
    pub(super) fn fresh_len(&self) -> usize {
        self.fresh.len()
    }

    /// The items with a hash in `from..=to`: the merged ones, then the fresh ones (sorted by
    /// `prepare_order(false)`; a slot reused by the key it held is in both: given once).
    pub(super) fn in_range(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
        let merged = run(&self.items, from, to);
        let fresh = run(&self.fresh[..self.fresh_sorted], from, to)
            .iter()
            .filter(move |x| !merged.contains(x));
        merged.iter().chain(fresh).copied()
    }

    /// The items with a hash in `from..=to`, in hash order (the merged and the fresh ones
    /// merged; each once).
    fn sorted_in_range(&self, from: u64, to: u64) -> Vec<(u64, u32)> {
        let merged = run(&self.items, from, to).to_vec();
        let fresh = run(&self.fresh[..self.fresh_sorted], from, to).to_vec();
        merge_sorted(merged, fresh)
    }

    /// Sorts the fresh keys added since the last listing into the sorted ones.
    fn sort_fresh_tail(&mut self) {
        if self.fresh_sorted == self.fresh.len() {
            return;
        }
        let mut tail = self.fresh.split_off(self.fresh_sorted);
        tail.sort_unstable();
        self.fresh = merge_sorted(std::mem::take(&mut self.fresh), tail);
        self.fresh_sorted = self.fresh.len();
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        (self.items.capacity() + self.fresh.capacity()) * std::mem::size_of::<(u64, u32)>()
    }

    /// Merges the fresh keys in (sorted; a slot reused by the key it held is kept once).
    fn merge_fresh(&mut self) {
        if self.fresh.is_empty() {
            return;
        }
        let mut fresh = std::mem::take(&mut self.fresh);
        self.fresh_sorted = 0;
        fresh.sort_unstable();
        self.items = merge_sorted(std::mem::take(&mut self.items), fresh);
    }
}

impl Shard {
    /// A key was added in `slot`: the next walk merges it into the order (if one is kept).
    #[inline]
    pub(super) fn note_inserted(&mut self, hash: u64, slot: u32) {
        if let Some(o) = &mut self.by_hash {
            o.fresh.push((hash, slot));
            // No walk for a long while: drop the order rather than grow the list unbounded.
            if o.fresh.len() > o.items.len() / 2 + 1024 {
                self.by_hash = None;
            }
        }
    }

    /// The hash order, with the keys added since merged in; rebuilt when its stale items
    /// outnumber the keys (or it missed an insert).
    pub(super) fn hash_order(&mut self) -> &[(u64, u32)] {
        self.prepare_order(true);
        self.by_hash.as_ref().map_or(&[], |o| o.items.as_slice())
    }

    /// Makes the order current: rebuilt if needed; the fresh keys merged in if `merge` or
    /// once they are many (else a listing also looks through them: `in_range`).
    pub(super) fn prepare_order(&mut self, merge: bool) {
        let keys = self.index.len();
        let rebuild = self.by_hash.as_ref().is_none_or(|o| {
            o.at + o.fresh.len() as u64 != self.inserted
                || o.items.len() + o.fresh.len() > 2 * keys + 1024
        });
        if let (false, Some(o)) = (rebuild, &mut self.by_hash) {
            // A listing costs a merge of the keys added since the last one into the fresh
            // run (O(fresh)); past 1/64 of the order they are merged into it (O(order)).
            if merge || o.fresh.len() > o.items.len() / 64 + 1024 {
                o.merge_fresh();
                o.at = self.inserted;
            } else {
                o.sort_fresh_tail();
            }
        }
        if rebuild {
            let mut items: Vec<(u64, u32)> = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.as_ref().map(|e| (key_hash(e.key()), i as u32)))
                .collect();
            items.sort_unstable();
            self.by_hash = Some(HashOrder {
                at: self.inserted,
                items,
                fresh: Vec::new(),
                fresh_sorted: 0,
            });
        }
    }

    /// The live keys whose hash is in `from..=to`, the `limit` smallest hashes first, with
    /// every key sharing the last hash taken (a resume position never splits equal hashes), in
    /// hash order; and the smallest hash in the range left out (None: none left out).
    pub fn range_keys(
        &mut self,
        from: u64,
        to: u64,
        limit: usize,
        now_ms: u64,
    ) -> (Vec<(u64, Vec<u8>)>, Option<u64>) {
        // The order is taken out while the slots are read, then put back.
        self.hash_order();
        let Some(order) = self.by_hash.take() else {
            return (Vec::new(), None);
        };
        let start = order.items.partition_point(|x| x.0 < from);
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut next = None;
        for &(h, slot) in &order.items[start..] {
            if h > to {
                break;
            }
            let Some(e) = self.slots.get(slot as usize).and_then(|s| s.as_ref()) else {
                continue; // removed since the order was built
            };
            // The slot was freed and reused by another key, listed under its own hash.
            if e.is_tombstone() || e.is_expired(now_ms) || key_hash(e.key()) != h {
                continue;
            }
            if out.len() >= limit && out.last().is_none_or(|l| l.0 != h) {
                next = Some(h);
                break;
            }
            out.push((h, e.key().to_vec()));
        }
        self.by_hash = Some(order);
        (out, next)
    }

    /// Every stored entry whose hash is in `from..=to`, tombstones and expired values
    /// included (a copy of a replica must carry its deletes), as their bytes, in hash order:
    /// at least one, then up to `max_bytes` of them (keys sharing a hash stay together); and
    /// the smallest hash left out (None: none).
    pub fn range_entries(
        &mut self,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> (Vec<(u64, Vec<u8>)>, Option<u64>) {
        // No merge of the whole order per batch while keys are being added: the fresh keys
        // of the range are merged in here (a copy reads many batches during writes).
        self.prepare_order(false);
        let Some(order) = self.by_hash.take() else {
            return (Vec::new(), None);
        };
        let items = order.sorted_in_range(from, to);
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        let (mut bytes, mut next) = (0usize, None);
        for (h, slot) in items {
            let Some(e) = self.slots.get(slot as usize).and_then(|s| s.as_ref()) else {
                continue; // removed since the order was built
            };
            if key_hash(e.key()) != h {
                continue; // the slot was freed and reused by another key, listed on its own
            }
            if bytes >= max_bytes && out.last().is_none_or(|l| l.0 != h) {
                next = Some(h);
                break;
            }
            bytes += e.as_bytes().len();
            out.push((h, e.as_bytes().to_vec()));
        }
        self.by_hash = Some(order);
        (out, next)
    }

    /// Removes (logged) the keys, tombstones included, of the partitions (`partition_of(hash,
    /// bits)`) `drop` says to, looking at up to `limit` slots from slot `from`; how many it
    /// removed, and the slot to go on from (None: the end). One pass over the slots, no sort.
    pub fn drop_partitions(
        &mut self,
        bits: u8,
        drop: &dyn Fn(u32) -> bool,
        from: usize,
        limit: usize,
    ) -> (usize, Option<usize>) {
        let end = from.saturating_add(limit).min(self.slots.len());
        let doomed: Vec<Vec<u8>> = self.slots[from.min(end)..end]
            .iter()
            .flatten()
            .filter(|e| drop(crate::store::partition_of(key_hash(e.key()), bits)))
            .map(|e| e.key().to_vec())
            .collect();
        let n = doomed.len();
        for k in doomed {
            self.remove(key_hash(&k), &k);
        }
        (n, (end < self.slots.len()).then_some(end))
    }

    /// Adds the live keys of each partition (`partition_of(hash, bits)`) to `counts[p]`, for
    /// the partitions `counts` has room for.
    pub fn count_partitions(&self, bits: u8, now_ms: u64, counts: &mut [u64]) {
        for e in self.slots.iter().flatten() {
            if e.is_tombstone() || e.is_expired(now_ms) {
                continue;
            }
            let p = crate::store::partition_of(key_hash(e.key()), bits) as usize;
            if let Some(c) = counts.get_mut(p) {
                *c += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn put(store: &Store, key: &[u8]) {
        let h = key_hash(key);
        let mut s = store.lock(store.shard_of(h));
        s.write(
            h,
            key,
            crate::store::Supersede::Local,
            crate::store::VersionRef::value(b"v", 1, None),
            |_| {},
        )
        .expect("write");
    }

    /// Keys removed and added between walks (slots reused by another key or by the same one)
    /// are each listed once, under their own hash, without a rebuild of the order.
    #[test]
    fn reused_slots_are_listed_once_under_their_own_key() {
        let store = Store::new(1);
        for i in 0..100 {
            put(&store, format!("k{i}").as_bytes());
        }
        let all = |store: &Store| -> Vec<Vec<u8>> {
            let mut keys: Vec<Vec<u8>> = store
                .range_keys(0, u64::MAX, 10_000, 0)
                .keys
                .into_iter()
                .map(|k| k.1)
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(all(&store).len(), 100, "the order is built");
        {
            let mut s = store.lock(0);
            s.remove(key_hash(b"k1"), b"k1");
            s.remove(key_hash(b"k2"), b"k2");
        }
        // Into the freed slots: k1 again, and a new key.
        put(&store, b"k1");
        put(&store, b"new");
        let keys = all(&store);
        let mut want: Vec<Vec<u8>> = (0..100)
            .filter(|&i| i != 2)
            .map(|i| format!("k{i}").into_bytes())
            .chain([b"new".to_vec()])
            .collect();
        want.sort();
        assert_eq!(keys, want);
        let s = store.lock(0);
        let o = s.by_hash.as_ref().expect("order kept");
        assert!(
            o.items.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
    }

    /// Walking a range in slices of `limit` from each `next` returns every key exactly once, in
    /// hash order, also after keys are added (the order is rebuilt) or removed meanwhile.
    #[test]
    fn slices_cover_the_range_once_in_hash_order() {
        let store = Store::new(1);
        let keys: Vec<Vec<u8>> = (0..500).map(|i| format!("k{i}").into_bytes()).collect();
        for k in &keys[..400] {
            put(&store, k);
        }
        let mut got = Vec::new();
        let mut from = 0;
        let mut first = true;
        loop {
            let r = store.range_keys(from, u64::MAX, 7, 0);
            assert!(r.keys.len() >= 7 || r.next.is_none());
            got.extend(r.keys.iter().map(|k| k.0));
            if first {
                // Added during the walk: below the position (not required) or above it (seen).
                for k in &keys[400..] {
                    put(&store, k);
                }
                first = false;
            }
            match r.next {
                Some(n) => {
                    assert!(n > from);
                    from = n;
                }
                None => break,
            }
        }
        let mut sorted = got.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(got, sorted, "hash order, each once");
        for k in &keys[..400] {
            assert!(got.contains(&key_hash(k)), "present throughout: returned");
        }
    }
}
