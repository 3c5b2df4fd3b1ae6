//! The thread-local mark that says "this thread is inside heapsite": while it
//! is set, preloaded malloc and free (native/interpose.rs) pass straight
//! through to glibc. The mark itself is initial-exec TLS in
//! native/preload.c (`hs_native_enter`/`hs_native_leave`); the engine sets it
//! around its own allocations, so these wrappers live here, below the
//! interposition that reads it.

use std::ffi::c_int;

extern "C" {
    fn hs_native_enter() -> c_int;
    fn hs_native_leave();
}

/// Marks the calling thread as heapsite's own for the rest of its life:
/// its allocations (the memory-over-time series) are not the program's.
pub fn own_thread() {
    // SAFETY: plain thread-local flag accessor.
    unsafe { hs_native_enter() };
}

/// Runs `f` with the calling thread marked as inside heapsite, so that the
/// memory it allocates or frees is heapsite's own: preloaded, malloc and free
/// pass straight through to glibc and neither record it nor wait for a RAW
/// shard lock, which `f`'s caller may hold (a table freeing its old slots
/// under its shard's lock would otherwise wait for that lock forever).
/// Nests: an inner call leaves the mark to the outer one.
pub fn own_memory<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: plain thread-local flag accessors.
    let entered = unsafe { hs_native_enter() } != 0;
    let result = f();
    if entered {
        // SAFETY: as above; only the call that set the mark clears it.
        unsafe { hs_native_leave() };
    }
    result
}
