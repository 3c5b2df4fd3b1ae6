//! Sites of freed code give their ids back.
//!
//! A program that execs and drops code all day (templates, `exec` in a
//! loop, doctest) makes new code objects, so new sites, for ever. A site
//! one of whose code objects died (see src/engine/codes.rs) can match no stack
//! again: once it also holds nothing live and nothing at the peak, its id,
//! slot is reused by the next new site (its frame ids are released), and what it allocated in
//! total moves to the `FREED_CODE_SITE` line. So heapsite's memory follows
//! the code alive and the memory held, not how much code ever ran.
//!
//! Retired frames no entry of the frame table holds any more do not give
//! their records back at once: they go to a graveyard emptied at the next
//! `sweep`, which runs from `codes::flush`
//! (the start of API calls, and a pending call between bytecodes), where no
//! heapsite function is reading any site's frames.
//!
//! Everything here runs with the GIL held.

use crate::engine::frames::RawFrame;
use crate::engine::id_lists::Stored;
use crate::engine::sites::{self, SiteId, FREED_CODE_SITE};
use crate::engine::sync::GilCell;

/// Sites whose code objects have all died, not yet given back.
static DEAD: GilCell<Vec<SiteId>> = GilCell::new(Vec::new());
/// Ids given back, for new sites.
static FREE_IDS: GilCell<Vec<SiteId>> = GilCell::new(Vec::new());
/// Retired frames whose records lose a user at the next sweep.
static GRAVEYARD: GilCell<Vec<Box<[RawFrame]>>> = GilCell::new(Vec::new());
/// `sweep` looks at the dead sites once there are this many: a dead site
/// that still holds memory is looked at again only after the list doubled,
/// so a program holding much from dead code does not pay for it per call.
static SWEEP_AT: GilCell<usize> = GilCell::new(MIN_SWEEP);
const MIN_SWEEP: usize = 64;

/// Frames to free at the next sweep (leaked if memory to note them is short).
///
/// # Safety
/// GIL held.
pub unsafe fn bury(frames: Box<[RawFrame]>) {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held.
    unsafe {
        let graveyard = GRAVEYARD.get();
        if graveyard.try_reserve(1).is_ok() {
            graveyard.push(frames);
        } else {
            Box::leak(frames);
        }
    }
}

/// One of `id`'s code objects died (the site stays for good if memory to
/// note it is short).
///
/// # Safety
/// GIL held.
pub unsafe fn died(id: SiteId) {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held.
    unsafe {
        let dead = DEAD.get();
        if dead.try_reserve(1).is_ok() {
            dead.push(id);
        }
    }
}

/// An id given back, if any.
///
/// # Safety
/// GIL held.
pub unsafe fn take_id() -> Option<SiteId> {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held.
    unsafe { FREE_IDS.get().pop() }
}

/// Frees the graveyard and gives back the ids of dead sites that hold
/// nothing.
///
/// # Safety
/// GIL held; no site's frames borrowed by the caller.
pub unsafe fn sweep() {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; no site's frames borrowed by the caller.
    unsafe {
        // heapsite's own memory, all of it: freeing records, and giving a
        // site back buries its frames' records (an allocation), which
        // preloaded malloc must not trace while a site's frames are being
        // released (src/engine/sites.rs, `Site::set_frames`).
        crate::engine::own_memory::own_memory(|| {
            for frames in GRAVEYARD.get().drain(..) {
                crate::engine::retired::release_all(&frames);
            }
            let dead = DEAD.get();
            let sweep_at = SWEEP_AT.get();
            if dead.len() < *sweep_at || FREE_IDS.get().try_reserve(dead.len()).is_err() {
                return;
            }
            dead.retain(|&id| !give_back(id));
            *sweep_at = (dead.len() * 2).max(MIN_SWEEP);
        });
    }
}

/// Gives `id` back if it holds nothing live or at the peak; its total moves
/// to `FREED_CODE_SITE`. Room in FREE_IDS is reserved by the caller.
///
/// # Safety
/// GIL held.
unsafe fn give_back(id: SiteId) -> bool {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held.
    unsafe {
        let site = sites::site(id);
        let figures = site.counters.totals();
        if figures.live_count != 0 || figures.peak_count != 0 {
            return false;
        }
        sites::site(FREED_CODE_SITE)
            .counters
            .absorb_totals(figures.total_count, figures.total_bytes);
        site.end_generation();
        site.counters.reset_for_new_site();
        site.set_frames(Stored::EMPTY);
        FREE_IDS.get().push(id);
        true
    }
}
