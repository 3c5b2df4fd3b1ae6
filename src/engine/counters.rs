//! Per-site counters and the global current / peak bytes.
//!
//! Two kinds of update, as the hook's callers allow:
//! - with the GIL held (MEM, OBJ, and RAW from a GIL holder): the GIL
//!   serialises writers, so counters are updated with relaxed loads and stores
//!   (plain `mov`s on x86), never read-modify-write atomics;
//! - without the GIL (RAW from a C thread): separate counters updated with
//!   `fetch_add`, in a block of their own made at the site's first such
//!   event ([`Extra`]). Reports add the two; the peak is checked on GIL events.
//!
//! A site's counters are 40 bytes: a program can make hundreds of thousands
//! of sites (pyperformance's generators: 120,000 at 16 frames), and each
//! byte here is a byte per site. What few sites need lives elsewhere:
//! - the live count keeps its low 32 bits here; a carry past them (two
//!   billion blocks live from one site) goes to the site's [`Extra`] block;
//! - what a site held at the latest peak goes to a log (below), and only
//!   for a site that held something then;
//! - what it held at the last `reset_peak()` goes to another, likewise.
//!
//! What was live *at the peak*, per site, costs O(1) per event: `EPOCH` counts
//! new peaks. A site touched for the first time since the latest peak first
//! notes its live values (they are what it had at that peak): in `PEAK_LOG`,
//! whose entries of older epochs are dead (the log starts again at the first
//! note of an epoch), or as "nothing" when it held nothing, which needs no
//! entry (most sites hold nothing most of the time: a program's transient
//! allocations). At report time a site noted in the current epoch reports
//! the noted values, any other site its live ones, since it has not changed
//! since the peak.
//!
//! `reset_peak()` starts a new epoch too, and remembers it (`RESET_EPOCH`):
//! a site first touched since then notes its live bytes as they were at the
//! reset (`AT_RESET`, again only when not zero), in the same rare branch, so
//! what each site grew by at the peak since the reset (the pytest plugin's
//! per-test peak, split by site) costs nothing more per event.
//!
//! Epochs are 32 bits in a site: when the count would wrap (four billion new
//! peaks), every site's note is renumbered in one pass (`renumber_epochs`).

use crate::engine::own_memory::own_memory;
use crate::engine::segvec::{SegVec, Zeroable};
use crate::engine::sync::GilCell;
use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicI64, AtomicU32, Ordering::*};

static GIL_CURRENT: AtomicI64 = AtomicI64::new(0);
static NOGIL_CURRENT: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);
/// The current epoch: one more at each new peak and each reset. Starts at
/// 1, so that a site's `seen` of 0 means "not touched since it was made".
static EPOCH: AtomicU32 = AtomicU32::new(FIRST_EPOCH);
static RESET_EPOCH: AtomicU32 = AtomicU32::new(0);
const FIRST_EPOCH: u32 = 1;

/// What sites first touched since the latest peak held then, for those
/// that held anything. Entries of an older epoch are dead: the log starts
/// again at the first note of a new epoch. Entries are atomics in a
/// `SegVec` (never moved, never freed), so a reader without the GIL may
/// read one while it is rewritten for a later epoch, and gets a figure a
/// little torn in time, never freed memory.
static PEAK_LOG: SegVec<AtPeak> = SegVec::new();
/// The epoch the log's entries are of, and how many there are.
static PEAK_LOG_EPOCH: AtomicU32 = AtomicU32::new(0);
static PEAK_LOG_LEN: AtomicU32 = AtomicU32::new(0);
/// `at_peak` of a site that held nothing at the peak: no entry needed.
const HELD_NOTHING: u32 = u32::MAX;
/// `at_peak` of a site whose note found no memory for its entry: its live
/// figures are reported instead (as if untouched since the peak).
const NOT_NOTED: u32 = u32::MAX - 1;

#[derive(Default)]
struct AtPeak {
    count: AtomicI64,
    bytes: AtomicI64,
}

// SAFETY: all-zero atomics are valid zeros.
unsafe impl Zeroable for AtPeak {}

/// The sites first touched since the last reset that held bytes then: their
/// counters' addresses and those GIL-held live bytes (a later entry for the
/// same counters wins: the slot was given to a new site meanwhile). Only the
/// GIL holder touches it. When it cannot grow (no memory), `AT_RESET_LOST`.
static AT_RESET: GilCell<Vec<(usize, i64)>> = GilCell::new(Vec::new());
static AT_RESET_LOST: AtomicBool = AtomicBool::new(false);

/// The sites' extra blocks (see [`Extra`]), made on demand, never freed.
static EXTRAS: SegVec<Extra> = SegVec::new();
static EXTRAS_MADE: AtomicU32 = AtomicU32::new(0);

/// The sites touched since the last `mark` (first touched since the reset
/// it made): their counters' addresses and live counts then, so that which
/// sites grew since is told without reading every site. The pytest plugin's
/// leak check asks it of every test that grows: a click session makes
/// 339,000 sites, and a read of them all cost more than the test. Kept only
/// between a `mark` and the next `reset_peak`, in room reserved by `mark`
/// (the hooks never allocate for it); when that is full, `TOUCHED_LOST`.
static TOUCHED: GilCell<Vec<(usize, i64)>> = GilCell::new(Vec::new());
static TOUCHED_ON: AtomicBool = AtomicBool::new(false);
static TOUCHED_LOST: AtomicBool = AtomicBool::new(false);
const TOUCHED_ROOM: usize = 1 << 16;

/// A site's counters: 40 bytes (see the module's doc for what is not here).
#[derive(Default)]
pub struct SiteCounters {
    live_bytes: AtomicI64,
    total_count: AtomicI64,
    total_bytes: AtomicI64,
    /// The GIL-held live count's low 32 bits; the carry past them is in
    /// `Extra::live_count_carry`.
    live_count_low: AtomicI32,
    /// The epoch of the site's first touch since the latest peak or reset;
    /// 0 while untouched since it was made.
    seen: AtomicU32,
    /// Where what the site held at the peak of epoch `seen` is: an index in
    /// `PEAK_LOG`, `HELD_NOTHING` or `NOT_NOTED`.
    at_peak: AtomicU32,
    /// 1 + the index of the site's `Extra` block in `EXTRAS`; 0 for none.
    extra: AtomicU32,
}

// A slot's every byte counts (see the module's doc).
const _: () = assert!(std::mem::size_of::<SiteCounters>() == 40);

/// What few sites need: the counters of events from threads without the
/// GIL (the reserved site of RAW allocations without the GIL, sites whose
/// RAW blocks a C thread frees, native stacks under preloading), and the
/// carry of a live count past 32 bits. Made on the first such event, never
/// freed (sites are not).
#[derive(Default)]
struct Extra {
    nogil_live_count: AtomicI64,
    nogil_live_bytes: AtomicI64,
    nogil_total_count: AtomicI64,
    nogil_total_bytes: AtomicI64,
    /// GIL held only.
    live_count_carry: AtomicI64,
}

// SAFETY: all-zero atomics are valid zeros.
unsafe impl Zeroable for Extra {}

impl Extra {
    fn cells(&self) -> [&AtomicI64; 5] {
        [
            &self.nogil_live_count,
            &self.nogil_live_bytes,
            &self.nogil_total_count,
            &self.nogil_total_bytes,
            &self.live_count_carry,
        ]
    }

    /// Live count and bytes, total count and bytes, of events without the GIL.
    fn nogil_figures(&self) -> [i64; 4] {
        [
            self.nogil_live_count.load(Relaxed),
            self.nogil_live_bytes.load(Relaxed),
            self.nogil_total_count.load(Relaxed),
            self.nogil_total_bytes.load(Relaxed),
        ]
    }
}

/// A site's figures as a report sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteTotals {
    pub live_count: i64,
    pub live_bytes: i64,
    pub total_count: i64,
    pub total_bytes: i64,
    pub peak_count: i64,
    pub peak_bytes: i64,
}

#[inline(always)]
fn bump(cell: &AtomicI64, delta: i64) {
    // Single writer (the GIL holder): a load and a store, no lock prefix.
    cell.store(cell.load(Relaxed).wrapping_add(delta), Relaxed);
}

/// Starts a new epoch and returns it; GIL held.
#[inline(always)]
fn new_epoch() -> u32 {
    let next = EPOCH.load(Relaxed).wrapping_add(1);
    if next == u32::MAX {
        return renumber_epochs();
    }
    EPOCH.store(next, Relaxed);
    // Before the notes of the new epoch, which may rewrite the log's
    // entries: a reader without the GIL that reads a rewritten entry then
    // sees the new epoch (`gil_at_peak`).
    fence(Release);
    next
}

/// Renumbers every site's `seen` into the first few epochs, keeping what
/// each means (untouched since made, touched before the last reset, since
/// it, in the current epoch), and starts a new epoch after them. Once per
/// four billion new peaks; GIL held.
#[cold]
#[inline(never)]
fn renumber_epochs() -> u32 {
    renumber_epochs_of(crate::engine::sites::every_counters())
}

fn renumber_epochs_of<'a>(sites: impl Iterator<Item = &'a SiteCounters>) -> u32 {
    const BEFORE_RESET: u32 = 1;
    const SINCE_RESET: u32 = 2;
    const CURRENT: u32 = 3;
    let (epoch, reset) = (EPOCH.load(Relaxed), RESET_EPOCH.load(Relaxed));
    for counters in sites {
        let seen = counters.seen.load(Relaxed);
        let renumbered = match seen {
            0 => 0,
            _ if seen == epoch => CURRENT,
            _ if seen >= reset => SINCE_RESET,
            _ => BEFORE_RESET,
        };
        counters.seen.store(renumbered, Relaxed);
    }
    if PEAK_LOG_EPOCH.load(Relaxed) == epoch {
        PEAK_LOG_EPOCH.store(CURRENT, Relaxed);
    } else {
        PEAK_LOG_LEN.store(0, Relaxed);
        PEAK_LOG_EPOCH.store(0, Relaxed);
    }
    // With no reset yet, every touched site counts as touched "since" it.
    RESET_EPOCH.store(if reset == 0 { 0 } else { SINCE_RESET }, Relaxed);
    EPOCH.store(CURRENT + 1, Relaxed);
    CURRENT + 1
}

/// The log's first entry: a program that grows makes a new peak at every
/// allocation, and each note of it is the first of its epoch, so it is
/// written here, without finding its place in `PEAK_LOG` (which holds the
/// second entry on).
static PEAK_LOG_FIRST: AtPeak = AtPeak {
    count: AtomicI64::new(0),
    bytes: AtomicI64::new(0),
};

/// The log's entry `index`, if it was made.
fn peak_log_entry(index: u32) -> Option<&'static AtPeak> {
    match index {
        0 => Some(&PEAK_LOG_FIRST),
        _ => PEAK_LOG.get(index as usize - 1),
    }
}

/// Notes (count, bytes) as a site's figures at the peak of `epoch` in the
/// log; returns where (`NOT_NOTED` without memory for the entry). GIL held.
#[inline(always)]
fn note_at_peak(epoch: u32, count: i64, bytes: i64) -> u32 {
    if PEAK_LOG_EPOCH.load(Relaxed) == epoch {
        return note_after_the_first(count, bytes);
    }
    start_peak_log(epoch, count, bytes)
}

/// Starts the log of `epoch` with (count, bytes) as its first entry;
/// returns that entry's index. GIL held.
#[inline(always)]
fn start_peak_log(epoch: u32, count: i64, bytes: i64) -> u32 {
    PEAK_LOG_EPOCH.store(epoch, Relaxed);
    PEAK_LOG_LEN.store(1, Relaxed);
    PEAK_LOG_FIRST.count.store(count, Relaxed);
    PEAK_LOG_FIRST.bytes.store(bytes, Relaxed);
    0
}

/// Notes (count, bytes) in the entry after the log's last, made if need
/// be; GIL held.
#[inline(never)]
fn note_after_the_first(count: i64, bytes: i64) -> u32 {
    let index = PEAK_LOG_LEN.load(Relaxed);
    // The first entry is PEAK_LOG_FIRST, written when the epoch's log began.
    let Some(slot) = (index as usize)
        .checked_sub(1)
        .filter(|_| index < NOT_NOTED)
    else {
        return NOT_NOTED;
    };
    // Heapsite's own memory: preloaded, malloc passes it through.
    let entry = PEAK_LOG
        .get(slot)
        .or_else(|| own_memory(|| PEAK_LOG.get_or_grow(slot)));
    let Some(entry) = entry else {
        return NOT_NOTED;
    };
    entry.count.store(count, Relaxed);
    entry.bytes.store(bytes, Relaxed);
    PEAK_LOG_LEN.store(index + 1, Relaxed);
    index
}

impl SiteCounters {
    /// The site's extra block, if it has one.
    #[inline(always)]
    fn extra(&self) -> Option<&'static Extra> {
        match self.extra.load(Acquire) {
            0 => None,
            // An index is published (Release) only once its element exists.
            link => EXTRAS.get(link as usize - 1),
        }
    }

    /// The site's extra block, made now if this is its first need; None
    /// only when there is no memory for it. Any thread: two racing to make
    /// it keep the first published (the other's element stays unused).
    #[inline(always)]
    fn extra_or_make(&self) -> Option<&'static Extra> {
        self.extra().or_else(|| self.make_extra())
    }

    #[cold]
    #[inline(never)]
    fn make_extra(&self) -> Option<&'static Extra> {
        // An index is taken for good even if its element cannot be made (no
        // memory): bounded, so that retries never wrap to an element in use.
        let index = EXTRAS_MADE
            .fetch_update(AcqRel, Acquire, |made| made.checked_add(1))
            .ok()?;
        // Heapsite's own memory: preloaded, malloc passes it through
        // (this may run inside the program's malloc or free).
        own_memory(|| EXTRAS.get_or_grow(index as usize))?;
        match self.extra.compare_exchange(0, index + 1, AcqRel, Acquire) {
            Ok(_) => EXTRAS.get(index as usize),
            Err(winner) => EXTRAS.get(winner as usize - 1),
        }
    }

    /// The GIL-held live count.
    #[inline(always)]
    fn live_count(&self) -> i64 {
        let low = i64::from(self.live_count_low.load(Relaxed));
        match self.extra() {
            Some(extra) => low + extra.live_count_carry.load(Relaxed),
            None => low,
        }
    }

    /// Adds `delta` to the GIL-held live count; GIL held. An add and a jump
    /// on overflow when `delta` is a constant (one block): a wider sum and
    /// compare cost churn 1% in instructions.
    #[inline(always)]
    fn bump_live_count(&self, delta: i64) {
        let low = self.live_count_low.load(Relaxed);
        let narrow = delta as i32;
        match low.checked_add(narrow) {
            Some(kept) if i64::from(narrow) == delta => self.live_count_low.store(kept, Relaxed),
            _ => self.carry_live_count(delta),
        }
    }

    /// Two billion blocks live from one site (or a weight past 32 bits): the
    /// low 32 bits of the sum stay here, the rest goes to the site's extra
    /// block (without memory for it, the count wraps).
    #[cold]
    #[inline(never)]
    fn carry_live_count(&self, delta: i64) {
        let sum = i64::from(self.live_count_low.load(Relaxed)) + delta;
        let kept = sum as i32;
        if let Some(extra) = self.extra_or_make() {
            bump(&extra.live_count_carry, sum - i64::from(kept));
        }
        self.live_count_low.store(kept, Relaxed);
    }

    /// (epoch, seen) when this is the site's first touch since the latest
    /// peak.
    #[inline(always)]
    fn first_touch_since_peak(&self) -> Option<(u32, u32)> {
        let epoch = EPOCH.load(Relaxed);
        let seen = self.seen.load(Relaxed);
        (seen != epoch).then_some((epoch, seen))
    }

    /// On the allocation path, the note inlined: a program that grows at
    /// more than one site takes it at most allocations (each is a new peak,
    /// and the next one's site is then first touched since it).
    #[inline(always)]
    fn note_if_first_since_peak(&self) {
        if let Some((epoch, seen)) = self.first_touch_since_peak() {
            self.note_first_since_peak(seen, epoch);
        }
    }

    /// On the free path: once per site and peak, out of line (inlined, it
    /// made the nursery's loop of frees too large to inline its closure:
    /// churn at 16 frames +3% in instructions).
    #[inline(always)]
    fn note_if_first_since_peak_cold(&self) {
        if let Some((epoch, seen)) = self.first_touch_since_peak() {
            self.note_first_since_peak_out_of_line(seen, epoch);
        }
    }

    #[inline(never)]
    fn note_first_since_peak_out_of_line(&self, seen: u32, epoch: u32) {
        self.note_first_since_peak(seen, epoch);
    }

    /// The site's first touch since the latest peak (every allocation of a
    /// program that only grows: each is a new peak): notes what it held
    /// then, and also as it was at the reset if this is its first touch
    /// since the reset.
    #[inline(always)]
    fn note_first_since_peak(&self, seen: u32, epoch: u32) {
        let (bytes, count) = self.gil_live();
        if seen < RESET_EPOCH.load(Relaxed) {
            self.note_first_since_reset(bytes, count);
        }
        let at = if count == 0 && bytes == 0 {
            HELD_NOTHING
        } else {
            note_at_peak(epoch, count, bytes)
        };
        self.at_peak.store(at, Relaxed);
        // Release: a reader that sees `seen` sees this `at_peak` and entry.
        self.seen.store(epoch, Release);
    }

    /// Untouched till now since the reset: what is live is what was live
    /// at the reset. GIL held.
    #[cold]
    #[inline(never)]
    fn note_first_since_reset(&self, bytes: i64, count: i64) {
        if bytes != 0 {
            self.note_at_reset(bytes);
        }
        if TOUCHED_ON.load(Relaxed) {
            let address = self as *const SiteCounters as usize;
            // SAFETY: GIL held (the callers', see above); the list is only
            // borrowed here and by `mark` and `touched`, never across a hook.
            let touched = unsafe { TOUCHED.get() };
            if touched.len() < touched.capacity() {
                touched.push((address, count));
            } else {
                TOUCHED_LOST.store(true, Relaxed);
            }
        }
    }

    /// Adds (these counters, `bytes`) to `AT_RESET`; GIL held.
    fn note_at_reset(&self, bytes: i64) {
        let address = self as *const SiteCounters as usize;
        // SAFETY: GIL held (the callers'); the list is borrowed only here,
        // by `at_reset_bytes` and by `reset_globals`, never across a hook.
        let at_reset = unsafe { AT_RESET.get() };
        // Heapsite's own memory: preloaded, malloc passes it through.
        let room = own_memory(|| {
            if at_reset.len() == at_reset.capacity() {
                compact_at_reset(at_reset);
            }
            at_reset.try_reserve(1)
        });
        if room.is_ok() {
            at_reset.push((address, bytes));
        } else {
            AT_RESET_LOST.store(true, Relaxed);
        }
    }

    /// GIL-held live (bytes, count).
    pub fn gil_live(&self) -> (i64, i64) {
        (self.live_bytes.load(Relaxed), self.live_count())
    }

    /// An allocation of `size` bytes, GIL held.
    #[inline(always)]
    pub fn add_gil(&self, size: usize) {
        self.add_gil_weighted(size as i64, 1);
    }

    /// An allocation counted as `bytes` in `blocks` (a sampled block's
    /// weight, src/engine/sampling.rs), GIL held.
    #[inline(always)]
    pub fn add_gil_weighted(&self, bytes: i64, blocks: i64) {
        self.note_if_first_since_peak();
        self.bump_live_count(blocks);
        bump(&self.live_bytes, bytes);
        bump(&self.total_count, blocks);
        bump(&self.total_bytes, bytes);
        let current = GIL_CURRENT.load(Relaxed) + bytes;
        GIL_CURRENT.store(current, Relaxed);
        let total = current + NOGIL_CURRENT.load(Relaxed);
        if total > PEAK.load(Relaxed) {
            PEAK.store(total, Relaxed);
            let epoch = new_epoch();
            self.note_at_its_peak(epoch);
        }
    }

    /// This site made the peak of the new `epoch`: what it holds now is
    /// what it held then, noted at once (the log's first entry of the
    /// epoch). A program that grows makes a new peak at every allocation,
    /// mostly at one site: its next allocation there then finds the site
    /// noted, where noting it on that first touch took the checks of
    /// `note_first_since_peak` at every allocation (retained at 16 frames:
    /// 0.6% of instructions). GIL held.
    #[inline(always)]
    fn note_at_its_peak(&self, epoch: u32) {
        let at = start_peak_log(epoch, self.live_count(), self.live_bytes.load(Relaxed));
        self.at_peak.store(at, Relaxed);
        self.seen.store(epoch, Release);
    }

    /// A free of `size` bytes, GIL held.
    #[inline(always)]
    pub fn sub_gil(&self, size: usize) {
        self.sub_gil_weighted(size as i64, 1);
    }

    /// A free of one block of `bytes`, GIL held, if it needs nothing out of
    /// line: not the site's first touch since the peak (a note), nor a live
    /// count to carry. Otherwise false, with nothing changed, for
    /// `sub_gil_weighted` to do. For the exact path's free (hook.rs,
    /// `gil_free`), which then calls nothing before the allocator's free.
    #[inline(always)]
    pub fn sub_gil_unless_noted(&self, bytes: i64) -> bool {
        if self.first_touch_since_peak().is_some() {
            return false;
        }
        let Some(kept) = self.live_count_low.load(Relaxed).checked_sub(1) else {
            return false;
        };
        self.live_count_low.store(kept, Relaxed);
        bump(&self.live_bytes, -bytes);
        GIL_CURRENT.store(GIL_CURRENT.load(Relaxed) - bytes, Relaxed);
        true
    }

    /// A free of a block counted as `bytes` in `blocks`, GIL held.
    #[inline(always)]
    pub fn sub_gil_weighted(&self, bytes: i64, blocks: i64) {
        self.note_if_first_since_peak_cold();
        self.bump_live_count(-blocks);
        bump(&self.live_bytes, -bytes);
        GIL_CURRENT.store(GIL_CURRENT.load(Relaxed) - bytes, Relaxed);
    }

    /// An allocation from a thread without the GIL; false if it could not
    /// be counted (no memory for the site's first such event).
    pub fn add_nogil(&self, size: usize) -> bool {
        self.add_nogil_weighted(size as i64, 1)
    }

    /// An allocation counted as `bytes` in `blocks`, without the GIL.
    pub fn add_nogil_weighted(&self, bytes: i64, blocks: i64) -> bool {
        let Some(extra) = self.extra_or_make() else {
            return false;
        };
        extra.nogil_live_count.fetch_add(blocks, Relaxed);
        extra.nogil_live_bytes.fetch_add(bytes, Relaxed);
        extra.nogil_total_count.fetch_add(blocks, Relaxed);
        extra.nogil_total_bytes.fetch_add(bytes, Relaxed);
        NOGIL_CURRENT.fetch_add(bytes, Relaxed);
        true
    }

    /// A free from a thread without the GIL; false as `add_nogil`.
    pub fn sub_nogil(&self, size: usize) -> bool {
        self.sub_nogil_weighted(size as i64, 1)
    }

    /// A free of a block counted as `bytes` in `blocks`, without the GIL.
    pub fn sub_nogil_weighted(&self, bytes: i64, blocks: i64) -> bool {
        let Some(extra) = self.extra_or_make() else {
            return false;
        };
        extra.nogil_live_count.fetch_sub(blocks, Relaxed);
        extra.nogil_live_bytes.fetch_sub(bytes, Relaxed);
        NOGIL_CURRENT.fetch_sub(bytes, Relaxed);
        true
    }

    /// The GIL-held (count, bytes) the site had at the latest peak, given its
    /// GIL-held live (bytes, count) (`gil_live`, read by the caller). From a
    /// thread without the GIL, a new peak may come while this reads: the
    /// log's entry may then be rewritten for another site, so the epoch is
    /// read again after the entry, and if it moved the live figures are
    /// taken instead (torn in time, as every figure read so is).
    fn gil_at_peak(&self, (bytes, count): (i64, i64)) -> (i64, i64) {
        let seen = self.seen.load(Acquire);
        if seen != EPOCH.load(Relaxed) {
            return (count, bytes); // untouched since the peak
        }
        let noted = match self.at_peak.load(Relaxed) {
            HELD_NOTHING => return (0, 0),
            NOT_NOTED => return (count, bytes),
            index => peak_log_entry(index)
                .map(|entry| (entry.count.load(Relaxed), entry.bytes.load(Relaxed))),
        };
        fence(Acquire);
        match noted {
            Some(figures) if EPOCH.load(Relaxed) == seen => figures,
            _ => (count, bytes),
        }
    }

    /// The site's figures: settled with the GIL held; unsettled and a
    /// little torn in time from another thread (see gil_free.rs).
    pub fn totals(&self) -> SiteTotals {
        let live = self.gil_live();
        let (live_bytes, live_count) = live;
        let (peak_count, peak_bytes) = self.gil_at_peak(live);
        let [nogil_count, nogil_bytes, nogil_total_count, nogil_total_bytes] =
            self.extra().map_or([0; 4], Extra::nogil_figures);
        SiteTotals {
            live_count: live_count + nogil_count,
            live_bytes: live_bytes + nogil_bytes,
            total_count: self.total_count.load(Relaxed) + nogil_total_count,
            total_bytes: self.total_bytes.load(Relaxed) + nogil_total_bytes,
            peak_count: peak_count + nogil_count,
            peak_bytes: peak_bytes + nogil_bytes,
        }
    }

    /// Bytes the site had live at the peak less what it had when the peak
    /// was last reset (GIL-held figures), given `at_reset` from
    /// [`at_reset_bytes`]; GIL held. Summed over every site, this is the
    /// peak less the traced memory at the reset.
    pub fn growth_at_peak(&self, at_reset: &AtReset) -> i64 {
        if self.seen.load(Relaxed) < RESET_EPOCH.load(Relaxed) {
            return 0; // untouched since the reset
        }
        self.gil_at_peak(self.gil_live()).1 - at_reset.of(self)
    }

    /// Adds another site's totals (src/engine/reuse.rs); GIL held.
    pub fn absorb_totals(&self, count: i64, bytes: i64) {
        bump(&self.total_count, count);
        bump(&self.total_bytes, bytes);
    }

    /// Zeroes the counters for a new site in their slot (src/engine/reuse.rs);
    /// GIL held, outside any hook. A note of what the old site held at the
    /// reset would be taken for the new one's: a later note of nothing
    /// replaces it.
    pub fn reset_for_new_site(&self) {
        let touched_since_reset = self.seen.load(Relaxed) >= RESET_EPOCH.load(Relaxed);
        if touched_since_reset && RESET_EPOCH.load(Relaxed) != 0 {
            self.note_at_reset(0);
        }
        self.reset();
    }

    /// Zeroes the site; GIL held, with the tables cleared at the same time.
    pub fn reset(&self) {
        for cell in [&self.live_bytes, &self.total_count, &self.total_bytes] {
            cell.store(0, Relaxed);
        }
        self.live_count_low.store(0, Relaxed);
        self.seen.store(0, Relaxed);
        self.at_peak.store(0, Relaxed);
        if let Some(extra) = self.extra() {
            for cell in extra.cells() {
                cell.store(0, Relaxed);
            }
        }
    }
}

/// Keeps one entry per site in `AT_RESET`, the last, and none that says
/// zero (no entry says as much): slots given to new sites after the reset
/// add a zero entry each (`reset_for_new_site`), and a program that resets
/// once and then compiles and drops code all day would otherwise grow the
/// list for ever. Then makes room for as many entries again, so the pass
/// costs O(1) a note, amortised. Heapsite's own memory (the caller's).
fn compact_at_reset(notes: &mut Vec<(usize, i64)>) {
    let mut last: HashMap<usize, usize> = HashMap::new();
    if last.try_reserve(notes.len()).is_err() {
        return;
    }
    for (index, &(address, _)) in notes.iter().enumerate() {
        last.insert(address, index);
    }
    let mut index = 0;
    notes.retain(|&(address, bytes)| {
        let keep = bytes != 0 && last.get(&address) == Some(&index);
        index += 1;
        keep
    });
    let _ = notes.try_reserve(notes.len().max(16));
}

/// What the sites first touched since the last reset held then, by their
/// counters (see `AT_RESET`).
pub struct AtReset(HashMap<usize, i64>);

impl AtReset {
    /// The GIL-held live bytes `counters` had at the last reset, if touched
    /// since.
    pub fn of(&self, counters: &SiteCounters) -> i64 {
        let address = counters as *const SiteCounters as usize;
        self.0.get(&address).copied().unwrap_or(0)
    }
}

/// What the sites first touched since the last reset held then; None when
/// the note of them missed some (no memory). GIL held.
pub(super) fn at_reset_bytes() -> Option<AtReset> {
    if AT_RESET_LOST.load(Relaxed) {
        return None;
    }
    // SAFETY: GIL held (this fn's contract); borrowed for the copy only,
    // which is heapsite's own memory: preloaded, the map's malloc would
    // otherwise reach the hook, which may note a site here meanwhile.
    let notes = unsafe { AT_RESET.get() };
    Some(AtReset(own_memory(|| notes.iter().copied().collect())))
}

/// (current, peak) traced bytes.
pub fn traced_memory() -> (i64, i64) {
    let current = GIL_CURRENT.load(Relaxed) + NOGIL_CURRENT.load(Relaxed);
    (current, PEAK.load(Relaxed).max(current))
}

/// Makes the peak the current size; what is live now becomes "at peak".
/// GIL held, outside any hook.
pub(super) fn reset_peak() {
    TOUCHED_ON.store(false, Relaxed);
    PEAK.store(traced_memory().0, Relaxed);
    let epoch = new_epoch();
    RESET_EPOCH.store(epoch, Relaxed);
    // SAFETY: GIL held, outside any hook (this fn's contract).
    let notes = unsafe { AT_RESET.get() };
    notes.clear();
    // A long list of an earlier reset is not kept for a short one (a
    // reallocation: heapsite's own memory, see `note_at_reset`).
    own_memory(|| notes.shrink_to(notes.capacity() / 2));
    AT_RESET_LOST.store(false, Relaxed);
}

/// A reset of the peak that also starts the list of sites touched from now
/// on (see `TOUCHED`); false if no room for it could be had. GIL held,
/// outside any allocator hook.
pub(super) fn mark() -> bool {
    reset_peak();
    // SAFETY: GIL held, outside any hook (this fn's contract).
    let touched = unsafe { TOUCHED.get() };
    touched.clear();
    if touched.try_reserve(TOUCHED_ROOM).is_err() {
        return false;
    }
    TOUCHED_LOST.store(false, Relaxed);
    TOUCHED_ON.store(true, Relaxed);
    true
}

/// The (counters' address, live count then) of the sites touched since the
/// last `mark`, in the order first touched; None when there was no mark
/// since the last reset or the list missed some. GIL held.
pub(super) fn touched() -> Option<&'static [(usize, i64)]> {
    if !TOUCHED_ON.load(Relaxed) || TOUCHED_LOST.load(Relaxed) {
        return None;
    }
    // SAFETY: GIL held (this fn's contract); the hooks only push within the
    // reserved room, so the slice stays where it is until the next `mark`.
    Some(unsafe { TOUCHED.get() }.as_slice())
}

/// Zeroes the global figures; callers reset every site alongside. GIL
/// held, outside any hook.
pub fn reset_globals() {
    GIL_CURRENT.store(0, Relaxed);
    NOGIL_CURRENT.store(0, Relaxed);
    PEAK.store(0, Relaxed);
    EPOCH.store(FIRST_EPOCH, Relaxed);
    RESET_EPOCH.store(0, Relaxed);
    PEAK_LOG_EPOCH.store(0, Relaxed);
    PEAK_LOG_LEN.store(0, Relaxed);
    // SAFETY: GIL held, outside any hook (this fn's contract).
    unsafe { AT_RESET.get() }.clear();
    AT_RESET_LOST.store(false, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The globals are the process's: tests that move them take turns, each
    /// starting from zero.
    pub(super) fn globals_turn() -> std::sync::MutexGuard<'static, ()> {
        let turn = crate::engine::tests::GLOBALS
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        reset_globals();
        turn
    }

    /// The globals are shared: tests that move them take turns.
    #[test]
    fn growth_at_peak_splits_the_peak_since_the_reset() {
        let _turn = globals_turn();
        let (old, grows, shrinks, new) = (
            SiteCounters::default(),
            SiteCounters::default(),
            SiteCounters::default(),
            SiteCounters::default(),
        );
        old.add_gil(1000); // before the reset, then left alone
        grows.add_gil(100);
        shrinks.add_gil(500);
        reset_peak();
        let traced_at_reset = traced_memory().0;
        grows.add_gil(300);
        shrinks.sub_gil(500);
        new.add_gil(700); // the peak: +300 - 500 + 700
        new.sub_gil(700);
        grows.add_gil(50); // after the peak: not in it
        let at_reset = at_reset_bytes().expect("room for the notes");
        let growth: Vec<i64> = [&old, &grows, &shrinks, &new]
            .iter()
            .map(|c| c.growth_at_peak(&at_reset))
            .collect();
        assert_eq!(growth, vec![0, 300, -500, 700]);
        let (_, peak) = traced_memory();
        assert_eq!(growth.iter().sum::<i64>(), peak - traced_at_reset);
        reset_globals();
    }
}

#[cfg(test)]
mod layout_tests {
    use super::tests::globals_turn;
    use super::*;

    /// A live count past 32 bits carries into the extra block, both ways.
    #[test]
    fn live_count_carries_past_32_bits() {
        let site = SiteCounters::default();
        site.bump_live_count(i64::from(i32::MAX));
        site.bump_live_count(3);
        assert_eq!(site.live_count(), i64::from(i32::MAX) + 3);
        site.bump_live_count(-5);
        assert_eq!(site.live_count(), i64::from(i32::MAX) - 2);
        site.bump_live_count(-(i64::from(i32::MAX) - 2) - 10);
        assert_eq!(site.live_count(), -10);
        site.bump_live_count(1 << 40);
        assert_eq!(site.live_count(), (1 << 40) - 10);
    }

    /// A slot given to a new site after the reset does not lend it the old
    /// site's bytes at the reset; and a site that held nothing at the peak
    /// or the reset takes no entry in either log.
    #[test]
    fn notes_are_only_of_sites_that_held_something() {
        let _turn = globals_turn();
        let (old, idle) = (SiteCounters::default(), SiteCounters::default());
        old.add_gil(400);
        reset_peak();
        idle.add_gil(10); // a new peak; idle held nothing at the reset
        idle.sub_gil(10); // after the peak, where it held 10
        old.sub_gil(400); // old's first touch since the reset: it held 400
        let notes = at_reset_bytes().expect("room for the notes");
        assert_eq!((notes.of(&old), notes.of(&idle)), (400, 0));
        assert_eq!(notes.0.len(), 1);
        assert_eq!(PEAK_LOG_LEN.load(Relaxed), 2); // old's 400 and idle's 10
        old.reset_for_new_site();
        old.add_gil(500); // the new site's, a new peak (410 before)
        let notes = at_reset_bytes().expect("room for the notes");
        assert_eq!(notes.of(&old), 0);
        assert_eq!(old.growth_at_peak(&notes), 500);
        reset_globals();
    }

    /// A program that resets once, then compiles and drops code for ever,
    /// gives slots to new sites for ever: the notes of the reset stay few.
    #[test]
    fn notes_of_the_reset_stay_bounded_as_slots_are_reused() {
        let _turn = globals_turn();
        let (kept, reused) = (SiteCounters::default(), SiteCounters::default());
        kept.add_gil(100);
        reset_peak();
        kept.add_gil(1); // noted: 100 at the reset
        for _ in 0..10_000 {
            reused.add_gil(8);
            reused.sub_gil(8);
            reused.reset_for_new_site();
        }
        // SAFETY: the test's thread is the only one touching the list.
        let len = unsafe { AT_RESET.get() }.len();
        assert!(len < 64, "{len} notes");
        let notes = at_reset_bytes().expect("room for the notes");
        assert_eq!((notes.of(&kept), notes.of(&reused)), (100, 0));
        reset_globals();
    }

    /// Renumbering keeps each site's class: untouched, touched before the
    /// reset, since it, in the current epoch.
    #[test]
    fn renumbering_keeps_what_each_note_means() {
        let _turn = globals_turn();
        let sites: Vec<SiteCounters> = (0..4).map(|_| SiteCounters::default()).collect();
        let (reset, epoch) = (1_000_u32, 2_000_u32);
        for (site, seen) in sites.iter().zip([0, 500, 1_500, epoch]) {
            site.seen.store(seen, Relaxed);
        }
        EPOCH.store(epoch, Relaxed);
        RESET_EPOCH.store(reset, Relaxed);
        let next = renumber_epochs_of(sites.iter());
        let (epoch, reset) = (EPOCH.load(Relaxed), RESET_EPOCH.load(Relaxed));
        assert_eq!(next, epoch);
        let seen: Vec<u32> = sites.iter().map(|s| s.seen.load(Relaxed)).collect();
        assert_eq!(seen[0], 0);
        assert!(seen[1] > 0 && seen[1] < reset);
        assert!(seen[2] >= reset && seen[2] < epoch);
        assert!(seen[3] >= reset && seen[3] < epoch && seen[3] != seen[2]);
        reset_globals();
    }
}
