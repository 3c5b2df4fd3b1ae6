//! Readers for a thread that does not hold the GIL (the pprof endpoint's
//! server, src/serve/): what can be read without it, and what it costs.
//!
//! Every per-site counter is an atomic (GIL holders store with relaxed
//! loads and stores, other threads `fetch_add`), and site slots are never
//! freed, so counters and ids can be read from any thread. The figures are
//! not settled (see the façade in mod.rs): the MEM/OBJ frees the nursery
//! still queues are not yet taken off, so live figures overstate by at
//! most that bounded queue, and the sites are read one by one while the
//! program runs, so they are slightly torn in time. Both are fine for a
//! profile scraped from a running program; neither is for a capture.
//!
//! A site's frames are NOT readable here: they are swapped as code objects
//! die and name code objects, both GIL-only. A reader keeps names it got
//! under the GIL, keyed by id and `Site::generation` (ids are reused).

use super::counters::{self, SiteTotals};
use super::sites::{self, SiteId};

/// How many site ids are in use (ids below it name a site).
pub fn site_count() -> SiteId {
    sites::count()
}

/// Site `id`'s figures and which site holds the id (`Site::generation`),
/// or None if the id changed hands while it was read (or is not in use
/// yet: it is counted a moment before its slot is made).
pub fn figures(id: SiteId) -> Option<(u32, SiteTotals)> {
    let site = sites::existing(id)?;
    let generation = site.generation();
    let totals = site.counters.totals();
    // The counters' relaxed loads stay before the second look at the
    // generation (on weakly ordered machines too).
    std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
    (site.generation() == generation).then_some((generation, totals))
}

/// (current, peak) traced bytes, unsettled.
pub fn traced_memory() -> (i64, i64) {
    counters::traced_memory()
}
