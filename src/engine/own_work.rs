//! heapsite's own Python code runs on the program's threads.
//!
//! `snapshot()`, `top()`, `heap()` and the Snapshot methods are Python code
//! of heapsite's, and what they allocate goes through the same hooks as the
//! program's allocations: a snapshot kept while the next one is taken showed
//! up in `compare_to` at `heapsite/__init__.py`. While a thread is inside
//! such a call (`heapsite._own_work`), the hooks leave its allocations
//! untraced, as they leave out what heapsite's Rust code allocates.
//!
//! One thread at a time: the GIL holder that entered first. Another thread
//! entering meanwhile (heapsite's Python code can be switched out) is simply
//! traced as before, which only over-counts as it always did. The hooks pay
//! one load of `THREAD` while no thread is inside; the thread's identity is
//! read only when one is.

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::Relaxed};

/// The thread inside heapsite's own Python code, or null.
static THREAD: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
/// How deeply that thread is inside (own-work calls nest).
static DEPTH: AtomicUsize = AtomicUsize::new(0);

/// The calling thread (GIL held) starts own work; false if another thread
/// is inside already (then the caller must not `leave`).
pub fn enter() -> bool {
    let me = crate::engine::frames::current_thread();
    if me.is_null() {
        return false;
    }
    let inside = THREAD.load(Relaxed);
    if inside.is_null() {
        THREAD.store(me, Relaxed);
    } else if inside != me {
        return false;
    }
    DEPTH.fetch_add(1, Relaxed);
    crate::engine::exact_path::refresh();
    true
}

/// Ends what a successful `enter` began. GIL held.
pub fn leave() {
    if DEPTH.load(Relaxed) > 0 && DEPTH.fetch_sub(1, Relaxed) == 1 {
        THREAD.store(ptr::null_mut(), Relaxed);
        crate::engine::exact_path::refresh();
    }
}

/// Whether any thread is inside heapsite's own Python code.
pub fn is_inside() -> bool {
    !THREAD.load(Relaxed).is_null()
}

/// Whether the calling GIL holder is inside heapsite's own Python code.
#[inline(always)]
pub fn is_caller() -> bool {
    let inside = THREAD.load(Relaxed);
    !inside.is_null() && inside == crate::engine::frames::current_thread()
}
