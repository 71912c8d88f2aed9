//! A global allocator that remembers the largest single allocation made by the current thread,
//! so a target can assert that no decoder sized a buffer from a claimed length it had not
//! checked. Installed by each fuzz binary and by the corpus replay test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // Const-initialised and without a destructor: safe to touch from inside the allocator.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// Forwards to the system allocator and records the largest request per thread.
pub struct TrackingAlloc;

fn note(size: usize) {
    // `try_with`: the thread-local may be gone while a thread shuts down.
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size);
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Forgets what was recorded so far on this thread.
pub fn reset() {
    LARGEST.with(|l| l.set(0));
}

/// The largest allocation (bytes) on this thread since the last [`reset`]; 0 when the
/// tracking allocator is not installed.
pub fn largest() -> usize {
    LARGEST.with(|l| l.get())
}

/// Runs `f` and panics if it made any single allocation larger than `max_bytes`.
pub fn bounded<T>(what: &str, max_bytes: usize, f: impl FnOnce() -> T) -> T {
    reset();
    let out = f();
    let got = largest();
    assert!(
        got <= max_bytes,
        "{what}: allocated {got} bytes at once for this input (bound {max_bytes} bytes): a \
         length was trusted before it was checked"
    );
    out
}
