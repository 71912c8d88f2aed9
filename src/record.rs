//! WAL records and segment headers, byte by byte (docs/storage.md has the same tables, and a
//! test checks them against the constants here).
//!
//! ```text
//! record (format 2): header crc32 u32 LE | len u32 LE | type u8 | seq u64 LE | payload crc32 u32 LE
//!                    | payload (len bytes)
//!          header crc32 covers bytes 4..21 (len, type, seq, payload crc32); payload crc32 covers
//!          the payload. Both are crc32fast (IEEE).
//! record (format 1, read only): crc32 u32 LE | len u32 LE | type u8 | seq u64 LE | payload
//!          crc32 covers every byte after itself.
//! segment: magic "RKVWAL01" | format version u32 LE | shard u32 LE | first seq u64 LE | records
//! ```
//!
//! Format 2 checks the header on its own, so that a damaged length is detected as such and can
//! never make a record in the middle of a segment look like the torn end of the log.

/// Bytes of a record header (format 2, written by this build).
pub const RECORD_HEADER: usize = 21;
/// Bytes of a record header in format 1 segments (read, never written).
pub const RECORD_HEADER_V1: usize = 17;
pub const SEGMENT_MAGIC: &[u8; 8] = b"RKVWAL01";
pub const SEGMENT_HEADER: usize = 24;
/// The segment format this build writes.
pub const FORMAT_VERSION: u32 = 2;
/// The older segment format this build still reads (a restart after an upgrade replays the
/// old segments; the writer always starts a new segment, in the new format).
pub const FORMAT_VERSION_V1: u32 = 1;
/// No record is larger than this (a value is bounded by --max-frame-bytes, at most 2 GiB).
pub const MAX_RECORD: usize = (1 << 31) + 1024;

/// Offsets of the fields in a record header (format 2).
pub const OFF_HEADER_CRC: usize = 0;
pub const OFF_LEN: usize = 4;
pub const OFF_TYPE: usize = 8;
pub const OFF_SEQ: usize = 9;
pub const OFF_PAYLOAD_CRC: usize = 17;

/// A new version of a key in data directory format 1: the payload is a format-1 entry
/// (store::legacy). Read and converted, never written.
pub const PUT_V1: u8 = 1;
/// A key removed: the payload is the key.
pub const DEL: u8 = 2;
/// Every key of the shard removed (FLUSHDB): empty payload.
pub const CLEAR: u8 = 3;
/// A key's versions after a write (format 2): the payload is the entry's encoding
/// (store::Entry: causal context, dots, values, tombstones, expiries).
pub const VERSIONS: u8 = 16;
/// One command's changes to several shards, all of them, in every participant's WAL: see
/// [`txn`] for the payload. Its sequence number is the one it took in this shard.
pub const TXN: u8 = 4;

/// Whether `kind` is a record type this build writes and replays.
pub fn known_kind(kind: u8) -> bool {
    matches!(kind, PUT_V1 | DEL | CLEAR | VERSIONS | TXN)
}

/// Appends one record to `buf` (format 2).
pub fn append(buf: &mut Vec<u8>, kind: u8, seq: u64, payload: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let crc = crc32fast::hash(&buf[start + OFF_LEN..start + RECORD_HEADER]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Appends one record in the old format 1 (for tests of reading old segments).
pub fn append_v1(buf: &mut Vec<u8>, kind: u8, seq: u64, payload: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The header of a new segment (format 2).
pub fn segment_header(shard: u32, first_seq: u64) -> [u8; SEGMENT_HEADER] {
    segment_header_version(FORMAT_VERSION, shard, first_seq)
}

/// A segment header of any version (tests build old segments with it).
pub fn segment_header_version(version: u32, shard: u32, first_seq: u64) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..16].copy_from_slice(&shard.to_le_bytes());
    h[16..24].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// One decoded record, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Where the record starts in the segment file.
    pub offset: usize,
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
    /// The segment is in a format this build does not know (written by a newer build): not
    /// damage, and nothing `--repair` may set aside.
    Unsupported { version: u32 },
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

fn zeros(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// What is at one offset of a segment.
enum Step {
    /// Only zeros from here: the normal end of a segment.
    End,
    /// A record that checks out: its header length and payload length.
    Good {
        header: usize,
        len: usize,
    },
    Bad(Damage),
}

/// Reads the record at `pos` of a format 2 segment.
///
/// Torn versus corrupt: the header has its own checksum, so a length that checks out is the
/// length that was written. A record is torn only if the file ends inside it, or if its header
/// or payload fails its checksum and nothing but zeros follows (a crash can persist part of a
/// write into the zero-filled tail and not the rest). If anything else follows, it is
/// corruption: intact records after a damaged one are never dropped silently.
fn step_v2(data: &[u8], pos: usize) -> Step {
    let rest = &data[pos..];
    if zeros(rest) {
        return Step::End;
    }
    if rest.len() < RECORD_HEADER {
        return Step::Bad(Damage::Torn { offset: pos });
    }
    if crc32fast::hash(&rest[OFF_LEN..RECORD_HEADER]) != u32_at(rest, OFF_HEADER_CRC) {
        return Step::Bad(if zeros(&rest[RECORD_HEADER..]) {
            Damage::Torn { offset: pos }
        } else {
            Damage::Corrupt {
                offset: pos,
                why: "record header checksum mismatch",
            }
        });
    }
    let len = u32_at(rest, OFF_LEN) as usize;
    if len > MAX_RECORD {
        return Step::Bad(Damage::Corrupt {
            offset: pos,
            why: "record length out of range",
        });
    }
    let end = RECORD_HEADER + len;
    if rest.len() < end {
        return Step::Bad(Damage::Torn { offset: pos });
    }
    if crc32fast::hash(&rest[RECORD_HEADER..end]) != u32_at(rest, OFF_PAYLOAD_CRC) {
        return Step::Bad(if zeros(&rest[end..]) {
            Damage::Torn { offset: pos }
        } else {
            Damage::Corrupt {
                offset: pos,
                why: "record payload checksum mismatch",
            }
        });
    }
    Step::Good {
        header: RECORD_HEADER,
        len,
    }
}

/// Reads the record at `pos` of a format 1 segment. Its one checksum covers the length too, so
/// a damaged length can look like a record running past the end of the file: such a record
/// counts as torn only if no intact record follows it anywhere in the file.
fn step_v1(data: &[u8], pos: usize) -> Step {
    let rest = &data[pos..];
    if zeros(rest) {
        return Step::End;
    }
    let torn_unless_followed = |why| {
        if count_recoverable_after(data, pos) > 0 {
            Damage::Corrupt { offset: pos, why }
        } else {
            Damage::Torn { offset: pos }
        }
    };
    if rest.len() < RECORD_HEADER_V1 {
        return Step::Bad(Damage::Torn { offset: pos });
    }
    let len = u32_at(rest, 4) as usize;
    if len > MAX_RECORD {
        return Step::Bad(Damage::Corrupt {
            offset: pos,
            why: "record length out of range",
        });
    }
    let end = RECORD_HEADER_V1 + len;
    if rest.len() < end {
        return Step::Bad(torn_unless_followed(
            "record runs past the end of the file, but intact records follow",
        ));
    }
    if crc32fast::hash(&rest[4..end]) != u32_at(rest, 0) {
        return Step::Bad(if zeros(&rest[end..]) {
            torn_unless_followed("record checksum mismatch")
        } else {
            Damage::Corrupt {
                offset: pos,
                why: "record checksum mismatch",
            }
        });
    }
    Step::Good {
        header: RECORD_HEADER_V1,
        len,
    }
}

/// Reads a segment, calling `f` for each good record in order, and stops at the first damage.
///
/// Segments are zero-filled ahead of the write position, so a tail of zeros is the normal end
/// of a segment (reported with no damage, `good_len` short of the file's length).
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
    let version = u32_at(data, 8);
    let step = match version {
        FORMAT_VERSION => step_v2,
        FORMAT_VERSION_V1 => step_v1,
        _ => {
            s.damage = Some(Damage::Unsupported { version });
            return s;
        }
    };
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
        let (header, len) = match step(data, pos) {
            Step::End => return s,
            Step::Bad(d) => {
                s.damage = Some(d);
                return s;
            }
            Step::Good { header, len } => (header, len),
        };
        let rest = &data[pos..];
        let kind = rest[OFF_TYPE];
        let seq = u64_at(rest, OFF_SEQ);
        if !known_kind(kind) || last_seq.is_some_and(|l| seq <= l) {
            s.damage = Some(Damage::Corrupt {
                offset: pos,
                why: if known_kind(kind) {
                    "sequence numbers out of order"
                } else {
                    "unknown record type"
                },
            });
            return s;
        }
        last_seq = Some(seq);
        f(Record {
            offset: pos,
            kind,
            seq,
            payload: &rest[header..header + len],
        });
        s.records += 1;
        pos += header + len;
        s.good_len = pos;
    }
    s
}

/// Calls `f(kind, seq, payload)` for each record of a buffer this build appended (a shard's
/// pending WAL buffer: trusted, whole records back to back; nothing is checked).
pub fn for_each_appended(buf: &[u8], mut f: impl FnMut(u8, u64, &[u8])) {
    let mut pos = 0;
    while buf.len() >= pos + RECORD_HEADER {
        let len = u32_at(buf, pos + OFF_LEN) as usize;
        let start = pos + RECORD_HEADER;
        let Some(payload) = buf.get(start..start + len) else {
            return;
        };
        f(buf[pos + OFF_TYPE], u64_at(buf, pos + OFF_SEQ), payload);
        pos = start + len;
    }
}

pub mod txn;

/// Whether a record at `pos` checks out (either format), and its total length.
fn intact_at(data: &[u8], pos: usize, version: u32) -> Option<usize> {
    let rest = &data[pos..];
    if version == FORMAT_VERSION_V1 {
        if rest.len() < RECORD_HEADER_V1 {
            return None;
        }
        let len = u32_at(rest, 4) as usize;
        let end = RECORD_HEADER_V1.checked_add(len)?;
        (len <= MAX_RECORD
            && rest.len() >= end
            && crc32fast::hash(&rest[4..end]) == u32_at(rest, 0))
        .then_some(end)
    } else {
        if rest.len() < RECORD_HEADER
            || crc32fast::hash(&rest[OFF_LEN..RECORD_HEADER]) != u32_at(rest, OFF_HEADER_CRC)
        {
            return None;
        }
        let len = u32_at(rest, OFF_LEN) as usize;
        let end = RECORD_HEADER.checked_add(len)?;
        (len <= MAX_RECORD
            && rest.len() >= end
            && crc32fast::hash(&rest[RECORD_HEADER..end]) == u32_at(rest, OFF_PAYLOAD_CRC))
        .then_some(end)
    }
}

/// Counts records that still check out after `offset` (how much a repair drops).
pub fn count_recoverable_after(data: &[u8], offset: usize) -> usize {
    if data.len() < SEGMENT_HEADER {
        return 0;
    }
    let version = u32_at(data, 8);
    // A header of zeros never checks out: no record starts in the zero-filled tail.
    let last_nonzero = data.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let mut n = 0;
    let mut pos = offset + 1;
    while pos < last_nonzero {
        match intact_at(data, pos, version) {
            Some(len) => {
                n += 1;
                pos += len;
            }
            None => pos += 1,
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
            append(&mut b, VERSIONS, i, format!("payload-{i}").as_bytes());
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
    fn every_bit_flip_in_a_middle_record_is_corrupt() {
        let clean = segment(5);
        let mut ends = vec![];
        scan(&clean, 3, |r| {
            ends.push(r.offset + RECORD_HEADER + r.payload.len())
        });
        let (start, end) = (ends[1], ends[2]);
        for at in start..end {
            for bit in 0..8 {
                let mut b = clean.clone();
                b[at] ^= 1 << bit;
                let s = scan(&b, 3, |_| {});
                assert_eq!(s.records, 2, "flip {at}.{bit}");
                assert!(
                    matches!(s.damage, Some(Damage::Corrupt { offset, .. }) if offset == start),
                    "flip {at}.{bit}: {:?}",
                    s.damage
                );
                assert_eq!(
                    count_recoverable_after(&b, s.good_len),
                    2,
                    "flip {at}.{bit}"
                );
            }
        }
    }

    fn segment_v1(n: u64) -> Vec<u8> {
        let mut b = segment_header_version(FORMAT_VERSION_V1, 3, 1).to_vec();
        for i in 1..=n {
            append_v1(&mut b, PUT_V1, i, format!("payload-{i}").as_bytes());
        }
        b
    }

    #[test]
    fn format_1_segments_are_still_read() {
        let b = segment_v1(5);
        let mut got = vec![];
        let s = scan(&b, 3, |r| got.push((r.seq, r.payload.to_vec())));
        assert_eq!(s.damage, None);
        assert_eq!(s.good_len, b.len());
        assert_eq!(got.len(), 5);
        assert_eq!(got[4], (5, b"payload-5".to_vec()));
    }

    #[test]
    fn format_1_damaged_length_with_records_after_is_corrupt() {
        let clean = segment_v1(5);
        let mut ends = vec![];
        scan(&clean, 3, |r| {
            ends.push(r.offset + RECORD_HEADER_V1 + r.payload.len())
        });
        let start = ends[1];
        for bit in 0..32 {
            let mut b = clean.clone();
            let len = u32_at(&b, start + 4) ^ (1 << bit);
            b[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
            // Also with the file zero-filled ahead, as the writer leaves it.
            for pad in [0, 4096] {
                let mut b = b.clone();
                b.resize(b.len() + pad, 0);
                let s = scan(&b, 3, |_| {});
                assert_eq!(s.records, 2, "bit {bit} pad {pad}");
                assert!(
                    matches!(s.damage, Some(Damage::Corrupt { .. })),
                    "bit {bit} pad {pad}: {:?}",
                    s.damage
                );
            }
        }
    }

    #[test]
    fn newer_format_is_refused() {
        let mut b = segment(2);
        b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let s = scan(&b, 3, |_| {});
        assert_eq!(
            s.damage,
            Some(Damage::Unsupported {
                version: FORMAT_VERSION + 1
            })
        );
    }
}
