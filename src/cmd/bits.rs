//! Bit commands: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP (BITFIELD is in `bitfield`, LCS in
//! `lcs`). Ported from Redis 7.0's bitops.c, including the order in which arguments are
//! checked (which decides the error a client sees when several are wrong).

use super::{eq, int, CmdError, CmdResult, Command, Ctx};
use crate::store::Tx;
use ringkv_proto::{key_hash, ReplySink};

/// Redis's default proto-max-bulk-len: a bit offset whose byte is at or past it is refused at
/// parse time, as Redis does. A write past this node's value limit (`--max-frame-bytes`,
/// smaller by default) is refused at execution with the error SETRANGE gives.
pub const REDIS_MAX_BULK_BYTES: u64 = 512 * 1024 * 1024;

pub const BIT_OFFSET_ERR: &str = "ERR bit offset is not an integer or out of range";
const BIT_VALUE_ERR: &str = "ERR bit is not an integer or out of range";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitOp {
    And,
    Or,
    Xor,
    Not,
}

/// Parses a bit offset as Redis's `getBitOffsetFromArgument`: `#N` (only where `hash_bits` is
/// given, BITFIELD) means N times the field width; negative or past the bulk limit is an
/// error. The multiplication wraps, as it does in Redis's C.
pub fn bit_offset(arg: &[u8], hash_bits: Option<u32>) -> CmdResult<u64> {
    let (digits, mul) = match (arg.first(), hash_bits) {
        (Some(b'#'), Some(bits)) => (&arg[1..], bits as i64),
        _ => (arg, 1),
    };
    let off = int(digits)
        .map_err(|_| CmdError::msg(BIT_OFFSET_ERR))?
        .wrapping_mul(mul);
    if off < 0 || (off as u64 >> 3) >= REDIS_MAX_BULK_BYTES {
        return Err(CmdError::msg(BIT_OFFSET_ERR));
    }
    Ok(off as u64)
}

/// A write that grows the value to `bytes` must fit this node's value limit: refused before
/// anything is allocated (as SETRANGE and APPEND).
pub fn check_size(bytes: u64, ctx: &Ctx) -> CmdResult<()> {
    if bytes > ctx.max_value as u64 {
        return Err(CmdError::TOO_BIG);
    }
    Ok(())
}

pub fn parse<'a>(name: &'static str, a: &[&'a [u8]]) -> CmdResult<Command<'a>> {
    Ok(match name {
        "setbit" => {
            let off = bit_offset(a[1], None)?;
            let on = match int(a[2]) {
                Ok(0) => false,
                Ok(1) => true,
                _ => return Err(CmdError::msg(BIT_VALUE_ERR)),
            };
            Command::SetBit(a[0], off, on)
        }
        "getbit" => Command::GetBit(a[0], bit_offset(a[1], None)?),
        // Redis answers 0 for a missing key before it reads the range: parsed at execution.
        "bitcount" => Command::BitCount(a[0], a[1..].iter().copied().collect()),
        "bitpos" => {
            let bit = match int(a[1])? {
                0 => false,
                1 => true,
                _ => return Err(CmdError::msg("ERR The bit argument must be 1 or 0.")),
            };
            Command::BitPos(a[0], bit, a[2..].iter().copied().collect())
        }
        "bitop" => {
            let op = if eq(a[0], "AND") {
                BitOp::And
            } else if eq(a[0], "OR") {
                BitOp::Or
            } else if eq(a[0], "XOR") {
                BitOp::Xor
            } else if eq(a[0], "NOT") {
                BitOp::Not
            } else {
                return Err(CmdError::SYNTAX);
            };
            if op == BitOp::Not && a.len() != 3 {
                return Err(CmdError::msg(
                    "ERR BITOP NOT must be called with a single source key.",
                ));
            }
            Command::BitOp(op, a[1..].iter().copied().collect())
        }
        "bitfield" | "bitfield_ro" => {
            Command::BitField(super::bitfield::parse(a, name == "bitfield_ro")?)
        }
        "lcs" => Command::Lcs(super::lcs::parse(a)?),
        _ => return Err(CmdError::unknown(a)),
    })
}

/// A BITCOUNT / BITPOS range, resolved as Redis does: byte indexes `start..=end` into the
/// value, and for BIT ranges masks of the bits of the first and last byte outside the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: i64,
    end: i64,
    first_neg_mask: u8,
    last_neg_mask: u8,
}

/// Clamps `start..=end` (negative counts from the end) to a value of `len` bytes, in bits if
/// `bit`; an empty span has start > end.
fn span(len: usize, mut start: i64, mut end: i64, bit: bool) -> Span {
    let total = if bit { (len as i64) << 3 } else { len as i64 };
    if start < 0 {
        start += total;
    }
    if end < 0 {
        end += total;
    }
    start = start.max(0);
    end = end.max(0).min(total - 1);
    let (mut first_neg_mask, mut last_neg_mask) = (0, 0);
    if bit && start <= end {
        first_neg_mask = !((1u32 << (8 - (start & 7))) - 1) as u8;
        last_neg_mask = ((1u32 << (7 - (end & 7))) - 1) as u8;
        start >>= 3;
        end >>= 3;
    }
    Span {
        start,
        end,
        first_neg_mask,
        last_neg_mask,
    }
}

fn unit(arg: &[u8]) -> CmdResult<bool> {
    if eq(arg, "BIT") {
        Ok(true)
    } else if eq(arg, "BYTE") {
        Ok(false)
    } else {
        Err(CmdError::SYNTAX)
    }
}

/// BITCOUNT of `v` with the range arguments after the key.
pub fn bitcount(v: &[u8], range: &[&[u8]]) -> CmdResult<i64> {
    let s = match range {
        [] => span(v.len(), 0, -1, false),
        [start, end, rest @ ..] if rest.len() <= 1 => {
            let (start, end) = (int(start)?, int(end)?);
            if start < 0 && end < 0 && start > end {
                return Ok(0);
            }
            let bit = match rest.first() {
                Some(u) => unit(u)?,
                None => false,
            };
            span(v.len(), start, end, bit)
        }
        _ => return Err(CmdError::SYNTAX),
    };
    if s.start > s.end {
        return Ok(0);
    }
    let (a, b) = (s.start as usize, s.end as usize);
    let mut n: i64 = v[a..=b].iter().map(|x| x.count_ones() as i64).sum();
    n -= (v[a] & s.first_neg_mask).count_ones() as i64;
    n -= (v[b] & s.last_neg_mask).count_ones() as i64;
    Ok(n)
}

/// Redis's `redisBitpos`: the first bit equal to `bit` in `p`, or for a clear bit not found,
/// the bit just past `p` (the string counts as zero-padded); -1 for a set bit not found.
fn first_bit(p: &[u8], bit: bool) -> i64 {
    let skip = if bit { 0u8 } else { 0xff };
    match p.iter().position(|&b| b != skip) {
        Some(i) => {
            let b = if bit { p[i] } else { !p[i] };
            (i as i64) * 8 + b.leading_zeros() as i64
        }
        None if bit => -1,
        None => (p.len() as i64) * 8,
    }
}

/// BITPOS of `v` with the range arguments after the bit.
pub fn bitpos(v: &[u8], bit: bool, range: &[&[u8]]) -> CmdResult<i64> {
    let len = v.len() as i64;
    let (s, end_given) = match range {
        [] => (span(v.len(), 0, -1, false), false),
        [start, rest @ ..] if rest.len() <= 2 => {
            let start = int(start)?;
            let isbit = match rest.get(1) {
                Some(u) => unit(u)?,
                None => false,
            };
            let end = match rest.first() {
                Some(e) => Some(int(e)?),
                None => None,
            };
            let e = end.unwrap_or(if isbit { (len << 3) + 7 } else { len - 1 });
            (span(v.len(), start, e, isbit), end.is_some())
        }
        _ => return Err(CmdError::SYNTAX),
    };
    if s.start > s.end {
        return Ok(-1);
    }
    let (mut start, end) = (s.start as usize, s.end as usize);
    let mut bytes = end - start + 1;
    // The edge bytes are searched with the bits outside the range forced to the value not
    // searched for; the three steps stop as soon as one finds a bit, as in Redis.
    let edge = |b: u8, mask: u8| if bit { b & !mask } else { b | mask };
    let pos = 'found: {
        if s.first_neg_mask != 0 {
            let mut c = edge(v[start], s.first_neg_mask);
            if s.last_neg_mask != 0 && bytes == 1 {
                c = edge(c, s.last_neg_mask);
            }
            let pos = first_bit(&[c], bit);
            if bytes == 1 || (pos != -1 && pos != 8) {
                break 'found pos;
            }
            start += 1;
            bytes -= 1;
        }
        let cur = bytes - usize::from(s.last_neg_mask != 0);
        if cur > 0 {
            let pos = first_bit(&v[start..start + cur], bit);
            if bytes == cur || (pos != -1 && pos != (cur as i64) << 3) {
                break 'found pos;
            }
            start += cur;
            bytes -= cur;
        }
        first_bit(&[edge(v[end], s.last_neg_mask)], bit)
    };
    // With an explicit end, a clear bit "found" just past the range is not in it.
    if end_given && !bit && pos == (bytes as i64) << 3 {
        return Ok(-1);
    }
    Ok(if pos == -1 {
        -1
    } else {
        pos + ((start as i64) << 3)
    })
}

/// The bit at `off` (0 past the end).
pub fn get_bit(v: &[u8], off: u64) -> bool {
    let byte = (off >> 3) as usize;
    byte < v.len() && v[byte] & (0x80 >> (off & 7)) != 0
}

/// SETBIT: the old bit. Redis writes when the key is created, grows, or the bit changes.
pub fn setbit(
    tx: &mut Tx<'_>,
    key: &[u8],
    off: u64,
    on: bool,
    ctx: &Ctx,
    out: &mut dyn ReplySink,
) -> CmdResult<()> {
    check_size((off >> 3) + 1, ctx)?;
    let h = key_hash(key);
    let shard = tx.shard(h)?;
    let byte = (off >> 3) as usize;
    let cur = shard.get(h, key, ctx.now_ms);
    let old = cur.is_some_and(|e| get_bit(e.value(), off));
    if cur.is_none_or(|e| e.value().len() <= byte) || old != on {
        let (mut v, ttl) = cur.map_or((Vec::new(), None), |e| {
            (e.value().to_vec(), e.expires_at_ms())
        });
        if v.len() <= byte {
            v.resize(byte + 1, 0);
        }
        let mask = 0x80u8 >> (off & 7);
        if on {
            v[byte] |= mask;
        } else {
            v[byte] &= !mask;
        }
        super::strings::write(shard, h, key, &v, ttl, ctx)?;
    }
    out.int(i64::from(old));
    Ok(())
}

/// GETBIT: 0 past the end or for a missing key.
pub fn getbit(
    tx: &mut Tx<'_>,
    key: &[u8],
    off: u64,
    ctx: &Ctx,
    out: &mut dyn ReplySink,
) -> CmdResult<()> {
    let h = key_hash(key);
    let e = tx.shard(h)?.get(h, key, ctx.now_ms);
    out.int(i64::from(e.is_some_and(|e| get_bit(e.value(), off))));
    Ok(())
}

/// BITCOUNT: 0 for a missing key, whatever the range arguments (as Redis 7.0).
pub fn count(
    tx: &mut Tx<'_>,
    key: &[u8],
    range: &[&[u8]],
    ctx: &Ctx,
    out: &mut dyn ReplySink,
) -> CmdResult<()> {
    let h = key_hash(key);
    let n = match tx.shard(h)?.get(h, key, ctx.now_ms) {
        Some(e) => bitcount(e.value(), range)?,
        None => 0,
    };
    out.int(n);
    Ok(())
}

/// BITPOS: a missing key is an infinite run of clear bits (0 for a clear bit, -1 for a set
/// one), whatever the range arguments (as Redis 7.0).
pub fn pos(
    tx: &mut Tx<'_>,
    key: &[u8],
    bit: bool,
    range: &[&[u8]],
    ctx: &Ctx,
    out: &mut dyn ReplySink,
) -> CmdResult<()> {
    let h = key_hash(key);
    let n = match tx.shard(h)?.get(h, key, ctx.now_ms) {
        Some(e) => bitpos(e.value(), bit, range)?,
        None => -i64::from(bit),
    };
    out.int(n);
    Ok(())
}

/// BITOP op dest src...: the result is as long as the longest source (missing bytes are 0);
/// an empty result deletes dest. The new dest has no TTL, as Redis's setKey.
pub fn bitop(
    op: BitOp,
    keys: &[&[u8]],
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    out: &mut dyn ReplySink,
) -> CmdResult<()> {
    let now = ctx.now_ms;
    let (dest, srcs) = keys.split_first().ok_or(CmdError::SYNTAX)?;
    let mut maxlen = 0;
    for &k in srcs {
        let h = key_hash(k);
        maxlen = maxlen.max(tx.shard(h)?.get(h, k, now).map_or(0, |e| e.value().len()));
    }
    let hd = key_hash(dest);
    if maxlen == 0 {
        let shard = tx.shard(hd)?;
        if shard.get(hd, dest, now).is_some() {
            super::strings::delete(shard, hd, dest, ctx)?;
        }
        out.int(0);
        return Ok(());
    }
    // Folded one source at a time (no copy of the sources): byte i of a source shorter than
    // i is 0, as in Redis.
    let mut res = vec![0u8; maxlen];
    for (j, &k) in srcs.iter().enumerate() {
        let h = key_hash(k);
        let e = tx.shard(h)?.get(h, k, now);
        let src = e.as_ref().map_or(&[][..], |e| e.value());
        for (i, r) in res.iter_mut().enumerate() {
            let b = src.get(i).copied().unwrap_or(0);
            *r = match (j, op) {
                (0, BitOp::Not) => !b,
                (0, _) => b,
                (_, BitOp::And) => *r & b,
                (_, BitOp::Or) => *r | b,
                (_, BitOp::Xor) => *r ^ b,
                (_, BitOp::Not) => *r,
            };
        }
    }
    super::strings::write(tx.shard(hd)?, hd, dest, &res, None, ctx)?;
    out.int(maxlen as i64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bc(v: &[u8], r: &[&str]) -> CmdResult<i64> {
        let r: Vec<&[u8]> = r.iter().map(|s| s.as_bytes()).collect();
        bitcount(v, &r)
    }

    fn bp(v: &[u8], bit: bool, r: &[&str]) -> CmdResult<i64> {
        let r: Vec<&[u8]> = r.iter().map(|s| s.as_bytes()).collect();
        bitpos(v, bit, &r)
    }

    /// Values checked against redis-server 7.0 by hand (and by tests/redis_diff.rs).
    #[test]
    fn bitcount_ranges() {
        assert_eq!(bc(b"foobar", &[]), Ok(26));
        assert_eq!(bc(b"foobar", &["0", "0"]), Ok(4));
        assert_eq!(bc(b"foobar", &["1", "1"]), Ok(6));
        assert_eq!(bc(b"foobar", &["1", "1", "BYTE"]), Ok(6));
        assert_eq!(bc(b"foobar", &["5", "30", "BIT"]), Ok(17));
        assert_eq!(bc(b"foobar", &["-1", "-2"]), Ok(0));
        assert_eq!(bc(b"foobar", &["-100", "100"]), Ok(26));
        assert_eq!(bc(b"foobar", &["3", "2", "bit"]), Ok(0));
        assert_eq!(bc(b"\xff", &["1", "6", "BIT"]), Ok(6));
        assert_eq!(bc(b"\xff", &["0", "0", "BIT"]), Ok(1));
        assert_eq!(bc(b"foobar", &["0"]), Err(CmdError::SYNTAX));
        assert_eq!(bc(b"foobar", &["0", "1", "bits"]), Err(CmdError::SYNTAX));
        assert_eq!(bc(b"foobar", &["a", "1"]), Err(CmdError::NOT_INT));
    }

    #[test]
    fn bitpos_ranges() {
        assert_eq!(bp(b"\xff\xf0\x00", false, &[]), Ok(12));
        assert_eq!(bp(b"\x00\xff\xf0", true, &["0"]), Ok(8));
        assert_eq!(bp(b"\x00\xff\xf0", true, &["2"]), Ok(16));
        assert_eq!(bp(b"\x00\xff\xf0", true, &["2", "-1", "BYTE"]), Ok(16));
        assert_eq!(bp(b"\x00\xff\xf0", true, &["7", "15", "BIT"]), Ok(8));
        assert_eq!(bp(b"\x00\xff\xf0", true, &["7", "-3", "BIT"]), Ok(8));
        // All ones: a clear bit is past the end without an end, -1 with one.
        assert_eq!(bp(b"\xff\xff", false, &[]), Ok(16));
        assert_eq!(bp(b"\xff\xff", false, &["0"]), Ok(16));
        assert_eq!(bp(b"\xff\xff", false, &["0", "-1"]), Ok(-1));
        assert_eq!(bp(b"\xff\xff", false, &["3", "9", "BIT"]), Ok(-1));
        assert_eq!(
            bp(b"\xff\xff", false, &["3", "BIT"]),
            Err(CmdError::NOT_INT)
        );
        // All zeros: no set bit.
        assert_eq!(bp(b"\x00\x00", true, &[]), Ok(-1));
        assert_eq!(bp(b"\x00\x00", true, &["1", "12", "bit"]), Ok(-1));
        assert_eq!(bp(b"\x00\x00", false, &["1", "12", "bit"]), Ok(1));
        // Inside one byte, bits 2..5 of 0b1110_0111: the first clear bit is 3.
        assert_eq!(bp(b"\xe7", false, &["2", "5", "BIT"]), Ok(3));
        assert_eq!(bp(b"\xe7", true, &["3", "4", "BIT"]), Ok(-1));
        assert_eq!(bp(b"", false, &[]), Ok(-1));
        assert_eq!(bp(b"", true, &[]), Ok(-1));
        assert_eq!(bp(b"\x00", true, &["1", "2", "3"]), Err(CmdError::SYNTAX));
        assert_eq!(
            bp(b"\x00", true, &["1", "2", "3", "4"]),
            Err(CmdError::SYNTAX)
        );
    }

    #[test]
    fn offsets() {
        assert_eq!(bit_offset(b"0", None), Ok(0));
        assert_eq!(bit_offset(b"4294967295", None), Ok(4294967295));
        assert!(bit_offset(b"4294967296", None).is_err());
        assert!(bit_offset(b"-1", None).is_err());
        assert!(bit_offset(b"#1", None).is_err());
        assert_eq!(bit_offset(b"#3", Some(8)), Ok(24));
        assert!(bit_offset(b"#-1", Some(8)).is_err());
        // Wraps as in C: i64::MAX * 2 = -2, refused.
        assert!(bit_offset(b"#9223372036854775807", Some(2)).is_err());
        assert!(get_bit(b"\x40", 1));
        assert!(!get_bit(b"\x40", 0));
        assert!(!get_bit(b"\x40", 80));
    }
}
