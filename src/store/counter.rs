//! Counters that never lose an increment (INCR, DECR, INCRBY, DECRBY): a PN-counter per key,
//! as Riak's counters and Redis Enterprise's active-active counters are.
//!
//! A counter is a version of kind [`ValueKind::Counter`](super::entry::ValueKind). Its value
//! is the decimal total, so every string command reads it unchanged; beside it the version
//! keeps the counter's state: per actor (the replica that coordinated the increments) the sum
//! of its increments `p` and of its decrements `n`. Actor 0 holds the base: the integer a
//! string held when INCR turned it into a counter.
//!
//! States join by per-actor maximum (each actor's `p` and `n` only grow, and only that actor
//! grows them). Versions stay immutable, as the DVV sync requires (a dot names one content):
//! concurrent increments through two replicas are two sibling versions, and
//! - a read sees the join of the key's live counter versions ([`joined`]);
//! - an increment writes the join plus its own delta, superseding them all.
//!
//! So every version's state contains the state of every dot its context covers, and dropping
//! a covered version never drops an increment. (Merging concurrent versions into one of their
//! dots would break that: a replica that superseded the original dot would drop the merged-in
//! increments; the randomized test in `store::shard::merge` finds that in a few seeds.) Under
//! `--conflicts lww` a counter winner keeps its concurrent counter versions for the same
//! reason (see `entry::resolve_lww`).
//!
//! State encoding (varints LEB128, shortest form): `k`, then `k × (actor, p, n)` with actors
//! strictly increasing.

use smallvec::SmallVec;

use super::clock::{get_varint, put_varint, NodeId};
use super::entry::{ValueKind, VersionRef};

/// Most actors a counter state may name: one per replica that ever coordinated an increment
/// of the key, plus the base. A state naming more was not made by ringkv.
pub const MAX_COUNTER_ACTORS: usize = 64;

/// The actor that holds a counter's base (node ids are never 0).
pub const BASE_ACTOR: NodeId = 0;

/// Why an increment can't be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    #[error("ERR the counter's state names more than {MAX_COUNTER_ACTORS} nodes; it is corrupt")]
    TooManyActors,
}

/// A counter's state: per actor, increments and decrements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterState {
    entries: SmallVec<[(NodeId, u64, u64); 3]>,
}

impl CounterState {
    /// A counter starting at `base` (a string's integer, or 0).
    pub fn with_base(base: i64) -> CounterState {
        let mut s = CounterState::default();
        if base != 0 {
            let (p, n) = if base > 0 {
                (base as u64, 0)
            } else {
                (0, base.unsigned_abs())
            };
            s.entries.push((BASE_ACTOR, p, n));
        }
        s
    }

    /// Decodes a state (None: not in the canonical encoding).
    pub fn decode(mut b: &[u8]) -> Option<CounterState> {
        let k = usize::try_from(get_varint(&mut b).ok()?).ok()?;
        if k > MAX_COUNTER_ACTORS {
            return None;
        }
        let mut s = CounterState::default();
        for _ in 0..k {
            let actor = get_varint(&mut b).ok()?;
            let p = get_varint(&mut b).ok()?;
            let n = get_varint(&mut b).ok()?;
            if s.entries.last().is_some_and(|&(a, _, _)| a >= actor) {
                return None;
            }
            s.entries.push((actor, p, n));
        }
        b.is_empty().then_some(s)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.entries.len() as u64);
        for &(a, p, n) in &self.entries {
            put_varint(out, a);
            put_varint(out, p);
            put_varint(out, n);
        }
    }

    /// The counter's value; None if it does not fit in an i64 (only a corrupt state).
    pub fn total(&self) -> Option<i64> {
        let sum: i128 = self
            .entries
            .iter()
            .map(|&(_, p, n)| p as i128 - n as i128)
            .sum();
        i64::try_from(sum).ok()
    }

    /// Adds `delta` as `actor`'s increment; the new total. Refused if the total would leave
    /// the i64 range (Redis's rule) or the actor's sums would overflow.
    pub fn add(&mut self, actor: NodeId, delta: i64) -> Result<i64, CounterError> {
        let total = self
            .total()
            .and_then(|t| t.checked_add(delta))
            .ok_or(CounterError::Overflow)?;
        let i = match self.entries.binary_search_by_key(&actor, |e| e.0) {
            Ok(i) => i,
            Err(i) => {
                if self.entries.len() >= MAX_COUNTER_ACTORS {
                    return Err(CounterError::TooManyActors);
                }
                self.entries.insert(i, (actor, 0, 0));
                i
            }
        };
        let e = &mut self.entries[i];
        let grown = if delta >= 0 {
            e.1.checked_add(delta as u64).map(|p| e.1 = p)
        } else {
            e.2.checked_add(delta.unsigned_abs()).map(|n| e.2 = n)
        };
        grown.ok_or(CounterError::Overflow)?;
        Ok(total)
    }

    /// Per-actor maximum of both states.
    pub fn join(&mut self, other: &CounterState) {
        for &(a, p, n) in &other.entries {
            match self.entries.binary_search_by_key(&a, |e| e.0) {
                Ok(i) => {
                    let e = &mut self.entries[i];
                    e.1 = e.1.max(p);
                    e.2 = e.2.max(n);
                }
                Err(i) => self.entries.insert(i, (a, p, n)),
            }
        }
    }
}

/// A counter version's bytes (state and decimal total), built once and lent to the version
/// that points into them.
pub struct Rendered {
    state: Vec<u8>,
    decimal: itoa::Buffer,
    total: i64,
}

impl Rendered {
    pub fn new(state: &CounterState, total: i64) -> Rendered {
        let mut r = Rendered {
            state: Vec::new(),
            decimal: itoa::Buffer::new(),
            total,
        };
        state.encode(&mut r.state);
        r
    }

    /// The version: `like`'s timestamp and expiry, this state and total.
    pub fn version<'a>(&'a mut self, like: &VersionRef<'_>) -> VersionRef<'a> {
        let total = self.total;
        VersionRef::counter(
            &self.state,
            self.decimal.format(total).as_bytes(),
            like.timestamp_ms,
            like.expires_at_ms,
        )
    }
}

/// A live counter version's state (None: another kind, a tombstone, or expired at `now_ms`).
pub fn state_of(v: &VersionRef<'_>, now_ms: u64) -> Option<CounterState> {
    (v.kind() == ValueKind::Counter && v.is_live(now_ms))
        .then(|| CounterState::decode(v.counter_state()))
        .flatten()
}

/// The join of the key's live counter versions (None if it has none).
pub fn joined<'v, 'a: 'v>(
    versions: impl IntoIterator<Item = &'v VersionRef<'a>>,
    now_ms: u64,
) -> Option<CounterState> {
    let mut out: Option<CounterState> = None;
    for s in versions.into_iter().filter_map(|v| state_of(v, now_ms)) {
        match &mut out {
            Some(j) => j.join(&s),
            None => out = Some(s),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_total_and_overflow() {
        let mut s = CounterState::with_base(10);
        assert_eq!(s.add(7, 5), Ok(15));
        assert_eq!(s.add(7, -20), Ok(-5));
        assert_eq!(s.add(9, 1), Ok(-4));
        assert_eq!(s.total(), Some(-4));
        let mut m = CounterState::with_base(i64::MAX);
        assert_eq!(m.add(1, 1), Err(CounterError::Overflow));
        assert_eq!(
            m.total(),
            Some(i64::MAX),
            "a refused increment changes nothing"
        );
        let mut n = CounterState::with_base(i64::MIN);
        assert_eq!(n.add(1, -1), Err(CounterError::Overflow));
        assert_eq!(n.add(1, i64::MAX), Ok(-1));
    }

    #[test]
    fn join_is_per_actor_max_and_idempotent() {
        let mut base = CounterState::with_base(3);
        base.add(1, 2).unwrap();
        let (mut a, mut b) = (base.clone(), base.clone());
        a.add(1, 4).unwrap();
        b.add(2, -7).unwrap();
        let mut ab = a.clone();
        ab.join(&b);
        let mut ba = b.clone();
        ba.join(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.total(), Some(3 + 2 + 4 - 7));
        let again = ab.clone();
        ab.join(&again);
        ab.join(&a);
        assert_eq!(ab, again);
    }

    #[test]
    fn encoding_round_trips_and_rejects_non_canonical() {
        let mut s = CounterState::with_base(-5);
        s.add(300, 1 << 40).unwrap();
        s.add(2, -9).unwrap();
        let mut b = Vec::new();
        s.encode(&mut b);
        assert_eq!(CounterState::decode(&b), Some(s));
        // Actors out of order.
        assert_eq!(CounterState::decode(&[2, 5, 1, 0, 3, 1, 0]), None);
        // Trailing bytes.
        assert_eq!(CounterState::decode(&[0, 0]), None);
        // Too many actors claimed.
        assert_eq!(CounterState::decode(&[100]), None);
    }
}
