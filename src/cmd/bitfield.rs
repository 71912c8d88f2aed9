//! BITFIELD and BITFIELD_RO: signed and unsigned integers of 1 to 64 (signed) or 63
//! (unsigned) bits at any bit offset of a string, with Redis 7.0's overflow arithmetic
//! (bitops.c: `checkSignedBitfieldOverflow`, `checkUnsignedBitfieldOverflow`).

use super::bits::{bit_offset, check_size};
use super::{eq, int, CmdError, CmdResult, Ctx};
use crate::store::Tx;
use ringkv_proto::{key_hash, ReplySink};

const TYPE_ERR: &str = "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is \
                        not supported but i64 is.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Wrap,
    Sat,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Get,
    /// SET: the value to store.
    Set(i64),
    /// INCRBY: the increment.
    Incr(i64),
}

/// One GET / SET / INCRBY, with the OVERFLOW mode in force where it appeared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    pub signed: bool,
    pub bits: u32,
    pub offset: u64,
    pub overflow: Overflow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitField<'a> {
    pub key: &'a [u8],
    /// On the heap, so that `Command` (moved on every request) stays as small as before.
    pub ops: Vec<Op>,
}

impl BitField<'_> {
    /// Whether any operation writes (SET or INCRBY): the key is then created or grown to
    /// the farthest field written, even if every write fails under OVERFLOW FAIL.
    pub fn writes(&self) -> bool {
        self.ops.iter().any(|o| o.kind != OpKind::Get)
    }
}

/// `i8`, `u16`, ...: lowercase i or u, then 1..=64 bits (1..=63 unsigned).
fn field_type(arg: &[u8]) -> CmdResult<(bool, u32)> {
    let signed = match arg.first() {
        Some(b'i') => true,
        Some(b'u') => false,
        _ => return Err(CmdError::msg(TYPE_ERR)),
    };
    match int(&arg[1..]) {
        Ok(b) if b >= 1 && b <= if signed { 64 } else { 63 } => Ok((signed, b as u32)),
        _ => Err(CmdError::msg(TYPE_ERR)),
    }
}

/// Parses the arguments after the key, in Redis's order: each operation's type, offset and
/// value are checked as it is reached, then BITFIELD_RO refuses writes.
pub fn parse<'a>(a: &[&'a [u8]], read_only: bool) -> CmdResult<BitField<'a>> {
    let mut ops = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut j = 1;
    while j < a.len() {
        let rem = a.len() - j - 1;
        let sub = a[j];
        let arity = if eq(sub, "GET") && rem >= 2 {
            2
        } else if (eq(sub, "SET") || eq(sub, "INCRBY")) && rem >= 3 {
            3
        } else if eq(sub, "OVERFLOW") && rem >= 1 {
            let t = a[j + 1];
            overflow = if eq(t, "WRAP") {
                Overflow::Wrap
            } else if eq(t, "SAT") {
                Overflow::Sat
            } else if eq(t, "FAIL") {
                Overflow::Fail
            } else {
                return Err(CmdError::msg("ERR Invalid OVERFLOW type specified"));
            };
            j += 2;
            continue;
        } else {
            return Err(CmdError::SYNTAX);
        };
        let (signed, bits) = field_type(a[j + 1])?;
        let offset = bit_offset(a[j + 2], Some(bits))?;
        let kind = if arity == 2 {
            OpKind::Get
        } else if eq(sub, "SET") {
            OpKind::Set(int(a[j + 3])?)
        } else {
            OpKind::Incr(int(a[j + 3])?)
        };
        ops.push(Op {
            kind,
            signed,
            bits,
            offset,
            overflow,
        });
        j += arity + 1;
    }
    let bf = BitField { key: a[0], ops };
    if read_only && bf.writes() {
        return Err(CmdError::msg(
            "ERR BITFIELD_RO only supports the GET subcommand",
        ));
    }
    Ok(bf)
}

/// Reads `bits` bits at bit `offset` of `p` as an unsigned number (bits past the end are 0).
pub fn get_unsigned(p: &[u8], offset: u64, bits: u32) -> u64 {
    (0..u64::from(bits)).fold(0u64, |v, j| {
        (v << 1) | u64::from(super::bits::get_bit(p, offset + j))
    })
}

/// The same, sign-extended from the field's top bit.
pub fn get_signed(p: &[u8], offset: u64, bits: u32) -> i64 {
    let v = get_unsigned(p, offset, bits) as i64;
    if bits < 64 && v & (1 << (bits - 1)) != 0 {
        v | (-1i64 << bits)
    } else {
        v
    }
}

/// Writes the low `bits` bits of `value` at bit `offset`; `p` must be long enough.
pub fn set_field(p: &mut [u8], offset: u64, bits: u32, value: u64) {
    for j in 0..u64::from(bits) {
        let on = value & (1 << (u64::from(bits) - 1 - j)) != 0;
        let o = offset + j;
        let mask = 0x80u8 >> (o & 7);
        let b = &mut p[(o >> 3) as usize];
        *b = if on { *b | mask } else { *b & !mask };
    }
}

/// Redis's `checkUnsignedBitfieldOverflow`: None if `value + incr` fits, else the value to
/// store under `ow` (None under FAIL: nothing is stored).
pub fn unsigned_overflow(value: u64, incr: i64, bits: u32, ow: Overflow) -> Option<Option<u64>> {
    let max = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let maxincr = max.wrapping_sub(value) as i64;
    let minincr = (value as i64).wrapping_neg();
    let wrap = || Some(value.wrapping_add(incr as u64) & max);
    if value > max || (incr > 0 && incr > maxincr) {
        Some(match ow {
            Overflow::Wrap => wrap(),
            Overflow::Sat => Some(max),
            Overflow::Fail => None,
        })
    } else if incr < 0 && incr < minincr {
        Some(match ow {
            Overflow::Wrap => wrap(),
            Overflow::Sat => Some(0),
            Overflow::Fail => None,
        })
    } else {
        None
    }
}

/// Redis's `checkSignedBitfieldOverflow`, same contract as [`unsigned_overflow`].
pub fn signed_overflow(value: i64, incr: i64, bits: u32, ow: Overflow) -> Option<Option<i64>> {
    let max = if bits == 64 {
        i64::MAX
    } else {
        (1i64 << (bits - 1)) - 1
    };
    let min = -max - 1;
    let maxincr = (max as u64).wrapping_sub(value as u64) as i64;
    let minincr = min.wrapping_sub(value);
    let wrap = || {
        let mut c = (value as u64).wrapping_add(incr as u64);
        if bits < 64 {
            let mask = u64::MAX << bits;
            if c & (1 << (bits - 1)) != 0 {
                c |= mask;
            } else {
                c &= !mask;
            }
        }
        Some(c as i64)
    };
    let over = value > max || (bits != 64 && incr > maxincr) || (value >= 0 && incr > maxincr);
    let under = value < min || (bits != 64 && incr < minincr) || (value < 0 && incr < minincr);
    if over {
        Some(match ow {
            Overflow::Wrap => wrap(),
            Overflow::Sat => Some(max),
            Overflow::Fail => None,
        })
    } else if under {
        Some(match ow {
            Overflow::Wrap => wrap(),
            Overflow::Sat => Some(min),
            Overflow::Fail => None,
        })
    } else {
        None
    }
}

/// Applies one SET or INCRBY to `v`: the reply (None under OVERFLOW FAIL) and whether a bit
/// changed.
fn apply(v: &mut [u8], op: &Op) -> (Option<i64>, bool) {
    let (new, reply) = if op.signed {
        let old = get_signed(v, op.offset, op.bits);
        let (base, incr) = match op.kind {
            OpKind::Incr(d) => (old, d),
            OpKind::Set(x) => (x, 0),
            OpKind::Get => return (Some(old), false),
        };
        let new = match signed_overflow(base, incr, op.bits, op.overflow) {
            None => Some(base.wrapping_add(incr)),
            Some(limited) => limited,
        };
        let reply = match op.kind {
            OpKind::Incr(_) => new,
            OpKind::Set(_) | OpKind::Get => new.map(|_| old),
        };
        (new.map(|n| (n as u64, old as u64)), reply)
    } else {
        let old = get_unsigned(v, op.offset, op.bits);
        let (base, incr) = match op.kind {
            OpKind::Incr(d) => (old, d),
            OpKind::Set(x) => (x as u64, 0),
            OpKind::Get => return (Some(old as i64), false),
        };
        let new = match unsigned_overflow(base, incr, op.bits, op.overflow) {
            None => Some(base.wrapping_add(incr as u64)),
            Some(limited) => limited,
        };
        let reply = match op.kind {
            OpKind::Incr(_) => new.map(|n| n as i64),
            OpKind::Set(_) | OpKind::Get => new.map(|_| old as i64),
        };
        (new.map(|n| (n, old)), reply)
    };
    match new {
        Some((n, old)) => {
            set_field(v, op.offset, op.bits, n);
            let mask = if op.bits == 64 {
                u64::MAX
            } else {
                (1u64 << op.bits) - 1
            };
            (reply, (n ^ old) & mask != 0)
        }
        None => (None, false),
    }
}

/// Runs BITFIELD / BITFIELD_RO on its key, locked in `tx`.
pub fn exec(
    bf: &BitField<'_>,
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    out: &mut dyn ReplySink,
) -> CmdResult<()> {
    let h = key_hash(bf.key);
    let shard = tx.shard(h)?;
    let cur = shard.get(h, bf.key, ctx.now_ms);
    if !bf.writes() {
        let v = cur.as_ref().map_or(&[][..], |e| e.value());
        out.array(bf.ops.len());
        for op in &bf.ops {
            out.int(if op.signed {
                get_signed(v, op.offset, op.bits)
            } else {
                get_unsigned(v, op.offset, op.bits) as i64
            });
        }
        return Ok(());
    }
    // The string grows to the farthest bit written, before any operation runs (Redis's
    // lookupStringForBitCommand), so a GET after it reads zeros there.
    let need = bf
        .ops
        .iter()
        .filter(|o| o.kind != OpKind::Get)
        .map(|o| ((o.offset + u64::from(o.bits) - 1) >> 3) + 1)
        .max()
        .unwrap_or(0);
    check_size(need, ctx)?;
    let (mut v, ttl, existed) = match cur {
        Some(e) => (e.value().to_vec(), e.expires_at_ms(), true),
        None => (Vec::new(), None, false),
    };
    let mut dirty = !existed || (v.len() as u64) < need;
    if (v.len() as u64) < need {
        v.resize(need as usize, 0);
    }
    out.array(bf.ops.len());
    for op in &bf.ops {
        let (reply, changed) = apply(&mut v, op);
        dirty |= changed;
        match reply {
            Some(n) => out.int(n),
            None => out.nil(),
        }
    }
    if dirty {
        super::strings::write(shard, h, bf.key, &v, ttl, ctx)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_arithmetic() {
        use Overflow::*;
        // u8: 250 + 10 wraps to 4, saturates at 255, fails.
        assert_eq!(unsigned_overflow(250, 10, 8, Wrap), Some(Some(4)));
        assert_eq!(unsigned_overflow(250, 10, 8, Sat), Some(Some(255)));
        assert_eq!(unsigned_overflow(250, 10, 8, Fail), Some(None));
        assert_eq!(unsigned_overflow(250, 5, 8, Fail), None);
        // Below zero: wraps around, saturates at 0.
        assert_eq!(unsigned_overflow(3, -5, 8, Wrap), Some(Some(254)));
        assert_eq!(unsigned_overflow(3, -5, 8, Sat), Some(Some(0)));
        assert_eq!(unsigned_overflow(3, -3, 8, Sat), None);
        // SET of a negative number to an unsigned field: "too big", so SAT gives the max
        // (as Redis), WRAP the low bits.
        assert_eq!(unsigned_overflow(-1i64 as u64, 0, 8, Sat), Some(Some(255)));
        assert_eq!(unsigned_overflow(-2i64 as u64, 0, 8, Wrap), Some(Some(254)));
        // u63 at its limits.
        let max63 = (1u64 << 63) - 1;
        assert_eq!(unsigned_overflow(max63, 1, 63, Wrap), Some(Some(0)));
        assert_eq!(unsigned_overflow(max63, 1, 63, Sat), Some(Some(max63)));
        assert_eq!(unsigned_overflow(0, i64::MIN, 63, Sat), Some(Some(0)));
    }

    #[test]
    fn signed_arithmetic() {
        use Overflow::*;
        assert_eq!(signed_overflow(100, 100, 8, Wrap), Some(Some(-56)));
        assert_eq!(signed_overflow(100, 100, 8, Sat), Some(Some(127)));
        assert_eq!(signed_overflow(-100, -100, 8, Sat), Some(Some(-128)));
        assert_eq!(signed_overflow(-100, -100, 8, Wrap), Some(Some(56)));
        assert_eq!(signed_overflow(-100, -28, 8, Fail), None);
        assert_eq!(signed_overflow(-100, -29, 8, Fail), Some(None));
        // SET of an out-of-range value (incr 0).
        assert_eq!(signed_overflow(200, 0, 8, Wrap), Some(Some(-56)));
        assert_eq!(signed_overflow(-129, 0, 8, Sat), Some(Some(-128)));
        // i64 at its limits: no C overflow, the same wrap.
        assert_eq!(signed_overflow(i64::MAX, 1, 64, Wrap), Some(Some(i64::MIN)));
        assert_eq!(signed_overflow(i64::MAX, 1, 64, Sat), Some(Some(i64::MAX)));
        assert_eq!(signed_overflow(i64::MIN, -1, 64, Sat), Some(Some(i64::MIN)));
        assert_eq!(
            signed_overflow(i64::MIN, -1, 64, Wrap),
            Some(Some(i64::MAX))
        );
        assert_eq!(signed_overflow(i64::MIN, i64::MAX, 64, Fail), None);
        // i1 holds -1 and 0.
        assert_eq!(signed_overflow(0, 1, 1, Wrap), Some(Some(-1)));
        assert_eq!(signed_overflow(-1, 1, 1, Fail), None);
    }

    #[test]
    fn fields_cross_byte_boundaries() {
        let mut v = vec![0u8; 3];
        set_field(&mut v, 5, 10, 0b10_1100_1101);
        assert_eq!(v, [0b0000_0101, 0b1001_1010, 0]);
        assert_eq!(get_unsigned(&v, 5, 10), 0b10_1100_1101);
        assert_eq!(get_signed(&v, 5, 10), 0b10_1100_1101 - 1024);
        // Past the end reads zeros.
        assert_eq!(get_unsigned(&v, 20, 16), 0);
        set_field(&mut v, 0, 24, u64::MAX);
        assert_eq!(get_signed(&v, 0, 24), -1);
        let mut w = vec![0u8; 8];
        set_field(&mut w, 0, 64, i64::MIN as u64);
        assert_eq!(get_signed(&w, 0, 64), i64::MIN);
    }

    #[test]
    fn parse_errors_in_redis_order() {
        let p = |s: &str, ro| {
            let a: Vec<&[u8]> = s.split(' ').map(str::as_bytes).collect();
            parse(&a, ro).map(|b| b.ops.len())
        };
        assert_eq!(
            p("k get u8 0 set i8 #2 5 overflow sat incrby u4 1 1", false),
            Ok(3)
        );
        assert_eq!(p("k", false), Ok(0));
        assert_eq!(p("k get u64 0", false), Err(CmdError::msg(TYPE_ERR)));
        assert_eq!(p("k get I8 0", false), Err(CmdError::msg(TYPE_ERR)));
        assert_eq!(p("k get i65 0", false), Err(CmdError::msg(TYPE_ERR)));
        assert_eq!(p("k get i0 0", false), Err(CmdError::msg(TYPE_ERR)));
        assert!(p("k get i8 -1", false).is_err());
        assert_eq!(p("k get i8", false), Err(CmdError::SYNTAX));
        assert_eq!(p("k set i8 0", false), Err(CmdError::SYNTAX));
        assert_eq!(p("k set i8 0 x", false), Err(CmdError::NOT_INT));
        assert_eq!(p("k overflow", false), Err(CmdError::SYNTAX));
        assert!(p("k overflow foo", false).is_err());
        // A bad type is reported before BITFIELD_RO's refusal of SET.
        assert_eq!(p("k set u64 0 1", true), Err(CmdError::msg(TYPE_ERR)));
        assert!(p("k set u8 0 1", true).is_err());
        assert_eq!(p("k get u8 0 overflow fail", true), Ok(1));
    }
}
