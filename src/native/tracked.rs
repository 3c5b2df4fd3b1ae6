//! Memory that C code allocates outside PyMem and reports with
//! `PyTraceMalloc_Track(domain, ptr, size)` / `PyTraceMalloc_Untrack` (numpy
//! does, for array data, in domain 389047). `got.rs` routes extensions' calls
//! here; each call is recorded while heapsite traces and always forwarded to
//! libpython, so the interpreter's own tracemalloc keeps working too.
//!
//! These calls may come without the GIL, from any thread: the records live in
//! a concurrent map keyed by (domain, address), apart from the PyMem tables.

use crate::engine::frames;
use crate::engine::hook;
use crate::engine::interp::{self, Interp};
use crate::engine::sites::{self, SiteId, NO_GIL_SITE};
use dashmap::DashMap;
use std::ffi::{c_int, c_uint};
use std::sync::OnceLock;

extern "C" {
    fn PyTraceMalloc_Track(domain: c_uint, ptr: usize, size: usize) -> c_int;
    fn PyTraceMalloc_Untrack(domain: c_uint, ptr: usize) -> c_int;
}

/// (domain, address) -> (size, site, counted with the GIL held)
type Tracked = DashMap<(u32, usize), (usize, SiteId)>;
static TRACKED: OnceLock<Tracked> = OnceLock::new();

fn tracked() -> &'static Tracked {
    TRACKED.get_or_init(Tracked::default)
}

fn account(site: SiteId, size: usize, adding: bool, gil: bool) {
    let counters = &sites::site(site).counters;
    // Without the GIL, a site's first event needs 32 bytes for its
    // counters; with none to be had, the event goes uncounted.
    match (adding, gil) {
        (true, true) => counters.add_gil(size),
        (true, false) => _ = counters.add_nogil(size),
        (false, true) => counters.sub_gil(size),
        (false, false) => _ = counters.sub_nogil(size),
    }
}

/// What extensions now call as `PyTraceMalloc_Track`.
pub unsafe extern "C" fn heapsite_track(domain: c_uint, ptr: usize, size: usize) -> c_int {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let forwarded = PyTraceMalloc_Track(domain, ptr, size);
        if !hook::is_tracing() {
            return forwarded;
        }
        if !Interp::of_caller().is_main() {
            // Untraced, as every allocation in a subinterpreter (src/engine/interp.rs).
            interp::warn_untraced();
            return forwarded;
        }
        let gil = frames::gil_held();
        if gil {
            // Counted once: as the domain's block, not also as a PyMem one.
            hook::forget(ptr);
        }
        let site = if gil {
            // SAFETY: this thread holds the GIL.
            match sites::guarded(|state| state.current_site(hook::depth())) {
                Some(Some((site, _))) => site,
                _ => return forwarded, // inside heapsite, or no memory for a site
            }
        } else {
            NO_GIL_SITE
        };
        if let Some((old_size, old_site)) = tracked().insert((domain, ptr), (size, site)) {
            account(old_site, old_size, false, gil);
        }
        account(site, size, true, gil);
        0
    }
}

/// What extensions now call as `PyTraceMalloc_Untrack`.
pub unsafe extern "C" fn heapsite_untrack(domain: c_uint, ptr: usize) -> c_int {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let forwarded = PyTraceMalloc_Untrack(domain, ptr);
        match tracked().remove(&(domain, ptr)) {
            Some((_, (size, site))) => {
                account(site, size, false, Interp::of_caller().holds_main_gil());
                0
            }
            None => forwarded,
        }
    }
}

/// Installed and cleared with the engine's tables (`hook::start`, `stop`, `clear`).
pub const COMPANION: hook::Companion = hook::Companion { install, clear };

/// Routes every loaded (and later loaded) extension's calls through here.
pub fn install() {
    static REDIRECTS: OnceLock<[(&'static std::ffi::CStr, usize); 2]> = OnceLock::new();
    let redirects = REDIRECTS.get_or_init(|| {
        [
            (c"PyTraceMalloc_Track", heapsite_track as *const () as usize),
            (
                c"PyTraceMalloc_Untrack",
                heapsite_untrack as *const () as usize,
            ),
        ]
    });
    crate::native::got::install(redirects);
}

/// Visits every tracked block: (domain, size, site).
pub fn for_each(mut visit: impl FnMut(u32, usize, SiteId)) {
    for entry in tracked().iter() {
        let (domain, _) = *entry.key();
        let (size, site) = *entry.value();
        visit(domain, size, site);
    }
}

/// Forgets every tracked block (with the tables, on clear and stop).
pub fn clear() {
    tracked().clear();
}
