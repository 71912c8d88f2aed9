//! A shard's live keys of a hash range, in hash order: the store side of a cluster-wide SCAN,
//! KEYS, DBSIZE and RANDOMKEY (`store::range`). Positions are key hashes, not slots, so they
//! mean the same after a restart (slots are reassigned at recovery) and on every replica.
//!
//! The shard keeps no ordered index on the write path; a walk sorts the shard's slots by hash
//! once (O(n log n), 16 bytes a key) and reuses that order until a new key is added to the
//! shard. Removed keys need no rebuild (their slot is found empty or dead); updated keys keep
//! their slot. So a SCAN over a quiet shard costs a binary search per call, and one over a
//! shard taking new keys costs at worst a sort per call.

use ringkv_proto::key_hash;

use super::Shard;

/// Every indexed slot of a shard by key hash, as of `at` (the shard's insertion count).
pub(crate) struct HashOrder {
    at: u64,
    pub(super) items: Vec<(u64, u32)>,
}

impl HashOrder {
    pub(crate) fn heap_bytes(&self) -> usize {
        self.items.capacity() * std::mem::size_of::<(u64, u32)>()
    }
}

impl Shard {
    /// The hash order, rebuilt if a key was added since it was built.
    pub(super) fn hash_order(&mut self) -> &[(u64, u32)] {
        if self.by_hash.as_ref().is_none_or(|o| o.at != self.inserted) {
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
            });
        }
        self.by_hash.as_ref().map_or(&[], |o| o.items.as_slice())
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
            if e.is_tombstone() || e.is_expired(now_ms) {
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
