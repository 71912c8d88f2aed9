//! The payload of a TXN record: one command's changes to several shards, every part of it.
//!
//! ```text
//! txn:  parts u32 LE | part*
//! part: shard u32 LE | seq u64 LE | records u32 LE | (kind u8 | len u32 LE | payload)*
//! ```
//!
//! A command's records in one shard, when it wrote more than one (MSET of keys of one shard,
//! RENAME within a shard), are one TXN of one part, so that a torn WAL tail keeps all of them or
//! none. A command that wrote to several shards has one part per shard, and the same payload is
//! written to the WAL of every participant (each copy under the sequence
//! number it took in that shard, which is also the part's `seq` for that shard), so that a
//! crash which loses one participant's copy can be repaired from any other: see
//! docs/storage.md, "Multi-shard writes". The parts' records are ordinary VERSIONS/DEL/CLEAR
//! records, applied as a shard replays them (their payloads are opaque here).

use super::{u32_at, u64_at, CLEAR, DEL, VERSIONS};

/// At most this many parts (one per shard, and a node has at most 65536 shards).
pub const MAX_PARTS: usize = 65536;
/// At most this many records in one part (MSET with the most arguments a request may carry
/// writes half as many keys).
pub const MAX_PART_RECORDS: usize = 1 << 20;
/// Bytes of a part before its records.
const PART_HEADER: usize = 16;
/// Bytes of a record inside a part before its payload.
const REC_HEADER: usize = 5;

/// Starts a TXN payload of `parts` parts in `buf` (cleared first).
pub fn begin(buf: &mut Vec<u8>, parts: u32) {
    buf.clear();
    buf.extend_from_slice(&parts.to_le_bytes());
}

/// Starts a part; returns where its record count goes (see [`end_part`]).
pub fn begin_part(buf: &mut Vec<u8>, shard: u32, seq: u64) -> usize {
    buf.extend_from_slice(&shard.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    let at = buf.len();
    buf.extend_from_slice(&0u32.to_le_bytes());
    at
}

pub fn push_record(buf: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    buf.push(kind);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Ends the part begun at `at` with its record count.
pub fn end_part(buf: &mut [u8], at: usize, records: u32) {
    buf[at..at + 4].copy_from_slice(&records.to_le_bytes());
}

/// One shard's part of a decoded TXN payload. Every record in it was checked by [`decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part<'a> {
    pub shard: u32,
    /// The sequence number this transaction took in that shard's WAL.
    pub seq: u64,
    pub count: usize,
    records: &'a [u8],
}

impl<'a> Part<'a> {
    /// The part's records, (kind, payload), in the order they were applied.
    pub fn records(&self) -> impl Iterator<Item = (u8, &'a [u8])> + 'a {
        let mut rest = self.records;
        std::iter::from_fn(move || {
            if rest.len() < REC_HEADER {
                return None;
            }
            let len = u32_at(rest, 1) as usize;
            let (kind, payload) = (rest[0], rest.get(REC_HEADER..REC_HEADER + len)?);
            rest = &rest[REC_HEADER + len..];
            Some((kind, payload))
        })
    }
}

/// Decodes and checks a TXN payload: at least one part, shards in strictly ascending order,
/// every record inside its part with a VERSIONS, DEL or CLEAR type, and nothing after the last
/// part. Claimed counts are checked against the bytes present before anything is sized.
pub fn decode(payload: &[u8]) -> Result<Vec<Part<'_>>, &'static str> {
    if payload.len() < 4 {
        return Err("transaction record too short");
    }
    let n = u32_at(payload, 0) as usize;
    if !(1..=MAX_PARTS).contains(&n) || n > (payload.len() - 4) / PART_HEADER {
        return Err("transaction record: part count out of range");
    }
    let mut parts = Vec::with_capacity(n);
    let mut pos = 4;
    for _ in 0..n {
        let Some(head) = payload.get(pos..pos + PART_HEADER) else {
            return Err("transaction record: part runs past the end");
        };
        let shard = u32_at(head, 0);
        let seq = u64_at(head, 4);
        let count = u32_at(head, 12) as usize;
        if parts.last().is_some_and(|p: &Part<'_>| p.shard >= shard) {
            return Err("transaction record: parts not in ascending shard order");
        }
        if count == 0 || count > MAX_PART_RECORDS {
            return Err("transaction record: record count out of range");
        }
        pos += PART_HEADER;
        let start = pos;
        for _ in 0..count {
            let Some(h) = payload.get(pos..pos + REC_HEADER) else {
                return Err("transaction record: record runs past the end");
            };
            if !matches!(h[0], VERSIONS | DEL | CLEAR) {
                return Err("transaction record: record of an unknown type");
            }
            let len = u32_at(h, 1) as usize;
            if payload.len() - pos - REC_HEADER < len {
                return Err("transaction record: record runs past the end");
            }
            pos += REC_HEADER + len;
        }
        parts.push(Part {
            shard,
            seq,
            count,
            records: &payload[start..pos],
        });
    }
    if pos != payload.len() {
        return Err("transaction record: bytes after the last part");
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        begin(&mut b, 2);
        let at = begin_part(&mut b, 1, 7);
        push_record(&mut b, VERSIONS, b"entry-a");
        push_record(&mut b, DEL, b"key-b");
        end_part(&mut b, at, 2);
        let at = begin_part(&mut b, 5, 70);
        push_record(&mut b, VERSIONS, b"");
        end_part(&mut b, at, 1);
        b
    }

    #[test]
    fn round_trip() {
        let b = sample();
        let parts = decode(&b).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].shard, parts[0].seq, parts[0].count), (1, 7, 2));
        let recs: Vec<_> = parts[0].records().collect();
        assert_eq!(
            recs,
            vec![(VERSIONS, &b"entry-a"[..]), (DEL, &b"key-b"[..])]
        );
        assert_eq!(
            parts[1].records().collect::<Vec<_>>(),
            vec![(VERSIONS, &b""[..])]
        );
    }

    #[test]
    fn every_cut_and_every_bit_flip_is_an_error_or_a_consistent_decode() {
        let b = sample();
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err(), "cut {cut}");
        }
        for at in 0..b.len() {
            for bit in 0..8 {
                let mut v = b.clone();
                v[at] ^= 1 << bit;
                if let Ok(parts) = decode(&v) {
                    // Whatever decodes is self-consistent: every counted record is there.
                    for p in parts {
                        assert_eq!(p.records().count(), p.count, "flip {at}.{bit}");
                    }
                }
            }
        }
    }

    #[test]
    fn claimed_counts_are_checked_before_sizing() {
        let mut b = sample();
        b[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&b).is_err());
        let mut b = sample();
        b[..4].copy_from_slice(&0u32.to_le_bytes());
        assert!(decode(&b).is_err(), "no part");
        let mut b = sample();
        b[..4].copy_from_slice(&1u32.to_le_bytes());
        assert!(decode(&b).is_err(), "bytes after the only part");
        let mut b = sample();
        b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&b).is_err());
    }

    #[test]
    fn nested_or_unknown_records_are_refused() {
        let mut b = Vec::new();
        begin(&mut b, 2);
        for (shard, kind) in [(0, VERSIONS), (1, super::super::TXN)] {
            let at = begin_part(&mut b, shard, 1);
            push_record(&mut b, kind, b"x");
            end_part(&mut b, at, 1);
        }
        assert!(decode(&b).is_err());
    }
}
