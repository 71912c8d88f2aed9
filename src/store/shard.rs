//! One shard: versioned entries in a dense slot vector, indexed by a hash table of slot
//! numbers.
//!
//! Why not a `HashMap<key, value>`: a slot number is 4 bytes in the index, entries never move
//! once placed (so SCAN's cursor is simply a slot position and every key present for the whole
//! scan is returned), and RANDOMKEY and active expiry can pick slots directly.
//! Freed slots go on a free list and are reused by later inserts.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use hashbrown::HashTable;
use ringkv_proto::key_hash;

use super::dvv::TooManySiblings;
use super::entry::{Entry, VersionRef, Versions};
use super::write::{next_entry, Supersede, VersionPolicy};
use crate::record;

/// The shard's change log not yet handed to its WAL writer. Every mutation appends a record
/// here under the shard lock, in the order it was applied; the writer takes the buffer as a
/// whole (group commit). Expiry removes nothing from it: an expired key replayed from the
/// log is dropped again at load.
#[derive(Default)]
pub struct WalBuf {
    pub enabled: bool,
    /// Sequence number of the last record appended.
    pub seq: u64,
    pub buf: Vec<u8>,
    /// Sequence number of the last TXN record of several shards (set by `store::Tx`): a
    /// snapshot covering it first makes every participant's copy durable (docs/storage.md,
    /// "Multi-shard writes").
    pub txn_seq: u64,
}

impl WalBuf {
    /// Replaces the records appended after buffer length `from_len` (sequence numbers after
    /// `from_seq`) by one TXN record carrying `payload`, under sequence number `from_seq + 1`.
    pub fn replace_with_txn(&mut self, from_len: usize, from_seq: u64, payload: &[u8]) {
        self.buf.truncate(from_len);
        self.seq = from_seq + 1;
        record::append(&mut self.buf, record::TXN, self.seq, payload);
    }

    fn log(&mut self, kind: u8, payload: &[u8]) {
        if self.enabled {
            self.seq += 1;
            record::append(&mut self.buf, kind, self.seq, payload);
        }
    }
}

#[derive(Default)]
pub struct Shard {
    pub wal: WalBuf,
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    index: HashTable<u32>,
    /// Sum of entry heap sizes, for INFO memory.
    entry_bytes: usize,
    /// Keys with a TTL, soonest first. Entries may be stale (key rewritten or deleted); the
    /// slot's own expiry is what counts when one is popped.
    expiry: BinaryHeap<Reverse<(u64, u32)>>,
    /// Keys removed because their TTL passed (lazily or actively).
    pub expired_keys: u64,
    /// Entries whose winning version is a tombstone (a deleted key's context and dots): in
    /// the index but not counted as keys.
    tombstones: usize,
    rng: u64,
    pub policy: VersionPolicy,
    /// Highest dot counter minted here (see [`Shard::write`]).
    dot_floor: u64,
    /// Dead keys to purge once their grace has passed and their last record is durable, in
    /// the order they died.
    purge: VecDeque<Purge>,
    /// Dead keys purged (tombstones and expired values whose grace passed).
    pub purged: u64,
    /// The last record known durable (from the last `purge_cycle`; u64::MAX with no WAL).
    durable_seq: u64,
}

/// A key as Redis commands see it: its entry and the winning version, which is live.
#[derive(Debug, Clone, Copy)]
pub struct Live<'a> {
    pub entry: &'a Entry,
    pub version: VersionRef<'a>,
}

impl<'a> Live<'a> {
    #[inline]
    pub fn value(&self) -> &'a [u8] {
        self.version.value
    }

    pub fn expires_at_ms(&self) -> Option<u64> {
        self.version.expires_at_ms
    }

    /// The key's causal context (binary replies).
    pub fn context_bytes(&self) -> super::clock::ClockBytes {
        self.entry.context_bytes()
    }
}

/// A key that became all tombstones: purge it at `due_ms` if its record `seq` is durable and
/// it is still dead then.
struct Purge {
    due_ms: u64,
    seq: u64,
    slot: u32,
}

impl Shard {
    pub fn with_policy(policy: VersionPolicy) -> Shard {
        Shard {
            policy,
            ..Shard::default()
        }
    }

    #[inline]
    fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| {
                slots[i as usize].as_ref().is_some_and(|e| e.key() == key)
            })
            .copied()
    }

    /// The live entry for `key`; an expired one is removed on the way (lazy expiry).
    #[inline]
    pub fn get(&mut self, hash: u64, key: &[u8], now_ms: u64) -> Option<Live<'_>> {
        let i = self.find(hash, key)?;
        let expired = self.slots[i as usize]
            .as_ref()
            .is_some_and(|e| e.is_expired(now_ms));
        if expired {
            self.expire_slot(i, now_ms);
            return None;
        }
        let entry = self.slots[i as usize].as_ref()?;
        // The winner is found once per read (it decodes the versions when there are several).
        let version = entry.winner();
        (!version.is_tombstone()).then_some(Live { entry, version })
    }

    /// Inserts or replaces the entry for its key; returns the previous one.
    pub fn put(&mut self, hash: u64, entry: Entry) -> Option<Entry> {
        let found = self.find(hash, entry.key());
        self.place(found, hash, entry)
    }

    /// Writes a new version of `key` built from the current one (live, expired or tombstone:
    /// the builder decides what it descends from), with a single index lookup.
    #[inline]
    pub fn upsert(
        &mut self,
        hash: u64,
        key: &[u8],
        build: impl FnOnce(Option<&Entry>) -> Entry,
    ) -> Option<Entry> {
        let found = self.find(hash, key);
        let entry = build(found.and_then(|i| self.slots[i as usize].as_ref()));
        self.place(found, hash, entry)
    }

    /// Writes a new version of `key` (a value or a tombstone) over what is stored, as `sup`
    /// says; `seen` gets the key's entry after the write (for the reply) before it is stored. The new dot's counter is above every counter
    /// this shard minted before and above its log position, so it is fresh even for a key whose
    /// versions were purged: a context kept from before the purge can't cover it.
    pub fn write(
        &mut self,
        hash: u64,
        key: &[u8],
        sup: Supersede<'_>,
        v: VersionRef<'_>,
        seen: impl FnOnce(&Entry),
    ) -> Result<(), TooManySiblings> {
        let found = self.find(hash, key);
        let old = found.and_then(|i| self.slots[i as usize].as_ref());
        let floor = self.dot_floor.max(self.wal.seq);
        let (entry, dot) = next_entry(old, key, sup, v, floor, &self.policy)?;
        self.dot_floor = self.dot_floor.max(dot.counter);
        seen(&entry);
        self.wal.log(record::VERSIONS, entry.as_bytes());
        self.place_quiet(found, hash, entry);
        Ok(())
    }

    fn place(&mut self, found: Option<u32>, hash: u64, entry: Entry) -> Option<Entry> {
        self.wal.log(record::VERSIONS, entry.as_bytes());
        self.place_quiet(found, hash, entry).1
    }

    /// Stores `entry` in `found`'s slot (or a new one) without logging it.
    fn place_quiet(&mut self, found: Option<u32>, hash: u64, entry: Entry) -> (u32, Option<Entry>) {
        self.entry_bytes += entry.heap_size();
        let expires = entry.expires_at_ms();
        let dead = entry.dead_since(0);
        let (slot, old) = match found {
            Some(i) => (i, self.slots[i as usize].replace(entry)),
            None => {
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slots[i as usize] = Some(entry);
                        i
                    }
                    None => {
                        self.slots.push(Some(entry));
                        (self.slots.len() - 1) as u32
                    }
                };
                let slots = &self.slots;
                self.index.insert_unique(hash, i, |&j| {
                    slots[j as usize].as_ref().map_or(0, |e| key_hash(e.key()))
                });
                (i, None)
            }
        };
        if let Some(at) = expires {
            self.expiry.push(Reverse((at, slot)));
        }
        if let Some(died) = dead {
            self.purge.push_back(Purge {
                due_ms: died.saturating_add(self.policy.tombstone_grace_ms),
                seq: self.wal.seq,
                slot,
            });
        }
        if let Some(old) = &old {
            self.entry_bytes -= old.heap_size();
            self.tombstones -= old.is_tombstone() as usize;
        }
        self.tombstones += self.slots[slot as usize]
            .as_ref()
            .is_some_and(Entry::is_tombstone) as usize;
        (slot, old)
    }

    /// The stored entry of `key`, tombstones and expired versions included (the binary GET
    /// and causal writes see all versions).
    pub fn entry(&self, hash: u64, key: &[u8]) -> Option<&Entry> {
        let i = self.find(hash, key)?;
        self.slots[i as usize].as_ref()
    }

    /// Dead keys kept for their grace period (INFO `tombstones`).
    pub fn tombstones(&self) -> usize {
        self.tombstones
    }

    /// A key whose winner expired: purged if every version is dead and the grace has passed
    /// (at once with no grace, as Redis drops an expired key); otherwise its expired versions
    /// turn into tombstones dated at their expiry, kept until the grace passes. Not logged:
    /// replaying the log reaches the same state by itself.
    fn expire_slot(&mut self, slot: u32, now_ms: u64) {
        let Some(e) = self.slots[slot as usize].as_ref() else {
            return;
        };
        match self.purgeable(e, now_ms) {
            true => {
                let key = e.key().to_vec();
                self.remove_quiet(key_hash(&key), &key);
                self.expired_keys += 1;
            }
            false => {
                let key = e.key().to_vec();
                let mut versions: Versions<'_> = e.versions();
                for v in versions.values_mut() {
                    if v.is_expired(now_ms) {
                        *v = VersionRef::tombstone(v.expires_at_ms.unwrap_or(now_ms));
                    }
                }
                let entry = Entry::new(&key, &versions);
                drop(versions);
                self.expired_keys += 1;
                self.place_quiet(Some(slot), key_hash(&key), entry);
            }
        }
    }

    /// Whether a dead key may go: every version dead for the grace, and every dot this node
    /// minted for it at or below the durable log position. A counter is drawn above the log
    /// position, which a restart recovers at least up to the durable one, so a dot minted after
    /// the purge, even after a crash, is never one a context from before it covers. (A
    /// multi-record TXN rewinds the log position below the counters its writes drew; such a
    /// key waits until the log has moved past them.)
    fn purgeable(&self, e: &Entry, now_ms: u64) -> bool {
        let grace = self.policy.tombstone_grace_ms;
        e.dead_since(now_ms)
            .is_some_and(|d| d.saturating_add(grace) <= now_ms)
            && e.context().get(self.policy.actor) <= self.durable_seq
    }

    /// Purges up to `budget` dead keys whose grace has passed and whose last record is
    /// durable (`durable_seq`). Returns how many.
    pub fn purge_cycle(&mut self, now_ms: u64, durable_seq: u64, budget: usize) -> usize {
        self.durable_seq = durable_seq;
        let mut purged = 0;
        for _ in 0..budget {
            match self.purge.front() {
                Some(p) if p.due_ms <= now_ms && p.seq <= durable_seq => {}
                _ => break,
            }
            let Some(p) = self.purge.pop_front() else {
                break;
            };
            let key = match &self.slots[p.slot as usize] {
                Some(e) if self.purgeable(e, now_ms) => e.key().to_vec(),
                // Dead, but its dots are not below the durable log position yet: later.
                Some(e)
                    if e.dead_since(now_ms).is_some_and(|d| {
                        d.saturating_add(self.policy.tombstone_grace_ms) <= now_ms
                    }) =>
                {
                    self.purge.push_back(p);
                    continue;
                }
                // Rewritten since, or died again later (a later item covers that).
                _ => continue,
            };
            self.remove_quiet(key_hash(&key), &key);
            self.purged += 1;
            purged += 1;
        }
        purged
    }

    /// Removes a key (logged).
    pub fn remove(&mut self, hash: u64, key: &[u8]) -> Option<Entry> {
        let old = self.remove_quiet(hash, key);
        if old.is_some() {
            self.wal.log(record::DEL, key);
        }
        old
    }

    /// Removes a key without logging it (expiry, which replay repeats by itself).
    fn remove_quiet(&mut self, hash: u64, key: &[u8]) -> Option<Entry> {
        let slots = &self.slots;
        let found = self.index.find_entry(hash, |&i| {
            slots[i as usize].as_ref().is_some_and(|e| e.key() == key)
        });
        let (i, _) = found.ok()?.remove();
        let old = self.slots[i as usize].take();
        self.free.push(i);
        if let Some(old) = &old {
            self.entry_bytes -= old.heap_size();
            self.tombstones -= old.is_tombstone() as usize;
        }
        old
    }

    /// Number of keys (including expired ones not yet collected, as Redis's DBSIZE; not
    /// counting tombstones).
    pub fn len(&self) -> usize {
        self.index.len() - self.tombstones
    }

    /// Makes room for `n` more keys at once (recovery knows the count up front; growing the
    /// index step by step would rehash every key several times).
    pub fn reserve(&mut self, n: usize) {
        self.slots.reserve(n);
        let slots = &self.slots;
        self.index.reserve(n, |&j| {
            slots[j as usize].as_ref().map_or(0, |e| key_hash(e.key()))
        });
    }

    /// Slot positions in use or free (the range of SCAN positions).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys that carry a TTL (upper bound: the heap may hold stale entries).
    pub fn expiring(&self) -> usize {
        self.expiry.len().min(self.len())
    }

    /// Approximate heap bytes of this shard: entries, slots, index, free list, expiry heap.
    pub fn memory_bytes(&self) -> usize {
        self.entry_bytes
            + self.slots.capacity() * std::mem::size_of::<Option<Entry>>()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.free.capacity() * 4
            + self.expiry.capacity() * 16
    }

    /// Removes every key (logged).
    pub fn clear(&mut self) {
        let wal = std::mem::take(&mut self.wal);
        *self = Shard {
            expired_keys: self.expired_keys,
            purged: self.purged,
            policy: self.policy,
            dot_floor: self.dot_floor,
            durable_seq: self.durable_seq,
            wal,
            ..Shard::default()
        };
        self.wal.log(record::CLEAR, &[]);
    }

    /// Applies a replayed WAL record (logging is off during recovery). Returns false if the
    /// payload does not decode.
    pub fn apply(&mut self, kind: u8, payload: &[u8]) -> bool {
        match kind {
            record::VERSIONS => match Entry::from_bytes(payload) {
                Some(e) => {
                    self.put(key_hash(e.key()), e);
                    true
                }
                None => false,
            },
            record::PUT_V1 => match super::legacy::entry_from_v1(payload) {
                Some(e) => {
                    self.put(key_hash(e.key()), e);
                    true
                }
                None => false,
            },
            record::DEL => {
                self.remove_quiet(key_hash(payload), payload);
                true
            }
            record::CLEAR => {
                self.clear();
                true
            }
            _ => false,
        }
    }

    /// Calls `f` with the encoded entries of slots `pos..pos + n` (a snapshot slice).
    /// Returns the next position, or None at the end.
    pub fn encoded_slice(&self, pos: usize, n: usize, mut f: impl FnMut(&[u8])) -> Option<usize> {
        let end = pos.saturating_add(n).min(self.slots.len());
        for e in self.slots.get(pos..end).into_iter().flatten().flatten() {
            f(e.as_bytes());
        }
        (end < self.slots.len()).then_some(end)
    }

    /// Visits live entries from slot `pos` on, looking at no more than `budget` slots.
    /// Returns the slot to resume from, or None when the end was reached.
    pub fn scan(
        &self,
        pos: usize,
        budget: usize,
        now_ms: u64,
        mut f: impl FnMut(&Entry),
    ) -> Option<usize> {
        let end = pos.saturating_add(budget.max(1)).min(self.slots.len());
        for e in self.slots.get(pos..end).into_iter().flatten().flatten() {
            if !e.is_tombstone() && !e.is_expired(now_ms) {
                f(e);
            }
        }
        (end < self.slots.len()).then_some(end)
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: RANDOMKEY needs spread, not unpredictability.
        if self.rng == 0 {
            self.rng = 0x9E37_79B9_7F4A_7C15 ^ (self.slots.len() as u64);
        }
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A random live entry's key, or None if the shard has none.
    pub fn random_key(&mut self, now_ms: u64) -> Option<Vec<u8>> {
        if self.is_empty() {
            return None;
        }
        let n = self.slots.len();
        let start = (self.next_random() % n as u64) as usize;
        // Probing from a random slot: cheap when the slot vector is dense, still correct when
        // it is sparse.
        (0..n)
            .map(|k| (start + k) % n)
            .find_map(|i| {
                self.slots[i]
                    .as_ref()
                    .filter(|e| !e.is_tombstone() && !e.is_expired(now_ms))
            })
            .map(|e| e.key().to_vec())
    }

    /// Active expiry: removes up to `budget` keys whose TTL has passed. Returns how many.
    pub fn expire_cycle(&mut self, now_ms: u64, budget: usize) -> usize {
        let mut removed = 0;
        while removed < budget {
            match self.expiry.peek() {
                Some(Reverse((at, _))) if *at <= now_ms => {}
                _ => break,
            }
            let Some(Reverse((_, slot))) = self.expiry.pop() else {
                break;
            };
            match &self.slots[slot as usize] {
                Some(e) if e.is_expired(now_ms) => {}
                _ => continue,
            }
            self.expire_slot(slot, now_ms);
            removed += 1;
        }
        // Rewrites of TTL keys leave stale heap entries: rebuild when they dominate.
        if self.expiry.len() > 1024 && self.expiry.len() > 4 * self.len() {
            self.expiry = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, e)| Some(Reverse((e.as_ref()?.expires_at_ms()?, i as u32))))
                .collect();
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(key: &[u8], v: VersionRef<'_>) -> Entry {
        let mut s = Versions::new();
        s.overwrite(1, v);
        Entry::new(key, &s)
    }

    fn entry(key: &[u8], exp: Option<u64>) -> Entry {
        one(key, VersionRef::value(b"v", 0, exp))
    }

    #[test]
    fn put_get_remove_reuse() {
        let mut s = Shard::default();
        for i in 0..1000u32 {
            let k = i.to_be_bytes();
            assert!(s.put(key_hash(&k), entry(&k, None)).is_none());
        }
        assert_eq!(s.len(), 1000);
        for i in 0..500u32 {
            let k = i.to_be_bytes();
            assert!(s.remove(key_hash(&k), &k).is_some());
        }
        for i in 1000..1500u32 {
            let k = i.to_be_bytes();
            s.put(key_hash(&k), entry(&k, None));
        }
        assert_eq!(s.slots.len(), 1000, "freed slots are reused");
        for i in 500..1500u32 {
            let k = i.to_be_bytes();
            assert!(s.get(key_hash(&k), &k, 0).is_some());
        }
        let mut seen = 0;
        let mut pos = Some(0);
        while let Some(p) = pos {
            pos = s.scan(p, 7, 0, |_| seen += 1);
        }
        assert_eq!(seen, 1000);
    }

    #[test]
    fn expiry_lazy_and_active() {
        let mut s = Shard::default();
        s.put(key_hash(b"a"), entry(b"a", Some(10)));
        s.put(key_hash(b"b"), entry(b"b", Some(20)));
        s.put(key_hash(b"c"), entry(b"c", None));
        assert!(s.get(key_hash(b"a"), b"a", 11).is_none());
        assert_eq!(s.expire_cycle(25, 100), 1);
        assert_eq!(s.len(), 1);
        assert_eq!(s.expired_keys, 2);
    }

    #[test]
    fn tombstones_are_kept_but_not_counted() {
        let mut s = Shard::default();
        let tomb = |key: &[u8]| one(key, VersionRef::tombstone(0));
        s.put(key_hash(b"a"), entry(b"a", None));
        s.put(key_hash(b"b"), tomb(b"b"));
        assert_eq!(s.len(), 1);
        assert!(s.get(key_hash(b"b"), b"b", 0).is_none());
        // Tombstone replaced by a value, value by a tombstone: the count follows.
        s.put(key_hash(b"b"), entry(b"b", None));
        s.put(key_hash(b"a"), tomb(b"a"));
        assert_eq!(s.len(), 1);
        s.upsert(key_hash(b"a"), b"a", |old| {
            assert!(
                old.is_some_and(Entry::is_tombstone),
                "upsert sees the tombstone"
            );
            entry(b"a", None)
        });
        assert_eq!(s.len(), 2);
        s.put(key_hash(b"c"), tomb(b"c"));
        s.clear();
        assert_eq!(s.len(), 0);
        assert!(s.is_empty());
    }

    /// A tombstone is purged only once the record that wrote it is durable and every dot this
    /// node minted for the key is at or below the durable log position.
    #[test]
    fn purge_waits_for_durability_and_for_the_dots() {
        let mut s = Shard::with_policy(VersionPolicy {
            actor: 9,
            ..VersionPolicy::default()
        });
        s.wal.enabled = true;
        let h = key_hash(b"k");
        s.write(
            h,
            b"k",
            Supersede::Local,
            VersionRef::value(b"v", 1, None),
            |_| (),
        )
        .unwrap();
        s.write(h, b"k", Supersede::Local, VersionRef::tombstone(2), |_| ())
            .unwrap();
        assert_eq!(s.tombstones(), 1);
        assert_eq!(
            s.purge_cycle(10, 1, 100),
            0,
            "the tombstone's record is not durable"
        );
        assert_eq!(s.tombstones(), 1);
        // A log position rewound below the dots (as a multi-record TXN leaves it): not yet.
        s.dot_floor = 50;
        s.write(h, b"k", Supersede::Local, VersionRef::tombstone(3), |_| ())
            .unwrap();
        assert_eq!(
            s.purge_cycle(10, s.wal.seq, 100),
            0,
            "dot 51 is above the log"
        );
        assert_eq!(s.tombstones(), 1);
        assert_eq!(s.purge_cycle(10, 51, 100), 1);
        assert_eq!(s.tombstones(), 0);
        assert_eq!(s.purged, 1);
    }
}
