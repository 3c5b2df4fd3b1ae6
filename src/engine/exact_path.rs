//! The MEM and OBJ hooks' common case, told by one load.
//!
//! Most of the time heapsite records every block, at the depth it was asked
//! for, with none of its modes on: no sampling, no heapsite code of its own
//! running, no whole-depth keys, no `setrelheap()` set. Each of those is a
//! flag of its own module, and the hooks used to load each one at each
//! event: eight loads and branches an allocation and its free, some of them
//! twice, since the compiler does not merge atomic loads (callgrind,
//! CPython 3.11, pyperformance's spectral_norm at one frame: 31 of the 255
//! instructions heapsite added to an allocation and its free).
//!
//! [`depth`] sums them up: the depth to trace at, clamped as the walk needs
//! it, when every block is recorded that plain way, and 0 otherwise, when
//! the hooks take their general path, which looks at each flag. Every
//! writer of one of those flags calls [`refresh`] after its store (the
//! sampling rate's too, though it changes only while tracing is off). They
//! all hold the GIL, as do the MEM and OBJ hooks of the main interpreter
//! that read it, so such a hook never sees the flags and the summary
//! disagree. A subinterpreter with its own GIL reads it without the main
//! one, harmlessly: either path sends its events away before they touch
//! anything (src/engine/interp.rs). The RAW and native hooks, called without
//! the GIL, do not read it.

use crate::engine::frames::MAX_FRAMES;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

static DEPTH: AtomicUsize = AtomicUsize::new(0);

/// The depth the MEM and OBJ hooks record every block at, in 1..=MAX_FRAMES,
/// with no mode on; 0 when they must look at each mode (see the module's
/// note).
#[inline(always)]
pub fn depth() -> usize {
    DEPTH.load(Relaxed)
}

/// Works the summary out again from the flags; called by each of their
/// writers after it changed one. GIL held.
pub fn refresh() {
    let plain = crate::engine::hook::is_tracing()
        && !crate::engine::sampling::on()
        && !crate::engine::own_work::is_inside()
        && !crate::engine::sites::count_total_depth()
        && !crate::engine::relheap::is_kept();
    let depth = if plain {
        crate::engine::hook::depth().clamp(1, MAX_FRAMES)
    } else {
        0
    };
    DEPTH.store(depth, Relaxed);
}
