//! A key and all its versions (a DVV set, see [`super::dvv`]) in one heap allocation.
//!
//! The common case (16-byte key, 16-byte value, one version, no TTL) must stay small: a
//! separate allocation per field would double the bytes per key. Layout (format 2; the same
//! bytes are the payload of a WAL `VERSIONS` record and a snapshot entry):
//!
//! ```text
//! key_len varint | key | hdr varint (header_len << 1 | several versions) | header
//! | per version, in the header's dot order:
//!     vflags u8 | timestamp_ms varint | [expires_at_ms varint] | [value_len varint] | value
//! ```
//!
//! `header` is [`Siblings::encode_header`]: the causal context and each version's dot. The last
//! version has no `value_len`: its value runs to the end. `vflags` = tombstone (bit 0),
//! expiry present (bit 1), value kind (bits 2..6: 0 = bytes, 1 = counter). A counter's value
//! region is `state_len varint | state | decimal total` (see [`super::counter`]); commands
//! read the decimal total as its value.
//!
//! Reads through Redis commands see one deterministic winner: the version with the newest
//! timestamp, ties broken by the greater actor (then dot). If the winner is a tombstone, or its
//! expiry has passed, the key is absent. An expired value behaves as a tombstone that keeps its
//! write timestamp (so the winner is the same whether a replica has turned it into one or not)
//! and is dead since its expiry (which dates it for the tombstone grace).

use smallvec::SmallVec;

use super::clock::{get_varint, put_varint, varint_len, ClockBytes};
use super::dvv::{Siblings, SiblingsHeader, Version, VersionVector};

const TOMBSTONE: u8 = 1;
const EXPIRES: u8 = 2;
const KIND_SHIFT: u8 = 2;
const KIND_MASK: u8 = 0b1111 << KIND_SHIFT;

/// What a version's bytes are. Stored in every version, so a new kind needs no new format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// An opaque string (every Redis string command).
    Bytes,
    /// A PN-counter (INCR family): the decimal total, and the per-actor state beside it.
    Counter,
}

impl ValueKind {
    fn bits(self) -> u8 {
        match self {
            ValueKind::Bytes => 0,
            ValueKind::Counter => 1,
        }
    }

    fn from_bits(b: u8) -> Option<ValueKind> {
        match b {
            0 => Some(ValueKind::Bytes),
            1 => Some(ValueKind::Counter),
            _ => None,
        }
    }
}

/// One version's data (its dot lives in the entry's header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRef<'a> {
    flags: u8,
    pub timestamp_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub value: &'a [u8],
    /// A counter's state (empty for other kinds).
    counter: &'a [u8],
}

impl<'a> VersionRef<'a> {
    /// A value version.
    pub fn value(value: &'a [u8], timestamp_ms: u64, expires_at_ms: Option<u64>) -> Self {
        VersionRef {
            flags: ValueKind::Bytes.bits() << KIND_SHIFT
                | if expires_at_ms.is_some() { EXPIRES } else { 0 },
            timestamp_ms,
            expires_at_ms,
            value,
            counter: b"",
        }
    }

    /// A counter version: its encoded state and its decimal total (the value commands see).
    pub fn counter(
        state: &'a [u8],
        total: &'a [u8],
        timestamp_ms: u64,
        expires_at_ms: Option<u64>,
    ) -> Self {
        VersionRef {
            flags: ValueKind::Counter.bits() << KIND_SHIFT
                | if expires_at_ms.is_some() { EXPIRES } else { 0 },
            timestamp_ms,
            expires_at_ms,
            value: total,
            counter: state,
        }
    }

    /// A counter's encoded state (empty for other kinds).
    pub fn counter_state(&self) -> &'a [u8] {
        self.counter
    }

    /// The same version with another timestamp and expiry (EXPIRE, PERSIST, GETEX keep a
    /// counter a counter).
    pub fn with_expiry(mut self, timestamp_ms: u64, expires_at_ms: Option<u64>) -> Self {
        self.timestamp_ms = timestamp_ms;
        self.expires_at_ms = expires_at_ms;
        self
    }

    /// A tombstone: the key deleted at `timestamp_ms`.
    pub fn tombstone(timestamp_ms: u64) -> Self {
        VersionRef {
            flags: TOMBSTONE,
            timestamp_ms,
            expires_at_ms: None,
            value: b"",
            counter: b"",
        }
    }

    /// The tombstone an expired value turns into (Cassandra's expired cell): it keeps the
    /// value's write timestamp, so it orders against other versions exactly as the value did
    /// (a replica that converted it and one that did not pick the same winner), and its expiry
    /// says since when it is dead (the tombstone grace counts from there).
    pub fn expired(&self) -> VersionRef<'static> {
        VersionRef {
            flags: TOMBSTONE
                | if self.expires_at_ms.is_some() {
                    EXPIRES
                } else {
                    0
                },
            timestamp_ms: self.timestamp_ms,
            expires_at_ms: self.expires_at_ms,
            value: b"",
            counter: b"",
        }
    }

    pub fn is_tombstone(&self) -> bool {
        self.flags & TOMBSTONE != 0
    }

    /// When a tombstone's key died: its expiry for an expired value's tombstone, else its
    /// timestamp.
    fn deleted_at(&self) -> u64 {
        self.expires_at_ms.unwrap_or(self.timestamp_ms)
    }

    pub fn kind(&self) -> ValueKind {
        ValueKind::from_bits((self.flags & KIND_MASK) >> KIND_SHIFT).unwrap_or(ValueKind::Bytes)
    }

    /// A value whose expiry has passed (a tombstone is dead, not expired).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        !self.is_tombstone() && self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// When a value expires (None for a tombstone, which is already dead).
    fn value_expiry(&self) -> Option<u64> {
        self.expires_at_ms.filter(|_| !self.is_tombstone())
    }

    /// A value readers can see at `now_ms`: not a tombstone, not expired.
    pub fn is_live(&self, now_ms: u64) -> bool {
        !self.is_tombstone() && !self.is_expired(now_ms)
    }

    /// When this version stopped being a value: its timestamp for a tombstone, its expiry for
    /// an expired value; None while it is live.
    pub fn dead_since(&self, now_ms: u64) -> Option<u64> {
        if self.is_tombstone() {
            Some(self.deleted_at())
        } else {
            self.expires_at_ms.filter(|&at| at <= now_ms)
        }
    }

    /// The bytes of the value region: the value, and for a counter its state before it.
    fn region_len(&self) -> usize {
        match self.kind() {
            ValueKind::Bytes => self.value.len(),
            ValueKind::Counter => {
                varint_len(self.counter.len() as u64) + self.counter.len() + self.value.len()
            }
        }
    }

    fn encoded_len(&self, last: bool) -> usize {
        let region = self.region_len();
        1 + varint_len(self.timestamp_ms)
            + self.expires_at_ms.map_or(0, varint_len)
            + if last { 0 } else { varint_len(region as u64) }
            + region
    }

    fn encode(&self, last: bool, buf: &mut Vec<u8>) {
        let mut flags = self.flags & (TOMBSTONE | KIND_MASK);
        if self.expires_at_ms.is_some() {
            flags |= EXPIRES;
        }
        buf.push(flags);
        put_varint(buf, self.timestamp_ms);
        if let Some(at) = self.expires_at_ms {
            put_varint(buf, at);
        }
        if !last {
            put_varint(buf, self.region_len() as u64);
        }
        if self.kind() == ValueKind::Counter {
            put_varint(buf, self.counter.len() as u64);
            buf.extend_from_slice(self.counter);
        }
        buf.extend_from_slice(self.value);
    }

    /// Decodes one version from the front of `b` (the last one takes all of it).
    fn decode(b: &mut &'a [u8], last: bool) -> Option<VersionRef<'a>> {
        let (&flags, rest) = b.split_first()?;
        if flags & !(TOMBSTONE | EXPIRES | KIND_MASK) != 0 {
            return None;
        }
        let kind = ValueKind::from_bits((flags & KIND_MASK) >> KIND_SHIFT)?;
        let mut rest = rest;
        let timestamp_ms = get_varint(&mut rest).ok()?;
        let expires_at_ms = if flags & EXPIRES != 0 {
            Some(get_varint(&mut rest).ok()?)
        } else {
            None
        };
        let len = if last {
            rest.len()
        } else {
            usize::try_from(get_varint(&mut rest).ok()?).ok()?
        };
        let mut value = rest.get(..len)?;
        *b = &rest[len..];
        if flags & TOMBSTONE != 0 && !value.is_empty() {
            return None;
        }
        let counter = match kind {
            ValueKind::Bytes => &b""[..],
            ValueKind::Counter if flags & TOMBSTONE != 0 => return None,
            ValueKind::Counter => {
                let n = usize::try_from(get_varint(&mut value).ok()?).ok()?;
                let state = value.get(..n)?;
                value = &value[n..];
                // The total must be what the state says (a mismatch is corruption).
                let total = super::counter::CounterState::decode(state)?.total();
                if value != itoa::Buffer::new().format(total).as_bytes() {
                    return None;
                }
                state
            }
        };
        Some(VersionRef {
            flags,
            timestamp_ms,
            expires_at_ms,
            value,
            counter,
        })
    }
}

/// See [`Entry::fate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fate {
    pub expires_at_ms: Option<u64>,
    pub tombstone: bool,
    pub all_tombstones_since: Option<u64>,
    pub death_at: Option<u64>,
}

/// The versions of one key, decoded (borrowing the entry's bytes).
pub type Versions<'a> = Siblings<VersionRef<'a>>;

#[derive(Clone, PartialEq, Eq)]
pub struct Entry(Box<[u8]>);

/// Where the parts of an entry are.
struct Head {
    key_start: usize,
    key_end: usize,
    header_start: usize,
    header_end: usize,
    several: bool,
}

impl Entry {
    /// Encodes a key's versions (at least one).
    pub fn new(key: &[u8], versions: &Versions<'_>) -> Entry {
        let header_len = versions.header_len();
        let n = versions.len();
        let hdr = (header_len as u64) << 1 | u64::from(n > 1);
        let body: usize = versions
            .iter()
            .enumerate()
            .map(|(i, v)| v.value.encoded_len(i + 1 == n))
            .sum();
        // Exact size: into_boxed_slice must not reallocate.
        let size = varint_len(key.len() as u64) + key.len() + varint_len(hdr) + header_len + body;
        let mut buf = Vec::with_capacity(size);
        put_varint(&mut buf, key.len() as u64);
        buf.extend_from_slice(key);
        put_varint(&mut buf, hdr);
        versions.encode_header(&mut buf);
        for (i, v) in versions.iter().enumerate() {
            v.value.encode(i + 1 == n, &mut buf);
        }
        debug_assert_eq!(buf.len(), size);
        Entry(buf.into_boxed_slice())
    }

    /// A key with one version, the first write of `actor` (tools, tests, fuzz seeds).
    pub fn with_one(key: &[u8], actor: u64, v: VersionRef<'_>) -> Entry {
        let mut s = Versions::new();
        s.overwrite(actor, v);
        Entry::new(key, &s)
    }

    /// Offsets of the parts. The entry was built by `new` or checked by `from_bytes`, so the
    /// varints are valid; a failure here would be a bug, and yields empty parts, not a panic.
    #[inline]
    fn head(&self) -> Head {
        let mut rest = &self.0[..];
        let key_len = get_varint(&mut rest).unwrap_or(0) as usize;
        let key_start = self.0.len() - rest.len();
        let key_end = (key_start + key_len).min(self.0.len());
        let mut rest = &self.0[key_end..];
        let hdr = get_varint(&mut rest).unwrap_or(0);
        let header_start = self.0.len() - rest.len();
        Head {
            key_start,
            key_end,
            header_start,
            header_end: (header_start + (hdr >> 1) as usize).min(self.0.len()),
            several: hdr & 1 == 1,
        }
    }

    #[inline]
    pub fn key(&self) -> &[u8] {
        let h = self.head();
        &self.0[h.key_start..h.key_end]
    }

    /// Every version with its dot, and the key's causal context.
    pub fn versions(&self) -> Versions<'_> {
        let h = self.head();
        let Ok(header) = SiblingsHeader::decode(&self.0[h.header_start..h.header_end]) else {
            // Built by `new` or checked by `from_bytes`: unreachable unless there is a bug.
            debug_assert!(false, "an entry's header does not decode: {:?}", self.0);
            return Versions::new();
        };
        let n = header.dots.len();
        let mut body = &self.0[h.header_end..];
        let values: SmallVec<[VersionRef<'_>; 1]> = (0..n)
            .map_while(|i| VersionRef::decode(&mut body, i + 1 == n))
            .collect();
        header.into_siblings(values).unwrap_or_default()
    }

    /// The only version, when there is one (no header decoding needed).
    #[inline]
    fn single(&self) -> Option<VersionRef<'_>> {
        let h = self.head();
        if h.several {
            return None;
        }
        let mut body = &self.0[h.header_end..];
        VersionRef::decode(&mut body, true)
    }

    /// The version Redis commands see (live or not): newest timestamp, ties by actor.
    #[inline]
    pub fn winner(&self) -> VersionRef<'_> {
        if let Some(v) = self.single() {
            return v;
        }
        let versions = self.versions();
        versions
            .winner_by(winner_key)
            .map(|v| v.value)
            .unwrap_or(VersionRef::tombstone(0))
    }

    /// The winner's dot (a new counter lineage is named after the version it replaces).
    pub fn winner_dot(&self) -> Option<super::dvv::Dot> {
        self.versions().winner_by(winner_key).map(|v| v.dot)
    }

    /// The winner's value (empty for a tombstone).
    #[inline]
    pub fn value(&self) -> &[u8] {
        self.winner().value
    }

    pub fn timestamp_ms(&self) -> u64 {
        self.winner().timestamp_ms
    }

    pub fn expires_at_ms(&self) -> Option<u64> {
        self.winner().value_expiry()
    }

    /// The winner is a tombstone: Redis commands see no key.
    pub fn is_tombstone(&self) -> bool {
        self.winner().is_tombstone()
    }

    #[inline]
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.winner().is_expired(now_ms)
    }

    /// Number of versions (siblings, tombstones included).
    pub fn version_count(&self) -> usize {
        if self.head().several {
            self.versions().len()
        } else {
            1
        }
    }

    /// When every version is dead (tombstones and expired values), the latest time one died:
    /// the key can be purged once that is older than the tombstone grace. None if any version
    /// is live.
    pub fn dead_since(&self, now_ms: u64) -> Option<u64> {
        if let Some(v) = self.single() {
            return v.dead_since(now_ms);
        }
        self.versions()
            .iter()
            .map(|v| v.value.dead_since(now_ms))
            .try_fold(0, |acc, d| d.map(|d| acc.max(d)))
    }

    /// When every version will be dead if nothing is written: the latest tombstone timestamp
    /// or expiry; None while a version lives forever (a value without expiry).
    pub fn death_at(&self) -> Option<u64> {
        let at = |v: &VersionRef<'_>| {
            if v.is_tombstone() {
                Some(v.deleted_at())
            } else {
                v.expires_at_ms
            }
        };
        if let Some(v) = self.single() {
            return at(&v);
        }
        self.versions()
            .iter()
            .map(|v| at(&v.value))
            .try_fold(0, |acc, d| d.map(|d| acc.max(d)))
    }

    /// The key's causal context (every write it has seen), as clients get it.
    pub fn context(&self) -> VersionVector {
        let h = self.head();
        SiblingsHeader::decode(&self.0[h.header_start..h.header_end])
            .map(|h| h.context)
            .unwrap_or_default()
    }

    /// The causal context's encoding (the opaque token of protocol.md §2.4).
    pub fn context_bytes(&self) -> ClockBytes {
        let mut b = ClockBytes::new();
        self.context().encode(&mut b);
        b
    }

    /// What the shard tracks of an entry, found with one decoding: the winner's expiry and
    /// whether it is a tombstone, when every version is a tombstone (`dead_since(0)`), and
    /// [`death_at`](Self::death_at).
    pub fn fate(&self) -> Fate {
        let of = |w: VersionRef<'_>, all_tombstones: Option<u64>, death_at: Option<u64>| Fate {
            expires_at_ms: w.value_expiry(),
            tombstone: w.is_tombstone(),
            all_tombstones_since: all_tombstones,
            death_at,
        };
        match self.single() {
            Some(v) => {
                let dead = v.is_tombstone().then(|| v.deleted_at());
                of(v, dead, dead.or(v.expires_at_ms))
            }
            None => of(self.winner(), self.dead_since(0), self.death_at()),
        }
    }

    /// The encoding, as written to the WAL and snapshots.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Rebuilds an entry read from disk, checking every part (the bytes passed a checksum,
    /// but a bug or a forged file must not cause a panic or a wrong read later).
    pub fn from_bytes(b: &[u8]) -> Option<Entry> {
        let mut rest = b;
        let key_len = usize::try_from(get_varint(&mut rest).ok()?).ok()?;
        rest = rest.get(key_len..)?;
        let hdr = get_varint(&mut rest).ok()?;
        let header_len = usize::try_from(hdr >> 1).ok()?;
        let header = SiblingsHeader::decode(rest.get(..header_len)?).ok()?;
        let n = header.dots.len();
        if n == 0 || (hdr & 1 == 1) != (n > 1) {
            return None;
        }
        let mut body = &rest[header_len..];
        for i in 0..n {
            VersionRef::decode(&mut body, i + 1 == n)?;
        }
        Some(Entry(b.into()))
    }

    /// Bytes this entry occupies on the heap (for INFO memory).
    pub fn heap_size(&self) -> usize {
        self.0.len()
    }
}

/// The order of versions for a single-value view: timestamp, then actor (then dot, in
/// `winner_by`).
fn winner_key(v: &Version<VersionRef<'_>>) -> (u64, u64) {
    (v.value.timestamp_ms, v.dot.actor)
}

/// Keeps only the single-value winner (last-write-wins).
/// A counter winner keeps its concurrent counter versions: reads join them, and dropping one
/// would drop its increments (see [`super::counter`]).
pub fn resolve_lww(versions: &mut Versions<'_>) {
    let Some(w) = versions
        .winner_by(winner_key)
        .map(|w| (w.dot, w.value.kind()))
    else {
        return;
    };
    match w.1 {
        ValueKind::Bytes => versions.resolve_lww(winner_key),
        ValueKind::Counter => {
            versions.retain(|v| v.dot == w.0 || v.value.kind() == ValueKind::Counter)
        }
    }
}

/// One line per entry for the `ringkv::versions` trace log: its context, then each version's
/// dot and the first bytes of its value (enough to follow a write through the replicas).
pub struct Brief<'a>(pub &'a Entry);

impl std::fmt::Display for Brief<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        /// Value bytes shown per version.
        const SHOWN_BYTES: usize = 24;
        let v = self.0.versions();
        write!(f, "ctx=[")?;
        for (i, (a, c)) in v.context_ref().iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{a:x}:{c}")?;
        }
        write!(f, "] vals=[")?;
        for (i, x) in v.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            let val = x.value.value;
            let shown = String::from_utf8_lossy(&val[..val.len().min(SHOWN_BYTES)]);
            let dead = if x.value.is_tombstone() { "(del)" } else { "" };
            write!(f, "{sep}{:x}:{}={shown}{dead}", x.dot.actor, x.dot.counter)?;
        }
        write!(f, "]")
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.versions();
        let shown: Vec<_> = v
            .iter()
            .map(|v| {
                (
                    v.dot,
                    v.value.timestamp_ms,
                    v.value.expires_at_ms,
                    v.value.is_tombstone(),
                    v.value.value.len(),
                )
            })
            .collect();
        f.debug_struct("Entry")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("context", v.context_ref())
            .field("versions (dot, ts, exp, tombstone, len)", &shown)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::dvv::{Dot, VersionVector};
    use super::*;

    fn one(actor: u64, v: VersionRef<'_>) -> Versions<'_> {
        let mut s = Versions::new();
        s.overwrite(actor, v);
        s
    }

    #[test]
    fn layout_roundtrip() {
        for exp in [None, Some(99u64)] {
            let e = Entry::new(b"k1", &one(12345, VersionRef::value(b"hello", 42, exp)));
            assert_eq!(e.key(), b"k1");
            assert_eq!(e.value(), b"hello");
            assert_eq!(e.timestamp_ms(), 42);
            assert_eq!(e.expires_at_ms(), exp);
            assert_eq!(e.is_expired(100), exp.is_some());
            let mut ctx = VersionVector::new();
            ctx.add_dot(Dot {
                actor: 12345,
                counter: 1,
            });
            assert_eq!(e.context(), ctx);
            assert_eq!(Entry::from_bytes(e.as_bytes()), Some(e.clone()));
        }
    }

    #[test]
    fn small_entry_is_small() {
        // The largest actor a node draws (56 bits: an 8-byte varint), a dot counter after
        // 2^34 writes to the shard, and a timestamp of this century.
        let mut s = Versions::new();
        let floor = 1 << 34;
        s.overwrite_from(
            crate::store::MAX_NODE_ID,
            floor,
            VersionRef::value(&[b'v'; 16], 1_800_000_000_000, None),
        );
        let e = Entry::new(&[b'k'; 16], &s);
        // Fits a 64-byte malloc chunk (56 usable bytes with glibc).
        assert!(e.heap_size() <= 56, "{}", e.heap_size());
    }

    #[test]
    fn siblings_roundtrip_and_winner() {
        let empty = VersionVector::new();
        let mut s = one(7, VersionRef::value(b"a", 10, None));
        s.update(&empty, 9, VersionRef::value(b"bb", 10, Some(500)));
        s.update(&empty, 3, VersionRef::tombstone(5));
        let e = Entry::new(b"key", &s);
        assert_eq!(e.version_count(), 3);
        assert_eq!(Entry::from_bytes(e.as_bytes()), Some(e.clone()));
        // Same timestamp: the greater actor (9) wins.
        assert_eq!(e.value(), b"bb");
        assert_eq!(e.expires_at_ms(), Some(500));
        let back = e.versions();
        assert_eq!(back.encoded_header(), s.encoded_header());
        let values: Vec<_> = back.iter().map(|v| v.value.value).collect();
        assert_eq!(values, [&b""[..], b"a", b"bb"], "in dot (actor) order");
        assert_eq!(e.dead_since(1000), None, "actor 7's value is live");
    }

    #[test]
    fn dead_since_is_the_latest_death() {
        let mut s = one(1, VersionRef::tombstone(40));
        s.update(
            &VersionVector::new(),
            2,
            VersionRef::value(b"x", 10, Some(70)),
        );
        let e = Entry::new(b"k", &s);
        assert_eq!(e.dead_since(60), None);
        assert_eq!(e.dead_since(80), Some(70));
    }

    #[test]
    fn malformed_bytes_are_refused() {
        let e = Entry::new(b"key", &one(5, VersionRef::value(b"value", 1, Some(3))));
        let b = e.as_bytes();
        for cut in 0..b.len() {
            // A shorter last value is still well-formed; anything cut inside the fixed parts
            // is not.
            if cut < b.len() - 5 {
                assert!(Entry::from_bytes(&b[..cut]).is_none(), "cut at {cut}");
            }
        }
        let mut bad = b.to_vec();
        let flags_at = b.len() - 5 - 2 - 1;
        bad[flags_at] |= 0x80;
        assert!(Entry::from_bytes(&bad).is_none(), "unknown flag bit");
    }
}
