//! The key space calls of a cluster (protocol.md §6.2): SCAN_PARTITION reads a slice of one
//! partition's live keys in hash order from one replica; COUNT_KEYS counts the live keys of a
//! list of partitions. They carry SCAN, KEYS, DBSIZE, RANDOMKEY and FLUSHALL across nodes.
//!
//! ```text
//! SCAN_PARTITION request: u32 partition, u64 from, u32 count, u8 flags, bytes pattern
//!   reply Bulk:           u8 more, u64 next, u32 examined, u32 n, n × bytes key
//! COUNT_KEYS request:     u32 n, n × u32 partition
//!   reply Bulk:           u32 n, n × u64 count
//! ```

use bytes::{BufMut, BytesMut};

use crate::wire::{put_bytes, Reader};
use crate::ProtoError;

/// Most keys one SCAN_PARTITION may examine (its `count`).
pub const MAX_SCAN_PARTITION_COUNT: u32 = 100_000;
/// Most partitions one COUNT_KEYS may name (every partition of the largest ring).
pub const MAX_COUNT_KEYS_PARTITIONS: u32 = 1 << 16;
/// SCAN_PARTITION flags bit 0: `pattern` is a MATCH pattern (else it is empty and unused).
pub const SCAN_FLAG_MATCH: u8 = 1;

/// A SCAN_PARTITION request: examine up to `count` live keys of `partition` whose hash is at
/// least `from` (in hash order), and return those matching `pattern`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanPartition<'a> {
    pub partition: u32,
    /// Resume position: the smallest key hash still to examine (inclusive).
    pub from: u64,
    /// Keys to examine, 1..=[`MAX_SCAN_PARTITION_COUNT`] (a bound on work, as Redis's COUNT).
    pub count: u32,
    /// MATCH pattern (Redis glob), or None for every key.
    pub pattern: Option<&'a [u8]>,
}

impl<'a> ScanPartition<'a> {
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<ScanPartition<'a>, ProtoError> {
        let partition = r.u32()?;
        let from = r.u64()?;
        let count = r.u32()?;
        if count == 0 || count > MAX_SCAN_PARTITION_COUNT {
            return Err(r.error("count out of range"));
        }
        let flags = r.u8()?;
        if flags & !SCAN_FLAG_MATCH != 0 {
            return Err(r.error("unknown flags"));
        }
        let pattern = r.bytes()?;
        let pattern = if flags & SCAN_FLAG_MATCH != 0 {
            Some(pattern)
        } else if pattern.is_empty() {
            None
        } else {
            return Err(r.error("pattern without its flag"));
        };
        Ok(ScanPartition {
            partition,
            from,
            count,
            pattern,
        })
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        out.put_u32(self.partition);
        out.put_u64(self.from);
        out.put_u32(self.count);
        out.put_u8(if self.pattern.is_some() {
            SCAN_FLAG_MATCH
        } else {
            0
        });
        put_bytes(out, self.pattern.unwrap_or_default());
    }
}

/// The reply of SCAN_PARTITION (the bytes of its Bulk).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanSlice {
    /// Where to resume in this partition (the hash of the first key not examined), or None
    /// once the partition's end was reached.
    pub next: Option<u64>,
    /// Live keys examined (counted toward COUNT, matching or not).
    pub examined: u32,
    /// The examined keys that match, in hash order.
    pub keys: Vec<Vec<u8>>,
}

impl ScanSlice {
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(u8::from(self.next.is_some()));
        out.put_u64(self.next.unwrap_or(0));
        out.put_u32(self.examined);
        out.put_u32(self.keys.len() as u32);
        for k in &self.keys {
            put_bytes(out, k);
        }
    }

    pub fn decode(buf: &[u8]) -> Result<ScanSlice, ProtoError> {
        let mut r = Reader::new(buf, "SCAN_PARTITION");
        let next = match (r.u8()?, r.u64()?) {
            (0, 0) => None,
            (1, at) => Some(at),
            (0, _) => return Err(r.error("next set past the partition's end")),
            _ => return Err(r.error("unknown more flag")),
        };
        let examined = r.u32()?;
        let n = r.u32()? as usize;
        // Each key takes at least its 4 length bytes: bound the count before reserving.
        if n > r.remaining() / 4 {
            return Err(r.error("truncated"));
        }
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            keys.push(r.bytes()?.to_vec());
        }
        r.finish()?;
        Ok(ScanSlice {
            next,
            examined,
            keys,
        })
    }
}

pub(crate) fn read_partitions(r: &mut Reader<'_>) -> Result<Vec<u32>, ProtoError> {
    let n = r.u32()?;
    if n > MAX_COUNT_KEYS_PARTITIONS {
        return Err(r.error("too many partitions"));
    }
    if n as usize > r.remaining() / 4 {
        return Err(r.error("truncated"));
    }
    (0..n).map(|_| r.u32()).collect()
}

pub(crate) fn put_partitions(out: &mut BytesMut, partitions: &[u32]) {
    out.put_u32(partitions.len() as u32);
    for p in partitions {
        out.put_u32(*p);
    }
}

/// The reply body of COUNT_KEYS: one count per partition asked for, in the same order.
pub fn encode_counts(counts: &[u64], out: &mut BytesMut) {
    out.put_u32(counts.len() as u32);
    for c in counts {
        out.put_u64(*c);
    }
}

pub fn decode_counts(buf: &[u8]) -> Result<Vec<u64>, ProtoError> {
    let mut r = Reader::new(buf, "COUNT_KEYS");
    let n = r.u32()? as usize;
    if n > r.remaining() / 8 {
        return Err(r.error("truncated"));
    }
    let counts = (0..n).map(|_| r.u64()).collect::<Result<Vec<u64>, _>>()?;
    r.finish()?;
    Ok(counts)
}
