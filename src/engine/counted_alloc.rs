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
//! What is counted is each request's malloc chunk as glibc sizes it (the
//! request and its 8-byte header, rounded up to 16, at least 32), computed
//! from the layout: asking the allocator (`malloc_usable_size`) would be a
//! call into whichever malloc comes first in the process (a preloaded
//! jemalloc's, on glibc's chunks when heapsite's own preloaded malloc
//! forwards to glibc). A relaxed atomic add per allocation of heapsite's
//! own; the hooks never allocate on their common path.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

/// Bytes heapsite holds from malloc now (chunk sizes).
static HELD: AtomicIsize = AtomicIsize::new(0);

struct Counted;

#[global_allocator]
static COUNTED: Counted = Counted;

/// The bytes glibc's malloc takes for a request of `size` bytes: a chunk
/// of the request plus its size header, rounded up to 16, at least 32.
fn chunk(size: usize) -> isize {
    ((size + 8 + 15) & !15).max(32) as isize
}

// SAFETY: every method hands the request to `System` unchanged and only
// counts around it; a null result is counted as nothing.
unsafe impl GlobalAlloc for Counted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract, passed on to System.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            HELD.fetch_add(chunk(layout.size()), Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract, passed on to System.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            HELD.fetch_add(chunk(layout.size()), Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(chunk(layout.size()), Relaxed);
        // SAFETY: GlobalAlloc's contract, passed on to System.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract, passed on to System.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            HELD.fetch_add(chunk(new_size) - chunk(layout.size()), Relaxed);
        }
        moved
    }
}

/// Bytes heapsite's core holds from malloc now: its tables, sites, frames,
/// caches and series, each with malloc's header and rounding.
pub fn held_bytes() -> usize {
    HELD.load(Relaxed).max(0) as usize
}
