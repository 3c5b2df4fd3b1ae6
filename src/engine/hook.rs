//! The allocator hooks: PyMem_SetAllocator wrappers for RAW, MEM and OBJ.
//!
//! Each hook calls the allocator that was installed before it (tracemalloc,
//! the debug hooks, pymalloc or malloc) and, when tracing, records the result.
//! Rules (see docs/design.md, "Rules of the hot path"):
//! - MEM and OBJ are called with the GIL held: their table and counters need
//!   no lock.
//! - RAW may be called from any thread without the GIL: its table is sharded
//!   behind spin locks, and only a GIL holder's frames are read.
//! - Each installation gets its own leaked [`HookCtx`] holding the allocator
//!   it wraps, so heapsite can be installed again around a tool that wrapped
//!   it (tracemalloc started later) without losing the inner layer's chain;
//!   nested layers see the re-entrancy flag and pass through, so only the
//!   outermost records. A `ctx` that is not ours (a thread racing
//!   `PyMem_SetAllocator` and pairing our function with the old `ctx`) falls
//!   back to the latest installation's previous allocator, which is exactly
//!   the one that `ctx` belongs to.
//! - Pointers heapsite never saw pass through untouched.
//! - Only the main interpreter is traced: see src/engine/interp.rs for what a
//!   subinterpreter's calls may and may not touch, and why.
//!
//! This file is the hot path and nothing else: the hooks and the state they
//! share. Installing, starting, stopping and the fork handlers are in
//! hook/lifecycle.rs; reading what was recorded, in hook/readers.rs.

use crate::engine::exact_path;
use crate::engine::frames::{self, RawFrame};
use crate::engine::interp::{self, Interp};
use crate::engine::nursery::{Freed, GilTable};
use crate::engine::own_work;
use crate::engine::sampling;
use crate::engine::sites::{self, Site, SiteId, NO_GIL_SITE};
use crate::engine::sync::GilCell;
use crate::engine::table::{Domain, RawTable, Record};
use pyo3_ffi::{PyMemAllocatorDomain, PyMemAllocatorEx, PyMem_GetAllocator, PyMem_SetAllocator};
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};

mod direct;
mod lifecycle;
mod readers;
pub use lifecycle::{
    clear, depth, free_hook, init, is_tracing, keep_every_free, start, stop, Companion,
};
pub use readers::lookup;
pub(in crate::engine) use readers::{
    dropped, for_each_live, live_allocations, shrink_tables, tracking_bytes,
};

static TRACING: AtomicBool = AtomicBool::new(false);
/// Native hooks (LD_PRELOAD's malloc, mmap...) record; then the RAW domain
/// is recorded by them, at the malloc under PyMem_RawMalloc, and the RAW
/// PyMem hooks pass through so that no block is counted twice.
static NATIVE: AtomicBool = AtomicBool::new(false);
/// A fork is under way: the RAW shards are held by the forking thread, so
/// native events pass through rather than wait for them.
static FORKING: AtomicBool = AtomicBool::new(false);
static DEPTH: AtomicUsize = AtomicUsize::new(1);
/// Allocations not recorded because heapsite could not grow a table.
static DROPPED: AtomicUsize = AtomicUsize::new(0);

static GIL_TABLE: GilCell<GilTable> = GilCell::new(GilTable::new());
static RAW_TABLE: RawTable = RawTable::new();

const DOMAINS: [PyMemAllocatorDomain; 3] = [
    PyMemAllocatorDomain::PYMEM_DOMAIN_RAW,
    PyMemAllocatorDomain::PYMEM_DOMAIN_MEM,
    PyMemAllocatorDomain::PYMEM_DOMAIN_OBJ,
];
const HOOK_MAGIC: u64 = 0x6865_6170_7369_7465; // "heapsite"

/// The `ctx` of one installation of our hooks: the allocator it forwards to.
/// Leaked, so a late caller of an uninstalled hook still finds a valid one.
#[repr(C)]
struct HookCtx {
    magic: u64,
    prev: PyMemAllocatorEx,
}

/// The most recent installation per domain (see the module note on `ctx`).
static LATEST: [AtomicPtr<HookCtx>; 3] = [const { AtomicPtr::new(ptr::null_mut()) }; 3];

/// The allocator below the installation whose `ctx` this is. The latest
/// installation's `ctx` is the one CPython passes nearly always: one
/// compare with it, where reading the magic took a test of the pointer,
/// a load and a compare with a 64-bit constant.
#[inline(always)]
fn previous(domain: usize, ctx: *mut c_void) -> &'static PyMemAllocatorEx {
    let latest = LATEST[domain].load(Acquire);
    if ctx.cast::<HookCtx>() == latest {
        // SAFETY: LATEST[domain] is set (to a leaked installation, alive
        // for ever) before any hook of ours is installed in that domain,
        // so a hook that runs finds it not null.
        return unsafe { &(*latest).prev };
    }
    previous_of_other(latest, ctx)
}

/// `previous` for a `ctx` not of the latest installation.
#[cold]
fn previous_of_other(latest: *mut HookCtx, ctx: *mut c_void) -> &'static PyMemAllocatorEx {
    let ours = ctx as *const HookCtx;
    // SAFETY: a non-null ctx points at an allocator's context object, at least
    // a word long; ours carry the magic and live forever. LATEST is set
    // before any hook of ours is installed.
    unsafe {
        if !ours.is_null() && (*ours).magic == HOOK_MAGIC {
            &(*ours).prev
        } else {
            &(*latest).prev
        }
    }
}

#[inline(always)]
fn tracing() -> bool {
    TRACING.load(Relaxed)
}

/// Whether the RAW PyMem hooks record (not when the native hooks do).
#[inline(always)]
fn raw_tracing() -> bool {
    TRACING.load(Relaxed) && !NATIVE.load(Relaxed)
}

#[inline(always)]
fn native_tracing() -> bool {
    TRACING.load(Relaxed) && NATIVE.load(Relaxed) && !FORKING.load(Relaxed)
}

// ---- MEM and OBJ: GIL held ------------------------------------------------

/// Records a block allocated through MEM or OBJ. GIL held.
#[inline(always)]
fn record_gil(thread: &sites::HookState, ptr: *mut c_void, size: usize, domain: Domain) {
    // SAFETY: MEM and OBJ hooks run with the GIL held.
    let found = unsafe { thread.current_site(DEPTH.load(Relaxed)) };
    record_gil_at::<false>(found, ptr, size, domain);
}

/// `record_gil` on the exact path (src/engine/exact_path.rs): every block
/// recorded, `depth` frames deep (clamped already), whole depths not counted.
#[inline(always)]
fn record_gil_exactly(
    thread: &sites::HookState,
    depth: usize,
    ptr: *mut c_void,
    size: usize,
    domain: Domain,
) {
    // SAFETY: MEM and OBJ hooks run with the GIL held.
    let found = unsafe { thread.current_site_at(depth, false) };
    record_gil_at::<true>(found, ptr, size, domain);
}

/// Records a MEM/OBJ block at the site `found`. GIL held.
///
/// `EXACT`, here and in the functions it is passed to, says the event is on
/// the exact path (src/engine/exact_path.rs): then no block is sampled, no
/// heapsite code of its own runs and no `setrelheap()` set is kept, so
/// those checks are left out.
#[inline(always)]
fn record_gil_at<const EXACT: bool>(
    found: Option<(SiteId, &'static Site)>,
    ptr: *mut c_void,
    size: usize,
    domain: Domain,
) {
    let Some((site, site_ref)) = found else {
        drop_record();
        return;
    };
    // SAFETY: MEM and OBJ hooks run with the GIL held; nothing below
    // re-enters a hook that takes the table.
    let table = unsafe { GIL_TABLE.get() };
    // Queued frees first, so the peak is never checked with them counted.
    table.settle(account_free::<EXACT>);
    let addr = ptr as usize;
    match table.insert(addr, Record { size, site, domain }, site_ref) {
        Ok(Some(stale)) => unaccount::<EXACT>(addr, stale, sites::site(stale.site), true),
        Ok(None) => {}
        Err((lost_addr, lost)) => {
            unaccount::<EXACT>(lost_addr, lost, sites::site(lost.site), true);
            drop_record();
        }
    }
    account::<EXACT>(addr, size, site_ref, true);
    JUST_RECORDED.store(addr, Relaxed);
}

/// The MEM/OBJ block recorded last, until an object is created in it: the
/// interpreter reports each new object right after allocating it, so the
/// reference tracer's common case (`object_created`) is one compare.
static JUST_RECORDED: AtomicUsize = AtomicUsize::new(0);

/// Adds a recorded block to its site's figures: its size, or a sampled
/// block's weight (src/engine/sampling.rs), whose address the filter notes.
/// Exact tracing apart: there a block is one block, a constant the
/// counters' add folds in once `add_to` is inlined. `EXACT`: on the exact
/// path, which knows without looking that nothing is sampled.
#[inline(always)]
fn account<const EXACT: bool>(addr: usize, size: usize, site: &Site, gil: bool) {
    if !EXACT && sampling::on() {
        return account_sampled(addr, size, site, gil);
    }
    add_to(site, size as i64, 1, gil);
}

#[inline(never)]
fn account_sampled(addr: usize, size: usize, site: &Site, gil: bool) {
    let (bytes, blocks) = sampling::weight(size, addr);
    sampling::mark(addr);
    add_to(site, bytes, blocks, gil);
}

/// Counts `bytes` in `blocks` at `site`, with the GIL or without.
#[inline(always)]
fn add_to(site: &Site, bytes: i64, blocks: i64, gil: bool) {
    if gil {
        site.counters.add_gil_weighted(bytes, blocks);
    } else if !site.counters.add_nogil_weighted(bytes, blocks) {
        drop_record();
    }
}

/// Takes a block that left its table off its site's figures (the same
/// amounts `account` added).
#[inline(always)]
fn unaccount<const EXACT: bool>(addr: usize, record: Record, site: &Site, gil: bool) {
    if !EXACT && sampling::on() {
        return unaccount_sampled(addr, record, site, gil);
    }
    take_from(site, record.size as i64, 1, gil);
}

#[inline(never)]
fn unaccount_sampled(addr: usize, record: Record, site: &Site, gil: bool) {
    let (bytes, blocks) = sampling::weight(record.size, addr);
    sampling::unmark(addr);
    take_from(site, bytes, blocks, gil);
}

/// Takes `bytes` in `blocks` off `site`, with the GIL or without.
#[inline(always)]
fn take_from(site: &Site, bytes: i64, blocks: i64, gil: bool) {
    if gil {
        site.counters.sub_gil_weighted(bytes, blocks);
    } else if !site.counters.sub_nogil_weighted(bytes, blocks) {
        drop_record();
    }
}

/// Whether sampling passes over a MEM/OBJ allocation of `size` bytes
/// (never when every allocation is recorded). First thing in the hook, from
/// any thread: see src/engine/sampling.rs.
#[inline(always)]
fn passed_over_mem(size: usize) -> bool {
    sampling::on() && !sampling::take_mem(size)
}

/// The same for a RAW or native allocation; always for one made inside a
/// passed-over MEM/OBJ allocation, which it belongs to.
#[inline(always)]
fn passed_over_raw(size: usize) -> bool {
    sampling::on() && (sampling::inside_passed_over() || !sampling::take_raw(size))
}

/// Whether a MEM/OBJ free of `addr` has anything to do: not when sampling
/// passed the block over and no setrelheap() set is kept (one filter load).
#[inline(always)]
fn may_be_recorded(addr: *mut c_void) -> bool {
    !never_sampled(addr as usize) || crate::engine::relheap::is_kept()
}

/// Whether the block at `addr` is certainly in no table because sampling
/// passed it over: its free, realloc or reuse has nothing to look up.
#[inline(always)]
fn never_sampled(addr: usize) -> bool {
    sampling::on() && !sampling::maybe_sampled(addr)
}

/// Calls the previous allocator inside the re-entrancy guard, then records
/// the block. pymalloc serves requests over 512 bytes with PyMem_RawMalloc,
/// which comes back through our RAW hook: the guard makes that nested call
/// pass through, so each block is counted once, in the domain the program
/// asked (as tracemalloc does).
#[inline(always)]
fn allocate_gil(
    domain: Domain,
    allocate: impl Fn() -> *mut c_void,
    size: usize,
    before: impl FnOnce(),
) -> *mut c_void {
    let depth = exact_path::depth();
    if depth != 0 {
        let record = |thread: &sites::HookState, ptr, size, domain| {
            record_gil_exactly(thread, depth, ptr, size, domain)
        };
        return allocate_recorded_by::<true>(record, domain, allocate, size, before);
    }
    if !tracing() {
        return allocate();
    }
    if passed_over_mem(size) {
        return allocate_passed_over(allocate, before);
    }
    allocate_chosen(domain, allocate, size, before)
}

/// `allocate_gil` for an allocation to record (all, unless sampling).
#[inline(always)]
fn allocate_chosen(
    domain: Domain,
    allocate: impl Fn() -> *mut c_void,
    size: usize,
    before: impl FnOnce(),
) -> *mut c_void {
    allocate_recorded_by::<false>(record_gil, domain, allocate, size, before)
}

/// `allocate_chosen` with the block recorded by `record`: in the MEM/OBJ
/// table (`record_gil`), or in the RAW table when MEM and OBJ frees go
/// straight to pymalloc (hook/direct.rs). `EXACT`: on the exact path, where
/// no heapsite code of its own runs (src/engine/exact_path.rs).
#[inline(always)]
fn allocate_recorded_by<const EXACT: bool>(
    record: impl FnOnce(&sites::HookState, *mut c_void, usize, Domain),
    domain: Domain,
    allocate: impl Fn() -> *mut c_void,
    size: usize,
    before: impl FnOnce(),
) -> *mut c_void {
    let caller = Interp::of_caller();
    if !caller.is_main() {
        return allocate_in_subinterpreter(caller, allocate, before);
    }
    if !EXACT && own_work::is_caller() {
        return allocate_for_heapsite(allocate, before);
    }
    // SAFETY: MEM and OBJ hooks run with the GIL held.
    let guarded = unsafe {
        sites::guarded(|thread| {
            let ptr = allocate();
            if !ptr.is_null() {
                before();
                record(thread, ptr, size, domain);
            }
            ptr
        })
    };
    guarded.unwrap_or_else(allocate)
}

/// A MEM/OBJ allocation (or realloc) that sampling passed over, with what
/// it calls below passing too: only a realloc's old block is forgotten, if
/// it was sampled.
#[inline(always)]
fn allocate_passed_over(allocate: impl Fn() -> *mut c_void, before: impl FnOnce()) -> *mut c_void {
    let ptr = sampling::passing_over(true, allocate);
    if !ptr.is_null() {
        before();
    }
    ptr
}

/// A MEM/OBJ allocation (or realloc) by heapsite's own Python code:
/// untraced, but a realloc'd block of the program's is forgotten (it moved
/// or was freed), as in any realloc.
#[cold]
fn allocate_for_heapsite(allocate: impl Fn() -> *mut c_void, before: impl FnOnce()) -> *mut c_void {
    let ptr = allocate();
    if !ptr.is_null() {
        before();
    }
    ptr
}

/// A MEM/OBJ allocation (or realloc) in a subinterpreter: untraced. `before`
/// forgets a realloc's old block, which only a holder of the main GIL may do
/// (see src/engine/interp.rs: one with its own GIL never holds a traced block).
#[cold]
fn allocate_in_subinterpreter(
    caller: Interp,
    allocate: impl Fn() -> *mut c_void,
    before: impl FnOnce(),
) -> *mut c_void {
    interp::warn_untraced();
    let ptr = allocate();
    if !ptr.is_null() && caller == Interp::SharedGil {
        before();
    }
    ptr
}

/// Takes a queued free off its site's figures (`EXACT`: as `account`).
#[inline(always)]
fn account_free<const EXACT: bool>(freed: Freed) {
    unaccount::<EXACT>(freed.addr, freed.record, freed.site, true);
}

#[inline(always)]
fn untrack_gil(ptr: *mut c_void) {
    untrack_gil_in::<false>(ptr);
}

/// Forgets a MEM/OBJ block; `EXACT` on the exact path, where no
/// `setrelheap()` set is kept and no block was passed over. GIL held.
#[inline(always)]
fn untrack_gil_in<const EXACT: bool>(ptr: *mut c_void) {
    if !EXACT {
        crate::engine::relheap::forget_freed(ptr as usize);
        if never_sampled(ptr as usize) {
            return;
        }
    }
    // SAFETY: GIL held. Removal calls nothing that could re-enter a hook.
    unsafe { GIL_TABLE.get() }.remove(ptr as usize, account_free::<EXACT>);
}

/// The MEM/OBJ table with every queued operation carried out and accounted,
/// for readers of figures. GIL held.
fn settled_gil_table() -> &'static mut GilTable {
    // SAFETY: GIL held by the API caller.
    let table = unsafe { GIL_TABLE.get() };
    table.settle(account_free::<false>);
    table
}

/// Accounts the frees still queued; call before reading any figure. GIL held.
pub(super) fn settle() {
    settled_gil_table();
}

extern "C" fn gil_malloc<const D: usize>(ctx: *mut c_void, size: usize) -> *mut c_void {
    let prev = previous(D, ctx);
    let Some(malloc) = prev.malloc else {
        return ptr::null_mut();
    };
    allocate_gil(domain_of(D), || malloc(prev.ctx, size), size, || {})
}

/// MEM/OBJ malloc as installed for sampled tracing: the passed-over case
/// alone, the recording path in a function apart, so that the common case
/// saves no registers for it (callgrind: a third of the hook's instructions
/// when `gil_malloc` samples). Either function is right in either mode (one
/// stays installed when another tool wrapped it): each hands over to the
/// other when the mode is not its own. Sampling on implies tracing: the
/// rate is set as tracing starts and cleared as it stops (hook/lifecycle.rs).
extern "C" fn sampled_malloc<const D: usize>(ctx: *mut c_void, size: usize) -> *mut c_void {
    if !sampling::on() {
        return gil_malloc::<D>(ctx, size);
    }
    let prev = previous(D, ctx);
    let Some(malloc) = prev.malloc else {
        return ptr::null_mut();
    };
    if sampling::take_mem(size) {
        return malloc_traced(domain_of(D), prev, size);
    }
    if sampling::reaches_below(size, native()) {
        return malloc_marked(prev, size);
    }
    malloc(prev.ctx, size)
}

/// A passed-over malloc that may call a hook below it (sampling.rs), apart
/// like `malloc_traced`: every call out of `sampled_malloc` is a tail call,
/// so it saves no register at all.
#[inline(never)]
fn malloc_marked(prev: &'static PyMemAllocatorEx, size: usize) -> *mut c_void {
    let Some(malloc) = prev.malloc else {
        return ptr::null_mut();
    };
    sampling::passing_over(true, || malloc(prev.ctx, size))
}

#[inline(never)]
fn malloc_traced(domain: Domain, prev: &'static PyMemAllocatorEx, size: usize) -> *mut c_void {
    let Some(malloc) = prev.malloc else {
        return ptr::null_mut();
    };
    allocate_chosen(domain, || malloc(prev.ctx, size), size, || {})
}

extern "C" fn gil_calloc<const D: usize>(ctx: *mut c_void, n: usize, each: usize) -> *mut c_void {
    let prev = previous(D, ctx);
    let Some(calloc) = prev.calloc else {
        return ptr::null_mut();
    };
    allocate_gil(
        domain_of(D),
        || calloc(prev.ctx, n, each),
        n.saturating_mul(each),
        || {},
    )
}

extern "C" fn gil_realloc<const D: usize>(
    ctx: *mut c_void,
    old: *mut c_void,
    size: usize,
) -> *mut c_void {
    let prev = previous(D, ctx);
    let Some(realloc) = prev.realloc else {
        return ptr::null_mut();
    };
    // On failure the old block is untouched and stays recorded. On success,
    // like tracemalloc, the whole block now belongs to the resizing line.
    // Sampling passes over an event before asking who calls: a
    // subinterpreter with its own GIL must not touch the tables
    // (src/engine/interp.rs), whose blocks are never in them.
    let forget_old = || {
        if !old.is_null() && may_be_recorded(old) && Interp::of_caller() != Interp::OwnGil {
            untrack_gil(old);
        }
    };
    allocate_gil(
        domain_of(D),
        || realloc(prev.ctx, old, size),
        size,
        forget_old,
    )
}

/// MEM/OBJ free. On the exact path, the common case (a young block, only
/// the main interpreter, nothing to note) is done inline and calls nothing
/// but the allocator's free, as a tail call: the function then saves no
/// register (callgrind, 3.11: 14 instructions of a free's 60 were its
/// pushes and pops). Anything else goes to `free_exactly` or
/// `free_recorded`, also tail calls.
extern "C" fn gil_free<const D: usize>(ctx: *mut c_void, ptr: *mut c_void) {
    let prev = previous(D, ctx);
    if ptr.is_null() {
        // free(NULL): nothing was recorded, nothing to forget.
    } else if exact_path::depth() != 0 {
        if !(Interp::only_main() && forget_young_exactly(ptr)) {
            return free_exactly(prev, ptr);
        }
    } else if tracing() && may_be_recorded(ptr) {
        return free_recorded(prev, ptr);
    }
    if let Some(free) = prev.free {
        free(prev.ctx, ptr);
    }
}

/// Forgets a young block on the exact path if that needs no call (see
/// `gil_free`); false, with nothing done, otherwise. GIL held.
#[inline(always)]
fn forget_young_exactly(ptr: *mut c_void) -> bool {
    // SAFETY: MEM and OBJ hooks run with the GIL held; nothing here calls out.
    let table = unsafe { GIL_TABLE.get() };
    table.remove_young(ptr as usize, |site, record| {
        site.counters.sub_gil_unless_noted(record.size as i64)
    })
}

/// `gil_free` on the exact path past its inline case.
#[inline(never)]
fn free_exactly(prev: &'static PyMemAllocatorEx, ptr: *mut c_void) {
    forget_freed_in::<true>(ptr);
    if let Some(free) = prev.free {
        free(prev.ctx, ptr);
    }
}

/// MEM/OBJ free as installed for sampled tracing (see `sampled_malloc`).
extern "C" fn sampled_free<const D: usize>(ctx: *mut c_void, ptr: *mut c_void) {
    if !sampling::on() {
        return gil_free::<D>(ctx, ptr);
    }
    let prev = previous(D, ctx);
    let recorded = sampling::maybe_sampled(ptr as usize) || crate::engine::relheap::is_kept();
    if !ptr.is_null() && recorded {
        return free_recorded(prev, ptr);
    }
    if let Some(free) = prev.free {
        free(prev.ctx, ptr);
    }
}

/// A free with something to forget, apart (as `malloc_marked`).
#[inline(never)]
fn free_recorded(prev: &'static PyMemAllocatorEx, ptr: *mut c_void) {
    forget_freed(ptr);
    if let Some(free) = prev.free {
        free(prev.ctx, ptr);
    }
}

/// The recording side of a MEM/OBJ free.
#[inline(always)]
fn forget_freed(ptr: *mut c_void) {
    forget_freed_in::<false>(ptr);
}

/// `forget_freed`; `EXACT` on the exact path (as `untrack_gil_in`).
#[inline(always)]
fn forget_freed_in<const EXACT: bool>(ptr: *mut c_void) {
    // A subinterpreter with its own GIL must not touch the table, and frees
    // only its own, untraced blocks (src/engine/interp.rs).
    if Interp::of_caller() != Interp::OwnGil {
        untrack_gil_in::<EXACT>(ptr);
    }
}

const fn domain_of(d: usize) -> Domain {
    match d {
        0 => Domain::Raw,
        1 => Domain::Mem,
        _ => Domain::Obj,
    }
}

// ---- RAW: any thread, GIL or not --------------------------------------------

/// How the calling thread's new RAW or native block is recorded: `None` in a
/// subinterpreter (untraced, see src/engine/interp.rs), else whether the caller
/// holds the GIL (so its frames can be read).
#[inline(always)]
fn main_interpreter_gil() -> Option<bool> {
    if Interp::of_caller().is_main() {
        Some(frames::gil_held())
    } else {
        interp::warn_untraced();
        None
    }
}

fn track_raw(ptr: *mut c_void, size: usize, gil: bool) {
    if gil && own_work::is_caller() {
        return; // heapsite's own Python code
    }
    let site: SiteId = if gil {
        // SAFETY: this thread holds the GIL, so its frames are stable.
        match unsafe { sites::guarded(|thread| thread.current_site(DEPTH.load(Relaxed))) } {
            Some(Some((site, _))) => site,
            Some(None) => return drop_record(), // no memory for its site
            None => return, // re-entered from inside heapsite: not the program's
        }
    } else {
        NO_GIL_SITE
    };
    insert_raw(ptr, size, site, Domain::Raw, gil);
}

/// Records a block in the RAW table at `site` and counts it: a RAW or
/// native block, or a sampled MEM/OBJ one whose free pymalloc hands to
/// PyMem_RawFree (hook/direct.rs).
fn insert_raw(ptr: *mut c_void, size: usize, site: SiteId, domain: Domain, gil: bool) {
    let record = Record { size, site, domain };
    let result = RAW_TABLE.shard(ptr as usize).insert(ptr as usize, record);
    match result {
        Ok(replaced) => {
            if let Some(old) = replaced {
                unaccount::<false>(ptr as usize, old, sites::site(old.site), gil);
            }
            account::<false>(ptr as usize, size, sites::site(site), gil);
        }
        Err(()) => {
            drop_record();
        }
    }
}

extern "C" fn raw_malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    let prev = previous(0, ctx);
    let Some(malloc) = prev.malloc else {
        return ptr::null_mut();
    };
    let ptr = malloc(prev.ctx, size);
    direct::probe_saw(ptr);
    if !ptr.is_null() && raw_tracing() && !passed_over_raw(size) {
        if let Some(gil) = main_interpreter_gil() {
            track_raw(ptr, size, gil);
        }
    }
    ptr
}

extern "C" fn raw_calloc(ctx: *mut c_void, n: usize, each: usize) -> *mut c_void {
    let prev = previous(0, ctx);
    let Some(calloc) = prev.calloc else {
        return ptr::null_mut();
    };
    let ptr = calloc(prev.ctx, n, each);
    if !ptr.is_null() && raw_tracing() && !passed_over_raw(n.saturating_mul(each)) {
        if let Some(gil) = main_interpreter_gil() {
            track_raw(ptr, n.saturating_mul(each), gil);
        }
    }
    ptr
}

extern "C" fn raw_realloc(ctx: *mut c_void, old: *mut c_void, size: usize) -> *mut c_void {
    let prev = previous(0, ctx);
    let Some(realloc) = prev.realloc else {
        return ptr::null_mut();
    };
    direct::probe_saw(old);
    if !raw_tracing() {
        return realloc(prev.ctx, old, size);
    }
    // The allocators under PyMem_RawRealloc turn size 0 into 1: NULL is
    // always a failure here.
    realloc_raw_block(old, size, false, || realloc(prev.ctx, old, size))
}

/// A realloc of a block in the RAW table (PyMem_RawRealloc, or native
/// realloc). The old block is forgotten before the call: once it is freed,
/// another thread may be handed the same address and record it. If the call
/// fails, the old block is still the program's and is recorded again; with
/// `zero_frees`, a NULL for size 0 means the block was freed (C's realloc).
fn realloc_raw_block(
    old: *mut c_void,
    size: usize,
    zero_frees: bool,
    realloc: impl FnOnce() -> *mut c_void,
) -> *mut c_void {
    let old_record = if old.is_null() || never_sampled(old as usize) {
        None
    } else {
        RAW_TABLE.shard(old as usize).remove(old as usize)
    };
    let ptr = realloc();
    if ptr.is_null() && !(zero_frees && size == 0) {
        if let Some(record) = old_record {
            let _ = RAW_TABLE.shard(old as usize).insert(old as usize, record);
        }
        return ptr;
    }
    let caller = Interp::of_caller();
    let gil = caller.holds_main_gil();
    if let Some(record) = old_record {
        unaccount::<false>(old as usize, record, sites::site(record.site), gil);
    }
    if !ptr.is_null() && !passed_over_raw(size) {
        if caller.is_main() {
            track_raw(ptr, size, gil);
        } else {
            interp::warn_untraced();
        }
    }
    ptr
}

/// Forgets a RAW-table block being freed and takes it off its site.
fn forget_raw(ptr: *mut c_void) {
    if never_sampled(ptr as usize) {
        return;
    }
    if let Some(record) = RAW_TABLE.shard(ptr as usize).remove(ptr as usize) {
        let gil = Interp::of_caller().holds_main_gil();
        unaccount::<false>(ptr as usize, record, sites::site(record.site), gil);
    }
}

extern "C" fn raw_free(ctx: *mut c_void, ptr: *mut c_void) {
    let prev = previous(0, ctx);
    direct::probe_saw(ptr);
    if !ptr.is_null() && raw_tracing() {
        forget_raw(ptr);
    }
    if let Some(free) = prev.free {
        free(prev.ctx, ptr);
    }
}

// ---- native: malloc, mmap... under LD_PRELOAD (see native/interpose.rs) -

/// Switches recording of native events on or off.
pub fn set_native(on: bool) {
    NATIVE.store(on, Relaxed);
    direct::refresh_fast();
}

pub fn native() -> bool {
    NATIVE.load(Relaxed)
}

/// A block the program got from malloc & co. Only a GIL holder's frames are
/// read; inside a MEM/OBJ hook (pymalloc asking malloc for a large block or
/// mmap for an arena) the block is that hook's and passes through.
pub fn native_allocated(ptr: *mut c_void, size: usize) {
    if native_tracing() && !ptr.is_null() && !passed_over_raw(size) {
        let Some(gil) = main_interpreter_gil() else {
            return;
        };
        if gil && crate::engine::native_frames::enabled() {
            track_raw_below_native(ptr, size);
        } else {
            track_raw(ptr, size, gil);
        }
    }
}

/// `track_raw` with the native frames above the Python ones. GIL held.
#[cold]
fn track_raw_below_native(ptr: *mut c_void, size: usize) {
    if own_work::is_caller() {
        return; // heapsite's own Python code
    }
    let mut native = [RawFrame::NONE; crate::engine::native_frames::MAX_NATIVE];
    // SAFETY: this thread holds the GIL.
    let site = unsafe {
        sites::guarded(|thread| {
            let n = crate::engine::native_frames::capture(&mut native);
            thread.current_site_below(&native[..n], DEPTH.load(Relaxed))
        })
    };
    match site {
        Some(Some((site, _))) => insert_raw(ptr, size, site, Domain::Raw, true),
        Some(None) => drop_record(),
        None => {}
    }
}

/// An allocation left unrecorded: heapsite had no memory for its bookkeeping.
#[cold]
fn drop_record() {
    DROPPED.fetch_add(1, Relaxed);
}

/// A block released by free, munmap or a moving realloc.
pub fn native_freed(ptr: *mut c_void) {
    if native_tracing() && !ptr.is_null() {
        forget_raw(ptr);
    }
}

/// realloc & co. (see `realloc_raw_block`).
pub fn native_realloc(
    old: *mut c_void,
    size: usize,
    realloc: impl FnOnce() -> *mut c_void,
) -> *mut c_void {
    if !native_tracing() {
        return realloc();
    }
    realloc_raw_block(old, size, true, realloc)
}

/// A new object whose block starts at `block`: if heapsite holds that block
/// under another site, the object came from a free list (no allocator call)
/// and the block moves to the line creating the object now, as tracemalloc
/// moves its trace. GIL held.
pub fn object_created(block: usize) {
    // Allocated just now, at this line: nothing to move. Cleared, so that
    // the block, freed into a free list and handed out again with no
    // allocation in between, is looked at then.
    if block == JUST_RECORDED.load(Relaxed) {
        JUST_RECORDED.store(0, Relaxed);
        return;
    }
    // The reference tracer is the runtime's: subinterpreters call it too.
    if !tracing() || never_sampled(block) || !Interp::of_caller().is_main() || own_work::is_caller()
    {
        return;
    }
    // SAFETY: GIL held (the reference tracer runs under it).
    unsafe {
        sites::guarded(|thread| {
            let table = GIL_TABLE.get();
            let Some(record) = table.get(block, account_free::<false>) else {
                direct::object_created(thread, block);
                return;
            };
            let Some((site, _)) = thread.current_site(DEPTH.load(Relaxed)) else {
                return; // no memory for a new site: the block stays where it is
            };
            if site != record.site {
                untrack_gil(block as *mut c_void);
                record_gil(thread, block as *mut c_void, record.size, record.domain);
            }
        });
    }
}

/// Forgets the PyMem record of `addr`, if any, taking it off its site's
/// figures: a block that C code reports with PyTraceMalloc_Track after
/// getting it through PyMem would otherwise count twice. GIL held.
pub fn forget(addr: usize) {
    untrack_gil(addr as *mut c_void);
    if !never_sampled(addr) {
        if let Some(record) = RAW_TABLE.shard(addr).remove(addr) {
            unaccount::<false>(addr, record, sites::site(record.site), true);
        }
    }
    settle();
}
