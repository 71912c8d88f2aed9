//! A shard's side of anti-entropy: its segment hashes (kept by `place_quiet` and
//! `remove_quiet`) and the keys of one segment with their entry hashes.

use ringkv_proto::key_hash;

use super::Shard;
use crate::store::merkle::{entry_hash, segment_hashes_range, SegmentHashes};

impl Shard {
    /// XORs this shard's hashes of segments `first..first + out.len()` into `out`.
    pub fn segment_hashes_into(&self, first: u32, out: &mut [u64]) {
        self.tree.xor_into(first, out);
    }

    /// Appends the keys of segment `seg` with their entry hashes, tombstones and expired values
    /// included (they are versions to exchange), except keys dead for longer than the tombstone
    /// grace: they are about to be purged, and sending them would bring back on another
    /// replica a key it already purged.
    pub fn segment_keys(&mut self, seg: u32, now_ms: u64, out: &mut Vec<(Vec<u8>, u64)>) {
        let (from, to) = segment_hashes_range(seg);
        // Keys merged in between listings are many small inserts: not merged into the order
        // per listing (a linear merge of the shard) but looked through (`in_range`).
        self.prepare_order(false);
        let Some(order) = self.by_hash.take() else {
            return;
        };
        for (h, slot) in order.in_range(from, to) {
            let Some(e) = self.slots.get(slot as usize).and_then(|s| s.as_ref()) else {
                continue;
            };
            // A slot reused by another key since the order was built is found under its own
            // hash too (the order is rebuilt on insert): skip it here.
            if key_hash(e.key()) != h || self.purgeable(e, now_ms) {
                continue;
            }
            out.push((e.key().to_vec(), entry_hash(e)));
        }
        self.by_hash = Some(order);
    }

    /// The segment hashes computed from scratch by a scan (the fallback, and the reference the
    /// incremental ones are tested against).
    pub fn rebuilt_tree(&self) -> SegmentHashes {
        let mut t = SegmentHashes::default();
        for e in self.slots.iter().flatten() {
            t.toggle(key_hash(e.key()), entry_hash(e));
        }
        t
    }

    /// Whether the incremental segment hashes equal a rebuild (tests, debug checks).
    pub fn tree_is_consistent(&self) -> bool {
        self.tree.same_hashes(&self.rebuilt_tree())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record;
    use crate::store::entry::Entry;
    use crate::store::write::{Supersede, VersionPolicy};
    use crate::store::VersionRef;

    fn shard(actor: u64, grace_ms: u64) -> Shard {
        let mut s = Shard::with_policy(VersionPolicy {
            actor,
            tombstone_grace_ms: grace_ms,
            ..VersionPolicy::default()
        });
        s.wal.enabled = true;
        s
    }

    /// xorshift64: a seeded, reproducible sequence of operations.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Random writes, deletes, TTLs, merges from another replica, removes, expiry and purge
    /// cycles and a clear: after every step the incremental tree equals one rebuilt by a scan;
    /// replaying the WAL into a fresh shard gives the same tree again.
    #[test]
    fn incremental_tree_equals_a_rebuild_under_random_operations() {
        for seed in [1u64, 7, 42, 1234] {
            let mut rng = seed;
            let mut a = shard(1, 50);
            let mut b = shard(2, 50);
            for step in 0..3_000u64 {
                let r = next(&mut rng);
                let key = format!("k{}", r % 97).into_bytes();
                let h = key_hash(&key);
                let now = step;
                match (r >> 8) % 8 {
                    0 | 1 => {
                        let v = VersionRef::value(b"v", now, None);
                        a.write(h, &key, Supersede::Local, v, |_| ()).unwrap();
                    }
                    2 => {
                        let v = VersionRef::value(b"t", now, Some(now + r % 40));
                        a.write(h, &key, Supersede::Local, v, |_| ()).unwrap();
                    }
                    3 => {
                        let v = VersionRef::tombstone(now);
                        a.write(h, &key, Supersede::Local, v, |_| ()).unwrap();
                    }
                    4 => {
                        let v = VersionRef::value(b"b", now, None);
                        b.write(h, &key, Supersede::Local, v, |_| ()).unwrap();
                        if let Some(e) = b.entry(h, &key).cloned() {
                            a.merge(h, &e);
                        }
                    }
                    5 => {
                        a.remove(h, &key);
                    }
                    6 => {
                        a.expire_cycle(now, 5);
                        a.get(h, &key, now);
                    }
                    _ => {
                        a.purge_cycle(now, u64::MAX, 5);
                    }
                }
                assert!(a.tree_is_consistent(), "seed {seed} step {step}");
            }
            let mut c = shard(1, 50);
            c.wal.enabled = false;
            let log = std::mem::take(&mut a.wal.buf);
            record::for_each_appended(&log, |kind, _, payload| {
                assert!(c.apply(kind, payload));
            });
            // Expiry and purges are not logged: the replayed shard runs them as the node does.
            for s in [&mut a, &mut c] {
                s.expire_cycle(u64::MAX / 2, usize::MAX);
                s.purge_cycle(u64::MAX / 2, u64::MAX, usize::MAX);
            }
            assert!(c.tree_is_consistent());
            assert!(c.tree.same_hashes(&a.tree), "seed {seed}: replay differs");
            a.clear();
            assert!(a.tree_is_consistent());
            assert!(a.tree.same_hashes(&SegmentHashes::default()));
        }
    }

    /// Keys added after the hash order was built are listed from its fresh list (not merged
    /// per listing), each once, also a key written again into the slot it was removed from.
    #[test]
    fn segment_listing_sees_keys_added_since_the_order_was_built() {
        let mut a = shard(1, 1_000_000);
        let put = |s: &mut Shard, k: &[u8]| {
            let v = VersionRef::value(b"v", 1, None);
            s.write(key_hash(k), k, Supersede::Local, v, |_| ())
                .unwrap();
        };
        for i in 0..100 {
            put(&mut a, format!("k{i}").as_bytes());
        }
        let list = |s: &mut Shard, k: &[u8]| {
            let mut out = Vec::new();
            s.segment_keys(crate::store::merkle::segment_of(key_hash(k)), 0, &mut out);
            out.into_iter().filter(|(x, _)| x == k).count()
        };
        assert_eq!(list(&mut a, b"k0"), 1);
        put(&mut a, b"fresh");
        a.remove(key_hash(b"k5"), b"k5");
        put(&mut a, b"k5");
        assert_eq!(list(&mut a, b"fresh"), 1);
        assert_eq!(list(&mut a, b"k5"), 1);
        assert!(
            a.by_hash.as_ref().is_some_and(|o| o.fresh_len() == 2),
            "listing did not merge the fresh keys"
        );
    }

    /// Two replicas that received the same entries in different orders (and one of them
    /// converted an expired value, the other not) have equal trees and list equal keys.
    #[test]
    fn equal_data_in_any_order_gives_equal_trees() {
        let mut src = shard(9, 1_000_000);
        let mut entries: Vec<Entry> = Vec::new();
        for i in 0..500u64 {
            let key = format!("key{i}").into_bytes();
            let exp = (i % 5 == 0).then_some(100);
            let v = VersionRef::value(b"x", 10 + i, exp);
            src.write(key_hash(&key), &key, Supersede::Local, v, |e| {
                entries.push(e.clone())
            })
            .unwrap();
        }
        let (mut a, mut b) = (shard(1, 1_000_000), shard(2, 1_000_000));
        for e in &entries {
            a.merge(key_hash(e.key()), e);
        }
        for e in entries.iter().rev() {
            b.merge(key_hash(e.key()), e);
        }
        b.expire_cycle(1_000, 1_000);
        assert!(b.expired_keys > 0, "b converted its expired values");
        assert!(a.tree.same_hashes(&b.tree));
        let seg = crate::store::merkle::segment_of(key_hash(b"key3"));
        let (mut ka, mut kb) = (Vec::new(), Vec::new());
        a.segment_keys(seg, 1_000, &mut ka);
        b.segment_keys(seg, 1_000, &mut kb);
        assert!(ka.iter().any(|(k, _)| k == b"key3"));
        assert_eq!(ka, kb);
        // One differing key: the trees differ in exactly its segment.
        let v = VersionRef::value(b"other", 5_000, None);
        a.write(key_hash(b"key3"), b"key3", Supersede::Local, v, |_| ())
            .unwrap();
        let mut diff = 0;
        let n = 1 << crate::store::merkle::SEGMENT_BITS;
        let (mut ha, mut hb) = (vec![0u64; n], vec![0u64; n]);
        a.segment_hashes_into(0, &mut ha);
        b.segment_hashes_into(0, &mut hb);
        for (i, (x, y)) in ha.iter().zip(&hb).enumerate() {
            if x != y {
                diff += 1;
                assert_eq!(i as u32, seg);
            }
        }
        assert_eq!(diff, 1);
    }
}
