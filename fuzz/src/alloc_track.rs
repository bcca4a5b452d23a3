//! A global allocator that counts the bytes the Rust heap holds, so that a check can assert
//! how much a call allocated at its peak.
//!
//! This is the one place of the fuzz crate with `unsafe`: implementing [`GlobalAlloc`] is
//! unsafe by definition. Every method forwards to [`System`] unchanged and only updates
//! two thread-local counters, so the allocator's safety is exactly `System`'s.
//!
//! Allocations made by C code (the zstd library) go to `malloc` directly and are not seen
//! here; `cargo xtask fuzz --sanitizer address` adds libFuzzer's `-malloc_limit_mb` for
//! those.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Bytes this thread allocated minus bytes it freed (memory freed by another thread
    /// than the one that allocated it makes this drift, which is harmless for peaks
    /// measured over one call).
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    /// The highest value of [`CURRENT`] since the last [`measure`] began.
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// [`System`], plus a count of live bytes and their peak.
pub struct TrackingAlloc;

#[global_allocator]
static GLOBAL: TrackingAlloc = TrackingAlloc;

fn grew(by: usize) {
    let by = isize::try_from(by).unwrap_or(isize::MAX);
    // `try_with`: never fail an allocation because the thread is being torn down.
    let _ = CURRENT.try_with(|c| {
        let now = c.get().saturating_add(by);
        c.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn shrank(by: usize) {
    let by = isize::try_from(by).unwrap_or(isize::MAX);
    let _ = CURRENT.try_with(|c| c.set(c.get().saturating_sub(by)));
}

// SAFETY: every method forwards its arguments to `System`, which upholds the `GlobalAlloc`
// contract; the counters are updated only after a successful call and never affect the
// pointers returned.
unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract for `layout`.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by this allocator (i.e. by `System`) for `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `realloc`'s contract; `ptr` came from `System`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            let old = layout.size();
            if new_size >= old {
                grew(new_size - old);
            } else {
                shrank(old - new_size);
            }
        }
        p
    }
}

/// Runs `f` and returns its result with the peak growth of the Rust heap during the call,
/// in bytes (the highest live total seen, minus the total when `f` began).
///
/// Only the calling thread's allocations are counted (the code under test runs on it).
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = CURRENT.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, usize::try_from(peak.saturating_sub(base)).unwrap_or(0))
}

/// Runs `f` and panics (a fuzz failure) if the Rust heap grew by more than `bound` bytes
/// at any point during the call. `what` names the call in the message.
pub fn within<R>(what: &str, bound: usize, f: impl FnOnce() -> R) -> R {
    let (out, peak) = measure(f);
    assert!(
        peak <= bound,
        "{what} allocated {peak} bytes at its peak, more than the bound of {bound}"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_large_allocation() {
        let ((), peak) = measure(|| {
            let v = vec![7u8; 1 << 20];
            assert_eq!(v.iter().map(|&b| usize::from(b)).sum::<usize>(), 7 << 20);
        });
        assert!(peak >= 1 << 20, "peak {peak}");
        assert!(peak < 2 << 20, "peak {peak}");
    }

    #[test]
    fn freed_memory_is_not_counted_again() {
        drop(vec![0u8; 1 << 20]);
        let ((), peak) = measure(|| {
            let v = vec![1u8; 1000];
            assert_eq!(v.len(), 1000);
        });
        assert!(peak < 1 << 16, "peak {peak}");
    }

    #[test]
    #[should_panic(expected = "more than the bound")]
    fn within_panics_past_its_bound() {
        within("a test", 1024, || vec![0u8; 1 << 16].len());
    }
}
