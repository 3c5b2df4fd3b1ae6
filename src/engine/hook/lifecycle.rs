//! The hooks' lifecycle: installing them outermost in each domain and
//! removing them, starting and stopping (with the tables cleared), and the
//! fork handlers that keep the RAW shards' locks out of a child. None of it
//! runs on the hot path, which is the parent module (engine/hook.rs).

use super::*;

// ---- installing and removing ------------------------------------------------

fn our_allocator(domain: usize, ctx: *mut c_void) -> PyMemAllocatorEx {
    let sampled = crate::engine::sampling::on();
    match domain {
        0 => PyMemAllocatorEx {
            ctx,
            malloc: Some(raw_malloc),
            calloc: Some(raw_calloc),
            realloc: Some(raw_realloc),
            free: Some(raw_free),
        },
        1 => PyMemAllocatorEx {
            ctx,
            malloc: Some(if sampled {
                sampled_malloc::<1>
            } else {
                gil_malloc::<1>
            }),
            calloc: Some(gil_calloc::<1>),
            realloc: Some(gil_realloc::<1>),
            free: Some(if sampled {
                sampled_free::<1>
            } else {
                gil_free::<1>
            }),
        },
        _ => PyMemAllocatorEx {
            ctx,
            malloc: Some(if sampled {
                sampled_malloc::<2>
            } else {
                gil_malloc::<2>
            }),
            calloc: Some(gil_calloc::<2>),
            realloc: Some(gil_realloc::<2>),
            free: Some(if sampled {
                sampled_free::<2>
            } else {
                gil_free::<2>
            }),
        },
    }
}

fn current_allocator(domain: usize) -> PyMemAllocatorEx {
    let mut current = PyMemAllocatorEx {
        ctx: ptr::null_mut(),
        malloc: None,
        calloc: None,
        realloc: None,
        free: None,
    };
    // SAFETY: writes the domain's allocator into `current`.
    unsafe { PyMem_GetAllocator(DOMAINS[domain], &mut current) };
    current
}

/// Whether `allocator` is one of ours (exact or sampled: calloc is shared).
fn is_ours(domain: usize, allocator: &PyMemAllocatorEx) -> bool {
    let ours = our_allocator(domain, ptr::null_mut());
    allocator.calloc.map(|f| f as usize) == ours.calloc.map(|f| f as usize)
}

/// Puts our hook outermost in each domain where it is not already. If another
/// tool wrapped an earlier installation, this adds a layer around it; the
/// inner one passes through. GIL held.
fn install() {
    for (domain, &kind) in DOMAINS.iter().enumerate() {
        let mut prev = current_allocator(domain);
        if direct::is_direct(domain, &prev) {
            // Left outermost by a tool that unwrapped it: start afresh.
            direct::uninstall(domain, kind);
            prev = current_allocator(domain);
        }
        if is_ours(domain, &prev) {
            continue;
        }
        // RAW (domain 0) is installed first: the probe needs it.
        if crate::engine::sampling::on() && direct::try_install(domain, kind, prev) {
            direct::set_active(domain, true);
            continue;
        }
        install_with_free(domain, kind, prev);
    }
}

/// Installs our hooks, the free hook included, over `prev`. GIL held.
fn install_with_free(domain: usize, kind: PyMemAllocatorDomain, prev: PyMemAllocatorEx) {
    let ctx: &'static mut HookCtx = Box::leak(Box::new(HookCtx {
        magic: HOOK_MAGIC,
        prev,
    }));
    LATEST[domain].store(ctx, Release);
    let mut ours = our_allocator(domain, (ctx as *mut HookCtx).cast());
    // SAFETY: our allocator forwards to the valid previous one in ctx.
    unsafe { PyMem_SetAllocator(kind, &mut ours) };
}

/// Restores each domain's previous allocator where ours is the outermost.
/// Where another tool wrapped ours (say tracemalloc started after heapsite),
/// removing ours would cut that tool's chain: it stays, passing through. GIL held.
fn uninstall() {
    for (domain, &kind) in DOMAINS.iter().enumerate() {
        direct::set_active(domain, false);
        let current = current_allocator(domain);
        if direct::is_direct(domain, &current) {
            direct::uninstall(domain, kind);
            continue;
        }
        if !is_ours(domain, &current) {
            continue;
        }
        let mut prev = *previous(domain, current.ctx);
        // SAFETY: restores the allocator that was current when we installed.
        unsafe { PyMem_SetAllocator(kind, &mut prev) };
    }
}

/// Puts the free hook back where sampled tracing left MEM and OBJ frees to
/// pymalloc (hook/direct.rs): a setrelheap() set must hear of every free.
/// False if a domain's layer is wrapped by another tool and cannot be
/// swapped (then frees of blocks the set holds go unseen). GIL held.
pub fn keep_every_free() -> bool {
    let mut swapped_all = true;
    for (domain, &kind) in DOMAINS.iter().enumerate() {
        if !direct::is_active(domain) {
            continue;
        }
        let current = current_allocator(domain);
        if !direct::is_direct(domain, &current) {
            swapped_all = false;
            continue;
        }
        direct::uninstall(domain, kind);
        install_with_free(domain, kind, current_allocator(domain));
    }
    swapped_all
}

/// What a layer above the engine keeps beside its tables (native/tracked.rs:
/// the blocks extensions report through `PyTraceMalloc_Track`): cleared with
/// them and installed as tracing starts, in the same order as the engine's
/// own. The engine imports no layer above it; its caller (py/api.rs) hands
/// these in.
pub struct Companion {
    pub install: fn(),
    pub clear: fn(),
}

fn clear_tables(companion: &Companion) {
    // SAFETY: GIL held by the API caller.
    unsafe { GIL_TABLE.get() }.clear();
    for shard in RAW_TABLE.shards() {
        shard.lock().clear();
    }
    (companion.clear)();
    crate::engine::sampling::clear_filter();
    crate::engine::counters::reset_globals();
    sites::reset_all();
}

/// Starts tracing `depth` frames deep, recording every allocation
/// (`sample_rate` 0) or sampling one per `sample_rate` bytes on average
/// (src/engine/sampling.rs); or, while tracing, changes the depth. The rate
/// cannot change while tracing: the tables hold blocks chosen by the old
/// one (the caller refuses that). GIL held.
pub fn start(depth: usize, sample_rate: u64, companion: &Companion) {
    DEPTH.store(depth, Relaxed);
    if tracing() {
        debug_assert_eq!(sample_rate, crate::engine::sampling::rate());
        crate::engine::exact_path::refresh();
        return;
    }
    clear_tables(companion);
    crate::engine::table::size_for_sampling(sample_rate != 0);
    crate::engine::sampling::configure(sample_rate, seed());
    install();
    (companion.install)();
    TRACING.store(true, Release);
    crate::engine::exact_path::refresh();
}

/// Stops tracing and forgets what was recorded. GIL held.
pub fn stop(companion: &Companion) {
    if !tracing() {
        return;
    }
    TRACING.store(false, Release);
    crate::engine::exact_path::refresh();
    // The direct layers stop choosing before the rate is cleared (with no
    // rate, every event would be chosen).
    for domain in 0..DOMAINS.len() {
        direct::set_active(domain, false);
    }
    // Not sampling any more: sample_rate() says 0, and a sampled hook left
    // installed under another tool hands over to the exact one, which stops
    // at `tracing()` (the sampled ones rely on this: no rate, no tracing).
    crate::engine::sampling::configure(0, 1);
    uninstall();
    clear_tables(companion);
}

/// A different sampling seed for every start.
fn seed() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    now ^ (u64::from(std::process::id()) << 32)
}

/// Whether MEM and OBJ frees pass through a hook of heapsite's while it
/// traces: not where sampled tracing leaves them to pymalloc (direct.rs).
pub fn free_hook() -> bool {
    tracing() && !(1..DOMAINS.len()).all(direct::is_active)
}

pub fn is_tracing() -> bool {
    tracing()
}

pub fn depth() -> usize {
    DEPTH.load(Relaxed)
}

/// Forgets every recorded allocation, keeps tracing. GIL held.
pub fn clear(companion: &Companion) {
    clear_tables(companion);
}

// ---- fork ------------------------------------------------------------------

extern "C" fn before_fork() {
    FORKING.store(true, Relaxed);
    // A thread without the GIL may hold a RAW shard; the child must not
    // inherit a lock whose holder it does not have.
    for shard in RAW_TABLE.shards() {
        shard.acquire_raw();
    }
}

extern "C" fn after_fork() {
    for shard in RAW_TABLE.shards() {
        // SAFETY: taken by before_fork in this thread (or its parent image).
        unsafe { shard.release_raw() };
    }
    FORKING.store(false, Relaxed);
}

/// Registers the fork handlers; once, at module init.
pub fn init() {
    extern "C" {
        fn pthread_atfork(
            prepare: Option<extern "C" fn()>,
            parent: Option<extern "C" fn()>,
            child: Option<extern "C" fn()>,
        ) -> i32;
    }
    // SAFETY: plain function pointers with static lifetime.
    unsafe { pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork)) };
}
