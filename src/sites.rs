//! Call sites: a stack of frames interned to a `SiteId`, with its counters.
//!
//! The hot path reads the frames, hashes them, and looks the hash up in a
//! small per-thread cache of recent sites; only a miss reaches the concurrent
//! interner (a `DashMap` keyed by the hash). A new site copies its frames and
//! pins (INCREFs) their code objects so the pointers stay valid until a report
//! turns them into `file:line in function`. Sites are never freed.

use crate::counters::SiteCounters;
use crate::frames::{self, RawFrame, MAX_FRAMES};
use crate::segvec::{SegVec, Zeroable};
use dashmap::DashMap;
use std::cell::{Cell, UnsafeCell};
use std::hash::{BuildHasherDefault, Hasher};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use std::sync::OnceLock;

pub type SiteId = u32;

/// Allocations made while no Python frame was running (start-up, C threads).
pub const NO_FRAME_SITE: SiteId = 0;
/// RAW allocations from a thread that did not hold the GIL: its frames cannot
/// be read safely, so it is counted here.
pub const NO_GIL_SITE: SiteId = 1;
/// Where allocations go once the (huge) site id space is exhausted.
pub const OVERFLOW_SITE: SiteId = 2;
const FIRST_DYNAMIC_SITE: SiteId = 3;
/// Site ids must fit the table's 30-bit field.
const MAX_SITE: SiteId = (1 << 30) - 1;

pub struct Site {
    frames: AtomicPtr<RawFrame>,
    nframes: AtomicU32,
    /// The whole stack's depth when the site was seen (>= its frames).
    total_depth: AtomicU32,
    pub counters: SiteCounters,
}

// SAFETY: null pointers, zero lengths and zeroed counters form an empty site.
unsafe impl Zeroable for Site {}

impl Site {
    /// The site's frames, most recent first.
    pub fn frames(&self) -> &[RawFrame] {
        let ptr = self.frames.load(Ordering::Acquire);
        if ptr.is_null() {
            return &[];
        }
        // SAFETY: published once, from a leaked boxed slice of `nframes` frames.
        unsafe { std::slice::from_raw_parts(ptr, self.nframes.load(Ordering::Relaxed) as usize) }
    }

    /// How deep the whole stack was (tracemalloc's `total_nframe`).
    pub fn total_depth(&self) -> u32 {
        self.total_depth.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn is(&self, frames: &[RawFrame], total_depth: u32) -> bool {
        self.total_depth() == total_depth && self.frames() == frames
    }
}

/// Whether sites also tell stacks apart by their whole depth (what
/// tracemalloc's API reports); costs a walk to the bottom of every stack.
static COUNT_TOTAL_DEPTH: AtomicBool = AtomicBool::new(false);

pub fn set_count_total_depth(on: bool) {
    COUNT_TOTAL_DEPTH.store(on, Ordering::Relaxed);
}

static SITES: SegVec<Site> = SegVec::new();
static NEXT_SITE: AtomicU32 = AtomicU32::new(FIRST_DYNAMIC_SITE);

/// The hash is computed by `hash_frames`; the map must not hash it again.
#[derive(Default)]
struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys are interned")
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type Interner = DashMap<u64, SiteId, BuildHasherDefault<PrehashedKey>>;
static INTERNER: OnceLock<Interner> = OnceLock::new();

/// The site with this id. Every id handed out has its slot allocated.
#[inline(always)]
pub fn site(id: SiteId) -> &'static Site {
    SITES
        .get(id as usize)
        .unwrap_or_else(|| SITES.get(OVERFLOW_SITE as usize).expect("reserved sites"))
}

/// Creates the reserved sites; called once at module init.
pub fn init() {
    for id in 0..FIRST_DYNAMIC_SITE {
        SITES
            .get_or_grow(id as usize)
            .expect("memory for the first sites");
    }
    INTERNER.get_or_init(Interner::default);
}

/// Number of ids handed out so far (reserved ones included).
pub fn count() -> SiteId {
    NEXT_SITE.load(Ordering::Acquire)
}

/// Bytes of heapsite's own memory spent on sites and their frames.
pub fn memory_bytes() -> usize {
    let frames: usize = (FIRST_DYNAMIC_SITE..count())
        .map(|id| std::mem::size_of_val(site(id).frames()))
        .sum();
    let interner = INTERNER.get().map_or(0, |m| m.capacity() * 16);
    SITES.allocated_bytes() + frames + interner
}

#[inline(always)]
fn hash_stack(frames: &[RawFrame], total_depth: u32) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0x243F_6A88_85A3_08D3 ^ total_depth as u64;
    for frame in frames {
        h = (h ^ frame.code as u64).wrapping_mul(K);
        h = (h ^ frame.offset as u64).wrapping_mul(K);
        h ^= h >> 29;
    }
    h
}

/// Finds or creates the site for `frames`. GIL held (pins code objects).
#[cold]
fn intern(frames: &[RawFrame], total_depth: u32, hash: u64) -> SiteId {
    let interner = INTERNER.get_or_init(Interner::default);
    // Distinct stacks with equal 64-bit hashes take the next free key.
    let mut key = hash;
    while let Some(id) = interner.get(&key).map(|entry| *entry) {
        if site(id).is(frames, total_depth) {
            return id;
        }
        key = key.wrapping_add(1);
    }
    let id = NEXT_SITE.fetch_add(1, Ordering::AcqRel);
    if id > MAX_SITE {
        return OVERFLOW_SITE;
    }
    let Some(slot) = SITES.get_or_grow(id as usize) else {
        return OVERFLOW_SITE;
    };
    for frame in frames {
        // SAFETY: GIL held; the code object is on the running stack, so alive.
        unsafe { pyo3_ffi::Py_IncRef(frame.code.cast()) };
    }
    let boxed: Box<[RawFrame]> = frames.into();
    slot.nframes.store(boxed.len() as u32, Ordering::Relaxed);
    slot.total_depth.store(total_depth, Ordering::Relaxed);
    slot.frames
        .store(Box::leak(boxed).as_mut_ptr(), Ordering::Release);
    interner.insert(key, id);
    id
}

const CACHE_SLOTS: usize = 1024;

#[derive(Clone, Copy)]
struct CacheEntry {
    hash: u64,
    id: SiteId,
    /// The site itself, so a hit needs no lookup by id.
    site: *const Site,
}

const EMPTY_ENTRY: CacheEntry = CacheEntry {
    hash: 0,
    id: SiteId::MAX,
    site: std::ptr::null(),
};

/// Per-thread state of the hook: the re-entrancy flag and the site cache.
pub struct ThreadHookState {
    busy: Cell<bool>,
    cache: UnsafeCell<[CacheEntry; CACHE_SLOTS]>,
}

thread_local! {
    // Const-initialised and without Drop: no lazy registration, so it is
    // usable at any point of a thread's life, including its teardown.
    static THREAD: ThreadHookState = const {
        ThreadHookState {
            busy: Cell::new(false),
            cache: UnsafeCell::new([EMPTY_ENTRY; CACHE_SLOTS]),
        }
    };
}

/// Runs `f` unless this thread is already inside heapsite (re-entrancy).
#[inline(always)]
pub fn guarded<R>(f: impl FnOnce(&ThreadHookState) -> R) -> Option<R> {
    THREAD.with(|state| {
        if state.busy.replace(true) {
            return None;
        }
        let result = f(state);
        state.busy.set(false);
        Some(result)
    })
}

impl ThreadHookState {
    /// The site of the calling Python code, `depth` frames deep.
    ///
    /// # Safety
    /// GIL held by the calling thread.
    #[inline(always)]
    pub unsafe fn current_site(&self, depth: usize) -> (SiteId, &'static Site) {
        let mut buf = [MaybeUninit::<RawFrame>::uninit(); MAX_FRAMES];
        let count_total = COUNT_TOTAL_DEPTH.load(Ordering::Relaxed);
        let (n, total) = frames::read_frames(&mut buf[..depth.clamp(1, MAX_FRAMES)], count_total);
        if n == 0 {
            return (NO_FRAME_SITE, site(NO_FRAME_SITE));
        }
        // SAFETY: read_frames initialised the first n entries.
        let frames = std::slice::from_raw_parts(buf.as_ptr().cast::<RawFrame>(), n);
        let hash = hash_stack(frames, total);
        // SAFETY: the cache is this thread's own and not borrowed elsewhere.
        let entry = &mut (*self.cache.get())[(hash >> 54) as usize % CACHE_SLOTS];
        // SAFETY: a non-null entry points at a site, and sites live forever.
        if entry.hash == hash && !entry.site.is_null() && (*entry.site).is(frames, total) {
            return (entry.id, &*entry.site);
        }
        let id = intern(frames, total, hash);
        let found = site(id);
        *entry = CacheEntry {
            hash,
            id,
            site: found,
        };
        (id, found)
    }
}

/// Zeroes every site's counters (`clear()`); GIL held.
pub fn reset_all() {
    for id in 0..count() {
        site(id).counters.reset();
    }
}
