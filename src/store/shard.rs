//! One shard: versioned entries in a dense slot vector, indexed by a hash table of slot
//! numbers.
//!
//! Why not a `HashMap<key, value>`: a slot number is 4 bytes in the index, entries never move
//! once placed (so SCAN's cursor is simply a slot position and every key present for the whole
//! scan is returned), and RANDOMKEY and active expiry can pick slots directly.
//! Freed slots go on a free list and are reused by later inserts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hashbrown::HashTable;
use ringkv_proto::key_hash;

use super::entry::Entry;
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
    /// Entries that are tombstones (a deleted key's last clock, no value): in the index but
    /// not counted as keys.
    tombstones: usize,
    rng: u64,
}

impl Shard {
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
    pub fn get(&mut self, hash: u64, key: &[u8], now_ms: u64) -> Option<&Entry> {
        let i = self.find(hash, key)?;
        let expired = self.slots[i as usize]
            .as_ref()
            .is_some_and(|e| e.is_expired(now_ms));
        if expired {
            self.remove_quiet(hash, key);
            self.expired_keys += 1;
            return None;
        }
        self.slots[i as usize]
            .as_ref()
            .filter(|e| !e.is_tombstone())
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

    fn place(&mut self, found: Option<u32>, hash: u64, entry: Entry) -> Option<Entry> {
        self.wal.log(record::PUT, entry.as_bytes());
        self.entry_bytes += entry.heap_size();
        let expires = entry.expires_at_ms();
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
        if let Some(old) = &old {
            self.entry_bytes -= old.heap_size();
            self.tombstones -= old.is_tombstone() as usize;
        }
        self.tombstones += self.slots[slot as usize]
            .as_ref()
            .is_some_and(Entry::is_tombstone) as usize;
        old
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
            wal,
            ..Shard::default()
        };
        self.wal.log(record::CLEAR, &[]);
    }

    /// Applies a replayed WAL record (logging is off during recovery). Returns false if the
    /// payload does not decode.
    pub fn apply(&mut self, kind: u8, payload: &[u8]) -> bool {
        match kind {
            record::PUT => match Entry::from_bytes(payload) {
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
            let key = match &self.slots[slot as usize] {
                Some(e) if e.is_expired(now_ms) => e.key().to_vec(),
                _ => continue,
            };
            self.remove_quiet(key_hash(&key), &key);
            self.expired_keys += 1;
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
    use super::super::entry::NewVersion;
    use super::*;

    fn entry(key: &[u8], exp: Option<u64>) -> Entry {
        Entry::new(&NewVersion {
            key,
            value: b"v",
            clock: &[0],
            timestamp_ms: 0,
            expires_at_ms: exp,
            tombstone: false,
        })
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
        let tomb = |key: &[u8]| {
            Entry::new(&NewVersion {
                key,
                value: b"",
                clock: &[0],
                timestamp_ms: 0,
                expires_at_ms: None,
                tombstone: true,
            })
        };
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
}
