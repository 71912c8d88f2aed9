//! INCRBYFLOAT's arithmetic, bit for bit as Redis does it on x86-64: C `long double` (x87
//! extended precision, 64-bit mantissa) parsed with `strtold`, added with round-to-nearest-even,
//! and printed with `%.17Lf` minus trailing zeroes. Plain `f64` gives different strings for
//! everyday inputs (0.1 + 0.2 is "0.3" in Redis, "0.30000000000000004" in f64).
//!
//! Values are `mantissa × 2^exp` with the mantissa's top bit set (or zero). Conversions are
//! exact, with a small big-integer type.

/// A finite extended-precision value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LDouble {
    neg: bool,
    /// 0 for zero, else in [2^63, 2^64).
    mant: u64,
    exp: i32,
}

/// Exponent range of an x87 extended value, for `mant × 2^exp` with a 64-bit mantissa. The
/// lower bound is the smallest subnormal (2^-16445); subnormals keep a full mantissa here,
/// which is invisible in the 17 printed decimals.
const MAX_EXP: i32 = 16383 - 63;
const MIN_EXP: i32 = -16382 - 63 - 63;

/// Redis refuses longer float strings (`MAX_LONG_DOUBLE_CHARS`).
const MAX_CHARS: usize = 5 * 1024;

impl LDouble {
    pub const ZERO: LDouble = LDouble {
        neg: false,
        mant: 0,
        exp: 0,
    };

    pub fn is_zero(&self) -> bool {
        self.mant == 0
    }

    /// Parses as Redis's `string2ld`: the whole string must be a `strtold` number (decimal or
    /// hexadecimal, with optional sign and exponent), no leading space, not NaN, not
    /// overflowing, and not underflowing to zero. "inf"/"infinity" parse to None here as well:
    /// every caller rejects an infinite operand or result the same way, see [`Parsed`].
    pub fn parse(s: &[u8]) -> Parsed {
        if s.is_empty() || s.len() >= MAX_CHARS {
            return Parsed::Invalid;
        }
        let (neg, body) = match s[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
            return Parsed::Infinite;
        }
        let v = if body.len() > 2 && body[0] == b'0' && (body[1] | 0x20) == b'x' {
            parse_hex(&body[2..])
        } else {
            parse_dec(body)
        };
        match v {
            Some(Conv::Value(mut v)) => {
                v.neg = neg;
                Parsed::Finite(v)
            }
            Some(Conv::Zero) => Parsed::Finite(LDouble { neg, ..Self::ZERO }),
            // ERANGE with ±HUGE_VAL or zero: string2ld says no.
            Some(Conv::Overflow) | Some(Conv::Underflow) | None => Parsed::Invalid,
        }
    }

    /// `self + other` rounded to nearest-even; None if it overflows to infinity.
    pub fn checked_add(self, other: LDouble) -> Option<LDouble> {
        if other.is_zero() {
            // -0 + -0 is -0, x + 0 is x.
            return Some(if self.is_zero() {
                LDouble {
                    neg: self.neg && other.neg,
                    ..self
                }
            } else {
                self
            });
        }
        if self.is_zero() {
            return Some(other);
        }
        let (a, b) = if (self.exp, self.mant) >= (other.exp, other.mant) {
            (self, other)
        } else {
            (other, self)
        };
        // Two bits of headroom at the top for the carry, 62 guard bits below.
        let big_a = (a.mant as u128) << 62;
        let d = (a.exp - b.exp) as u32;
        let full_b = (b.mant as u128) << 62;
        let big_b = if d >= 128 {
            1 // sticky: b is nonzero
        } else {
            let shifted = full_b >> d;
            let lost = full_b & ((1u128 << d) - 1);
            shifted | (lost != 0) as u128
        };
        let sum = if a.neg == b.neg {
            big_a + big_b
        } else {
            big_a - big_b
        };
        if sum == 0 {
            // x + (-x) is +0 in round-to-nearest.
            return Some(LDouble::ZERO);
        }
        let (mant, exp) = round_u128(sum, a.exp - 62);
        finish(a.neg, mant, exp)
    }

    /// `%.17Lf`, then without trailing zeroes (and the '.'), and "-0" as "0": Redis's
    /// `ld2string(..., LD_STR_HUMAN)`.
    pub fn to_human(self) -> String {
        // value × 10^17, rounded half-even to an integer.
        let mut n = Big::from_u64(self.mant);
        n.mul_pow10(17);
        if self.exp >= 0 {
            n.shl(self.exp as u32);
        } else {
            let k = (-self.exp) as u32;
            let rem_cmp = n.cmp_low_half(k);
            n.shr(k);
            if rem_cmp == std::cmp::Ordering::Greater
                || (rem_cmp == std::cmp::Ordering::Equal && n.is_odd())
            {
                n.add_small(1);
            }
        }
        let mut digits = n.to_decimal();
        while digits.len() < 18 {
            digits.insert(0, '0');
        }
        let point = digits.len() - 17;
        let mut s = String::with_capacity(digits.len() + 2);
        if self.neg {
            s.push('-');
        }
        s.push_str(&digits[..point]);
        let frac = digits[point..].trim_end_matches('0');
        if !frac.is_empty() {
            s.push('.');
            s.push_str(frac);
        }
        if s == "-0" {
            s = "0".into();
        }
        s
    }
}

/// What a string parses to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    Finite(LDouble),
    /// "inf", "-infinity", ...: a valid float whose sum can only be infinite or NaN.
    Infinite,
    Invalid,
}

enum Conv {
    Value(LDouble),
    Zero,
    Overflow,
    Underflow,
}

/// Rounds `sum × 2^unit_exp` to a 64-bit mantissa (half-even), normalizing.
fn round_u128(sum: u128, unit_exp: i32) -> (u64, i32) {
    let top = 127 - sum.leading_zeros() as i32; // bit index of the leading 1
    if top <= 63 {
        let shift = 63 - top;
        return ((sum << shift) as u64, unit_exp - shift);
    }
    let r = (top - 63) as u32;
    let rem = sum & ((1u128 << r) - 1);
    let half = 1u128 << (r - 1);
    let mut m = sum >> r;
    if rem > half || (rem == half && m & 1 == 1) {
        m += 1;
    }
    let mut exp = unit_exp + r as i32;
    if m >> 64 != 0 {
        m >>= 1;
        exp += 1;
    }
    (m as u64, exp)
}

fn finish(neg: bool, mant: u64, exp: i32) -> Option<LDouble> {
    if exp > MAX_EXP {
        None
    } else if exp < MIN_EXP {
        Some(LDouble {
            neg,
            ..LDouble::ZERO
        })
    } else {
        Some(LDouble { neg, mant, exp })
    }
}

/// Decimal digits with an optional '.', then an optional exponent; all of it.
fn parse_dec(s: &[u8]) -> Option<Conv> {
    let mut i = 0;
    let mut digits = Big::zero();
    let mut ndigits = 0usize; // significant digits kept in `digits`
    let mut dec_exp: i64 = 0;
    let mut seen_digit = false;
    let mut seen_point = false;
    while i < s.len() {
        match s[i] {
            c @ b'0'..=b'9' => {
                seen_digit = true;
                // Beyond ~5000 significant digits only the sticky information matters, and
                // inputs are shorter than that anyway (MAX_CHARS).
                if ndigits > 0 || c != b'0' {
                    digits.mul_small(10);
                    digits.add_small((c - b'0') as u32);
                    ndigits += 1;
                }
                if seen_point {
                    dec_exp -= 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            _ => break,
        }
        i += 1;
    }
    if !seen_digit {
        return None;
    }
    dec_exp += exponent(&s[i..], b'e')?;
    if digits.is_zero() {
        return Some(Conv::Zero);
    }
    // Magnitude bounds: 10^(ndigits-1+dec_exp) <= value < 10^(ndigits+dec_exp).
    let mag = ndigits as i64 + dec_exp;
    if mag > 4940 {
        return Some(Conv::Overflow);
    }
    if mag < -4970 {
        return Some(Conv::Underflow);
    }
    let (mant, exp) = if dec_exp >= 0 {
        digits.mul_pow10(dec_exp as u32);
        digits.round_to_u64()
    } else {
        let mut den = Big::from_u64(1);
        den.mul_pow10((-dec_exp) as u32);
        // Scale numerator or denominator by a power of two so the quotient has 66-67 bits.
        let shift = 66 + den.bit_len() as i64 - digits.bit_len() as i64;
        if shift >= 0 {
            digits.shl(shift as u32);
        } else {
            den.shl((-shift) as u32);
        }
        let (q, exact) = digits.div_rem_is_zero(&den);
        let (m, e) = q.round_with_sticky(!exact);
        (m, e - shift as i32)
    };
    Some(match finish(false, mant, exp) {
        None => Conv::Overflow,
        Some(v) if v.is_zero() => Conv::Underflow,
        Some(v) => Conv::Value(v),
    })
}

/// `strtold`'s hexadecimal form after "0x": hex digits with an optional '.', then an optional
/// binary exponent `p[+-]digits`.
fn parse_hex(s: &[u8]) -> Option<Conv> {
    let mut i = 0;
    let mut m = Big::zero();
    let mut bin_exp: i64 = 0;
    let mut seen_digit = false;
    let mut seen_point = false;
    while i < s.len() {
        let c = s[i];
        if let Some(d) = (c as char).to_digit(16) {
            seen_digit = true;
            if m.bit_len() < 20_000 {
                m.mul_small(16);
                m.add_small(d);
                if seen_point {
                    bin_exp -= 4;
                }
            } else if !seen_point {
                bin_exp += 4;
            }
        } else if c == b'.' && !seen_point {
            seen_point = true;
        } else {
            break;
        }
        i += 1;
    }
    if !seen_digit {
        return None;
    }
    bin_exp += exponent(&s[i..], b'p')?;
    if m.is_zero() {
        return Some(Conv::Zero);
    }
    let (mant, exp) = m.round_to_u64();
    let exp = exp as i64 + bin_exp;
    if exp > MAX_EXP as i64 {
        return Some(Conv::Overflow);
    }
    if exp < MIN_EXP as i64 {
        return Some(Conv::Underflow);
    }
    Some(Conv::Value(LDouble {
        neg: false,
        mant,
        exp: exp as i32,
    }))
}

/// A minimal unsigned big integer, little-endian 32-bit limbs, no leading zero limbs.
#[derive(Clone, Debug)]
struct Big(Vec<u32>);

impl Big {
    fn zero() -> Big {
        Big(Vec::new())
    }

    fn from_u64(v: u64) -> Big {
        let mut b = Big(vec![v as u32, (v >> 32) as u32]);
        b.trim();
        b
    }

    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    fn is_odd(&self) -> bool {
        self.0.first().is_some_and(|l| l & 1 == 1)
    }

    fn bit_len(&self) -> u32 {
        match self.0.last() {
            None => 0,
            Some(&top) => (self.0.len() as u32 - 1) * 32 + (32 - top.leading_zeros()),
        }
    }

    fn bit(&self, i: u32) -> bool {
        self.0
            .get((i / 32) as usize)
            .is_some_and(|l| (l >> (i % 32)) & 1 == 1)
    }

    fn mul_small(&mut self, m: u32) {
        let mut carry = 0u64;
        for l in &mut self.0 {
            let v = *l as u64 * m as u64 + carry;
            *l = v as u32;
            carry = v >> 32;
        }
        if carry != 0 {
            self.0.push(carry as u32);
        }
    }

    fn add_small(&mut self, a: u32) {
        let mut carry = a as u64;
        for l in &mut self.0 {
            if carry == 0 {
                return;
            }
            let v = *l as u64 + carry;
            *l = v as u32;
            carry = v >> 32;
        }
        if carry != 0 {
            self.0.push(carry as u32);
        }
    }

    fn mul_pow10(&mut self, mut k: u32) {
        while k >= 9 {
            self.mul_small(1_000_000_000);
            k -= 9;
        }
        if k > 0 {
            self.mul_small(10u32.pow(k));
        }
    }

    fn shl(&mut self, n: u32) {
        if self.is_zero() {
            return;
        }
        let (limbs, bits) = ((n / 32) as usize, n % 32);
        if bits != 0 {
            let mut carry = 0u32;
            for l in &mut self.0 {
                let v = *l;
                *l = (v << bits) | carry;
                carry = v >> (32 - bits);
            }
            if carry != 0 {
                self.0.push(carry);
            }
        }
        self.0.splice(0..0, std::iter::repeat_n(0, limbs));
    }

    fn shr(&mut self, n: u32) {
        let (limbs, bits) = ((n / 32) as usize, n % 32);
        if limbs >= self.0.len() {
            self.0.clear();
            return;
        }
        self.0.drain(..limbs);
        if bits != 0 {
            let len = self.0.len();
            for i in 0..len {
                let hi = if i + 1 < len { self.0[i + 1] } else { 0 };
                self.0[i] = (self.0[i] >> bits) | (hi << (32 - bits));
            }
        }
        self.trim();
    }

    fn cmp(&self, o: &Big) -> std::cmp::Ordering {
        self.0
            .len()
            .cmp(&o.0.len())
            .then_with(|| self.0.iter().rev().cmp(o.0.iter().rev()))
    }

    fn sub_assign(&mut self, o: &Big) {
        let mut borrow = 0i64;
        for i in 0..self.0.len() {
            let v = self.0[i] as i64 - *o.0.get(i).unwrap_or(&0) as i64 - borrow;
            borrow = (v < 0) as i64;
            self.0[i] = v.rem_euclid(1 << 32) as u32;
        }
        self.trim();
    }

    /// Decimal digits, "0" for zero.
    fn to_decimal(&self) -> String {
        let mut limbs = self.0.clone();
        let mut chunks = Vec::new();
        while !limbs.is_empty() {
            let mut rem = 0u64;
            for l in limbs.iter_mut().rev() {
                let v = (rem << 32) | *l as u64;
                *l = (v / 1_000_000_000) as u32;
                rem = v % 1_000_000_000;
            }
            while limbs.last() == Some(&0) {
                limbs.pop();
            }
            chunks.push(rem as u32);
        }
        let mut s = match chunks.pop() {
            None => return "0".into(),
            Some(top) => top.to_string(),
        };
        for c in chunks.iter().rev() {
            s.push_str(&format!("{c:09}"));
        }
        s
    }

    /// The low `k` bits compared with 2^(k-1) (the rounding half), for k >= 1.
    fn cmp_low_half(&self, k: u32) -> std::cmp::Ordering {
        use std::cmp::Ordering::*;
        if k == 0 {
            return Less;
        }
        if !self.bit(k - 1) {
            return Less;
        }
        let any_below = (0..k - 1).any(|i| self.bit(i));
        if any_below {
            Greater
        } else {
            Equal
        }
    }

    /// Quotient (which must fit in 128 bits) and whether the remainder is zero.
    fn div_rem_is_zero(&self, den: &Big) -> (u128, bool) {
        let mut rem = self.clone();
        let mut q = 0u128;
        let top = self.bit_len().saturating_sub(den.bit_len());
        for i in (0..=top).rev() {
            let mut d = den.clone();
            d.shl(i);
            if rem.cmp(&d) != std::cmp::Ordering::Less {
                rem.sub_assign(&d);
                q |= 1u128 << i;
            }
        }
        (q, rem.is_zero())
    }

    /// Rounds to a 64-bit mantissa (half-even): (mantissa, exponent of its unit bit).
    fn round_to_u64(&self) -> (u64, i32) {
        let n = self.bit_len();
        if n <= 64 {
            let mut v = 0u64;
            for (i, l) in self.0.iter().enumerate() {
                v |= (*l as u64) << (32 * i);
            }
            let shift = 64 - n;
            return (v << shift, -(shift as i32));
        }
        let r = n - 64;
        let mut top = self.clone();
        top.shr(r);
        let mut m = 0u64;
        for (i, l) in top.0.iter().enumerate() {
            m |= (*l as u64) << (32 * i);
        }
        let c = self.cmp_low_half(r);
        let mut exp = r as i32;
        if c == std::cmp::Ordering::Greater || (c == std::cmp::Ordering::Equal && m & 1 == 1) {
            match m.checked_add(1) {
                Some(v) => m = v,
                None => {
                    m = 1 << 63;
                    exp += 1;
                }
            }
        }
        (m, exp)
    }
}

trait RoundSticky {
    fn round_with_sticky(self, sticky: bool) -> (u64, i32);
}

impl RoundSticky for u128 {
    /// Rounds a quotient of at least 65 bits plus a sticky remainder bit.
    fn round_with_sticky(self, sticky: bool) -> (u64, i32) {
        // Append the sticky bit below, then round as an exact value.
        let v = (self << 1) | sticky as u128;
        let (m, e) = round_u128(v, -1);
        (m, e)
    }
}

/// The exponent suffix of a number (`e-12`, `p+3`; `marker` is the letter, either case) as
/// strtold reads it: 0 if `s` is empty, None if anything else follows. Clamped far beyond any
/// finite long double so huge exponents can't overflow.
fn exponent(s: &[u8], marker: u8) -> Option<i64> {
    let Some((&m, rest)) = s.split_first() else {
        return Some(0);
    };
    if m | 0x20 != marker {
        return None;
    }
    let (neg, digits) = match rest.first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut e: i64 = 0;
    for &c in digits {
        e = (e * 10 + (c - b'0') as i64).min(1_000_000_000);
    }
    Some(if neg { -e } else { e })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> LDouble {
        match LDouble::parse(s.as_bytes()) {
            Parsed::Finite(v) => v,
            other => panic!("{s}: {other:?}"),
        }
    }

    fn sum(a: &str, b: &str) -> String {
        p(a).checked_add(p(b)).unwrap().to_human()
    }

    #[test]
    fn matches_redis_on_x86_64() {
        // Expected strings from redis-server 7.0 (x86-64).
        assert_eq!(sum("0", "0.1"), "0.1");
        assert_eq!(sum("0.1", "0.2"), "0.3");
        assert_eq!(sum("10.5", "0.1"), "10.6");
        assert_eq!(sum("1000.1", "0.2"), "1000.29999999999999999");
        assert_eq!(sum("1e10", "0.1"), "10000000000.09999999962747097");
        assert_eq!(sum("5.0e3", "2.0e2"), "5200");
        assert_eq!(sum("1.1", "2.2"), "3.3");
        assert_eq!(sum("-1.5", "1e-20"), "-1.5");
        assert_eq!(sum("0x10", "1"), "17");
        assert_eq!(sum("0", "-0"), "0");
        assert_eq!(sum("3.0", "0"), "3");
        assert!(p("1e300")
            .to_human()
            .starts_with("1000000000000000000008997324079559193870523944273290747938260"));
    }

    #[test]
    fn rejects_what_string2ld_rejects() {
        for s in [
            "", " 1", "1 ", "abc", "1e", "e5", "nan", "1e5000", "1e-5000", "0x", ".", "1e-4960",
        ] {
            assert_eq!(LDouble::parse(s.as_bytes()), Parsed::Invalid, "{s:?}");
        }
        assert_eq!(LDouble::parse(b"-inf"), Parsed::Infinite);
        assert!(matches!(LDouble::parse(b"3.4e-4950"), Parsed::Finite(_)));
    }
}
