//! One versioned value in one heap allocation.
//!
//! The common case (16-byte key, 16-byte value, one clock entry, no TTL) must stay small: a
//! separate allocation per field would double the bytes per key. Layout:
//!
//! ```text
//! flags u8 | key_len varint | clock_len varint | timestamp_ms u64 LE | [expires_at_ms u64 LE]
//! | clock (VectorClock::encode) | key | value
//! ```

use super::clock::{get_varint, put_varint, varint_len, VectorClock};

const TOMBSTONE: u8 = 1;
const EXPIRES: u8 = 2;

/// The parts of a new version.
pub struct NewVersion<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub clock: &'a [u8],
    pub timestamp_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub tombstone: bool,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Entry(Box<[u8]>);

struct Layout {
    clock: usize,
    key: usize,
    value: usize,
}

impl Entry {
    pub fn new(v: &NewVersion<'_>) -> Entry {
        // Exact size: into_boxed_slice must not reallocate.
        let size = 1
            + varint_len(v.key.len() as u64)
            + varint_len(v.clock.len() as u64)
            + 8
            + if v.expires_at_ms.is_some() { 8 } else { 0 }
            + v.clock.len()
            + v.key.len()
            + v.value.len();
        let mut buf = Vec::with_capacity(size);
        let mut flags = 0;
        if v.tombstone {
            flags |= TOMBSTONE;
        }
        if v.expires_at_ms.is_some() {
            flags |= EXPIRES;
        }
        buf.push(flags);
        put_varint(&mut buf, v.key.len() as u64);
        put_varint(&mut buf, v.clock.len() as u64);
        buf.extend_from_slice(&v.timestamp_ms.to_le_bytes());
        if let Some(at) = v.expires_at_ms {
            buf.extend_from_slice(&at.to_le_bytes());
        }
        buf.extend_from_slice(v.clock);
        buf.extend_from_slice(v.key);
        buf.extend_from_slice(v.value);
        Entry(buf.into_boxed_slice())
    }

    #[inline]
    fn flags(&self) -> u8 {
        self.0[0]
    }

    /// Offsets of the variable parts. The entry was built by `new`, so the varints are valid;
    /// a failure here would be a bug, and yields empty slices rather than a panic.
    #[inline]
    fn layout(&self) -> (Layout, usize) {
        let mut rest = &self.0[1..];
        let key_len = get_varint(&mut rest).unwrap_or(0) as usize;
        let clock_len = get_varint(&mut rest).unwrap_or(0) as usize;
        let ts = self.0.len() - rest.len();
        let clock = ts + if self.flags() & EXPIRES != 0 { 16 } else { 8 };
        let key = clock + clock_len;
        let value = (key + key_len).min(self.0.len());
        (Layout { clock, key, value }, ts)
    }

    fn u64_at(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        if let Some(s) = self.0.get(at..at + 8) {
            b.copy_from_slice(s);
        }
        u64::from_le_bytes(b)
    }

    #[inline]
    pub fn key(&self) -> &[u8] {
        let (l, _) = self.layout();
        &self.0[l.key..l.value]
    }

    #[inline]
    pub fn value(&self) -> &[u8] {
        let (l, _) = self.layout();
        &self.0[l.value..]
    }

    pub fn clock_bytes(&self) -> &[u8] {
        let (l, _) = self.layout();
        &self.0[l.clock..l.key]
    }

    pub fn clock(&self) -> VectorClock {
        VectorClock::decode(self.clock_bytes()).unwrap_or_default()
    }

    pub fn timestamp_ms(&self) -> u64 {
        let (_, ts) = self.layout();
        self.u64_at(ts)
    }

    pub fn expires_at_ms(&self) -> Option<u64> {
        if self.flags() & EXPIRES == 0 {
            return None;
        }
        let (_, ts) = self.layout();
        Some(self.u64_at(ts + 8))
    }

    pub fn is_tombstone(&self) -> bool {
        self.flags() & TOMBSTONE != 0
    }

    #[inline]
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.flags() & EXPIRES != 0 && self.expires_at_ms().is_some_and(|at| at <= now_ms)
    }

    /// The encoding, as written to the WAL and snapshots.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Rebuilds an entry read from disk, checking that its layout is consistent (the bytes
    /// passed a checksum, but a bug or a forged file must not cause a panic later).
    pub fn from_bytes(b: &[u8]) -> Option<Entry> {
        let (&flags, mut rest) = b.split_first()?;
        if flags & !(TOMBSTONE | EXPIRES) != 0 {
            return None;
        }
        let key_len = get_varint(&mut rest).ok()? as usize;
        let clock_len = get_varint(&mut rest).ok()? as usize;
        let fixed: usize = if flags & EXPIRES != 0 { 16 } else { 8 };
        let need = fixed.checked_add(clock_len)?.checked_add(key_len)?;
        if rest.len() < need {
            return None;
        }
        VectorClock::decode(&rest[fixed..fixed + clock_len]).ok()?;
        Some(Entry(b.into()))
    }

    /// Bytes this entry occupies on the heap (for INFO memory).
    pub fn heap_size(&self) -> usize {
        self.0.len()
    }

    /// The same version with another expiry (EXPIRE, PERSIST): the clock is unchanged, as a
    /// TTL change is metadata, not a new write.
    pub fn with_expiry(&self, expires_at_ms: Option<u64>) -> Entry {
        Entry::new(&NewVersion {
            key: self.key(),
            value: self.value(),
            clock: self.clock_bytes(),
            timestamp_ms: self.timestamp_ms(),
            expires_at_ms,
            tombstone: self.is_tombstone(),
        })
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("value_len", &self.value().len())
            .field("clock", &self.clock())
            .field("timestamp_ms", &self.timestamp_ms())
            .field("expires_at_ms", &self.expires_at_ms())
            .field("tombstone", &self.is_tombstone())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_roundtrip() {
        let mut c = VectorClock::new();
        c.increment(12345);
        let clock = c.encoded();
        for exp in [None, Some(99u64)] {
            let e = Entry::new(&NewVersion {
                key: b"k1",
                value: b"hello",
                clock: &clock,
                timestamp_ms: 42,
                expires_at_ms: exp,
                tombstone: false,
            });
            assert_eq!(e.key(), b"k1");
            assert_eq!(e.value(), b"hello");
            assert_eq!(e.clock(), c);
            assert_eq!(e.timestamp_ms(), 42);
            assert_eq!(e.expires_at_ms(), exp);
            assert_eq!(e.is_expired(100), exp.is_some());
        }
    }

    #[test]
    fn small_entry_is_small() {
        let mut c = VectorClock::new();
        c.increment(u32::MAX as u64);
        let e = Entry::new(&NewVersion {
            key: &[b'k'; 16],
            value: &[b'v'; 16],
            clock: &c.encoded(),
            timestamp_ms: 1,
            expires_at_ms: None,
            tombstone: false,
        });
        // Fits a 64-byte malloc chunk (56 usable bytes with glibc).
        assert!(e.heap_size() <= 56, "{}", e.heap_size());
    }
}
