//! Call sites: a stack of frames interned to a `SiteId`, with its counters.
//!
//! The hot path reads the frames, hashes them, and looks the hash up in a
//! small cache of recent sites; only a miss reaches the interner
//! (src/engine/interner.rs), which matches the stack as frame ids of the frame
//! table (src/engine/frame_table.rs: one entry per code object and line, so
//! offsets within a line make one site). A new site keeps its frame ids and has their code objects
//! watched (src/engine/codes.rs): one that is freed has its frames resolved for good
//! first, and the site leaves the interner; once it holds nothing, its id is
//! reused (src/engine/reuse.rs). Slots are never freed: ids index them.
//!
//! Out of memory, no new site is made: the allocation it was for goes
//! unrecorded (counted as dropped by the hook), and the program goes on.

use crate::engine::counters::SiteCounters;
use crate::engine::fallible;
use crate::engine::frame_table::{FrameId, FrameTable};
use crate::engine::frames::{self, RawFrame, MAX_FRAMES};
use crate::engine::id_lists::{IdLists, Ids, Stored};
use crate::engine::interner::Interner;
use crate::engine::segvec::{SegVec, Zeroable};
use crate::engine::site_cache::SiteCache;
use crate::engine::sync::GilCell;
use std::cell::{Cell, UnsafeCell};
use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

pub type SiteId = u32;

/// Allocations made while no Python frame was running (start-up, C threads).
pub const NO_FRAME_SITE: SiteId = 0;
/// RAW allocations from a thread that did not hold the GIL: its frames cannot
/// be read safely, so it is counted here.
pub const NO_GIL_SITE: SiteId = 1;
/// Where allocations go once the (huge) site id space is exhausted.
pub const OVERFLOW_SITE: SiteId = 2;
/// What sites of freed code allocated in total, once their ids were reused
/// (src/engine/reuse.rs).
pub const FREED_CODE_SITE: SiteId = 3;
const FIRST_DYNAMIC_SITE: SiteId = 4;

/// What a report names a reserved site by (it has no frames), or None for
/// a site of the program's.
pub fn reserved_name(id: SiteId) -> Option<&'static CStr> {
    match id {
        NO_FRAME_SITE => Some(c"<no Python frame>"),
        NO_GIL_SITE => Some(c"<raw allocation without the GIL>"),
        OVERFLOW_SITE => Some(c"<too many call sites>"),
        FREED_CODE_SITE => Some(c"<freed code>"),
        _ => None,
    }
}
/// Site ids must fit the table's 30-bit field.
const MAX_SITE: SiteId = (1 << 30) - 1;

pub struct Site {
    /// The site's frames, as ids in the frame table
    /// (src/engine/frame_table.rs), kept as src/engine/id_lists.rs says: a
    /// short list in these 8 bytes, a longer one's handle in the shared
    /// store. Atomic for `Sync` only: only the GIL holder touches it.
    ids: AtomicU64,
    /// The list's `id_lists::Stored::shape` (its length and width, in the
    /// low `SHAPE_BITS`), and above it the whole stack's depth when the site
    /// was seen (>= its frames; `MAX_DEPTH` at most).
    shape_depth: AtomicU32,
    /// Bumped each time the slot is given to a new site (ids of freed code
    /// are reused), so a reader without the GIL can tell whether what it
    /// knows of an id (its names) is still about the site there now.
    generation: AtomicU32,
    pub counters: SiteCounters,
}

/// The bits of `Site::shape_depth` that hold the list's shape.
const SHAPE_BITS: u32 = 9;
const SHAPE_MASK: u32 = (1 << SHAPE_BITS) - 1;
const _: () = assert!(crate::engine::id_lists::MAX_SHAPE < 1 << SHAPE_BITS);
/// The deepest stack a site tells apart from deeper ones: 8 million
/// frames (tracemalloc stops at 65,535).
pub const MAX_DEPTH: u32 = u32::MAX >> SHAPE_BITS;

/// The id of the site whose counters are at `counters`: the counters' list
/// of sites touched since a mark (src/engine/counters.rs) holds addresses.
/// None if no site's counters are there.
pub fn id_of_counters(counters: usize) -> Option<SiteId> {
    let site = counters.checked_sub(std::mem::offset_of!(Site, counters))?;
    SITES
        .index_of(site as *const Site, count() as usize)
        .map(|id| id as SiteId)
}

// SAFETY: zero is the empty list of ids (id_lists::Stored::EMPTY), and
// zeroed counters are empty ones.
unsafe impl Zeroable for Site {}

// A program can make hundreds of thousands of sites (pyperformance's
// generators: 120,000 at 16 frames); a slot's every byte counts there.
// 120 before the counters of events without the GIL moved out, 96 before
// the peak's figures went to a log (src/engine/counters.rs).
const _: () = assert!(std::mem::size_of::<Site>() == 56);

/// A site's frames copied out of the frame table, most recent first.
pub struct Frames {
    buf: [RawFrame; MAX_FRAMES],
    len: usize,
}

impl std::ops::Deref for Frames {
    type Target = [RawFrame];
    fn deref(&self) -> &[RawFrame] {
        &self.buf[..self.len]
    }
}

/// The interned frames sites name. GIL held.
static FRAME_TABLE: GilCell<FrameTable> = GilCell::new(FrameTable::new());

/// Where sites keep lists of frame ids too long for their own field. GIL held.
static ID_LISTS: GilCell<IdLists> = GilCell::new(IdLists::new());

impl Site {
    /// How the site's frame ids are kept now.
    #[inline(always)]
    fn stored_ids(&self) -> Stored {
        Stored {
            word: self.ids.load(Ordering::Relaxed),
            shape: self.shape_depth.load(Ordering::Relaxed) & SHAPE_MASK,
        }
    }

    /// The site's frame ids, copied out. GIL held: only GIL holders touch
    /// them.
    #[inline(always)]
    fn ids(&self) -> Ids {
        // SAFETY: GIL held (this fn's contract); the store is borrowed only
        // for the copy.
        unsafe { ID_LISTS.get() }.load(self.stored_ids())
    }

    /// Whether any of the site's frame ids passes `test`, read where they
    /// are kept (no copy: scans of every site call this). GIL held; `test`
    /// neither touches the id store nor allocates (which could make a
    /// site, preloaded).
    #[inline(always)]
    fn any_id(&self, test: impl FnMut(FrameId) -> bool) -> bool {
        // SAFETY: GIL held (this fn's contract); the store is borrowed only
        // for the scan, and `test` does not borrow it.
        unsafe { ID_LISTS.get() }.any(self.stored_ids(), test)
    }

    /// The site's frames, most recent first. GIL held: only GIL holders
    /// read a site's frames.
    pub fn frames(&self) -> Frames {
        let mut out = Frames {
            buf: [RawFrame::NONE; MAX_FRAMES],
            len: 0,
        };
        // SAFETY: GIL held (this fn's contract); no other borrow of the table.
        let table = unsafe { FRAME_TABLE.get() };
        let ids = self.ids();
        for (slot, &id) in out.buf.iter_mut().zip(ids.iter()) {
            *slot = table.frame(id);
        }
        out.len = ids.len();
        out
    }

    /// Which site the slot holds: changes when the id is reused. Readable
    /// from any thread.
    pub fn generation(&self) -> u32 {
        self.generation.load(Ordering::Acquire)
    }

    /// Marks the slot as no longer holding the site it held (its id given
    /// back, reuse.rs), so that a reader without the GIL does not pair what
    /// it knew of that site with the zeroed counters or the next site.
    pub fn end_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Keeps the id list's `shape` and the stack's `depth` (at most
    /// `MAX_DEPTH`) in their shared word.
    fn set_shape_depth(&self, shape: u32, depth: u32) {
        self.shape_depth
            .store(depth << SHAPE_BITS | shape, Ordering::Relaxed);
    }

    /// How deep the whole stack was (tracemalloc's `total_nframe`).
    pub fn total_depth(&self) -> u32 {
        self.shape_depth.load(Ordering::Relaxed) >> SHAPE_BITS
    }

    /// Makes `ids` (kept in the id store and held in the frame table by
    /// the caller: `Stored`) the site's frames, EMPTY for none, and
    /// releases the ids it had. GIL held.
    pub fn set_frames(&self, ids: Stored) {
        let old = self.stored_ids();
        self.ids.store(ids.word, Ordering::Relaxed);
        self.set_shape_depth(ids.shape, self.total_depth());
        if old.len() == 0 {
            return; // a new site's slot: nothing to release (no copy made)
        }
        // SAFETY: GIL held (this fn's contract); the store is borrowed only
        // for the copy.
        let old_ids = unsafe { ID_LISTS.get() }.load(old);
        // SAFETY: GIL held (this fn's contract); each borrow lasts its
        // statement. The old ids are copied out first: releasing them
        // buries records, an allocation, so no borrow of the store is held
        // across it.
        unsafe {
            ID_LISTS.get().free(old);
            FRAME_TABLE.get().release(&old_ids, bury_record);
        }
    }

    #[inline(always)]
    fn is(&self, ids: &[FrameId], total_depth: u32) -> bool {
        // SAFETY: GIL held (the interner's callers'); the store is borrowed
        // only for the compare.
        self.total_depth() == total_depth && unsafe { ID_LISTS.get() }.holds(self.stored_ids(), ids)
    }
}

/// Whether sites also tell stacks apart by their whole depth (what
/// tracemalloc's API reports); costs a walk to the bottom of every stack.
static COUNT_TOTAL_DEPTH: AtomicBool = AtomicBool::new(false);

/// Sets whether sites tell stacks apart by their whole depth. GIL held.
pub fn set_count_total_depth(on: bool) {
    COUNT_TOTAL_DEPTH.store(on, Ordering::Relaxed);
    crate::engine::exact_path::refresh();
}

pub fn count_total_depth() -> bool {
    COUNT_TOTAL_DEPTH.load(Ordering::Relaxed)
}

static SITES: SegVec<Site> = SegVec::new();
static NEXT_SITE: AtomicU32 = AtomicU32::new(FIRST_DYNAMIC_SITE);
static BIRTHS: AtomicU32 = AtomicU32::new(FIRST_DYNAMIC_SITE);

/// The sites whose code objects are all alive, by stack hash. GIL held.
static INTERNER: GilCell<Interner> = GilCell::new(Interner::new());

/// The site with this id. Every id handed out has its slot allocated.
#[inline(always)]
pub fn site(id: SiteId) -> &'static Site {
    SITES
        .get(id as usize)
        .unwrap_or_else(|| SITES.get(OVERFLOW_SITE as usize).expect("reserved sites"))
}

/// The site with this id if its slot exists: a reader without the GIL may
/// see an id counted a moment before its slot is allocated.
pub fn existing(id: SiteId) -> Option<&'static Site> {
    SITES.get(id as usize)
}

/// Creates the reserved sites; called once at module init.
pub fn init() {
    for id in 0..FIRST_DYNAMIC_SITE {
        SITES
            .get_or_grow(id as usize)
            .expect("memory for the first sites");
    }
}

/// Every site's counters (slots of ids in use); GIL held for a settled view.
pub fn every_counters() -> impl Iterator<Item = &'static SiteCounters> {
    (0..count()).filter_map(|id| existing(id).map(|site| &site.counters))
}

/// Number of ids handed out so far (reserved ones included): ids run
/// 0..count().
pub fn count() -> SiteId {
    NEXT_SITE.load(Ordering::Acquire)
}

/// Number of sites made so far (reserved ones included), reused ids counted
/// once per site made under them.
pub fn births() -> u32 {
    BIRTHS.load(Ordering::Acquire)
}

/// Two odd multipliers per stack position, one for each of a stack's two
/// hashes. Each frame's products are independent of the other frames', so
/// the CPU multiplies them in parallel (a running `h = (h ^ x) * K` would
/// make every frame wait for the last).
const MULTIPLIERS: [[u64; 2]; MAX_FRAMES] = {
    let mut table = [[0u64; 2]; MAX_FRAMES];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut i = 0;
    while i < MAX_FRAMES * 2 {
        table[i / 2][i % 2] = x | 1;
        x = x
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .wrapping_add(0x94D0_49BB_1331_11EB);
        i += 1;
    }
    table
};

fn finish(mut h: u64) -> u64 {
    h ^= h >> 31;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 29)
}

/// A stack's two 64-bit hashes, from its frames as read: the first indexes
/// the site cache, the pair identifies a cached stack. Stacks of Python
/// frames alone are keyed the same way as they are walked, from each frame's
/// instruction pointer (`hs_key_of_stack` in frames.c, with these
/// multipliers); this one keys stacks with native frames above them.
///
/// Why a cache hit trusts the pair instead of comparing frames: comparing
/// reads the site's frames, a cache miss per deep stack, which cost more than
/// hashing. Each hash is a sum of frame words times odd multipliers, so two
/// different stacks agree on one only where their word differences, times
/// the multipliers, cancel modulo 2^64: about one chance in 2^(63 - v), with
/// 2^v the largest power of two dividing every difference. A frame's word
/// spreads its offset with an odd multiplier, so v stays small (code objects
/// are 16 bytes apart at least, offsets 2; instruction pointers are 2 bytes
/// apart) and the pair errs about once in 2^100 lookups. The interner,
/// reached on a miss, still compares frames. (One hash would save 4 of the
/// walk's 12 instructions a frame; that build ran pyperformance's
/// spectral_norm at 16 frames 16% slower in wall time, docs/design.md.)
#[inline(always)]
fn hash_stack(frames: &[RawFrame], total_depth: u32) -> (u64, u64) {
    let depth = total_depth as u64;
    let mut h = depth.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    let mut check = depth.wrapping_mul(0xA076_1D64_78BD_642F);
    for (frame, k) in frames.iter().zip(MULTIPLIERS.iter()) {
        let word = (frame.code as u64)
            .wrapping_add((frame.offset as u32 as u64).wrapping_mul(0xE703_7ED1_A0B4_28DB));
        h = h.wrapping_add(word.wrapping_mul(k[0]));
        check = check.wrapping_add(word.wrapping_mul(k[1]));
    }
    (finish(h), finish(check))
}

/// The interner's hash of a stack of frame ids (the same sum of products
/// as `hash_stack`'s first hash, over ids).
fn hash_ids(ids: &[FrameId], total_depth: u32) -> u64 {
    let mut h = (total_depth as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    for (&id, k) in ids.iter().zip(MULTIPLIERS.iter()) {
        h = h.wrapping_add(
            (id as u64 + 1)
                .wrapping_mul(0xE703_7ED1_A0B4_28DB)
                .wrapping_mul(k[0]),
        );
    }
    finish(h)
}

/// The interned site of the stack whose frames have instruction pointers
/// `words` (`frames::read_words`; its depth is theirs), when the frame
/// table's memo knows every one of them: no code object is read. None
/// sends the caller the long way (frames read, then `intern`).
///
/// # Safety
/// GIL held.
unsafe fn interned_by_words(words: &[u64]) -> Option<SiteId> {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above).
    let (table, interner) = unsafe { (FRAME_TABLE.get(), &*INTERNER.get()) };
    let mut buf = [0 as FrameId; MAX_FRAMES];
    let ids = &mut buf[..words.len()];
    if !table.ids_of_words(words, ids) {
        return None;
    }
    let depth = words.len() as u32;
    find_interned(interner, hash_ids(ids, depth), ids, depth)
}

/// The interned site of the stack of frame ids `ids` (whose hash_ids is
/// `hash`), if there is one.
fn find_interned(
    interner: &Interner,
    hash: u64,
    ids: &[FrameId],
    total_depth: u32,
) -> Option<SiteId> {
    interner.find(hash, |id| site(id).is(ids, total_depth))
}

/// Finds or creates the site for `frames`; None when memory for a new one
/// cannot be had. `words`, the same frames' instruction pointers where they
/// were read, go into the frame table's memo with the ids found for them
/// (see `interned_by_words`).
///
/// # Safety
/// GIL held (reads the interner, has code objects watched).
#[cold]
unsafe fn intern(frames: &[RawFrame], total_depth: u32, words: Option<&[u64]>) -> Option<SiteId> {
    // What the site keeps, so that it is interned under what it keeps.
    let total_depth = total_depth.min(MAX_DEPTH);
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held (reads the interner, has code objects watched).
    unsafe {
        let table = FRAME_TABLE.get();
        // Only the ids needed are zeroed: the whole array is 512 bytes, a
        // memset of its own at every miss of the hooks' cache.
        let mut buf = [MaybeUninit::<FrameId>::uninit(); MAX_FRAMES];
        let ids = &mut buf[..frames.len()];
        ids.fill(MaybeUninit::new(0));
        // SAFETY: every element of `ids` was just written.
        let ids = std::slice::from_raw_parts_mut(ids.as_mut_ptr().cast::<FrameId>(), ids.len());
        // Lines are resolved only for a (code, offset) not seen before.
        if !table.ids_of(frames, ids, |f| frames::resolve(f).lineno) {
            return None;
        }
        if let Some(words) = words.filter(|words| words.len() == ids.len()) {
            table.remember_words(words, ids);
        }
        let ids = &*ids;
        let interner = INTERNER.get();
        let hash = hash_ids(ids, total_depth);
        if let Some(id) = find_interned(interner, hash, ids, total_depth) {
            return Some(id);
        }
        // Everything a new site needs is had before it is made.
        let stored = ID_LISTS.get().store(ids);
        let ready = stored.is_some()
            && interner.reserve_one(interned_hash)
            && crate::engine::codes::reserve_watch(frames.len());
        table.hold(ids);
        let Some(stored) = stored.filter(|_| ready) else {
            if let Some(stored) = stored {
                ID_LISTS.get().free(stored);
            }
            table.release(ids, bury_record); // frees the entries no other site names
            return None;
        };
        let id = match crate::engine::reuse::take_id() {
            Some(id) => id,
            None => NEXT_SITE.fetch_add(1, Ordering::AcqRel),
        };
        let slot = (id <= MAX_SITE)
            .then(|| SITES.get_or_grow(id as usize))
            .flatten();
        let Some(slot) = slot else {
            ID_LISTS.get().free(stored);
            table.release(ids, bury_record);
            return (id > MAX_SITE).then_some(OVERFLOW_SITE);
        };
        slot.set_shape_depth(slot.stored_ids().shape, total_depth);
        slot.generation.fetch_add(1, Ordering::AcqRel);
        BIRTHS.fetch_add(1, Ordering::AcqRel);
        debug_assert!(slot.ids().is_empty(), "a site id handed out twice");
        slot.set_frames(stored);
        interner.insert(hash, id, interned_hash);
        // SAFETY: GIL held; the code objects are on the running stack, so alive.
        crate::engine::codes::watch(id, frames);
        Some(id)
    }
}

/// The hash a site was interned under (its frames still all alive).
fn interned_hash(id: SiteId) -> u64 {
    let site = site(id);
    hash_ids(&site.ids(), site.total_depth())
}

/// The first half of retiring site `id` for `code`, which is being freed
/// (src/engine/codes.rs): a site that names `code` and had no frame retired
/// before can match no stack from now on, so it leaves the interner, and
/// once it holds nothing its id can be given back (src/engine/reuse.rs).
/// Called for every site before `retire_frames` is for any, which changes
/// what both see.
///
/// # Safety
/// GIL held.
pub unsafe fn retire_site(id: SiteId, code: *mut std::ffi::c_void) {
    if !names(id, code) {
        return; // or its id was given back and reused since
    }
    // SAFETY: GIL held (this fn's contract); no other borrow of the table.
    let table = unsafe { FRAME_TABLE.get() };
    if !site(id).any_id(|frame| table.frame(frame).is_retired()) {
        // SAFETY: GIL held (this fn's contract).
        unsafe {
            INTERNER.get().remove(interned_hash(id), id);
            crate::engine::reuse::died(id);
        }
    }
}

/// The second half: the frames of site `id` that name `code` are resolved
/// for good where the frame table keeps them (`FrameTable::retire_in_place`),
/// so that every site naming one of them names its record from then on and
/// no site's frame ids change. A dying module body is in the stack of every
/// site its import made: rewriting each site's ids (resolving, interning and
/// copying them again) was 40% of the instructions of importing a dozen
/// stdlib modules at 16 frames (callgrind, CPython 3.11). Out of memory for
/// a record, the site loses its frames rather than name a freed code object.
///
/// # Safety
/// GIL held; `code`'s fields still intact; no Python code runs meanwhile.
pub unsafe fn retire_frames(id: SiteId, code: *mut std::ffi::c_void) {
    if !names(id, code) {
        return; // most sites a crowded code object's death asks (codes.rs)
    }
    // SAFETY: GIL held (this fn's contract); no other borrow of the table.
    let table = unsafe { FRAME_TABLE.get() };
    let slot = site(id);
    let mut lost = false;
    for &frame in slot.ids().iter() {
        let raw = table.frame(frame);
        if raw.code != code || !raw.is_python() {
            continue;
        }
        // SAFETY: GIL held and `code` intact (this fn's contract).
        match unsafe { raw.retire() } {
            Some(record) => table.retire_in_place(frame, record),
            None => {
                // Out of the indexes at least: a new code object at its
                // address must not map onto it.
                table.kill(frame);
                lost = true;
            }
        }
    }
    if lost {
        slot.set_frames(Stored::EMPTY);
    }
}

/// Gives back a freed entry's hold on its retired record at the next sweep
/// (src/engine/reuse.rs): a report may be reading the record now.
fn bury_record(frame: RawFrame) {
    if let Some(frames) = fallible::try_copy(&[frame]) {
        // SAFETY: GIL held by whoever releases frames (`Site::set_frames`).
        unsafe { crate::engine::reuse::bury(frames) };
    } // else the record is kept for good: no memory to note it
}

/// Whether site `id` has a (live) Python frame of `code`. GIL held.
///
/// Reads the frame table by id rather than copying the site's frames out
/// (`Site::frames`), as `retire_site` asks it of each site a dying code object's
/// watch list names (src/engine/codes.rs).
pub fn names(id: SiteId, code: *mut std::ffi::c_void) -> bool {
    // SAFETY: GIL held (this fn's contract); no other borrow of the table.
    let table = unsafe { FRAME_TABLE.get() };
    site(id).any_id(|frame| {
        let frame = table.frame(frame);
        frame.code == code && frame.is_python()
    })
}

/// Drops the hook cache's entries for the (retired) sites `retired` says.
///
/// # Safety
/// GIL held, outside any allocator hook.
pub unsafe fn uncache(retired: impl Fn(SiteId) -> bool) {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held, outside any allocator hook.
    unsafe {
        (*STATE.get().cache.get()).forget(retired);
    }
}

/// Lookups of a Python stack that missed the hooks' cache (each reads the
/// frames and asks the interner): `stats()["site_cache_misses"]`.
static CACHE_MISSES: AtomicU64 = AtomicU64::new(0);

/// How many lookups missed the hooks' cache since the process started.
pub fn cache_misses() -> u64 {
    CACHE_MISSES.load(Ordering::Relaxed)
}

/// The hook's state for the thread that holds the GIL: the re-entrancy flag
/// and the cache of recent sites.
///
/// One for the process rather than one per thread: only a GIL holder captures
/// sites, and it cannot lose the GIL inside a hook, so the GIL serialises all
/// access, and the hot path pays no thread-local lookup (`__tls_get_addr` in
/// a dlopen'ed module). A call that comes back into a hook while the holder
/// is inside one (pymalloc's nested PyMem_RawMalloc) finds `busy` set.
pub struct HookState {
    busy: Cell<bool>,
    cache: UnsafeCell<SiteCache<Site>>,
}

static STATE: GilCell<HookState> = GilCell::new(HookState {
    busy: Cell::new(false),
    cache: UnsafeCell::new(SiteCache::new()),
});

/// Runs `f` unless the GIL holder is already inside heapsite (re-entrancy).
///
/// # Safety
/// The calling thread holds the GIL.
#[inline(always)]
pub unsafe fn guarded<R>(f: impl FnOnce(&HookState) -> R) -> Option<R> {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // The calling thread holds the GIL.
    unsafe {
        let state: &HookState = STATE.get();
        if state.busy.replace(true) {
            return None;
        }
        let result = f(state);
        state.busy.set(false);
        Some(result)
    }
}

/// Runs `f` with the GIL holder's allocations untraced: inside heapsite's
/// guard, or as it is when already inside it (they are untraced then too).
/// For heapsite's own Python objects, made outside any allocator hook.
///
/// # Safety
/// The calling thread holds the GIL.
pub unsafe fn untraced<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // The calling thread holds the GIL.
    unsafe {
        let state: &HookState = STATE.get();
        if state.busy.replace(true) {
            return f();
        }
        let result = f();
        state.busy.set(false);
        result
    }
}

impl HookState {
    /// The site of the calling Python code, `depth` frames deep; None when
    /// it is new and memory for it cannot be had.
    ///
    /// The cache is looked up by a key hashed as the frames are walked
    /// (`frames::stack_key`), with nothing stored: a hit, the common case,
    /// reads each frame's link and instruction pointer and nothing else.
    /// Only a miss reads the frames themselves, in a second walk. (Reading
    /// frames and key in one walk while misses go on saved 1.6 instructions
    /// in 1,000 on a recursion of coroutines that missed at every other
    /// allocation: a miss costs its interning, not its walks.)
    ///
    /// # Safety
    /// GIL held by the calling thread.
    #[inline(always)]
    pub unsafe fn current_site(&self, depth: usize) -> Option<(SiteId, &'static Site)> {
        // SAFETY: the caller keeps this fn's contract (`# Safety` above).
        unsafe {
            self.current_site_at(
                depth.clamp(1, MAX_FRAMES),
                COUNT_TOTAL_DEPTH.load(Ordering::Relaxed),
            )
        }
    }

    /// `current_site` at a `depth` in 1..=MAX_FRAMES, with stacks told
    /// apart by their whole depth or not (`count_total`).
    ///
    /// # Safety
    /// GIL held by the calling thread.
    #[inline(always)]
    pub unsafe fn current_site_at(
        &self,
        depth: usize,
        count_total: bool,
    ) -> Option<(SiteId, &'static Site)> {
        // SAFETY: the caller keeps this fn's contract (`# Safety` above):
        // GIL held by the calling thread.
        unsafe {
            // One frame: its key made here from the word, looked up apart
            // so that its shape is a constant in the compare.
            let word = if depth == 1 && !count_total {
                frames::running_word()
            } else {
                0
            };
            if word != 0 {
                let key = frames::one_frame_key(word, &MULTIPLIERS[0]);
                return self.site_of_key(&key, depth, count_total);
            }
            let key = frames::stack_key(&MULTIPLIERS, depth, count_total);
            if key.nframes <= 0 {
                // The key's walk leaves out fewer frames than read_frames.
                return Some((NO_FRAME_SITE, site(NO_FRAME_SITE)));
            }
            self.site_of_key(&key, depth, count_total)
        }
    }

    /// The site of the stack of `key`, of one frame or more: cached, or
    /// found past the cache's first way.
    ///
    /// # Safety
    /// GIL held by the calling thread.
    #[inline(always)]
    unsafe fn site_of_key(
        &self,
        key: &frames::StackKey,
        depth: usize,
        count_total: bool,
    ) -> Option<(SiteId, &'static Site)> {
        // SAFETY: the caller holds the GIL, whose holder alone uses the
        // cache; a cached address is a site's, and sites live forever.
        unsafe {
            if let Some((id, found)) = (*self.cache.get()).first_way(key) {
                return Some((id, &*found));
            }
            self.site_after_miss(key, depth, count_total)
        }
    }

    /// `current_site` past the cache's first way: its second, then the
    /// frames read, their site found or made, and cached under `key` unless
    /// the read left out a caller's frame that the key counted (frames.c,
    /// `hs_key_of_stack`).
    ///
    /// # Safety
    /// GIL held by the calling thread.
    #[inline(never)]
    unsafe fn site_after_miss(
        &self,
        key: &frames::StackKey,
        depth: usize,
        count_total: bool,
    ) -> Option<(SiteId, &'static Site)> {
        // SAFETY: the caller keeps this fn's contract (`# Safety` above):
        // the GIL holder alone uses the cache; sites live forever.
        unsafe {
            let cache = &mut *self.cache.get();
            if let Some((id, found)) = cache.second_way(key) {
                return Some((id, &*found));
            }
            CACHE_MISSES.fetch_add(1, Ordering::Relaxed);
            // The frames as instruction pointers first: most misses are of
            // known sites by new paths (a recursion whose frames call from
            // either of two places on one line), whose frames the memo of
            // instruction pointers knows.
            let mut word_buf = [MaybeUninit::<u64>::uninit(); MAX_FRAMES];
            let words = match count_total {
                false => frames::read_words(&mut word_buf[..depth]),
                true => None,
            }
            // SAFETY: read_words initialised the first n entries.
            .map(|(n, skipped)| {
                (
                    std::slice::from_raw_parts(word_buf.as_ptr().cast::<u64>(), n),
                    skipped,
                )
            });
            if let Some((words, false)) = words.filter(|(words, _)| !words.is_empty()) {
                if let Some(id) = interned_by_words(words) {
                    let found = site(id);
                    cache.put(key, id, found);
                    return Some((id, found));
                }
            }
            let mut buf = [MaybeUninit::<RawFrame>::uninit(); MAX_FRAMES];
            let read = frames::read_frames(&mut buf[..depth], count_total);
            if read.n == 0 {
                return Some((NO_FRAME_SITE, site(NO_FRAME_SITE)));
            }
            // SAFETY: read_frames initialised the first n entries.
            let frames = std::slice::from_raw_parts(buf.as_ptr().cast::<RawFrame>(), read.n);
            let id = intern(frames, read.total, words.map(|(words, _)| words))?;
            let found = site(id);
            if !read.skipped_caller {
                cache.put(key, id, found);
            }
            Some((id, found))
        }
    }

    /// The site of `native` frames (most recent first) above the calling
    /// Python code's, `depth` Python frames deep. Cold: native frames are
    /// asked for with `--native` only.
    ///
    /// # Safety
    /// GIL held by the calling thread.
    #[inline(never)]
    pub unsafe fn current_site_below(
        &self,
        native: &[RawFrame],
        depth: usize,
    ) -> Option<(SiteId, &'static Site)> {
        // SAFETY: the caller keeps this fn's contract (`# Safety` above):
        // GIL held by the calling thread.
        unsafe {
            let mut buf = [RawFrame::NONE; MAX_FRAMES];
            let skip = native.len().min(MAX_FRAMES - 1);
            buf[..skip].copy_from_slice(&native[..skip]);
            let room = (MAX_FRAMES - skip).min(depth.max(1));
            let count_total = COUNT_TOTAL_DEPTH.load(Ordering::Relaxed);
            let tail = std::slice::from_raw_parts_mut(
                buf[skip..].as_mut_ptr().cast::<MaybeUninit<RawFrame>>(),
                room,
            );
            let read = frames::read_frames(tail, count_total);
            if skip + read.n == 0 {
                return Some((NO_FRAME_SITE, site(NO_FRAME_SITE)));
            }
            self.site_of(&buf[..skip + read.n], read.total + skip as u32)
        }
    }

    /// The cache, then the interner, for frames read with native ones
    /// above them (their key is hashed from the frames read).
    unsafe fn site_of(&self, frames: &[RawFrame], total: u32) -> Option<(SiteId, &'static Site)> {
        // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
        unsafe {
            let (hash, check) = hash_stack(frames, total);
            let key = frames::StackKey {
                hash,
                check,
                nframes: frames.len() as i32,
                total: total as i32,
            };
            let cache = &mut *self.cache.get();
            if let Some((id, found)) = cache.get(&key) {
                // SAFETY: a cached address is a site's; sites live forever.
                return Some((id, &*found));
            }
            let id = intern(frames, total, None)?;
            let found = site(id);
            cache.put(&key, id, found);
            Some((id, found))
        }
    }
}

/// Zeroes every site's counters (`clear()`); GIL held.
pub fn reset_all() {
    for id in 0..count() {
        site(id).counters.reset();
    }
}
