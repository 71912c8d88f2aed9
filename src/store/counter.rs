//! Counters that never lose an increment (INCR, DECR, INCRBY, DECRBY): a PN-counter per key,
//! as Riak's counters and Redis Enterprise's active-active counters are.
//!
//! A counter is a version of kind [`ValueKind::Counter`](super::entry::ValueKind). Its value
//! is the decimal total, so every string command reads it unchanged; beside it the version
//! keeps the counter's state: per actor the sum of its increments `p` and of its decrements
//! `n`. States join by per-actor maximum, so an actor's sums must only ever grow:
//! - An actor is one run of one node on one **lineage** of the key, never just the node: a
//!   node that restarted may have lost the tail of its log (a write acknowledged through other
//!   replicas), and a fresh actor per run keeps its new increments from hiding under its old
//!   sums elsewhere (as the version dots have a floor for the same reason).
//! - A lineage starts when INCR turns a value (a string's integer: the base, held by the
//!   lineage's actor 0) or a deleted/absent key into a counter; it is named after the version
//!   it replaced, so replicas converting the same string at once share one base. After a SET,
//!   DEL or expiry a new lineage starts, and increments from before it can't mask increments
//!   after it. A state concurrent with a reset keeps its increments: the key's total sums
//!   every lineage it holds (add wins).
//!
//! Versions stay immutable, as the DVV sync requires (a dot names one content): concurrent
//! increments through two replicas are two sibling versions, and
//! - a read sees the join of the key's counter versions ([`joined`]), expired ones included
//!   (the key's liveness is its winner's; a concurrent version's own TTL drops no increment);
//! - an increment writes the join plus its own delta, superseding them all.
//!
//! So every version's state contains the state of every dot its context covers, and dropping
//! a covered version never drops an increment. (Merging concurrent versions into one of their
//! dots would break that: a replica that superseded the original dot would drop the merged-in
//! increments; the randomized test in `store::shard::merge` finds that in a few seeds.) Under
//! `--conflicts lww` a counter winner keeps its concurrent counter versions for the same
//! reason (see `entry::resolve_lww`).
//!
//! A total is kept in 128 bits: increments that each fit in an i64 on their replica may join
//! to more; GET shows that total, and an INCR is refused unless its result fits (Redis's rule).
//!
//! State encoding (varints LEB128, shortest form): `lineage`, `k`, then `k × (actor, p, n)`
//! with actors strictly increasing.

use std::sync::OnceLock;

use smallvec::SmallVec;

use super::clock::{get_varint, put_varint, NodeId};
use super::entry::{ValueKind, VersionRef};
use crate::util::mix64;

/// Most actors a counter state may name: one per run of a node that incremented the key on
/// its current lineages, plus the bases. Past it an increment is refused (SET the key anew).
pub const MAX_COUNTER_ACTORS: usize = 1024;

/// Why an increment can't be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    #[error(
        "ERR the counter has been incremented by more than {MAX_COUNTER_ACTORS} node runs; SET \
         it to its value to start it anew"
    )]
    TooManyActors,
}

/// This process's run: drawn once per start (time and pid), so no run reuses another's.
fn run_id() -> u64 {
    static RUN: OnceLock<u64> = OnceLock::new();
    *RUN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        mix64(nanos ^ mix64(u64::from(std::process::id())))
    })
}

/// The lineage that starts by replacing the version with this dot (or none: 0).
pub fn lineage_after(dot: Option<super::dvv::Dot>) -> u64 {
    dot.map_or(0, |d| mix64(mix64(d.actor) ^ d.counter) | 1)
}

/// A counter's state: its current lineage, and per actor increments and decrements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterState {
    lineage: u64,
    entries: SmallVec<[(NodeId, u64, u64); 3]>,
}

impl CounterState {
    /// A new lineage starting at `base` (a string's integer, or 0).
    pub fn with_base(base: i64, lineage: u64) -> CounterState {
        let mut s = CounterState {
            lineage,
            entries: SmallVec::new(),
        };
        if base != 0 {
            let (p, n) = if base > 0 {
                (base as u64, 0)
            } else {
                (0, base.unsigned_abs())
            };
            s.entries.push((mix64(lineage), p, n));
        }
        s
    }

    /// Decodes a state (None: not in the canonical encoding).
    pub fn decode(mut b: &[u8]) -> Option<CounterState> {
        let lineage = get_varint(&mut b).ok()?;
        let k = usize::try_from(get_varint(&mut b).ok()?).ok()?;
        if k > MAX_COUNTER_ACTORS {
            return None;
        }
        let mut s = CounterState {
            lineage,
            entries: SmallVec::new(),
        };
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
        put_varint(out, self.lineage);
        put_varint(out, self.entries.len() as u64);
        for &(a, p, n) in &self.entries {
            put_varint(out, a);
            put_varint(out, p);
            put_varint(out, n);
        }
    }

    /// The counter's value (128 bits: joined states may pass an i64, see the module doc).
    pub fn total(&self) -> i128 {
        self.entries
            .iter()
            .map(|&(_, p, n)| p as i128 - n as i128)
            .sum()
    }

    /// Adds `delta` as this run of `node`'s increment on the current lineage; the new total.
    /// Refused if the total would leave the i64 range (Redis's rule), or past
    /// [`MAX_COUNTER_ACTORS`].
    pub fn add(&mut self, node: NodeId, delta: i64) -> Result<i64, CounterError> {
        let total =
            i64::try_from(self.total() + delta as i128).map_err(|_| CounterError::Overflow)?;
        let actor = mix64(mix64(node ^ run_id()) ^ self.lineage);
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

    /// Per-actor maximum of both states; the later lineage (by number) goes on.
    pub fn join(&mut self, other: &CounterState) {
        self.lineage = self.lineage.max(other.lineage);
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

    /// Whether it can be stored (a joined state may name too many actors to decode).
    pub fn storable(&self) -> bool {
        self.entries.len() <= MAX_COUNTER_ACTORS
    }
}

/// A counter version's bytes (state and decimal total), built once and lent to the version
/// that points into them.
pub struct Rendered {
    state: Vec<u8>,
    decimal: itoa::Buffer,
    total: i128,
}

impl Rendered {
    pub fn new(state: &CounterState) -> Rendered {
        let mut r = Rendered {
            state: Vec::new(),
            decimal: itoa::Buffer::new(),
            total: state.total(),
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

/// A counter version's state (None: another kind, or a tombstone). Its own expiry is not
/// looked at: the key's liveness is its winner's.
pub fn state_of(v: &VersionRef<'_>) -> Option<CounterState> {
    (v.kind() == ValueKind::Counter && !v.is_tombstone())
        .then(|| CounterState::decode(v.counter_state()))
        .flatten()
}

/// The join of the key's counter versions (None if it has none).
pub fn joined<'v, 'a: 'v>(
    versions: impl IntoIterator<Item = &'v VersionRef<'a>>,
) -> Option<CounterState> {
    let mut out: Option<CounterState> = None;
    for s in versions.into_iter().filter_map(state_of) {
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
        let mut s = CounterState::with_base(10, 3);
        assert_eq!(s.add(7, 5), Ok(15));
        assert_eq!(s.add(7, -20), Ok(-5));
        assert_eq!(s.add(9, 1), Ok(-4));
        assert_eq!(s.total(), -4);
        let mut m = CounterState::with_base(i64::MAX, 0);
        assert_eq!(m.add(1, 1), Err(CounterError::Overflow));
        assert_eq!(
            m.total(),
            i64::MAX as i128,
            "a refused increment changes nothing"
        );
        let mut n = CounterState::with_base(i64::MIN, 0);
        assert_eq!(n.add(1, -1), Err(CounterError::Overflow));
        assert_eq!(n.add(1, i64::MAX), Ok(-1));
    }

    #[test]
    fn join_is_per_actor_max_and_idempotent() {
        let mut base = CounterState::with_base(3, 5);
        base.add(1, 2).unwrap();
        let (mut a, mut b) = (base.clone(), base.clone());
        a.add(1, 4).unwrap();
        b.add(2, -7).unwrap();
        let mut ab = a.clone();
        ab.join(&b);
        let mut ba = b.clone();
        ba.join(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.total(), 3 + 2 + 4 - 7);
        let again = ab.clone();
        ab.join(&again);
        ab.join(&a);
        assert_eq!(ab, again);
    }

    /// Two lineages (a reset concurrent with increments) add up; the same base converted
    /// twice counts once.
    #[test]
    fn lineages_add_and_a_shared_base_counts_once() {
        let mut x = CounterState::with_base(10, 7);
        let mut y = CounterState::with_base(10, 7);
        x.add(1, 1).unwrap();
        y.add(2, 1).unwrap();
        x.join(&y);
        assert_eq!(x.total(), 12);
        let mut z = CounterState::with_base(0, 9);
        z.add(1, 5).unwrap();
        x.join(&z);
        assert_eq!(x.total(), 17);
    }

    #[test]
    fn encoding_round_trips_and_rejects_non_canonical() {
        let mut s = CounterState::with_base(-5, 11);
        s.add(300, 1 << 40).unwrap();
        s.add(2, -9).unwrap();
        let mut b = Vec::new();
        s.encode(&mut b);
        assert_eq!(CounterState::decode(&b), Some(s));
        // Actors out of order.
        assert_eq!(CounterState::decode(&[0, 2, 5, 1, 0, 3, 1, 0]), None);
        // Trailing bytes.
        assert_eq!(CounterState::decode(&[0, 0, 0]), None);
        // Too many actors claimed.
        assert_eq!(CounterState::decode(&[0, 0xff, 0x7f]), None);
    }
}
