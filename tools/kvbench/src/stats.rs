//! Latency and count recording: per connection, merged at the end, plus a shared per-second
//! time series and live counters for the progress bar.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::workload::Op;

/// Highest latency tracked: one hour, in nanoseconds (longer ones are clamped).
const MAX_NS: u64 = 3_600 * 1_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).unwrap_or_else(|_| Histogram::new(3).expect("hist"))
}

/// A coarser histogram (2 significant digits) for the per-second series.
fn new_series_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 2).unwrap_or_else(|_| Histogram::new(2).expect("hist"))
}

/// One second of the run (by completion time, counted from the end of the warmup).
pub struct Bucket {
    pub requests: u64,
    pub errors: u64,
    pub hist: Histogram<u64>,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            requests: 0,
            errors: 0,
            hist: new_series_hist(),
        }
    }
}

/// Counters shared by all connections while the run goes on.
pub struct Live {
    /// Measured requests completed (ok or error).
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    pub series: Mutex<BTreeMap<u64, Bucket>>,
}

impl Live {
    pub fn new() -> Arc<Live> {
        Arc::new(Live {
            completed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            series: Mutex::new(BTreeMap::new()),
        })
    }

    fn merge_bucket(&self, sec: u64, b: &Bucket) {
        if b.requests == 0 {
            return;
        }
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let into = series.entry(sec).or_insert_with(Bucket::new);
        into.requests += b.requests;
        into.errors += b.errors;
        let _ = into.hist.add(&b.hist);
    }
}

/// What one connection recorded.
pub struct Recorder {
    origin: Instant,
    live: Arc<Live>,
    pub hist: [Histogram<u64>; 3],
    pub ok: [u64; 3],
    pub errors: [u64; 3],
    pub warmup: u64,
    pub first_error: Option<String>,
    pub last_completion: Option<Instant>,
    cur_sec: u64,
    cur: Bucket,
}

impl Recorder {
    /// `origin` is the end of the warmup: time zero of the series.
    pub fn new(origin: Instant, live: Arc<Live>) -> Recorder {
        Recorder {
            origin,
            live,
            hist: [new_hist(), new_hist(), new_hist()],
            ok: [0; 3],
            errors: [0; 3],
            warmup: 0,
            first_error: None,
            last_completion: None,
            cur_sec: 0,
            cur: Bucket::new(),
        }
    }

    /// Records one completed request. `start` is when it was (meant to be) sent; `measured`
    /// is false for warmup requests.
    pub fn record(
        &mut self,
        op: Op,
        start: Instant,
        done: Instant,
        measured: bool,
        error: Option<String>,
    ) {
        if !measured {
            self.warmup += 1;
            return;
        }
        let i = op as usize;
        let ns = u64::try_from(done.saturating_duration_since(start).as_nanos())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_NS);
        let sec = done.saturating_duration_since(self.origin).as_secs();
        if sec != self.cur_sec {
            self.flush();
            self.cur_sec = sec;
        }
        self.cur.requests += 1;
        match error {
            None => {
                self.ok[i] += 1;
                self.hist[i].saturating_record(ns);
                self.cur.hist.saturating_record(ns);
            }
            Some(e) => {
                self.errors[i] += 1;
                self.cur.errors += 1;
                self.live.errors.fetch_add(1, Ordering::Relaxed);
                if self.first_error.is_none() {
                    self.first_error = Some(e);
                }
            }
        }
        self.live.completed.fetch_add(1, Ordering::Relaxed);
        self.last_completion = Some(self.last_completion.map_or(done, |t| t.max(done)));
    }

    /// Moves the current second into the shared series.
    pub fn flush(&mut self) {
        self.live.merge_bucket(self.cur_sec, &self.cur);
        self.cur = Bucket::new();
    }
}

/// Everything all connections recorded, merged.
pub struct Totals {
    pub hist: [Histogram<u64>; 3],
    pub all: Histogram<u64>,
    pub ok: [u64; 3],
    pub errors: [u64; 3],
    pub warmup: u64,
    pub first_error: Option<String>,
    pub last_completion: Option<Instant>,
}

impl Totals {
    pub fn merge(recorders: Vec<Recorder>) -> Totals {
        let mut t = Totals {
            hist: [new_hist(), new_hist(), new_hist()],
            all: new_hist(),
            ok: [0; 3],
            errors: [0; 3],
            warmup: 0,
            first_error: None,
            last_completion: None,
        };
        for mut r in recorders {
            r.flush();
            for i in 0..3 {
                let _ = t.hist[i].add(&r.hist[i]);
                let _ = t.all.add(&r.hist[i]);
                t.ok[i] += r.ok[i];
                t.errors[i] += r.errors[i];
            }
            t.warmup += r.warmup;
            if t.first_error.is_none() {
                t.first_error = r.first_error.take();
            }
            t.last_completion = match (t.last_completion, r.last_completion) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        t
    }

    pub fn requests(&self) -> u64 {
        self.ok.iter().sum::<u64>() + self.errors.iter().sum::<u64>()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.iter().sum()
    }
}
