//! Leaf helpers every layer may use: the one wall clock, the poison-tolerant mutex lock and
//! the one seeded pseudo-random generator (splitmix64). Imports nothing from the crate, so it
//! can sit below the store.

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the epoch. The one place wall time is read (expiry times,
/// version timestamps, tombstone dates), so a test can skew a node's clock
/// (`--test-clock-skew-ms`, feature `test-hooks` only). Under feature `sim`, inside a
/// simulated host, it is the simulation's clock.
pub fn now_ms() -> u64 {
    #[cfg(feature = "sim")]
    if let Some(d) = turmoil::since_epoch() {
        return d.as_millis() as u64;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    #[cfg(feature = "test-hooks")]
    let now = now.saturating_add_signed(skew::get());
    now
}

/// The splitmix64 increment (2^64 / golden ratio).
pub const SPLITMIX_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The splitmix64 output mix (Stafford's variant 13): a bijection of u64 with full avalanche.
/// Token placement, counter actor names and every seeded generator use this one function.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// splitmix64 (Steele, Lea and Flood, 2014): one 64-bit state, full period. Written out rather
/// than taken from a crate so that a seed means the same stream on every machine and with every
/// dependency version (the fault harness, the simulator and scalesim replay runs by seed).
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(SPLITMIX_GAMMA);
        mix64(self.0)
    }
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

/// Simulation only (feature `sim`): the randomness the server draws (handshake nonces,
/// RANDOMKEY) comes from the run's seed, so that a seed replays the same run. Per thread: a
/// simulation runs every host on the thread that drives it, and parallel tests each have
/// their own.
#[cfg(feature = "sim")]
pub mod sim_rng {
    use std::cell::Cell;

    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(super::SPLITMIX_GAMMA) };
    }

    /// Seeds this thread's generator (at the start of a simulated run).
    pub fn seed(seed: u64) {
        STATE.with(|s| s.set(seed));
    }

    /// The next number (splitmix64).
    pub fn next_u64() -> u64 {
        STATE.with(|s| {
            let mut g = super::SplitMix64(s.get());
            let x = g.next_u64();
            s.set(g.0);
            x
        })
    }
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
