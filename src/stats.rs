//! Per-command statistics (calls, time, failures, a latency histogram) kept by each event
//! loop for itself and summed when read, and the SLOWLOG.
//!
//! Recording costs a few relaxed loads and stores on the loop's own counters: no lock, no
//! allocation, no shared cache line. Readers (INFO, the metrics endpoint) sum the loops.
//!
//! CONFIG RESETSTAT runs on any thread, so it must not write the loops' counters (a store of
//! zero racing a loop's load-add-store would lose increments or undo the reset). Each
//! [`Counter`] instead has a baseline: a reset moves the baseline up to the current count, and
//! readers see the count minus the baseline. The loop's hot path never touches the baseline.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{
    AtomicI64, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::Mutex;

use ringkv_proto::commands::TABLE;
use ringkv_proto::ReplySink;

use crate::util::lock;

/// Sub-buckets per power-of-two range.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Values below 8 exactly, then 8 sub-buckets for each power-of-two range from [8, 16) to
/// [2^63, 2^64): every u64 has a bucket, with at most 1/8 relative error.
pub const BUCKETS: usize = 62 * SUB;

/// The bucket of a value: values below 8 exactly, then 8 linear steps per power of two.
#[inline]
fn bucket_of(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = ((v >> (e - SUB_BITS)) as usize) & (SUB - 1);
    (e - SUB_BITS + 1) as usize * SUB + sub
}

/// The highest value that falls in bucket `i`.
fn bucket_high(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let e = (i / SUB) as u32 + SUB_BITS - 1;
    let sub = (i % SUB) as u64;
    let width = 1u64 << (e - SUB_BITS);
    ((SUB as u64 + sub) << (e - SUB_BITS)).saturating_add(width - 1)
}

/// A counter written by one thread (its event loop) and reset by any: the count only grows,
/// and a reset records a baseline that reads subtract.
#[derive(Default)]
pub struct Counter {
    count: AtomicU64,
    base: AtomicU64,
}

impl Counter {
    /// Adds `n`. Single writer: a relaxed load and store, no read-modify-write.
    #[inline]
    pub fn add(&self, n: u64) {
        self.count.store(self.count.load(Relaxed) + n, Relaxed);
    }

    /// The count since the last reset.
    pub fn get(&self) -> u64 {
        // Acquire pairs with reset's Release: the count read next is at least the one the
        // baseline was taken from, so the difference is never negative.
        let base = self.base.load(Acquire);
        self.count.load(Relaxed).saturating_sub(base)
    }

    /// Makes the count read as 0 from now on, without writing the count itself (any thread;
    /// concurrent resets keep the highest baseline).
    pub fn reset(&self) {
        let now = self.count.load(Relaxed);
        self.base.fetch_max(now, Release);
    }
}

/// A log-linear histogram of microseconds, as plain counters (for reading and merging).
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        self.counts[bucket_of(v)] += 1;
        self.total += 1;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
    }

    /// The value at percentile `p` (0..=100): the highest value of the bucket holding the
    /// sample of that rank (0 when empty).
    pub fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_high(i);
            }
        }
        bucket_high(BUCKETS - 1)
    }
}

/// The same histogram as counters, written by one loop only.
pub struct AtomicHistogram {
    counts: Box<[Counter]>,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            counts: (0..BUCKETS).map(|_| Counter::default()).collect(),
        }
    }
}

impl AtomicHistogram {
    /// Single writer: a relaxed load and store, no read-modify-write.
    #[inline]
    pub fn record(&self, v: u64) {
        self.counts[bucket_of(v)].add(1);
    }

    pub fn add_to(&self, h: &mut Histogram) {
        for (a, b) in h.counts.iter_mut().zip(self.counts.iter()) {
            let n = b.get();
            *a += n;
            h.total += n;
        }
    }

    pub fn reset(&self) {
        for c in self.counts.iter() {
            c.reset();
        }
    }
}

/// Names of the command-stat slots past the table: the binary protocol's internal commands.
const INTERNAL: [&str; 3] = ["vget", "vput", "vdel"];

/// Slots of per-command statistics: the command table, then the internal commands.
pub const SLOTS: usize = TABLE.len() + INTERNAL.len();

/// Slot of the internal VGET / VPUT / VDEL.
pub const VGET: usize = TABLE.len();
pub const VPUT: usize = TABLE.len() + 1;
pub const VDEL: usize = TABLE.len() + 2;

/// The command name of a slot.
pub fn slot_name(i: usize) -> &'static str {
    if i < TABLE.len() {
        TABLE[i].name
    } else {
        INTERNAL[i - TABLE.len()]
    }
}

/// One command's statistics in one loop.
#[derive(Default)]
pub struct CmdStat {
    pub calls: Counter,
    pub usec: Counter,
    pub failed: Counter,
    /// Refused before running (wrong arity or syntax, NOAUTH, MISCONF).
    pub rejected: Counter,
    pub hist: AtomicHistogram,
}

/// Every command's statistics in one loop.
pub struct CmdStats(Box<[CmdStat]>);

impl Default for CmdStats {
    fn default() -> Self {
        CmdStats((0..SLOTS).map(|_| CmdStat::default()).collect())
    }
}

impl CmdStats {
    /// Records one executed command (single writer: the loop owning these stats).
    #[inline]
    pub fn record(&self, slot: usize, us: u64, failed: bool) {
        let s = &self.0[slot];
        s.calls.add(1);
        s.usec.add(us);
        if failed {
            s.failed.add(1);
        }
        s.hist.record(us);
    }

    #[inline]
    pub fn reject(&self, slot: usize) {
        self.0[slot].rejected.add(1);
    }

    /// Zeroes what readers see (any thread; see [`Counter::reset`]).
    pub fn reset(&self) {
        for s in self.0.iter() {
            for c in [&s.calls, &s.usec, &s.failed, &s.rejected] {
                c.reset();
            }
            s.hist.reset();
        }
    }
}

/// One command's statistics summed over the loops.
#[derive(Default, Clone)]
pub struct CmdSummary {
    pub name: &'static str,
    pub calls: u64,
    pub usec: u64,
    pub failed: u64,
    pub rejected: u64,
    pub hist: Histogram,
}

/// Sums the loops' statistics; commands never called (nor rejected) are left out.
pub fn summarize<'a>(loops: impl Iterator<Item = &'a CmdStats> + Clone) -> Vec<CmdSummary> {
    let mut out = Vec::new();
    for slot in 0..SLOTS {
        let mut s = CmdSummary {
            name: slot_name(slot),
            ..Default::default()
        };
        for l in loops.clone() {
            let c = &l.0[slot];
            s.calls += c.calls.get();
            s.usec += c.usec.get();
            s.failed += c.failed.get();
            s.rejected += c.rejected.get();
            c.hist.add_to(&mut s.hist);
        }
        if s.calls > 0 || s.rejected > 0 {
            out.push(s);
        }
    }
    out
}

/// Most arguments a SLOWLOG entry keeps, and most bytes of each (as Redis).
pub const SLOWLOG_MAX_ARGC: usize = 32;
pub const SLOWLOG_MAX_ARGLEN: usize = 128;

pub struct SlowEntry {
    pub id: u64,
    pub unix_secs: u64,
    pub us: u64,
    pub args: Vec<Vec<u8>>,
    pub addr: SocketAddr,
    pub name: String,
}

/// Commands slower than the threshold. Only slow commands take the lock.
pub struct SlowLog {
    /// Microseconds; negative disables, 0 logs everything.
    pub slower_than: AtomicI64,
    pub max_len: AtomicU64,
    next_id: AtomicU64,
    entries: Mutex<VecDeque<SlowEntry>>,
}

impl SlowLog {
    pub fn new(slower_than: i64, max_len: u64) -> SlowLog {
        SlowLog {
            slower_than: AtomicI64::new(slower_than),
            max_len: AtomicU64::new(max_len),
            next_id: AtomicU64::new(0),
            entries: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether a command that took `us` belongs in the log.
    #[inline]
    pub fn is_slow(&self, us: u64) -> bool {
        let t = self.slower_than.load(Relaxed);
        t >= 0 && us >= t as u64
    }

    pub fn push(&self, args: &[&[u8]], us: u64, addr: SocketAddr, name: String) {
        let mut kept: Vec<Vec<u8>> = Vec::with_capacity(args.len().min(SLOWLOG_MAX_ARGC));
        for (i, a) in args.iter().enumerate() {
            if i == SLOWLOG_MAX_ARGC - 1 && args.len() > SLOWLOG_MAX_ARGC {
                kept.push(format!("... ({} more arguments)", args.len() - i).into_bytes());
                break;
            }
            if a.len() > SLOWLOG_MAX_ARGLEN {
                let mut v = a[..SLOWLOG_MAX_ARGLEN].to_vec();
                v.extend_from_slice(
                    format!("... ({} more bytes)", a.len() - SLOWLOG_MAX_ARGLEN).as_bytes(),
                );
                kept.push(v);
            } else {
                kept.push(a.to_vec());
            }
        }
        let entry = SlowEntry {
            id: self.next_id.fetch_add(1, Relaxed),
            unix_secs: crate::util::now_ms() / 1000,
            us,
            args: kept,
            addr,
            name,
        };
        let max = self.max_len.load(Relaxed) as usize;
        let mut q = lock(&self.entries);
        q.push_front(entry);
        q.truncate(max);
    }

    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reset(&self) {
        lock(&self.entries).clear();
    }

    /// Applies a new max length at once (Redis trims on the next insert; same result).
    pub fn trim(&self) {
        let max = self.max_len.load(Relaxed) as usize;
        lock(&self.entries).truncate(max);
    }

    /// Runs `f` over the newest `count` entries (all with None).
    pub fn with_newest<R>(
        &self,
        count: Option<usize>,
        f: impl FnOnce(&mut dyn ExactSizeIterator<Item = &SlowEntry>) -> R,
    ) -> R {
        let q = lock(&self.entries);
        let n = count.unwrap_or(q.len()).min(q.len());
        f(&mut q.iter().take(n))
    }
}

/// Passes a reply through, noting whether it was an error (a failed call).
pub struct Track<'s> {
    pub inner: &'s mut dyn ReplySink,
    pub failed: bool,
}

impl<'s> Track<'s> {
    pub fn new(inner: &'s mut dyn ReplySink) -> Self {
        Track {
            inner,
            failed: false,
        }
    }
}

impl ReplySink for Track<'_> {
    fn simple(&mut self, s: &str) {
        self.inner.simple(s)
    }
    fn error(&mut self, msg: &str) {
        self.failed = true;
        self.inner.error(msg)
    }
    fn int(&mut self, v: i64) {
        self.inner.int(v)
    }
    fn bulk(&mut self, b: &[u8]) {
        self.inner.bulk(b)
    }
    fn nil(&mut self) {
        self.inner.nil()
    }
    fn array(&mut self, len: usize) {
        self.inner.array(len)
    }
    fn wants_context(&self) -> bool {
        self.inner.wants_context()
    }
    fn versioned(&mut self, context: &[u8], values: &[&[u8]]) {
        self.inner.versioned(context, values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reset from another thread while the owner keeps adding loses no increment (the
    /// count itself is never written by the reset), and reads restart from 0.
    #[test]
    fn reset_from_another_thread_loses_no_increment() {
        const ADDS: u64 = 200_000;
        let c = Counter::default();
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..ADDS {
                    c.add(1);
                }
            });
            s.spawn(|| {
                for _ in 0..1_000 {
                    c.reset();
                    assert!(c.get() <= ADDS);
                }
            });
        });
        assert_eq!(c.count.load(Relaxed), ADDS, "an increment was lost");
        assert!(c.get() <= ADDS);
        c.reset();
        assert_eq!(c.get(), 0);
        c.add(5);
        c.add(2);
        assert_eq!(c.get(), 7);
    }

    #[test]
    fn command_stats_reset_then_count_again() {
        let s = CmdStats::default();
        for _ in 0..10 {
            s.record(3, 100, false);
        }
        s.reject(3);
        s.reset();
        assert!(
            summarize(std::iter::once(&s)).is_empty(),
            "all zero after a reset"
        );
        s.record(3, 7, true);
        s.record(3, 9, false);
        let sum = summarize(std::iter::once(&s));
        assert_eq!(sum.len(), 1);
        let c = &sum[0];
        assert_eq!((c.calls, c.usec, c.failed, c.rejected), (2, 16, 1, 0));
        assert_eq!(c.hist.count(), 2);
        assert_eq!(c.hist.percentile(100.0), 9);
    }

    #[test]
    fn buckets_are_ordered_and_cover_values() {
        let mut prev_high = None;
        for i in 0..BUCKETS {
            let h = bucket_high(i);
            if let Some(p) = prev_high {
                assert!(h > p || h == u64::MAX, "bucket {i}: {h} after {p}");
            }
            prev_high = Some(h);
        }
        for v in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            17,
            100,
            1000,
            12345,
            1 << 40,
            u64::MAX,
        ] {
            let b = bucket_of(v);
            assert!(b < BUCKETS, "{v}");
            assert!(bucket_high(b) >= v, "{v} above bucket {b}");
            if b > 0 {
                assert!(bucket_high(b - 1) < v, "{v} below bucket {b}");
            }
            // At most 1/8 relative error.
            assert!(bucket_high(b) - v <= v / 8, "{v}: {}", bucket_high(b));
        }
    }

    #[test]
    fn percentiles_and_merge() {
        let mut a = Histogram::default();
        for v in 1..=100 {
            a.record(v);
        }
        assert_eq!(a.percentile(0.0), 1);
        let p50 = a.percentile(50.0);
        assert!((50..=56).contains(&p50), "{p50}");
        let p99 = a.percentile(99.0);
        assert!((99..=111).contains(&p99), "{p99}");
        assert_eq!(a.percentile(100.0), bucket_high(bucket_of(100)));
        let mut b = Histogram::default();
        for _ in 0..900 {
            b.record(5);
        }
        b.merge(&a);
        assert_eq!(b.count(), 1000);
        assert_eq!(b.percentile(50.0), 5);
        assert!(b.percentile(99.9) >= 99);
        assert_eq!(Histogram::default().percentile(99.0), 0);
        let at = AtomicHistogram::default();
        at.record(3);
        at.record(3000);
        let mut h = Histogram::default();
        at.add_to(&mut h);
        assert_eq!(h.count(), 2);
        assert_eq!(h.percentile(50.0), 3);
    }
}
