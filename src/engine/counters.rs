//! Per-site counters and the global current / peak bytes.
//!
//! Two kinds of update, as the hook's callers allow:
//! - with the GIL held (MEM, OBJ, and RAW from a GIL holder): the GIL
//!   serialises writers, so counters are updated with relaxed loads and stores
//!   (plain `mov`s on x86), never read-modify-write atomics;
//! - without the GIL (RAW from a C thread): separate counters updated with
//!   `fetch_add`, in a block of their own made at the site's first such
//!   event ([`NoGil`]). Reports add the two; the peak is checked on GIL events.
//!
//! What was live *at the peak*, per site, costs O(1) per event: `EPOCH` counts
//! new peaks. A site touched for the first time since the latest peak first
//! saves its live values (they are what it had at that peak). At report time a
//! site saved in the current epoch reports the saved values, any other site its
//! live ones, since it has not changed since the peak.
//!
//! `reset_peak()` starts a new epoch too, and remembers it (`RESET_EPOCH`):
//! a site first touched since then saves its live values as it was at the
//! reset, in the same rare branch, so what each site grew by at the peak
//! since the reset (the pytest plugin's per-test peak, split by site) costs
//! nothing more per event.

use crate::engine::own_memory::own_memory;
use crate::engine::sync::GilCell;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU64, Ordering::*};

static GIL_CURRENT: AtomicI64 = AtomicI64::new(0);
static NOGIL_CURRENT: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);
static EPOCH: AtomicU64 = AtomicU64::new(0);
static RESET_EPOCH: AtomicU64 = AtomicU64::new(0);

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

#[derive(Default)]
pub struct SiteCounters {
    live_count: AtomicI64,
    live_bytes: AtomicI64,
    total_count: AtomicI64,
    total_bytes: AtomicI64,
    peak_count: AtomicI64,
    peak_bytes: AtomicI64,
    saved_epoch: AtomicU64,
    /// Live values when the peak was last reset (see RESET_EPOCH).
    at_reset_bytes: AtomicI64,
    /// The counters of events without the GIL, null until the first.
    nogil: AtomicPtr<NoGil>,
}

/// A site's counters of events from threads without the GIL. Few sites
/// ever have one (the reserved site of RAW allocations without the GIL,
/// sites whose RAW blocks a C thread frees, native stacks under
/// preloading), and four counters in every site were a quarter of its
/// slot: 32 of 120 bytes, 3 MB for pyperformance's 100,000 generator sites.
/// Made on the first such event, never freed (sites are not).
#[derive(Default)]
struct NoGil {
    live_count: AtomicI64,
    live_bytes: AtomicI64,
    total_count: AtomicI64,
    total_bytes: AtomicI64,
}

impl NoGil {
    fn cells(&self) -> [&AtomicI64; 4] {
        [
            &self.live_count,
            &self.live_bytes,
            &self.total_count,
            &self.total_bytes,
        ]
    }

    /// Live count and bytes, total count and bytes.
    fn figures(&self) -> [i64; 4] {
        self.cells().map(|cell| cell.load(Relaxed))
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

impl SiteCounters {
    #[inline(always)]
    fn save_if_first_since_peak(&self) {
        let epoch = EPOCH.load(Relaxed);
        let saved = self.saved_epoch.load(Relaxed);
        if saved != epoch {
            if saved < RESET_EPOCH.load(Relaxed) {
                // First touch since the reset: untouched till now, so
                // what is live is what was live at the reset.
                self.at_reset_bytes
                    .store(self.live_bytes.load(Relaxed), Relaxed);
                if TOUCHED_ON.load(Relaxed) {
                    self.note_touched();
                }
            }
            self.peak_count
                .store(self.live_count.load(Relaxed), Relaxed);
            self.peak_bytes
                .store(self.live_bytes.load(Relaxed), Relaxed);
            self.saved_epoch.store(epoch, Relaxed);
        }
    }

    /// Puts the site on the list of those touched since the mark (GIL held:
    /// the GIL path's counters only call it).
    #[cold]
    fn note_touched(&self) {
        // SAFETY: GIL held (the callers', see above); the list is only
        // borrowed here and by `mark` and `touched`, never across a hook.
        let touched = unsafe { TOUCHED.get() };
        if touched.len() < touched.capacity() {
            let address = self as *const SiteCounters as usize;
            touched.push((address, self.live_count.load(Relaxed)));
        } else {
            TOUCHED_LOST.store(true, Relaxed);
        }
    }

    /// The GIL-held live bytes at the last reset or mark, if the site was
    /// touched since (its live count then is in the touched list).
    pub fn at_reset_bytes(&self) -> i64 {
        self.at_reset_bytes.load(Relaxed)
    }

    /// GIL-held live (bytes, count).
    pub fn gil_live(&self) -> (i64, i64) {
        (self.live_bytes.load(Relaxed), self.live_count.load(Relaxed))
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
        self.save_if_first_since_peak();
        bump(&self.live_count, blocks);
        bump(&self.live_bytes, bytes);
        bump(&self.total_count, blocks);
        bump(&self.total_bytes, bytes);
        let current = GIL_CURRENT.load(Relaxed) + bytes;
        GIL_CURRENT.store(current, Relaxed);
        let total = current + NOGIL_CURRENT.load(Relaxed);
        if total > PEAK.load(Relaxed) {
            PEAK.store(total, Relaxed);
            EPOCH.store(EPOCH.load(Relaxed) + 1, Relaxed);
        }
    }

    /// A free of `size` bytes, GIL held.
    #[inline(always)]
    pub fn sub_gil(&self, size: usize) {
        self.sub_gil_weighted(size as i64, 1);
    }

    /// A free of a block counted as `bytes` in `blocks`, GIL held.
    #[inline(always)]
    pub fn sub_gil_weighted(&self, bytes: i64, blocks: i64) {
        self.save_if_first_since_peak();
        bump(&self.live_count, -blocks);
        bump(&self.live_bytes, -bytes);
        GIL_CURRENT.store(GIL_CURRENT.load(Relaxed) - bytes, Relaxed);
    }

    /// The site's counters of events without the GIL, if it had one.
    fn nogil(&self) -> Option<&NoGil> {
        // SAFETY: non-null only once a zeroed NoGil was published here by
        // `nogil_or_make` (Release, read with Acquire); never freed.
        unsafe { self.nogil.load(Acquire).as_ref() }
    }

    /// The site's counters of events without the GIL, made now if this is
    /// its first; None only when there is no memory for 32 bytes.
    #[inline(always)]
    fn nogil_or_make(&self) -> Option<&NoGil> {
        self.nogil().or_else(|| self.make_nogil())
    }

    /// Makes the site's counters of events without the GIL. Any thread:
    /// two racing to make them keep the first published.
    #[cold]
    #[inline(never)]
    fn make_nogil(&self) -> Option<&NoGil> {
        let layout = Layout::new::<NoGil>();
        // Heapsite's own memory: preloaded, malloc passes it through
        // (this may run inside the program's malloc or free).
        // SAFETY: NoGil is not zero-sized, and all-zero is its empty value.
        let fresh = own_memory(|| unsafe { alloc_zeroed(layout) }).cast::<NoGil>();
        if fresh.is_null() {
            return None;
        }
        match self
            .nogil
            .compare_exchange(std::ptr::null_mut(), fresh, AcqRel, Acquire)
        {
            // SAFETY: just published, zeroed, never freed.
            Ok(_) => Some(unsafe { &*fresh }),
            Err(winner) => {
                // SAFETY: `fresh` was never published; `winner` is, as above.
                own_memory(|| unsafe { dealloc(fresh.cast(), layout) });
                // SAFETY: as in `nogil`.
                Some(unsafe { &*winner })
            }
        }
    }

    /// An allocation from a thread without the GIL; false if it could not
    /// be counted (no memory for the site's first such event).
    pub fn add_nogil(&self, size: usize) -> bool {
        self.add_nogil_weighted(size as i64, 1)
    }

    /// An allocation counted as `bytes` in `blocks`, without the GIL.
    pub fn add_nogil_weighted(&self, bytes: i64, blocks: i64) -> bool {
        let Some(nogil) = self.nogil_or_make() else {
            return false;
        };
        nogil.live_count.fetch_add(blocks, Relaxed);
        nogil.live_bytes.fetch_add(bytes, Relaxed);
        nogil.total_count.fetch_add(blocks, Relaxed);
        nogil.total_bytes.fetch_add(bytes, Relaxed);
        NOGIL_CURRENT.fetch_add(bytes, Relaxed);
        true
    }

    /// A free from a thread without the GIL; false as `add_nogil`.
    pub fn sub_nogil(&self, size: usize) -> bool {
        self.sub_nogil_weighted(size as i64, 1)
    }

    /// A free of a block counted as `bytes` in `blocks`, without the GIL.
    pub fn sub_nogil_weighted(&self, bytes: i64, blocks: i64) -> bool {
        let Some(nogil) = self.nogil_or_make() else {
            return false;
        };
        nogil.live_count.fetch_sub(blocks, Relaxed);
        nogil.live_bytes.fetch_sub(bytes, Relaxed);
        NOGIL_CURRENT.fetch_sub(bytes, Relaxed);
        true
    }

    /// The site's figures: settled with the GIL held; unsettled and a
    /// little torn in time from another thread (see gil_free.rs).
    pub fn totals(&self) -> SiteTotals {
        let at_peak_saved = self.saved_epoch.load(Relaxed) == EPOCH.load(Relaxed);
        let (peak_count, peak_bytes) = if at_peak_saved {
            (self.peak_count.load(Relaxed), self.peak_bytes.load(Relaxed))
        } else {
            (self.live_count.load(Relaxed), self.live_bytes.load(Relaxed))
        };
        let [nogil_count, nogil_bytes, nogil_total_count, nogil_total_bytes] =
            self.nogil().map_or([0; 4], NoGil::figures);
        SiteTotals {
            live_count: self.live_count.load(Relaxed) + nogil_count,
            live_bytes: self.live_bytes.load(Relaxed) + nogil_bytes,
            total_count: self.total_count.load(Relaxed) + nogil_total_count,
            total_bytes: self.total_bytes.load(Relaxed) + nogil_total_bytes,
            peak_count: peak_count + nogil_count,
            peak_bytes: peak_bytes + nogil_bytes,
        }
    }

    /// Bytes the site had live at the peak less what it had when the peak
    /// was last reset (GIL-held figures); GIL held. Summed over every site,
    /// this is the peak less the traced memory at the reset.
    pub fn growth_at_peak(&self) -> i64 {
        let epoch = self.saved_epoch.load(Relaxed);
        if epoch < RESET_EPOCH.load(Relaxed) {
            return 0; // untouched since the reset
        }
        let at_peak = if epoch == EPOCH.load(Relaxed) {
            self.peak_bytes.load(Relaxed)
        } else {
            self.live_bytes.load(Relaxed)
        };
        at_peak - self.at_reset_bytes.load(Relaxed)
    }

    /// Adds another site's totals (src/engine/reuse.rs); GIL held.
    pub fn absorb_totals(&self, count: i64, bytes: i64) {
        bump(&self.total_count, count);
        bump(&self.total_bytes, bytes);
    }

    /// Zeroes the site; GIL held, with the tables cleared at the same time.
    pub fn reset(&self) {
        for cell in [
            &self.live_count,
            &self.live_bytes,
            &self.total_count,
            &self.total_bytes,
            &self.peak_count,
            &self.peak_bytes,
            &self.at_reset_bytes,
        ] {
            cell.store(0, Relaxed);
        }
        self.saved_epoch.store(0, Relaxed);
        if let Some(nogil) = self.nogil() {
            for cell in nogil.cells() {
                cell.store(0, Relaxed);
            }
        }
    }
}

/// (current, peak) traced bytes.
pub fn traced_memory() -> (i64, i64) {
    let current = GIL_CURRENT.load(Relaxed) + NOGIL_CURRENT.load(Relaxed);
    (current, PEAK.load(Relaxed).max(current))
}

/// Makes the peak the current size; what is live now becomes "at peak".
pub(super) fn reset_peak() {
    TOUCHED_ON.store(false, Relaxed);
    PEAK.store(traced_memory().0, Relaxed);
    let epoch = EPOCH.load(Relaxed) + 1;
    EPOCH.store(epoch, Relaxed);
    RESET_EPOCH.store(epoch, Relaxed);
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

/// Zeroes the global figures; callers reset every site alongside.
pub fn reset_globals() {
    GIL_CURRENT.store(0, Relaxed);
    NOGIL_CURRENT.store(0, Relaxed);
    PEAK.store(0, Relaxed);
    EPOCH.store(0, Relaxed);
    RESET_EPOCH.store(0, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The globals are shared: the one test that moves them.
    #[test]
    fn growth_at_peak_splits_the_peak_since_the_reset() {
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
        let at_reset = traced_memory().0;
        grows.add_gil(300);
        shrinks.sub_gil(500);
        new.add_gil(700); // the peak: +300 - 500 + 700
        new.sub_gil(700);
        grows.add_gil(50); // after the peak: not in it
        let growth: Vec<i64> = [&old, &grows, &shrinks, &new]
            .iter()
            .map(|c| c.growth_at_peak())
            .collect();
        assert_eq!(growth, vec![0, 300, -500, 700]);
        let (_, peak) = traced_memory();
        assert_eq!(growth.iter().sum::<i64>(), peak - at_reset);
    }
}
