//! Sampled tracing with MEM and OBJ frees left to pymalloc: no free hook.
//!
//! Why. Under sampling nearly every event is passed over, and what is left
//! of its cost is the hooks' own calls. A free is as frequent as a malloc,
//! and its hook (the call, the filter's load, the jump on to pymalloc) was
//! half of what sampled tracing added: callgrind on `bench/workloads/
//! churn.py` at 20,000 steps (CPython 3.11.7) counts 889.1M instructions
//! plain, 953.5M sampled with the free hook, 922.9M without it.
//!
//! How a sampled block's free is still seen. pymalloc serves requests up
//! to 512 bytes from its pools and hands larger ones to PyMem_RawMalloc,
//! and its free hands any block not in its pools to PyMem_RawFree (so does
//! its realloc, to PyMem_RawRealloc). So a chosen MEM/OBJ allocation is
//! asked of pymalloc with at least 513 bytes: the block comes from the RAW
//! domain, is recorded in the RAW table (with its domain and the size the
//! program asked for), and its free or realloc reaches our RAW hook
//! (`forget_raw`, `realloc_raw_block`), or under preloading our native
//! hooks, which find it there. pymalloc itself makes the RAW call and
//! counts it, so `sys.getallocatedblocks()` is unchanged; a sampled block
//! costs at most 512 bytes more, one per 512 KiB sampled at the default
//! rate.
//!
//! When. Only where that routing is certain: this layer is installed in a
//! domain only if a probe, made as it is installed, sees the allocator
//! below send a 600-byte block's malloc, realloc and free to our RAW hook
//! with the same address (not so under PYTHONMALLOC=malloc, the debug
//! hooks or tracemalloc's own hooks, which then keep the free hook);
//! and not while a setrelheap() set is kept, which must hear of every free
//! (`need_every_free` puts the free hook back if one is set later).
//!
//! The layer keeps its previous allocator in a static (`PREV`), not in its
//! `ctx`: the installed `ctx` is the previous allocator's own, so that its
//! free can be installed as ours unchanged. Hence at most one such layer
//! per domain in the chain (`IN_CHAIN`); one left inside another tool's
//! layer passes every call through (`ACTIVE` off) and is never reused.

use super::*;
use crate::engine::sampling;

/// The allocator each domain's direct layer forwards to (index 1 and 2).
static PREV: [AtomicPtr<HookCtx>; 3] = [const { AtomicPtr::new(ptr::null_mut()) }; 3];
/// Whether a direct layer is in the domain's chain (outermost or not).
static IN_CHAIN: [AtomicBool; 3] = [const { AtomicBool::new(false) }; 3];
/// Whether a domain's direct layer records: sampled tracing is on and it
/// is heapsite's outermost layer there. Off, it passes everything through.
static ACTIVE: [AtomicBool; 3] = [const { AtomicBool::new(false) }; 3];
/// ACTIVE and not preloaded: the malloc's common case may run (one load).
static FAST: [AtomicBool; 3] = [const { AtomicBool::new(false) }; 3];

/// The smallest request pymalloc hands to PyMem_RawMalloc.
const FROM_RAW: usize = 513;

#[inline(always)]
fn prev(domain: usize) -> &'static PyMemAllocatorEx {
    // SAFETY: set (to a leaked HookCtx) before the layer is installed, and
    // never changed while it is in the chain (IN_CHAIN).
    unsafe { &(*PREV[domain].load(Relaxed)).prev }
}

#[inline(always)]
fn active(domain: usize) -> bool {
    ACTIVE[domain].load(Relaxed)
}

// ---- the hooks ----------------------------------------------------------

/// The common case alone, every way out a tail call, so that it saves no
/// register: 13 instructions (objdump), where the shared shape of
/// `sampled_malloc` took 26 (callgrind, Julia set: 26 per malloc).
extern "C" fn direct_malloc<const D: usize>(_ctx: *mut c_void, size: usize) -> *mut c_void {
    if !FAST[D].load(Relaxed) {
        return malloc_not_fast::<D>(size);
    }
    if sampling::count_down_mem(size) {
        return malloc_crossed::<D>(size);
    }
    let prev = prev(D);
    if size > sampling::PYMALLOC_LARGEST {
        return malloc_marked(prev, size);
    }
    // SAFETY: installed only over an allocator with a malloc (try_install).
    unsafe { prev.malloc.unwrap_unchecked()(prev.ctx, size) }
}

/// The countdown crossed zero: a new interval, and this block is chosen.
#[inline(never)]
fn malloc_crossed<const D: usize>(size: usize) -> *mut c_void {
    sampling::redraw_mem();
    malloc_chosen(domain_of(D), prev(D), size)
}

/// Not recording (tracing stopped under another tool's layer), or
/// preloaded, where any passed-over malloc may call a native hook below
/// (pymalloc's new arena is an mmap).
#[inline(never)]
fn malloc_not_fast<const D: usize>(size: usize) -> *mut c_void {
    let prev = prev(D);
    // SAFETY: installed only over an allocator with a malloc (try_install).
    let malloc = unsafe { prev.malloc.unwrap_unchecked() };
    allocate::<D>(size, |asked| malloc(prev.ctx, asked.unwrap_or(size)))
}

#[inline(never)]
fn malloc_chosen(domain: Domain, prev: &'static PyMemAllocatorEx, size: usize) -> *mut c_void {
    // SAFETY: as in malloc_not_fast.
    let malloc = unsafe { prev.malloc.unwrap_unchecked() };
    let asked = size.max(FROM_RAW);
    allocate_recorded_by::<false>(record, domain, || malloc(prev.ctx, asked), size, || {})
}

extern "C" fn direct_calloc<const D: usize>(
    _ctx: *mut c_void,
    n: usize,
    each: usize,
) -> *mut c_void {
    let prev = prev(D);
    // SAFETY: installed only over an allocator with a calloc (try_install).
    let calloc = unsafe { prev.calloc.unwrap_unchecked() };
    // An overflowing n * each saturates, and fails as calloc(n, each) would.
    allocate::<D>(n.saturating_mul(each), |asked| match asked {
        None => calloc(prev.ctx, n, each),
        Some(asked) => calloc(prev.ctx, 1, asked),
    })
}

/// A sampled old block is forgotten by the RAW layer below, which pymalloc
/// calls for any block not in its pools (`realloc_raw_block`).
extern "C" fn direct_realloc<const D: usize>(
    _ctx: *mut c_void,
    old: *mut c_void,
    size: usize,
) -> *mut c_void {
    let prev = prev(D);
    // SAFETY: installed only over an allocator with a realloc (try_install).
    let realloc = unsafe { prev.realloc.unwrap_unchecked() };
    allocate::<D>(size, |asked| realloc(prev.ctx, old, asked.unwrap_or(size)))
}

/// An allocation of `size` bytes through a direct layer: passed through
/// when the layer does not record, passed over (with what it calls below)
/// when sampling does not choose it, else recorded. `call(None)` makes the
/// program's call; `call(Some(asked))` the same for `asked` bytes, at least
/// 513 (the module note).
#[inline(always)]
fn allocate<const D: usize>(
    size: usize,
    call: impl Fn(Option<usize>) -> *mut c_void,
) -> *mut c_void {
    if !active(D) {
        return call(None);
    }
    if !sampling::take_mem(size) {
        return sampling::passing_over(true, || call(None));
    }
    let asked = Some(size.max(FROM_RAW));
    allocate_recorded_by::<false>(record, domain_of(D), || call(asked), size, || {})
}

/// Records a chosen MEM/OBJ block in the RAW table, where its free finds it.
fn record(thread: &sites::HookState, ptr: *mut c_void, size: usize, domain: Domain) {
    // SAFETY: MEM and OBJ hooks run with the GIL held.
    match unsafe { thread.current_site(DEPTH.load(Relaxed)) } {
        Some((site, _)) => insert_raw(ptr, size, site, domain, true),
        None => drop_record(),
    }
}

/// `object_created` for a block the MEM/OBJ table does not hold: under this
/// layer a sampled one is in the RAW table, and moves to the line creating
/// the object now as it would there. GIL held, inside the guard.
pub(super) fn object_created(thread: &sites::HookState, block: usize) {
    if !sampling::on() {
        return; // exact tracing records MEM/OBJ blocks in their own table
    }
    let Some(record) = RAW_TABLE.shard(block).get(block) else {
        return;
    };
    // SAFETY: GIL held (the reference tracer runs under it).
    let Some((site, _)) = (unsafe { thread.current_site(DEPTH.load(Relaxed)) }) else {
        return;
    };
    if site != record.site && record.domain != Domain::Raw {
        forget_raw(block as *mut c_void);
        insert_raw(block as *mut c_void, record.size, site, record.domain, true);
    }
}

// ---- installing -----------------------------------------------------------

fn allocator(domain: usize, prev: &PyMemAllocatorEx) -> PyMemAllocatorEx {
    let (malloc, calloc, realloc): (
        extern "C" fn(*mut c_void, usize) -> *mut c_void,
        extern "C" fn(*mut c_void, usize, usize) -> *mut c_void,
        extern "C" fn(*mut c_void, *mut c_void, usize) -> *mut c_void,
    ) = if domain == 1 {
        (direct_malloc::<1>, direct_calloc::<1>, direct_realloc::<1>)
    } else {
        (direct_malloc::<2>, direct_calloc::<2>, direct_realloc::<2>)
    };
    PyMemAllocatorEx {
        ctx: prev.ctx,
        malloc: Some(malloc),
        calloc: Some(calloc),
        realloc: Some(realloc),
        free: prev.free,
    }
}

/// Whether `allocator` is a direct layer of ours.
pub(super) fn is_direct(domain: usize, allocator: &PyMemAllocatorEx) -> bool {
    let calloc = allocator.calloc.map(|f| f as usize);
    let ours = if domain == 1 {
        direct_calloc::<1> as *const () as usize
    } else {
        direct_calloc::<2> as *const () as usize
    };
    domain != 0 && calloc == Some(ours)
}

/// Installs the direct layer over `prev` in a MEM or OBJ domain if it may
/// be (see the module note); false if the caller must install the hooks
/// with a free. Sampling on, our RAW hook installed, GIL held.
pub(super) fn try_install(
    domain: usize,
    kind: PyMemAllocatorDomain,
    prev: PyMemAllocatorEx,
) -> bool {
    if domain == 0
        || IN_CHAIN[domain].load(Relaxed)
        || crate::engine::relheap::is_kept()
        || !frees_reach_raw(&prev)
    {
        return false;
    }
    let ctx: &'static mut HookCtx = Box::leak(Box::new(HookCtx {
        magic: HOOK_MAGIC,
        prev,
    }));
    PREV[domain].store(ctx, Release);
    IN_CHAIN[domain].store(true, Relaxed);
    let mut ours = allocator(domain, &prev);
    // SAFETY: our hooks forward to the valid previous allocator in PREV;
    // the free is that allocator's own, with its own ctx.
    unsafe { PyMem_SetAllocator(kind, &mut ours) };
    true
}

/// Takes the direct layer out of a domain where it is outermost. GIL held.
pub(super) fn uninstall(domain: usize, kind: PyMemAllocatorDomain) {
    set_active(domain, false);
    let mut prev = *prev(domain);
    // SAFETY: restores the allocator that was current when it was installed.
    unsafe { PyMem_SetAllocator(kind, &mut prev) };
    IN_CHAIN[domain].store(false, Relaxed);
}

/// Lets the direct layer of a domain record (it was just installed, with
/// sampling on) or not.
pub(super) fn set_active(domain: usize, on: bool) {
    ACTIVE[domain].store(on, Relaxed);
    refresh_fast();
}

/// Recomputes FAST after ACTIVE or the native mode changed.
pub(super) fn refresh_fast() {
    for (fast, active) in FAST.iter().zip(&ACTIVE) {
        fast.store(active.load(Relaxed) && !native(), Relaxed);
    }
}

/// Whether a domain's direct layer records.
pub(super) fn is_active(domain: usize) -> bool {
    active(domain)
}

// ---- the probe --------------------------------------------------------------

/// The block the probe follows (0: no probe under way), and how many calls
/// of our RAW hooks it made.
static PROBED: AtomicUsize = AtomicUsize::new(0);
static PROBE_SEEN: AtomicUsize = AtomicUsize::new(0);

/// Called by the RAW hooks with the block of each call.
#[inline(always)]
pub(super) fn probe_saw(ptr: *mut c_void) {
    if PROBED.load(Relaxed) != 0 {
        probe_note(ptr);
    }
}

#[cold]
fn probe_note(ptr: *mut c_void) {
    if ptr as usize == PROBED.load(Relaxed) {
        PROBE_SEEN.fetch_add(1, Relaxed);
    }
}

/// Whether `prev` hands a 600-byte block's realloc and free to our RAW
/// hook under the address it returned: then the block came from the RAW
/// domain, and so will every chosen block. Another thread's RAW call during
/// the probe cannot make it pass: only the probed address counts, and the
/// block is ours until freed. GIL held.
fn frees_reach_raw(prev: &PyMemAllocatorEx) -> bool {
    // The hooks call the previous malloc, calloc and realloc unchecked.
    let (Some(malloc), Some(_), Some(realloc), Some(free)) =
        (prev.malloc, prev.calloc, prev.realloc, prev.free)
    else {
        return false;
    };
    let block = malloc(prev.ctx, 600);
    if block.is_null() {
        return false;
    }
    PROBE_SEEN.store(0, Relaxed);
    PROBED.store(block as usize, Relaxed);
    // Grown in place or moved, a block from the RAW domain goes to the RAW
    // realloc with its own address.
    let grown = realloc(prev.ctx, block, 700);
    let realloc_seen = PROBE_SEEN.swap(0, Relaxed);
    let block = if grown.is_null() { block } else { grown };
    PROBED.store(block as usize, Relaxed);
    free(prev.ctx, block);
    let free_seen = PROBE_SEEN.load(Relaxed);
    PROBED.store(0, Relaxed);
    realloc_seen == 1 && free_seen == 1
}
