//! The running program's heap profile, built without the GIL: the figures
//! from the counters (`engine::gil_free`: unsettled, so live bytes may
//! include the few frees the nursery still queues), the names from the
//! server's cache (names.rs), rendered by the capture renderer in Go's
//! convention (`report::pprof::GO_HEAP`, `GO_ALLOCS`).

use super::names::{Frames, Names, SiteKey};
use crate::engine::counters::SiteTotals;
use crate::engine::{gil_free, hook, interp, sampling, sites};
use crate::report::model::{Capture, Process, RawSite, Run};
use crate::report::pprof;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a scrape waits for names of new sites before it serves them
/// under `UNNAMED`.
const NAMES_WAIT: Duration = Duration::from_secs(1);

/// The name of a site the interpreter did not let heapsite name in time
/// (the program held the GIL throughout): named by a later scrape.
pub const UNNAMED: &str = "<site not named yet: the interpreter was busy>";

/// What the program told the server when it started: the run's facts
/// (`argv`, `started`, the native flags) and heapsite's package directory,
/// whose sites are left out as in a capture.
pub struct Program {
    pub run: Run,
    pub own_prefix: String,
    /// Read once as the server starts: `Py_GetVersion` is not for a thread
    /// without the GIL (some versions rewrite a static buffer each call).
    pub python_version: String,
}

impl Program {
    pub fn new(run: Run, own_prefix: String) -> Program {
        Program {
            run,
            own_prefix,
            python_version: interp::python_version(),
        }
    }
}

/// This process's facts as a capture states them (write_capture too).
/// GIL held.
pub fn process() -> Process {
    process_of(interp::python_version())
}

fn process_of(python_version: String) -> Process {
    Process {
        pid: std::process::id(),
        python_version,
        heapsite_version: env!("CARGO_PKG_VERSION").to_string(),
        frames_limit: hook::depth() as u32,
        sample_rate: sampling::rate(),
    }
}

/// The gzipped profile.proto `/debug/pprof/heap` (`GO_HEAP`) or
/// `/debug/pprof/allocs` (`GO_ALLOCS`) answers.
pub fn heap_profile(program: &Program, names: &Names, convention: &pprof::Convention) -> Vec<u8> {
    let figures: Vec<_> = (0..gil_free::site_count())
        .filter_map(|id| Some((id, gil_free::figures(id)?)))
        .filter(|(_, (_, t))| t.total_count != 0 || t.live_count != 0)
        .collect();
    let program_sites: Vec<SiteKey> = figures
        .iter()
        .filter(|(id, _)| sites::reserved_name(*id).is_none())
        .map(|&(id, (generation, _))| (id, generation))
        .collect();
    let named = names.lookup(&program_sites, NAMES_WAIT);
    let sites = figures
        .into_iter()
        .map(|(id, (_, t))| raw_site(frames_of(id, named.get(&id)), &t));
    let (live, peak) = gil_free::traced_memory();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let run = Run {
        duration: (now - program.run.started).max(0.0),
        live_bytes: live.max(0) as u64,
        peak_bytes: peak.max(0) as u64,
        ..program.run.clone()
    };
    let process = process_of(program.python_version.clone());
    let capture = Capture::assemble(run, process, sites, &program.own_prefix);
    pprof::render(&capture, convention)
}

/// A site as a capture takes it: its frames and the engine's figures.
pub fn raw_site(frames: Vec<(String, i64, String)>, t: &SiteTotals) -> RawSite {
    RawSite {
        frames,
        live_bytes: t.live_bytes,
        live_count: t.live_count,
        total_bytes: t.total_bytes,
        total_count: t.total_count,
        peak_bytes: t.peak_bytes,
        peak_count: t.peak_count,
    }
}

fn frames_of(id: sites::SiteId, named: Option<&Frames>) -> Vec<(String, i64, String)> {
    // Named as `sites()` names them: the name as file and function.
    let pseudo = |name: &str| vec![(name.to_string(), 0, name.to_string())];
    match (sites::reserved_name(id), named) {
        (Some(name), _) => pseudo(&name.to_string_lossy()),
        (None, Some(frames)) => frames.to_vec(),
        (None, None) => pseudo(UNNAMED),
    }
}
