//! Merging a key's versions from another replica (replication, read repair, hints): the DVV
//! sync of what this shard holds with what arrives, logged like any write.

use super::Shard;
use crate::record;
use crate::store::entry::{resolve_lww, Entry};
use crate::store::write::Conflicts;

/// What a merge did to the stored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// The shard already held everything the incoming entry has (equal or newer): nothing was
    /// written. For the sender this is as good as applied: the replica is up to date.
    Unchanged,
    /// The stored entry changed (new versions, or a joined context); a record was logged.
    Changed,
}

/// The DVV sync of two entries of one key (see [`Shard::merge`]); None when `b` adds nothing
/// to `a` (so `a` stands).
pub fn sync_entries(a: &Entry, b: &Entry, conflicts: Conflicts) -> Option<Entry> {
    if a == b {
        return None;
    }
    let mut versions = a.versions();
    versions.sync(&b.versions());
    if conflicts == Conflicts::Lww {
        resolve_lww(&mut versions);
    }
    if versions.is_empty() {
        // Only a contradictory pair (each side's context covering the other's versions)
        // could leave nothing; keep `a` rather than lose the key.
        return None;
    }
    let merged = Entry::new(a.key(), &versions);
    (&merged != a).then_some(merged)
}

impl Shard {
    /// Merges `incoming` (another replica's entry for its key, hashing to `hash`) into this
    /// shard: versions either side has not seen are kept as siblings, versions the other's
    /// context covers are dropped (DVV sync, commutative and idempotent); under
    /// `--conflicts lww` only the newest survives. Replication never refuses a merge for
    /// --max-siblings: that bound applies to client writes, and refusing here would leave the
    /// replicas apart.
    ///
    /// Dots of this node that come back (a replica returning a write this node made before it
    /// lost its log tail) raise the counter floor, so no dot is ever minted twice.
    pub fn merge(&mut self, hash: u64, incoming: &Entry) -> Merged {
        let minted = incoming.context().get(self.policy.actor);
        self.dot_floor = self.dot_floor.max(minted);
        let key = incoming.key();
        let found = self.find(hash, key);
        let Some(old) = found.and_then(|i| self.slots[i as usize].as_ref()) else {
            tracing::trace!(target: "ringkv::versions", key = %String::from_utf8_lossy(key),
                new = %crate::store::entry::Brief(incoming), "merge");
            self.wal.log(record::VERSIONS, incoming.as_bytes());
            self.place_quiet(None, hash, incoming.clone());
            return Merged::Changed;
        };
        let Some(merged) = sync_entries(old, incoming, self.policy.conflicts) else {
            return Merged::Unchanged;
        };
        if tracing::enabled!(target: "ringkv::versions", tracing::Level::TRACE) {
            use crate::store::entry::Brief;
            tracing::trace!(target: "ringkv::versions",
                key = %String::from_utf8_lossy(key), old = %Brief(old),
                incoming = %Brief(incoming), new = %Brief(&merged), "merge");
        }
        self.wal.log(record::VERSIONS, merged.as_bytes());
        self.place_quiet(found, hash, merged);
        Merged::Changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::write::{Supersede, VersionPolicy};
    use crate::store::VersionRef;
    use ringkv_proto::key_hash;

    fn shard(actor: u64, conflicts: Conflicts) -> Shard {
        Shard::with_policy(VersionPolicy {
            actor,
            conflicts,
            ..VersionPolicy::default()
        })
    }

    fn put(s: &mut Shard, key: &[u8], v: &[u8], ts: u64) -> Entry {
        let mut seen = None;
        s.write(
            key_hash(key),
            key,
            Supersede::Local,
            VersionRef::value(v, ts, None),
            |e| seen = Some(e.clone()),
        )
        .expect("write");
        seen.expect("seen")
    }

    fn values(s: &Shard, key: &[u8]) -> Vec<Vec<u8>> {
        let e = s.entry(key_hash(key), key).expect("entry");
        let mut v: Vec<Vec<u8>> = e
            .versions()
            .iter()
            .map(|v| v.value.value.to_vec())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn newer_replaces_older_and_equal_is_unchanged() {
        let (mut a, mut b) = (shard(1, Conflicts::Siblings), shard(2, Conflicts::Siblings));
        let v1 = put(&mut a, b"k", b"one", 1);
        assert_eq!(b.merge(key_hash(b"k"), &v1), Merged::Changed);
        assert_eq!(b.merge(key_hash(b"k"), &v1), Merged::Unchanged);
        let v2 = put(&mut b, b"k", b"two", 2);
        assert_eq!(a.merge(key_hash(b"k"), &v2), Merged::Changed);
        assert_eq!(values(&a, b"k"), vec![b"two".to_vec()]);
        // The older entry arriving late changes nothing (it is covered).
        assert_eq!(a.merge(key_hash(b"k"), &v1), Merged::Unchanged);
        assert_eq!(values(&a, b"k"), vec![b"two".to_vec()]);
    }

    #[test]
    fn concurrent_writes_become_siblings_or_lww_winner() {
        for (mode, want) in [(Conflicts::Siblings, 2), (Conflicts::Lww, 1)] {
            let (mut a, mut b) = (shard(1, mode), shard(2, mode));
            let x = put(&mut a, b"k", b"x", 10);
            let y = put(&mut b, b"k", b"y", 20);
            a.merge(key_hash(b"k"), &y);
            b.merge(key_hash(b"k"), &x);
            assert_eq!(values(&a, b"k").len(), want, "{mode:?}");
            assert_eq!(
                values(&a, b"k"),
                values(&b, b"k"),
                "replicas agree ({mode:?})"
            );
            if mode == Conflicts::Lww {
                assert_eq!(values(&a, b"k"), vec![b"y".to_vec()]);
            }
        }
    }

    /// INCRBY as `cmd::strings` does it: this shard's own entry in the key's counter state.
    fn incr(s: &mut Shard, key: &[u8], delta: i64, ts: u64) -> Entry {
        use crate::store::counter::Rendered;
        let actor = s.policy.actor;
        let mut state = s
            .entry(key_hash(key), key)
            .and_then(|e| crate::store::Live::of(e, 0))
            .map(|l| l.counter_state().expect("counter"))
            .unwrap_or_default();
        state.add(actor, delta).expect("add");
        let mut r = Rendered::new(&state);
        let v = r.version(&VersionRef::value(b"", ts, None));
        let mut seen = None;
        s.write(key_hash(key), key, Supersede::Local, v, |e| {
            seen = Some(e.clone())
        })
        .expect("write");
        seen.expect("seen")
    }

    #[test]
    fn concurrent_increments_are_all_kept_in_either_conflict_mode() {
        for mode in [Conflicts::Siblings, Conflicts::Lww] {
            let (mut a, mut b, mut c) = (shard(1, mode), shard(2, mode), shard(3, mode));
            let base = incr(&mut a, b"n", 10, 1);
            b.merge(key_hash(b"n"), &base);
            c.merge(key_hash(b"n"), &base);
            // Concurrent: each replica increments what it has.
            let x = incr(&mut a, b"n", 5, 2);
            let y = incr(&mut b, b"n", -3, 3);
            let z = incr(&mut c, b"n", 100, 2);
            // Every delivery order ends at the same total, with one live version.
            a.merge(key_hash(b"n"), &y);
            a.merge(key_hash(b"n"), &z);
            c.merge(key_hash(b"n"), &x);
            let a_now = a.entry(key_hash(b"n"), b"n").expect("a").clone();
            // b gets a's collapsed copy first, then the originals (same dots, other states).
            b.merge(key_hash(b"n"), &a_now);
            b.merge(key_hash(b"n"), &z);
            b.merge(key_hash(b"n"), &x);
            let c_now = c.entry(key_hash(b"n"), b"n").expect("c").clone();
            c.merge(key_hash(b"n"), &y);
            a.merge(key_hash(b"n"), &c_now);
            let total = |s: &Shard| {
                let e = s.entry(key_hash(b"n"), b"n").expect("entry");
                crate::store::Live::of(e, 0).map(|l| l.value().to_vec())
            };
            for s in [&a, &b, &c] {
                assert_eq!(total(s), Some(b"112".to_vec()), "{mode:?}");
            }
            // A later increment on any replica builds on the whole sum, and supersedes the
            // concurrent versions.
            let w = incr(&mut b, b"n", 1, 9);
            assert_eq!(w.value(), b"113");
            assert_eq!(w.version_count(), 1);
            a.merge(key_hash(b"n"), &w);
            assert_eq!(total(&a), Some(b"113".to_vec()));
        }
    }

    /// Random increments at random replicas, entries delivered in random order (late,
    /// duplicated, some only at the end): once every replica has every other's copy, all
    /// hold the sum. (Collapsing concurrent counter versions into one of their dots failed
    /// this in a few seeds: see `store::counter`.)
    #[test]
    fn counters_converge_to_the_sum_under_any_delivery() {
        for seed in 1..300u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mode = if seed % 2 == 0 {
                Conflicts::Siblings
            } else {
                Conflicts::Lww
            };
            let mut r: Vec<Shard> = (1..=3).map(|a| shard(a, mode)).collect();
            let mut in_flight: Vec<(usize, Entry)> = Vec::new();
            let mut sum = 0i64;
            for step in 0..40 {
                if next() % 2 == 0 {
                    let at = (next() % 3) as usize;
                    let by = (next() % 21) as i64 - 10;
                    let e = incr(&mut r[at], b"n", by, step);
                    sum += by;
                    for to in 0..3 {
                        if to != at {
                            in_flight.push((to, e.clone()));
                        }
                    }
                } else if !in_flight.is_empty() {
                    let i = (next() % in_flight.len() as u64) as usize;
                    let (to, e) = if next() % 4 == 0 {
                        in_flight[i].clone() // delivered twice
                    } else {
                        in_flight.swap_remove(i)
                    };
                    r[to].merge(key_hash(b"n"), &e);
                }
            }
            for (to, e) in in_flight {
                r[to].merge(key_hash(b"n"), &e);
            }
            for _ in 0..2 {
                for a in 0..3 {
                    for b in 0..3 {
                        let e = r[a].entry(key_hash(b"n"), b"n").cloned();
                        if let Some(e) = e {
                            r[b].merge(key_hash(b"n"), &e);
                        }
                    }
                }
            }
            for s in &r {
                let got = s
                    .entry(key_hash(b"n"), b"n")
                    .and_then(|e| crate::store::Live::of(e, 0))
                    .map(|l| l.value().to_vec());
                assert_eq!(
                    got,
                    Some(sum.to_string().into_bytes()),
                    "seed {seed} {mode:?}"
                );
            }
        }
    }

    #[test]
    fn a_set_that_saw_the_counter_replaces_it() {
        let (mut a, mut b) = (shard(1, Conflicts::Siblings), shard(2, Conflicts::Siblings));
        let x = incr(&mut a, b"n", 7, 1);
        b.merge(key_hash(b"n"), &x);
        let s = put(&mut b, b"n", b"hello", 2);
        a.merge(key_hash(b"n"), &s);
        assert_eq!(values(&a, b"n"), vec![b"hello".to_vec()]);
    }

    #[test]
    fn own_dot_coming_back_raises_the_floor() {
        let mut a = shard(1, Conflicts::Siblings);
        let mut far = shard(1, Conflicts::Siblings);
        far.raise_dot_floor(1000);
        let e = put(&mut far, b"k", b"v", 1);
        a.merge(key_hash(b"k"), &e);
        assert!(a.dot_floor() >= 1001, "floor {}", a.dot_floor());
        let e2 = put(&mut a, b"k", b"w", 2);
        assert!(e2.context().get(1) > 1001);
    }

    /// An expired value that one replica has turned into a tombstone (lazy or active expiry)
    /// and another has not must pick the same winner against a concurrent write: the tombstone
    /// keeps the value's write timestamp (a tombstone dated at the expiry would beat a
    /// concurrent write made before the expiry on one replica only).
    #[test]
    fn an_expired_version_orders_as_its_write_on_every_replica() {
        for mode in [Conflicts::Siblings, Conflicts::Lww] {
            let grace = |actor| {
                Shard::with_policy(VersionPolicy {
                    actor,
                    conflicts: mode,
                    tombstone_grace_ms: 1_000_000,
                    ..VersionPolicy::default()
                })
            };
            let (mut a, mut b, mut c) = (grace(1), grace(2), grace(3));
            let h = key_hash(b"k");
            let mut ttl = None;
            a.write(
                h,
                b"k",
                Supersede::Local,
                VersionRef::value(b"ttl", 10, Some(100)),
                |e| ttl = Some(e.clone()),
            )
            .expect("write");
            b.merge(h, &ttl.expect("written"));
            // Replica a expires it (now 150); replica b has not looked at it yet.
            assert!(a.get(h, b"k", 150).is_none());
            // The heap's item for it goes (at most once), and nothing comes back: no spin.
            a.expire_cycle(150, 100);
            assert_eq!(a.expire_cycle(150, 100), 0, "nothing left to expire");
            // A write made at 50 that never saw the TTL'd one, on a third node.
            let later = put(&mut c, b"k", b"concurrent", 50);
            a.merge(h, &later);
            b.merge(h, &later);
            let seen = |s: &mut Shard| s.get(h, b"k", 150).map(|l| l.value().to_vec());
            assert_eq!(seen(&mut a), Some(b"concurrent".to_vec()), "{mode:?}");
            assert_eq!(seen(&mut b), Some(b"concurrent".to_vec()), "{mode:?}");
        }
    }

    /// The tombstone of an expired value is dead since its expiry: it is purged a grace after
    /// the expiry, not a grace after the write.
    #[test]
    fn an_expired_value_is_purged_a_grace_after_its_expiry() {
        let mut s = Shard::with_policy(VersionPolicy {
            actor: 1,
            tombstone_grace_ms: 1000,
            ..VersionPolicy::default()
        });
        let h = key_hash(b"k");
        s.write(
            h,
            b"k",
            Supersede::Local,
            VersionRef::value(b"v", 10, Some(5000)),
            |_| (),
        )
        .expect("write");
        assert!(s.get(h, b"k", 5000).is_none(), "expired at 5000");
        assert_eq!(s.tombstones(), 1, "kept as a tombstone for the grace");
        assert_eq!(s.purge_cycle(5999, u64::MAX, 100), 0, "grace not over");
        assert_eq!(s.purge_cycle(6000, u64::MAX, 100), 1);
        assert!(s.entry(h, b"k").is_none());
    }

    #[test]
    fn merge_is_logged_when_changed_only() {
        let mut a = shard(1, Conflicts::Siblings);
        a.start_logging(0);
        let mut b = shard(2, Conflicts::Siblings);
        let e = put(&mut b, b"k", b"v", 1);
        let s0 = a.wal.seq;
        a.merge(key_hash(b"k"), &e);
        assert_eq!(a.wal.seq, s0 + 1);
        a.merge(key_hash(b"k"), &e);
        assert_eq!(a.wal.seq, s0 + 1);
    }
}
