//! WAL records and segment headers, byte by byte (docs/storage.md has the same tables).
//!
//! ```text
//! record:  crc32 u32 LE | len u32 LE | type u8 | seq u64 LE | payload (len bytes)
//!          crc32 (crc32fast, IEEE) covers every byte after itself: len, type, seq, payload
//! segment: magic "RKVWAL01" | format version u32 LE | shard u32 LE | first seq u64 LE | records
//! ```

pub const RECORD_HEADER: usize = 17;
pub const SEGMENT_MAGIC: &[u8; 8] = b"RKVWAL01";
pub const SEGMENT_HEADER: usize = 24;
pub const FORMAT_VERSION: u32 = 1;
/// No record is larger than this (a value is bounded by --max-frame-bytes, at most 2 GiB).
pub const MAX_RECORD: usize = (1 << 31) + 1024;

/// A new version of a key: the payload is the entry's encoding (store::Entry).
pub const PUT: u8 = 1;
/// A key removed: the payload is the key.
pub const DEL: u8 = 2;
/// Every key of the shard removed (FLUSHDB): empty payload.
pub const CLEAR: u8 = 3;

/// Appends one record to `buf`.
pub fn append(buf: &mut Vec<u8>, kind: u8, seq: u64, payload: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

pub fn segment_header(shard: u32, first_seq: u64) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&shard.to_le_bytes());
    h[16..24].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// One decoded record, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: u8,
    pub seq: u64,
    pub payload: &'a [u8],
}

/// Why reading stopped before the end of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The segment ends inside a record (or its header): what a crash mid-write leaves.
    Torn { offset: usize },
    /// A complete record (or the header) fails its checks: the disk returned wrong data.
    Corrupt { offset: usize, why: &'static str },
}

/// Result of reading a segment.
#[derive(Debug)]
pub struct Scan {
    pub first_seq: u64,
    pub records: usize,
    /// Offset just past the last good record.
    pub good_len: usize,
    pub damage: Option<Damage>,
}

/// Little-endian u32 at `at` (callers check the bounds).
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Little-endian u64 at `at` (callers check the bounds).
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Reads a segment, calling `f` for each good record in order, and stops at the first damage.
///
/// Segments are zero-filled ahead of the write position, so a tail of zeros is the normal end
/// of a segment (reported with no damage, `good_len` short of the file's length).
///
/// Torn versus corrupt (as TigerBeetle tells them apart): a record whose length runs past the
/// end of the file is torn. A bad record is torn if nothing but zeros follows its end (a crash
/// can persist some of a write and not the rest); if anything else follows, it is corruption.
pub fn scan(data: &[u8], shard: u32, mut f: impl FnMut(Record<'_>)) -> Scan {
    let mut s = Scan {
        first_seq: 0,
        records: 0,
        good_len: 0,
        damage: None,
    };
    if data.len() < SEGMENT_HEADER {
        s.damage = Some(Damage::Torn { offset: 0 });
        return s;
    }
    if &data[..8] != SEGMENT_MAGIC {
        s.damage = Some(Damage::Corrupt {
            offset: 0,
            why: "bad segment magic",
        });
        return s;
    }
    if u32_at(data, 8) != FORMAT_VERSION {
        s.damage = Some(Damage::Corrupt {
            offset: 8,
            why: "unsupported segment format version",
        });
        return s;
    }
    if u32_at(data, 12) != shard {
        s.damage = Some(Damage::Corrupt {
            offset: 12,
            why: "segment belongs to another shard",
        });
        return s;
    }
    s.first_seq = u64_at(data, 16);
    let mut pos = SEGMENT_HEADER;
    s.good_len = pos;
    let mut last_seq = None::<u64>;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.iter().all(|&b| b == 0) {
            return s;
        }
        if rest.len() < RECORD_HEADER {
            s.damage = Some(Damage::Torn { offset: pos });
            return s;
        }
        let len = u32_at(rest, 4) as usize;
        if len > MAX_RECORD {
            s.damage = Some(Damage::Corrupt {
                offset: pos,
                why: "record length out of range",
            });
            return s;
        }
        let end = RECORD_HEADER + len;
        if rest.len() < end {
            s.damage = Some(Damage::Torn { offset: pos });
            return s;
        }
        let crc = u32_at(rest, 0);
        if crc32fast::hash(&rest[4..end]) != crc {
            s.damage = Some(if rest[end..].iter().all(|&b| b == 0) {
                Damage::Torn { offset: pos }
            } else {
                Damage::Corrupt {
                    offset: pos,
                    why: "record checksum mismatch",
                }
            });
            return s;
        }
        let kind = rest[8];
        let seq = u64_at(rest, 9);
        if !matches!(kind, PUT | DEL | CLEAR) || last_seq.is_some_and(|l| seq <= l) {
            s.damage = Some(Damage::Corrupt {
                offset: pos,
                why: if matches!(kind, PUT | DEL | CLEAR) {
                    "sequence numbers out of order"
                } else {
                    "unknown record type"
                },
            });
            return s;
        }
        last_seq = Some(seq);
        f(Record {
            kind,
            seq,
            payload: &rest[RECORD_HEADER..end],
        });
        s.records += 1;
        pos += end;
        s.good_len = pos;
    }
    s
}

/// Counts records that still check out after `offset` (how much a repair drops).
pub fn count_recoverable_after(data: &[u8], offset: usize) -> usize {
    let mut n = 0;
    let mut pos = offset + 1;
    while pos + RECORD_HEADER <= data.len() {
        let rest = &data[pos..];
        let len = u32_at(rest, 4) as usize;
        let end = RECORD_HEADER.saturating_add(len);
        if len <= MAX_RECORD
            && rest.len() >= end
            && crc32fast::hash(&rest[4..end]) == u32_at(rest, 0)
        {
            n += 1;
            pos += end;
        } else {
            pos += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(n: u64) -> Vec<u8> {
        let mut b = segment_header(3, 1).to_vec();
        for i in 1..=n {
            append(&mut b, PUT, i, format!("payload-{i}").as_bytes());
        }
        b
    }

    #[test]
    fn clean_scan() {
        let b = segment(5);
        let mut seqs = vec![];
        let s = scan(&b, 3, |r| seqs.push(r.seq));
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        assert_eq!(s.damage, None);
        assert_eq!(s.good_len, b.len());
    }

    #[test]
    fn every_cut_of_the_last_record_is_torn() {
        let full = segment(4);
        let three = {
            let mut n = 0;
            scan(&segment(3), 3, |_| n += 1);
            segment(3).len()
        };
        for cut in three + 1..full.len() {
            let s = scan(&full[..cut], 3, |_| {});
            assert_eq!(s.records, 3, "cut {cut}");
            assert_eq!(s.good_len, three);
            assert!(matches!(s.damage, Some(Damage::Torn { .. })), "cut {cut}");
        }
    }

    #[test]
    fn flip_in_the_middle_is_corrupt() {
        let mut b = segment(5);
        let at = SEGMENT_HEADER + 30;
        b[at] ^= 1;
        let s = scan(&b, 3, |_| {});
        assert!(
            matches!(s.damage, Some(Damage::Corrupt { .. })),
            "{:?}",
            s.damage
        );
        assert!(count_recoverable_after(&b, s.good_len) >= 3);
    }
}
