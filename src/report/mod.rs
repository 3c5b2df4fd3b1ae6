//! Reports, all rendered from one model (`model::Capture`): text, JSON, a
//! self-contained HTML page with flamegraphs, and pprof.

pub mod diff;
pub mod format;
pub mod html;
pub mod joined;
pub mod json;
pub mod merge;
pub mod model;
pub mod plumbing;
pub mod pprof;
pub mod text;

pub mod capture;
pub mod output;

use model::Capture;

pub const FORMATS: [&str; 4] = ["text", "json", "html", "pprof"];

/// The capture as every report shows it: sites of one stack merged, and
/// import-system frames folded into the lines that imported unless
/// `show_import_system` (see `plumbing::as_shown`).
pub fn as_shown(capture: &Capture, show_import_system: bool) -> Capture {
    plumbing::as_shown(capture, !show_import_system)
}

/// The report in `format`; `limit` is the rows per table where one applies.
pub fn render(
    capture: &Capture,
    format: &str,
    limit: usize,
    show_import_system: bool,
) -> Result<Vec<u8>, String> {
    let capture = &as_shown(capture, show_import_system);
    match format {
        "text" => Ok(text::render(capture, limit).into_bytes()),
        "json" => Ok(json::render(capture).into_bytes()),
        "html" => Ok(html::render(capture, limit).into_bytes()),
        "pprof" => Ok(pprof::render(capture, &pprof::CAPTURE)),
        other => Err(format!(
            "unknown report format {other:?}: choose one of {}",
            FORMATS.join(", ")
        )),
    }
}
