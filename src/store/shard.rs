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

use super::counter;
use super::entry::{Entry, ValueKind, VersionRef, Versions};
use super::write::{next_entry, Supersede, VersionPolicy, WriteError};
use crate::record;

mod approve;
mod merge;
mod range;
mod tree;
pub use merge::{sync_entries, Merged};

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
    /// Heap bytes of those entries (INFO `tombstone_bytes`).
    tombstone_bytes: usize,
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
    /// Keys added to the index so far (a new key, not a new version): the hash order below is
    /// current while this has not moved.
    inserted: u64,
    /// Every indexed slot by key hash, built on demand by cluster-wide SCAN/KEYS (`range`).
    by_hash: Option<range::HashOrder>,
    /// Keys due for purging that wait for approval (`policy.purge_needs_approval`), bounded
    /// by `approve::MAX_PURGE_CANDIDATES`.
    candidates: Vec<Vec<u8>>,
    /// Anti-entropy segment hashes of this shard's keys (`store::merkle`), kept current by
    /// `place_quiet` and `remove_quiet`, which every change of a slot goes through.
    tree: super::merkle::SegmentHashes,
}

/// A key as Redis commands see it: its entry and the winning version, which is live.
#[derive(Debug, Clone, Copy)]
pub struct Live<'a> {
    pub entry: &'a Entry,
    pub version: VersionRef<'a>,
    /// A counter with concurrent versions: the total of their join, in decimal (at most 40
    /// bytes: an i128).
    joined: Option<([u8; 40], u8)>,
}

impl<'a> Live<'a> {
    /// The key as commands see it at `now_ms`, from its entry alone (None: expired, or its
    /// winner is a tombstone).
    #[inline]
    pub fn of(entry: &'a Entry, now_ms: u64) -> Option<Live<'a>> {
        if entry.is_expired(now_ms) {
            return None;
        }
        let version = entry.winner();
        if version.is_tombstone() {
            return None;
        }
        // A counter's concurrent increments (siblings) all count.
        let joined = if version.kind() == ValueKind::Counter && entry.version_count() > 1 {
            counter::joined(entry.versions().iter().map(|v| &v.value)).map(|s| {
                let mut buf = itoa::Buffer::new();
                let s = buf.format(s.total()).as_bytes();
                let mut out = [0u8; 40];
                out[..s.len()].copy_from_slice(s);
                (out, s.len() as u8)
            })
        } else {
            None
        };
        Some(Live {
            entry,
            version,
            joined,
        })
    }

    /// The value commands see (for a counter, the total of all its concurrent versions).
    #[inline]
    pub fn value(&self) -> &[u8] {
        match &self.joined {
            None => self.version.value,
            Some((buf, len)) => &buf[..*len as usize],
        }
    }

    /// A counter's state: the join of its concurrent versions (None: not a counter).
    pub fn counter_state(&self) -> Option<counter::CounterState> {
        if self.version.kind() != ValueKind::Counter {
            return None;
        }
        if self.entry.version_count() > 1 {
            counter::joined(self.entry.versions().iter().map(|v| &v.value))
        } else {
            counter::CounterState::decode(self.version.counter_state())
        }
    }

    pub fn expires_at_ms(&self) -> Option<u64> {
        self.version.expires_at_ms
    }

    /// The key's causal context (binary replies).
    pub fn context_bytes(&self) -> super::clock::ClockBytes {
        self.entry.context_bytes()
    }
}

/// Counters skipped at every start. The records a crash lost carried dots the node may have
/// handed out (a reply under `--fsync batch` or `never` goes out before its sync), which no
/// recovered record or snapshot remembers; skipping this many counters puts every new dot
/// above them, unless more than 16M records were lost. 2^24 per start keeps a dot's counter
/// within 5 bytes for two thousand restarts.
pub const DOT_RESTART_MARGIN: u64 = 1 << 24;

/// The hash a shard's index sees for a key hash. hashbrown picks the bucket from the low bits
/// and the 7-bit tag (its per-slot filter) from the top 7; but the top bits of a key hash also
/// choose the partition, hence the shard (`store::placement`), so within one shard they are
/// partly fixed: with 1,024 partitions over 16 shards one tag bit is constant (half the tags
/// go unused, twice the false tag matches); with 128 partitions all 7 are. The tag is taken
/// from bits 33..40 instead, which neither placement uses (partitions: the top 16 bits at most;
/// legacy: bits 40..) and the buckets never reach (u32 slots: at most 2^33 buckets).
#[inline]
fn table_hash(hash: u64) -> u64 {
    const TAG_BITS: u64 = 0x7f << 57;
    (hash & !TAG_BITS) | ((hash << 24) & TAG_BITS)
}

/// Stale purge items tolerated before the queue is rebuilt from the dead keys.
const PURGE_QUEUE_SLACK: usize = 1024;

/// A key that became all tombstones: purge it at `due_ms` if its record `seq` is durable and
/// it is still dead then.
struct Purge {
    due_ms: u64,
    seq: u64,
    hash: u64,
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
            .find(table_hash(hash), |&i| {
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
        // The winner is found once per read (it decodes the versions when there are several).
        Live::of(self.slots[i as usize].as_ref()?, now_ms)
    }

    /// Inserts or replaces the entry for its key; returns the previous one.
    /// Loading (snapshot, replay) goes through here: the shard's counter floor rises to every
    /// dot of this node it loads.
    pub fn put(&mut self, hash: u64, entry: Entry) -> Option<Entry> {
        let minted = entry.context().get(self.policy.actor);
        self.dot_floor = self.dot_floor.max(minted);
        let found = self.find(hash, entry.key());
        self.place(found, hash, entry)
    }

    /// The WAL position of everything this shard holds now: what a reply or a peer message
    /// showing any of it waits for (None when the node keeps no WAL).
    pub fn logged(&self) -> Option<u64> {
        self.wal.enabled.then_some(self.wal.seq)
    }

    /// The actor of the dots this shard mints.
    pub fn actor(&self) -> super::NodeId {
        self.policy.actor
    }

    /// The highest dot counter this shard has minted or loaded (kept in snapshots).
    pub fn dot_floor(&self) -> u64 {
        self.dot_floor
    }

    /// Raises the counter floor (a snapshot's, at load).
    pub fn raise_dot_floor(&mut self, floor: u64) {
        self.dot_floor = self.dot_floor.max(floor);
    }

    /// Recovery is over: logging starts after record `seq`, and the dots minted from now on
    /// skip [`DOT_RESTART_MARGIN`] counters, above any a lost log tail may have handed out.
    pub fn start_logging(&mut self, seq: u64) {
        self.wal.enabled = true;
        self.wal.seq = seq;
        self.dot_floor = self.dot_floor.max(seq).saturating_add(DOT_RESTART_MARGIN);
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
    ) -> Result<(), WriteError> {
        let found = self.find(hash, key);
        let old = found.and_then(|i| self.slots[i as usize].as_ref());
        let floor = self.dot_floor.max(self.wal.seq);
        let (entry, dot) = next_entry(old, key, sup, v, floor, &self.policy)?;
        if tracing::enabled!(target: "ringkv::versions", tracing::Level::TRACE) {
            trace_write(old, &sup, &entry);
        }
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
        self.tree.toggle(hash, super::merkle::entry_hash(&entry));
        let fate = entry.fate();
        let expires = fate.expires_at_ms;
        let dead = fate.all_tombstones_since;
        // A key whose winner is a tombstone but whose other versions expire: look again when
        // the last one does (it is then all dead, to be purged).
        let all_dead_at = fate.death_at.filter(|_| dead.is_none() && fate.tombstone);
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
                self.inserted += 1;
                self.note_inserted(hash, i);
                let slots = &self.slots;
                self.index.insert_unique(table_hash(hash), i, |&j| {
                    slots[j as usize]
                        .as_ref()
                        .map_or(0, |e| table_hash(key_hash(e.key())))
                });
                (i, None)
            }
        };
        if let Some(at) = expires.or(all_dead_at) {
            self.expiry.push(Reverse((at, slot)));
        }
        if let Some(died) = dead {
            self.purge.push_back(Purge {
                due_ms: died.saturating_add(self.policy.tombstone_grace_ms),
                seq: self.wal.seq,
                hash,
                slot,
            });
        }
        if let Some(old) = &old {
            self.entry_bytes -= old.heap_size();
            self.untrack_tombstone(old);
            self.tree.toggle(hash, super::merkle::entry_hash(old));
        }
        if fate.tombstone {
            self.tombstones += 1;
            if let Some(e) = &self.slots[slot as usize] {
                self.tombstone_bytes += e.heap_size();
            }
        }
        if dead.is_some() {
            self.compact_purge_queue();
        }
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
    /// turn into tombstones dead since their expiry (`VersionRef::expired`: same write
    /// timestamp, so the same winner), kept until the grace passes. Not logged:
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
                    if v.is_expired(now_ms) && !v.is_tombstone() {
                        *v = v.expired();
                    }
                }
                let entry = Entry::new(&key, &versions);
                drop(versions);
                self.expired_keys += 1;
                self.place_quiet(Some(slot), key_hash(&key), entry);
            }
        }
    }

    /// Whether a dead key may go: every version dead for the grace. (Its dots stay taken: the
    /// shard's counter floor is above them, kept in snapshots and raised at every start.)
    fn purgeable(&self, e: &Entry, now_ms: u64) -> bool {
        let grace = self.policy.tombstone_grace_ms;
        e.dead_since(now_ms)
            .is_some_and(|d| d.saturating_add(grace) <= now_ms)
    }

    /// Purges up to `budget` dead keys whose grace has passed and whose last record is
    /// durable (`durable_seq`). Returns how many. With `policy.purge_needs_approval` they are
    /// not purged but become candidates (see `approve`), at most `MAX_PURGE_CANDIDATES`
    /// waiting.
    pub fn purge_cycle(&mut self, now_ms: u64, durable_seq: u64, budget: usize) -> usize {
        self.durable_seq = durable_seq;
        let mut purged = 0;
        // Every item looked at counts against the budget, stale ones too.
        for _ in 0..budget {
            if self.candidates.len() >= approve::MAX_PURGE_CANDIDATES {
                break;
            }
            match self.purge.front() {
                Some(p) if p.due_ms <= now_ms && p.seq <= durable_seq => {}
                _ => break,
            }
            let Some(p) = self.purge.pop_front() else {
                break;
            };
            let key = match &self.slots[p.slot as usize] {
                // The same key (a freed slot may hold another one now, whose own item waits
                // for its own record to be durable).
                Some(e) if key_hash(e.key()) == p.hash && self.purgeable(e, now_ms) => {
                    e.key().to_vec()
                }
                // Rewritten since, or died again later (a later item covers that).
                _ => continue,
            };
            purged += 1;
            if self.policy.purge_needs_approval {
                self.candidates.push(key);
                if self.candidates.len() >= approve::MAX_PURGE_CANDIDATES {
                    break;
                }
                continue;
            }
            self.remove_quiet(key_hash(&key), &key);
            self.purged += 1;
        }
        self.compact_purge_queue();
        purged
    }

    /// Items of keys written again since stay in the purge queue until their time: when they
    /// dominate, rebuild it from the dead keys (as the expiry heap is rebuilt), so it is bounded
    /// by the dead keys, not by the deletes made during the grace.
    fn compact_purge_queue(&mut self) {
        // Also a quarter of the slots: a rebuild visits every slot, so this keeps its cost at
        // a few slots per delete.
        if self.purge.len() <= PURGE_QUEUE_SLACK + 2 * self.tombstones + self.slots.len() / 4 {
            return;
        }
        let grace = self.policy.tombstone_grace_ms;
        let seq = self.wal.seq;
        let mut items: Vec<Purge> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let e = e.as_ref()?;
                let died = e.dead_since(0)?;
                Some(Purge {
                    due_ms: died.saturating_add(grace),
                    // At most the record that wrote it: durable no later than this.
                    seq,
                    hash: key_hash(e.key()),
                    slot: i as u32,
                })
            })
            .collect();
        items.sort_unstable_by_key(|p| p.due_ms);
        self.purge = items.into();
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
        let found = self.index.find_entry(table_hash(hash), |&i| {
            slots[i as usize].as_ref().is_some_and(|e| e.key() == key)
        });
        let (i, _) = found.ok()?.remove();
        let old = self.slots[i as usize].take();
        self.free.push(i);
        if let Some(old) = &old {
            self.entry_bytes -= old.heap_size();
            self.untrack_tombstone(old);
            self.tree.toggle(hash, super::merkle::entry_hash(old));
        }
        old
    }

    fn untrack_tombstone(&mut self, old: &Entry) {
        if old.is_tombstone() {
            self.tombstones -= 1;
            self.tombstone_bytes -= old.heap_size();
        }
    }

    /// Heap bytes of the entries counted by [`Shard::tombstones`].
    pub fn tombstone_bytes(&self) -> usize {
        self.tombstone_bytes
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
            slots[j as usize]
                .as_ref()
                .map_or(0, |e| table_hash(key_hash(e.key())))
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

    /// Heap bytes of the entries themselves (keys, values, versions, tombstones): the part of
    /// [`Shard::memory_bytes`] that is data rather than the structures around it.
    pub fn dataset_bytes(&self) -> usize {
        self.entry_bytes
    }

    /// Approximate heap bytes of this shard: entries, slots, index, free list, expiry heap.
    pub fn memory_bytes(&self) -> usize {
        self.entry_bytes
            + self.slots.capacity() * std::mem::size_of::<Option<Entry>>()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.free.capacity() * 4
            + self.expiry.capacity() * 16
            + self.purge.capacity() * std::mem::size_of::<Purge>()
            + self
                .candidates
                .iter()
                .map(|k| k.capacity() + 24)
                .sum::<usize>()
            + self
                .by_hash
                .as_ref()
                .map_or(0, range::HashOrder::heap_bytes)
            + self.tree.heap_bytes()
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
                // The winner expired, or every version is dead by now (a tombstone winner
                // whose siblings expired).
                Some(e) if e.is_expired(now_ms) || e.dead_since(now_ms).is_some() => {}
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

/// Logs a write at trace level (target `ringkv::versions`): what the key held, what the
/// writer's context superseded, and what it holds now; for following a version by hand.
#[cold]
fn trace_write(old: Option<&Entry>, sup: &Supersede<'_>, new: &Entry) {
    use super::entry::Brief;
    let key = String::from_utf8_lossy(new.key());
    let ctx = match sup {
        Supersede::Local => "local".to_string(),
        Supersede::Context(c) => format!("{:x?}", c.iter().collect::<Vec<_>>()),
    };
    match old {
        Some(o) => tracing::trace!(target: "ringkv::versions", %key, client_ctx = %ctx,
            old = %Brief(o), new = %Brief(new), "write"),
        None => tracing::trace!(target: "ringkv::versions", %key, client_ctx = %ctx,
            new = %Brief(new), "write"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's tag comes from hash bits 33..39 (docs/storage.md, "Placement"): the keys of
    /// one shard, whose top hash bits their partition partly fixes, still use every tag.
    #[test]
    fn keys_of_one_shard_use_every_tag() {
        let h = 0xfedc_ba98_7654_3210u64;
        assert_eq!(table_hash(h) >> 57, (h >> 33) & 0x7f);
        assert_eq!(table_hash(h) & ((1 << 57) - 1), h & ((1 << 57) - 1));
        let placement = crate::store::Placement::partitioned(128).unwrap();
        let (mut top, mut tags) = ([false; 128], [false; 128]);
        for i in 0..40_000 {
            let h = key_hash(format!("k{i}").as_bytes());
            if placement.shard(h, 16) == 0 {
                top[(h >> 57) as usize] = true;
                tags[(table_hash(h) >> 57) as usize] = true;
            }
        }
        let used = |t: &[bool]| t.iter().filter(|u| **u).count();
        assert_eq!(
            used(&top),
            8,
            "the top 7 bits: only partitions 0, 16, ... of shard 0"
        );
        assert_eq!(used(&tags), 128);
    }

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

    /// A tombstone is purged only once the record that wrote it is durable.
    #[test]
    fn purge_waits_for_durability() {
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
        assert_eq!(s.purge_cycle(10, s.wal.seq, 100), 1);
        assert_eq!(s.tombstones(), 0);
        assert_eq!(s.purged, 1);
    }

    // ---- review of issue 9 items 1-4 (branch `review`): each test shows a bug ----

    fn policy(grace_ms: u64) -> VersionPolicy {
        VersionPolicy {
            actor: 7,
            tombstone_grace_ms: grace_ms,
            ..VersionPolicy::default()
        }
    }

    /// A client context may carry any counter up to MAX_COUNTER for this node's actor (the
    /// decoder accepts it); the dot minted above it is MAX_COUNTER + 1, which no decoder
    /// accepts: the WAL record and the snapshot entry of the key do not load again, and the
    /// shard's dot floor is poisoned for every later write.
    #[test]
    fn review_forged_context_counter_leaves_an_entry_that_does_not_decode() {
        use super::super::dvv::{Dot, VersionVector, MAX_COUNTER};
        let mut s = Shard::with_policy(policy(0));
        s.wal.enabled = true;
        let mut ctx = VersionVector::new();
        ctx.add_dot(Dot {
            actor: 7,
            counter: MAX_COUNTER,
        });
        let (k, k2) = (&b"k"[..], &b"other"[..]);
        let v = VersionRef::value(b"x", 1, None);
        let res = s.write(key_hash(k), k, Supersede::Context(&ctx), v, |_| ());
        if res.is_ok() {
            let stored = s.entry(key_hash(k), k).expect("stored").clone();
            assert!(
                Entry::from_bytes(stored.as_bytes()).is_some(),
                "the entry logged for k does not decode: replay fails ({stored:?})"
            );
        }
        // Whatever happened to k, a plain write of another key must stay loadable.
        let v = VersionRef::value(b"y", 2, None);
        s.write(key_hash(k2), k2, Supersede::Local, v, |_| ())
            .expect("a local write is never refused");
        let stored = s.entry(key_hash(k2), k2).expect("stored").clone();
        assert!(
            Entry::from_bytes(stored.as_bytes()).is_some(),
            "a later write of another key does not decode (dot floor poisoned)"
        );
    }

    /// A tombstone that wins over a sibling with a TTL: once the sibling expires the key is all
    /// dead, but it never enters the purge queue (only the winner's expiry is tracked, and
    /// place_quiet queues only entries dead at time 0): the tombstone is kept forever.
    #[test]
    fn review_tombstone_over_an_expiring_sibling_is_purged() {
        use super::super::dvv::VersionVector;
        let mut s = Shard::with_policy(policy(0));
        let k = &b"k"[..];
        let h = key_hash(k);
        s.write(
            h,
            k,
            Supersede::Local,
            VersionRef::value(b"v", 10, Some(50)),
            |_| (),
        )
        .unwrap();
        // A delete with a context that did not see the value (a stale read).
        let stale = VersionVector::new();
        s.write(
            h,
            k,
            Supersede::Context(&stale),
            VersionRef::tombstone(20),
            |_| (),
        )
        .unwrap();
        assert_eq!(s.tombstones(), 1);
        for now in [100, 1_000, 100_000] {
            s.expire_cycle(now, 1000);
            s.purge_cycle(now, u64::MAX, 1000);
        }
        assert!(
            s.entry(h, k).is_none(),
            "an all-dead key is never purged: {:?}",
            s.entry(h, k)
        );
        assert_eq!(s.tombstones(), 0);
    }

    /// Deletes `key` and writes it again, `n` times: each delete queues a purge item that is
    /// stale by the time it is looked at.
    fn delete_and_rewrite(s: &mut Shard, key: &[u8], n: u64) {
        let h = key_hash(key);
        for i in 0..n {
            s.write(h, key, Supersede::Local, VersionRef::tombstone(i), |_| ())
                .unwrap();
            let v = VersionRef::value(b"v", i, None);
            s.write(h, key, Supersede::Local, v, |_| ()).unwrap();
        }
    }

    /// Every delete queues a purge item, even when the key is written again at once: the queue
    /// grows with the number of deletes within the grace, not with the number of dead keys.
    #[test]
    fn review_purge_queue_is_bounded_by_dead_keys() {
        let mut s = Shard::with_policy(policy(600_000));
        delete_and_rewrite(&mut s, b"k", 10_000);
        assert!(
            s.purge.len() <= PURGE_QUEUE_SLACK + 1,
            "{} purge items for one live key",
            s.purge.len()
        );
    }

    /// purge_cycle's budget counts purges only: stale items (keys rewritten since) are popped
    /// without limit in one call, under the shard lock.
    #[test]
    fn review_purge_cycle_work_is_bounded_by_its_budget() {
        let mut s = Shard::with_policy(policy(0));
        // Stale items first (a key deleted and written again), then many dead keys, enough
        // that the queue is not rebuilt: one cycle must look at no more than its budget.
        delete_and_rewrite(&mut s, b"k", 1_000);
        for i in 0..2_000u64 {
            let key = i.to_be_bytes();
            s.write(
                key_hash(&key),
                &key,
                Supersede::Local,
                VersionRef::tombstone(i),
                |_| (),
            )
            .unwrap();
        }
        let before = s.purge.len();
        s.purge_cycle(1_000_000, u64::MAX, 10);
        let examined = before - s.purge.len();
        assert!(
            examined <= 10,
            "one purge_cycle with budget 10 examined {examined} items"
        );
    }

    /// Dots are drawn above max(dot_floor, wal.seq), and dot_floor is not persisted: after a
    /// crash that loses the log's unsynced tail (fsync batch/never, or a dirty read under
    /// always), the recovered wal.seq is below counters already handed out in contexts, so a
    /// counter is minted again and an old context covers (silently supersedes) a new write.
    #[test]
    fn review_dot_counters_are_not_reused_after_the_log_tail_is_lost() {
        let k = &b"k"[..];
        let h = key_hash(k);
        let mut a = Shard::with_policy(policy(0));
        a.wal.enabled = true;
        a.write(
            h,
            k,
            Supersede::Local,
            VersionRef::value(b"v1", 1, None),
            |_| (),
        )
        .unwrap();
        let durable = a.entry(h, k).unwrap().clone(); // record 1 reached the disk
        a.write(
            h,
            k,
            Supersede::Local,
            VersionRef::value(b"v2", 2, None),
            |_| (),
        )
        .unwrap();
        // A client got this context (a PUT reply under batch, or a dirty read).
        let seen = a.entry(h, k).unwrap().context();
        // Crash: record 2 is lost. Recovery replays record 1 and sets wal.seq to it.
        let mut b = Shard::with_policy(policy(0));
        assert!(b.apply(record::VERSIONS, durable.as_bytes()));
        // What recovery does once every record is replayed.
        b.start_logging(1);
        b.write(
            h,
            k,
            Supersede::Local,
            VersionRef::value(b"v3", 3, None),
            |_| (),
        )
        .unwrap();
        let after = b.entry(h, k).unwrap().versions();
        let dot = after.iter().next().unwrap().dot;
        assert!(
            !seen.covers(&dot),
            "the new write's dot {dot:?} is covered by a context from before the crash \
             ({seen:?}): a DELETE with it would supersede a write it never saw"
        );
    }

    /// A client context is merged into the key's stored context whatever actors it names, and
    /// nothing bounds its size (max_value bounds only the value): one PUT can pin megabytes on
    /// a key, which every later write of the key decodes and re-encodes. On one node the only
    /// actor a genuine context can name is this node (in a cluster: the members).
    #[test]
    fn review_client_context_size_is_bounded() {
        use super::super::dvv::{Dot, VersionVector};
        let mut s = Shard::with_policy(policy(0));
        let mut ctx = VersionVector::new();
        for actor in 1000..101_000u64 {
            ctx.add_dot(Dot { actor, counter: 1 });
        }
        let k = &b"k"[..];
        let res = s.write(
            key_hash(k),
            k,
            Supersede::Context(&ctx),
            VersionRef::value(b"v", 1, None),
            |_| (),
        );
        let size = s.entry(key_hash(k), k).map_or(0, Entry::heap_size);
        assert!(
            res.is_err() || size < 4096,
            "a 1-byte value took {size} bytes: the context of 100k foreign actors was stored"
        );
    }
}
