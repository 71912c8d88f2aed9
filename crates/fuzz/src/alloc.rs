//! A global allocator that keeps, per thread, the bytes live and their peak, so a target can
//! assert that a decoder never held more memory than a small multiple of its input: a claimed
//! length or count must be checked before it sizes anything, at every nesting level.
//! Installed by each fuzz binary and by the corpus replay test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // Const-initialised and without destructors: safe to touch from inside the allocator.
    // Signed: memory freed by another thread than the one that allocated it counts there.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// Forwards to the system allocator and counts live bytes per thread.
pub struct TrackingAlloc;

fn grow(bytes: usize) {
    // `try_with`: the thread-locals may be gone while a thread shuts down.
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add_unsigned(bytes);
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn shrink(bytes: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub_unsigned(bytes)));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        // SAFETY: `ptr` came from `System` through this allocator with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as the new block arriving before the old one leaves, as it may.
        grow(new_size);
        shrink(layout.size());
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Starts a new measurement on this thread: the peak restarts from what is live now.
pub fn reset() {
    let now = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(now));
}

/// The most bytes that were live on this thread since the last [`reset`], above what was
/// live then; 0 when the tracking allocator is not installed.
pub fn peak_growth(base: isize) -> usize {
    PEAK.with(|p| p.get()).saturating_sub(base).max(0) as usize
}

/// Bytes live on this thread now (allocated here and not freed).
pub fn live() -> isize {
    LIVE.with(|l| l.get())
}

/// Runs `f` and panics if the memory it held at any one time exceeded `max_bytes` (what it
/// returns counts, as it is live at the end).
pub fn bounded<T>(what: &str, max_bytes: usize, f: impl FnOnce() -> T) -> T {
    reset();
    let base = live();
    let out = f();
    let got = peak_growth(base);
    assert!(
        got <= max_bytes,
        "{what}: held {got} bytes at once for this input (bound {max_bytes} bytes): a claimed \
         length or count sized memory before it was checked"
    );
    out
}
