//! heapsite's own memory, counted as it is allocated: the core's global
//! allocator is the system's (glibc malloc) with a running count of the
//! bytes it holds, so `tracking_bytes` is what heapsite really takes from
//! malloc, not an estimate from its tables' capacities.
//!
//! Why count rather than add up: the estimate missed what no table's
//! capacity shows (each site's frame-id array and its malloc chunk, the
//! per-code lists of sites, the memory-over-time series), 6 of 30 MiB on a
//! recursive generator walk; and the count is the same measure the bench
//! applies to tracemalloc from outside (glibc's bytes in use over plain).
//!
//! The count is of usable sizes (`malloc_usable_size`), what each chunk
//! really holds, and costs a relaxed atomic add per allocation of heapsite's
//! own. The allocator hooks never allocate on their common path; the
//! tables grow rarely, so the count costs nothing measurable.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

/// Bytes heapsite holds from malloc now (usable sizes).
static HELD: AtomicIsize = AtomicIsize::new(0);

struct Counted;

#[global_allocator]
static COUNTED: Counted = Counted;

/// The usable size of a live chunk from the system allocator.
///
/// # Safety
/// `ptr` is a live chunk from `System` (malloc, calloc, realloc or
/// posix_memalign, which `System` uses), not yet freed.
unsafe fn usable(ptr: *mut u8) -> isize {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above).
    unsafe { libc::malloc_usable_size(ptr.cast()) as isize }
}

// SAFETY: every method hands the request to `System` unchanged and only
// counts around it; a null result is counted as nothing.
unsafe impl GlobalAlloc for Counted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract, passed on to System.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            // SAFETY: just allocated by System.
            HELD.fetch_add(unsafe { usable(ptr) }, Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract, passed on to System.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            // SAFETY: just allocated by System.
            HELD.fetch_add(unsafe { usable(ptr) }, Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is live, from this allocator, so from System.
        HELD.fetch_sub(unsafe { usable(ptr) }, Relaxed);
        // SAFETY: GlobalAlloc's contract, passed on to System.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` is live, from this allocator, so from System.
        let old = unsafe { usable(ptr) };
        // SAFETY: GlobalAlloc's contract, passed on to System.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            // SAFETY: just (re)allocated by System; the old chunk is gone.
            HELD.fetch_add(unsafe { usable(moved) } - old, Relaxed);
        }
        moved
    }
}

/// Bytes heapsite's core holds from malloc now: its tables, sites, frames,
/// caches and series, with malloc's rounding of each chunk.
pub fn held_bytes() -> usize {
    HELD.load(Relaxed).max(0) as usize
}
