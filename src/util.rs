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
