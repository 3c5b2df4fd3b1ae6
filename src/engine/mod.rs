//! The engine: the allocator hooks and everything they touch on the hot path
//! (live tables, nursery, counters, call-site and code-object bookkeeping,
//! frame reading). It imports nothing from the other layers.
//!
//! Readers come in through the façade below. The hot path leaves work
//! queued for later: frees the nursery has not yet carried out (and not yet
//! taken off the counters), and code objects pinned by new sites whose pins
//! are dropped at the next flush (freeing those the program dropped). A
//! figure read before that work is done is stale, so the figures are
//! methods of [`Settled`], and the one way to a `Settled` is [`settled`],
//! which does the work first; [`own_figures`] and [`reset_peak`] settle
//! what they read the same way. The raw readers are private to the engine.
//! A thread without the GIL reads the counters through [`gil_free`]
//! instead, knowing they are unsettled.

pub mod codes;
pub mod counted_alloc;
pub mod counters;
pub mod exact_path;
pub mod fallible;
pub mod frame_table;
pub mod frames;
pub mod gil_free;
pub mod hook;
pub mod id_lists;
pub mod interner;
pub mod interp;
pub mod native_frames;
pub mod nursery;
pub mod own_memory;
pub mod own_work;
pub mod relheap;
pub mod retired;
pub mod reuse;
pub mod rounds;
pub mod sampling;
pub mod segvec;
pub mod site_cache;
pub mod sites;
pub mod sync;
pub mod table;

use counters::SiteTotals;
use sites::{Site, SiteId};
use std::collections::HashMap;
use std::marker::PhantomData;
use table::Record;

/// The engine with its queued work done: the figures a reader may see.
/// Holding one means the GIL is held (it is neither `Send` nor `Sync`);
/// take a new one for each API call, since the hooks queue work again as
/// soon as the program allocates.
pub struct Settled {
    _gil: PhantomData<*mut ()>,
}

/// Carries out what the hot path queued (drops the code-object pins taken
/// since the last read, retiring the frames of code that died, and accounts
/// the frees the nursery still queues), gives back table memory past the
/// program's peak, and returns the reader. GIL held,
/// outside any allocator hook, with no site's frames borrowed.
pub fn settled() -> Settled {
    // SAFETY: the API caller holds the GIL, outside any allocator hook, and
    // borrows no site's frames across this call (see `codes::flush`).
    unsafe { codes::flush() };
    hook::settle();
    hook::shrink_tables();
    Settled { _gil: PhantomData }
}

/// A site holding more bytes than at an earlier reading.
pub struct Growth {
    pub site: SiteId,
    pub live_bytes: i64,
    pub growth: i64,
    pub live_count: i64,
    pub count_growth: i64,
}

impl Settled {
    /// The sites holding more bytes than at the last `mark_sites`
    /// (GIL-held figures), most growth first; None without a mark since
    /// the last reset, or when its note missed some sites.
    pub fn grown_since_mark(&self) -> Option<Vec<Growth>> {
        let touched = counters::touched()?;
        let at_reset = counters::at_reset_bytes()?;
        let mut grown: HashMap<SiteId, Growth> = HashMap::new();
        for &(address, count_then) in touched {
            // The list holds addresses of sites' counters.
            let Some(id) = sites::id_of_counters(address) else {
                continue;
            };
            let counters = &sites::site(id).counters;
            let (bytes, count) = counters.gil_live();
            // A slot touched twice was given to a new site meanwhile: the
            // later entry is the site there now.
            let growth = Growth {
                site: id,
                live_bytes: bytes,
                growth: bytes - at_reset.of(counters),
                live_count: count,
                count_growth: count - count_then,
            };
            grown.insert(id, growth);
        }
        let mut rows: Vec<Growth> = grown.into_values().filter(|g| g.growth > 0).collect();
        rows.sort_unstable_by(|a, b| b.growth.cmp(&a.growth).then(a.site.cmp(&b.site)));
        Some(rows)
    }

    /// The sites holding more bytes than in `bytes_before` (live bytes by
    /// site id; a site newer than it held 0), most growth first, with their
    /// count of blocks against `counts_before`.
    pub fn grown_since(&self, bytes_before: &[i64], counts_before: &[i64]) -> Vec<Growth> {
        let before = |column: &[i64], id: SiteId| column.get(id as usize).copied().unwrap_or(0);
        let mut grown: Vec<Growth> = (0..self.site_count())
            .filter_map(|id| {
                let t = self.totals(id);
                let growth = t.live_bytes - before(bytes_before, id);
                (growth > 0).then(|| Growth {
                    site: id,
                    live_bytes: t.live_bytes,
                    growth,
                    live_count: t.live_count,
                    count_growth: t.live_count - before(counts_before, id),
                })
            })
            .collect();
        grown.sort_unstable_by(|a, b| b.growth.cmp(&a.growth).then(a.site.cmp(&b.site)));
        grown
    }

    /// (current, peak) traced bytes.
    pub fn traced_memory(&self) -> (i64, i64) {
        counters::traced_memory()
    }

    /// How many site ids are in use (ids below it name a site).
    pub fn site_count(&self) -> SiteId {
        sites::count()
    }

    /// The site `id` (below `site_count`): its frames and counters.
    pub fn site(&self, id: SiteId) -> &'static Site {
        sites::site(id)
    }

    /// The figures of site `id` (below `site_count`).
    pub fn totals(&self, id: SiteId) -> SiteTotals {
        sites::site(id).counters.totals()
    }

    /// What each site grew by from the last reset_peak() to the peak since
    /// (see `counters::SiteCounters::growth_at_peak`), as (growth, id) for
    /// those that grew; None when what they held at the reset was not all
    /// noted (no memory then).
    pub fn grown_at_peak(&self) -> Option<Vec<(i64, SiteId)>> {
        let at_reset = counters::at_reset_bytes()?;
        let grown = (0..self.site_count())
            .filter_map(|id| {
                let growth = sites::site(id).counters.growth_at_peak(&at_reset);
                (growth > 0).then_some((growth, id))
            })
            .collect();
        Some(grown)
    }

    /// Visits every live allocation (see `hook::for_each_live`).
    pub fn for_each_live(&self, visit: impl FnMut(usize, Record)) {
        hook::for_each_live(visit)
    }
}

/// heapsite's own figures (stats()).
pub struct OwnFigures {
    pub live_allocations: usize,
    pub tracking_bytes: usize,
    pub sites: SiteId,
    pub dropped: usize,
    pub site_cache_misses: u64,
    /// Allocations whose callers were walked anew (the memo of callers,
    /// frames.c, did not hold).
    pub caller_walks: u64,
    /// Whether MEM and OBJ frees reach heapsite's hook (sampled tracing
    /// leaves them to pymalloc where it can: hook/direct.rs).
    pub free_hook: bool,
}

/// heapsite's own figures, with the nursery's queued frees carried out
/// first. Code-object pins are left for the next [`settled`], as stats()
/// always did: dropping them would free memory the figures then leave out.
/// GIL held.
pub fn own_figures() -> OwnFigures {
    hook::settle();
    hook::shrink_tables();
    OwnFigures {
        live_allocations: hook::live_allocations(),
        tracking_bytes: hook::tracking_bytes(),
        sites: sites::count(),
        dropped: hook::dropped(),
        site_cache_misses: sites::cache_misses(),
        // SAFETY: own_figures runs with the GIL held (its doc above).
        caller_walks: unsafe { frames::caller_walks() },
        free_hook: hook::free_hook(),
    }
}

/// Makes the peak the current size, with the nursery's queued frees
/// accounted first (so the current size is exact). Code-object pins are
/// left for the next [`settled`], as reset_peak() always did. GIL held.
pub fn reset_peak() {
    hook::settle();
    counters::reset_peak();
}

/// A reset_peak() that also notes which sites are touched from now on,
/// for `Settled::grown_since_mark`; false if the note cannot be kept. GIL
/// held, outside any allocator hook.
pub fn mark_sites() -> bool {
    hook::settle();
    counters::mark()
}

#[cfg(test)]
mod tests;
