//! Reading entries written by format 1 (one value per key with a vector clock), converted to
//! the format-2 [`Entry`] on load. Never written.
//!
//! ```text
//! flags u8 (tombstone 1, expiry 2) | key_len varint | clock_len varint | timestamp_ms u64 LE
//! | [expires_at_ms u64 LE] | clock (varint n, n × (node varint, counter varint)) | key | value
//! ```
//!
//! The clock becomes the key's causal context, so a client holding a context read before the
//! upgrade still supersedes the converted version. Format 1 kept no dot; the one version gets
//! the dot of the clock's highest counter (the writer of the latest event, for clocks written by
//! one node), which the context covers, as a dot must.

use super::clock::{get_varint, put_varint, VectorClock};
use super::dvv::{Dot, Siblings, VersionVector, MAX_COUNTER};
use super::entry::{Entry, VersionRef};

const TOMBSTONE: u8 = 1;
const EXPIRES: u8 = 2;

/// A format-1 clock read by format 1's own rules (it accepted client clocks with zero
/// counters or any u64 and merged them in), made a valid context: zero counters dropped,
/// counters capped below the decoders' maximum.
fn lenient_context(clock: &[u8]) -> Option<VersionVector> {
    let clock = VectorClock::decode(clock).ok()?;
    let mut context = VersionVector::new();
    for (actor, counter) in clock.iter() {
        if counter > 0 {
            context.add_dot(Dot {
                actor,
                counter: counter.min(MAX_COUNTER / 2),
            });
        }
    }
    Some(context)
}

/// Converts a format-1 entry; None if the bytes are malformed.
pub fn entry_from_v1(b: &[u8]) -> Option<Entry> {
    let (&flags, mut rest) = b.split_first()?;
    if flags & !(TOMBSTONE | EXPIRES) != 0 {
        return None;
    }
    let key_len = usize::try_from(get_varint(&mut rest).ok()?).ok()?;
    let clock_len = usize::try_from(get_varint(&mut rest).ok()?).ok()?;
    let timestamp_ms = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    rest = &rest[8..];
    let expires_at_ms = if flags & EXPIRES != 0 {
        let at = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        rest = &rest[8..];
        Some(at)
    } else {
        None
    };
    let context = lenient_context(rest.get(..clock_len)?)?;
    rest = &rest[clock_len..];
    let key = rest.get(..key_len)?;
    let value = &rest[key_len..];
    let version = if flags & TOMBSTONE != 0 {
        VersionRef::tombstone(timestamp_ms)
    } else {
        VersionRef::value(value, timestamp_ms, expires_at_ms)
    };
    let dot = context
        .iter()
        .max_by_key(|&(actor, counter)| (counter, actor))
        .map(|(actor, counter)| Dot { actor, counter });
    let versions = match dot {
        Some(dot) => Siblings::from_parts(context, [(dot, version)]).ok()?,
        // No clock at all (never written by format 1, but harmless): a fresh dot of actor 0.
        None => {
            let mut s = Siblings::new();
            s.overwrite(0, version);
            s
        }
    };
    Some(Entry::new(key, &versions))
}

/// The format-1 encoding of an entry, as the previous release wrote it (`clock` is an encoded
/// `VectorClock`). This build never writes it to disk; tests and fuzz seeds use it to make old
/// data.
pub fn encode_v1(
    key: &[u8],
    value: &[u8],
    clock: &[u8],
    timestamp_ms: u64,
    expires_at_ms: Option<u64>,
    tombstone: bool,
) -> Vec<u8> {
    let mut b = vec![u8::from(tombstone) | if expires_at_ms.is_some() { EXPIRES } else { 0 }];
    put_varint(&mut b, key.len() as u64);
    put_varint(&mut b, clock.len() as u64);
    b.extend_from_slice(&timestamp_ms.to_le_bytes());
    if let Some(at) = expires_at_ms {
        b.extend_from_slice(&at.to_le_bytes());
    }
    b.extend_from_slice(clock);
    b.extend_from_slice(key);
    b.extend_from_slice(value);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1(key: &[u8], value: &[u8], clock: &VectorClock, exp: Option<u64>, tomb: bool) -> Vec<u8> {
        encode_v1(key, value, &clock.encoded(), 77, exp, tomb)
    }

    #[test]
    fn converts_value_ttl_and_context() {
        let mut c = VectorClock::new();
        c.increment(3);
        c.increment(900);
        c.increment(900);
        let e = entry_from_v1(&v1(b"key", b"value", &c, Some(1234), false)).expect("converts");
        assert_eq!(e.key(), b"key");
        assert_eq!(e.value(), b"value");
        assert_eq!(e.expires_at_ms(), Some(1234));
        assert_eq!(e.timestamp_ms(), 77);
        assert_eq!(
            e.context().encoded(),
            c.encoded(),
            "the clock is the context"
        );
        let t = entry_from_v1(&v1(b"gone", b"", &c, None, true)).expect("converts");
        assert!(t.is_tombstone());
    }

    #[test]
    fn malformed_is_refused() {
        let mut c = VectorClock::new();
        c.increment(1);
        let b = v1(b"key", b"v", &c, Some(5), false);
        for cut in 0..b.len() - 1 {
            assert!(entry_from_v1(&b[..cut]).is_none(), "cut at {cut}");
        }
    }

    /// Format 1 decoded client contexts with `VectorClock::decode`, which accepts zero
    /// counters and any u64, and merged them into the stored clock (see bd40a02
    /// cmd/strings.rs `next_clock`). Such a stored clock is not a canonical VersionVector, so
    /// conversion refuses the entry and the whole format-1 directory fails to open.
    #[test]
    fn review_converts_clocks_that_format1_accepted_from_clients() {
        // actor 7 counter 1 (the node), actor 9 counter 0 (from a client's context).
        let zero = [2u8, 7, 1, 9, 0];
        assert!(
            entry_from_v1(&encode_v1(b"k", b"v", &zero, 77, None, false)).is_some(),
            "a format-1 clock with a zero counter does not convert"
        );
        let mut big = vec![1u8, 9];
        put_varint(&mut big, u64::MAX - 1);
        assert!(
            entry_from_v1(&encode_v1(b"k", b"v", &big, 77, None, false)).is_some(),
            "a format-1 clock with a counter above MAX_COUNTER does not convert"
        );
    }
}
