//! Leaf helpers every layer may use: the one wall clock and the poison-tolerant mutex lock.
//! Imports nothing from the crate, so it can sit below the store.

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the epoch. The one place wall time is read (expiry times,
/// version timestamps, tombstone dates), so a test can skew a node's clock
/// (`--test-clock-skew-ms`, feature `test-hooks` only).
pub fn now_ms() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    #[cfg(feature = "test-hooks")]
    let now = now.saturating_add_signed(skew::get());
    now
}

/// Testing only (feature `test-hooks`): this process's clock offset, so that a test can run
/// replicas whose clocks disagree.
#[cfg(feature = "test-hooks")]
mod skew {
    use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

    static SKEW_MS: AtomicI64 = AtomicI64::new(0);

    pub fn get() -> i64 {
        SKEW_MS.load(Relaxed)
    }

    pub fn set(ms: i64) {
        SKEW_MS.store(ms, Relaxed);
    }
}

/// Testing only (feature `test-hooks`): shifts [`now_ms`] by `ms` (negative: behind).
#[cfg(feature = "test-hooks")]
pub fn set_test_clock_skew_ms(ms: i64) {
    skew::set(ms);
}

/// Locks a mutex whose data stays valid even if a holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// CPU time used, in seconds with microseconds (INFO cpu): (system, user) of this process,
/// and of its waited-for children, from getrusage(2).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    pub sys: f64,
    pub user: f64,
    pub sys_children: f64,
    pub user_children: f64,
}

fn rusage(who: libc::c_int) -> (f64, f64) {
    // SAFETY: getrusage only writes the struct we pass, which lives for the call; an all-zero
    // rusage is a valid value of that plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_stime), secs(ru.ru_utime))
}

pub fn cpu_times() -> CpuTimes {
    let (sys, user) = rusage(libc::RUSAGE_SELF);
    let (sys_children, user_children) = rusage(libc::RUSAGE_CHILDREN);
    CpuTimes {
        sys,
        user,
        sys_children,
        user_children,
    }
}
