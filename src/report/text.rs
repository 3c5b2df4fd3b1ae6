//! The text report: the run in three lines, what is alive at exit joined
//! with where it was allocated and what holds it (`joined`), the top
//! allocating lines at the peak and at exit in tracemalloc's line format
//! (with the source line), and the objects alive at exit in heapy's table
//! layout.

use super::format::{format_size, heapy_table_top, statistic};
use super::joined;
use super::model::{Capture, View};
use super::plumbing::is_thread_entry;
use std::collections::HashMap;
use std::fmt::Write;

/// One allocating line (file, line) with its sites' figures summed, as
/// tracemalloc's `statistics("lineno")` groups them.
pub struct LineStat {
    pub filename: String,
    pub lineno: u32,
    pub bytes: u64,
    pub count: u64,
}

pub fn by_line(capture: &Capture, view: View) -> Vec<LineStat> {
    grouped(capture, view, false)
}

/// Per line with what its callees allocated counted too (tracemalloc's
/// `cumulative=True`): a line calling into a library is credited with the
/// library's allocations, each site once per line however deep it recurses.
pub fn by_line_cumulative(capture: &Capture, view: View) -> Vec<LineStat> {
    grouped(capture, view, true)
}

fn grouped(capture: &Capture, view: View, cumulative: bool) -> Vec<LineStat> {
    let mut groups: HashMap<(String, u32), (u64, u64)> = HashMap::new();
    for site in &capture.sites {
        let (bytes, count) = (view.bytes(site), view.count(site));
        if bytes == 0 && count == 0 {
            continue;
        }
        let mut keys = vec![capture.top_frame(site)];
        if cumulative {
            let callers: Vec<(String, u32)> = site
                .stack
                .iter()
                .map(|&f| capture.frame(f))
                .filter(|frame| !is_thread_entry(frame))
                .map(|frame| (frame.filename.clone(), frame.lineno))
                .collect();
            if !callers.is_empty() {
                keys = callers;
            }
            keys.sort();
            keys.dedup();
        }
        for key in keys {
            let entry = groups.entry(key).or_default();
            entry.0 += bytes;
            entry.1 += count;
        }
    }
    let mut stats: Vec<LineStat> = groups
        .into_iter()
        .map(|((filename, lineno), (bytes, count))| LineStat {
            filename,
            lineno,
            bytes,
            count,
        })
        .collect();
    stats.sort_by(|a, b| {
        (b.bytes, b.count)
            .cmp(&(a.bytes, a.count))
            .then_with(|| (&a.filename, a.lineno).cmp(&(&b.filename, b.lineno)))
    });
    stats
}

/// The lines past the first `limit`, summed: (lines, bytes, count).
pub fn beyond(stats: &[LineStat], limit: usize) -> Option<(usize, u64, u64)> {
    let rest = stats.get(limit..).filter(|rest| !rest.is_empty())?;
    let bytes = rest.iter().map(|s| s.bytes).sum();
    let count = rest.iter().map(|s| s.count).sum();
    Some((rest.len(), bytes, count))
}

/// Source files larger than this are not read for their lines.
const MAX_SOURCE: u64 = 16 << 20;

/// The lines of a source file named in a capture, if it is a regular file
/// that is still there; never a device or a FIFO (the capture may name
/// anything, and reading /dev/zero would not end).
fn source_lines(filename: &str) -> Vec<String> {
    let readable = std::fs::metadata(filename)
        .map(|meta| meta.is_file() && meta.len() <= MAX_SOURCE)
        .unwrap_or(false);
    if !readable {
        return Vec::new();
    }
    std::fs::read_to_string(filename)
        .map(|text| text.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The source text of a line, if the file is still readable.
pub fn source_line(
    filename: &str,
    lineno: u32,
    cache: &mut HashMap<String, Vec<String>>,
) -> String {
    let lines = cache
        .entry(filename.to_string())
        .or_insert_with(|| source_lines(filename));
    lines
        .get((lineno as usize).wrapping_sub(1))
        .map(|line| line.trim().to_string())
        .unwrap_or_default()
}

pub fn header(capture: &Capture) -> String {
    let meta = &capture.meta;
    let (total, blocks) = capture.total_of(View::Total);
    let mut out = String::new();
    let _ = writeln!(out, "heapsite: {}", meta.argv.join(" "));
    let _ = writeln!(
        out,
        "pid {}, CPython {}, {:.2} s traced, {} frames per site{}",
        meta.pid,
        meta.python_version,
        meta.duration,
        meta.frames_limit,
        if meta.native {
            ", native memory included"
        } else {
            ""
        }
    );
    if let Some(note) = meta.sampling_note() {
        let _ = writeln!(out, "{note}");
    }
    let _ = writeln!(
        out,
        "peak {}, still live at exit {}, allocated in total {} in {} blocks",
        format_size(meta.peak_bytes as f64, false),
        format_size(meta.live_bytes as f64, false),
        format_size(total as f64, false),
        blocks
    );
    if meta.import_system_folded {
        let _ = writeln!(out, "{}", super::plumbing::FOLDED_NOTE);
    }
    out + &processes(capture)
}

/// The per-process breakdown of a merged capture (`merge.rs`); empty for
/// one process.
pub fn processes(capture: &Capture) -> String {
    let mut out = String::new();
    if capture.processes.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{} processes, figures added (the peak: the sum of each process's own peak):",
        capture.processes.len()
    );
    for meta in &capture.processes {
        let _ = writeln!(
            out,
            "  pid {}: {}; peak {}, still live at exit {}, {:.2} s traced",
            meta.pid,
            meta.argv.join(" "),
            format_size(meta.peak_bytes as f64, false),
            format_size(meta.live_bytes as f64, false),
            meta.duration
        );
    }
    out
}

pub fn top_lines(capture: &Capture, view: View, limit: usize) -> String {
    let title = format!("by memory {}", view.title());
    lines_table(&by_line(capture, view), &title, limit, true)
}

fn lines_table(stats: &[LineStat], title: &str, limit: usize, total: bool) -> String {
    let mut sources = HashMap::new();
    let mut out = String::new();
    let _ = writeln!(out, "Top {} lines {title}:", limit.min(stats.len()));
    for (index, stat) in stats.iter().take(limit).enumerate() {
        let _ = writeln!(
            out,
            "#{}: {}:{}: {}",
            index + 1,
            stat.filename,
            stat.lineno,
            statistic(stat.bytes, stat.count)
        );
        let line = source_line(&stat.filename, stat.lineno, &mut sources);
        if !line.is_empty() {
            let _ = writeln!(out, "    {line}");
        }
    }
    if let Some((lines, bytes, count)) = beyond(stats, limit) {
        let _ = writeln!(
            out,
            "{lines} other: size={}, count={count}",
            format_size(bytes as f64, false)
        );
    }
    if total {
        let total: u64 = stats.iter().map(|s| s.bytes).sum();
        let _ = writeln!(out, "Total: {}", format_size(total as f64, false));
    }
    out
}

pub fn render(capture: &Capture, limit: usize) -> String {
    let mut out = header(capture);
    out.push('\n');
    out += &joined::text(capture, limit);
    for view in [View::Peak, View::Live] {
        out.push('\n');
        out += &top_lines(capture, view, limit);
    }
    out.push('\n');
    let title = "by memory live at peak, with what their callees allocated";
    out += &lines_table(
        &by_line_cumulative(capture, View::Peak),
        title,
        limit,
        false,
    );
    out.push('\n');
    if capture.kinds.is_empty() {
        out += "Objects at exit: not recorded\n";
    } else {
        out += "Objects alive at exit, by kind:\n";
        out += &heapy_table_top(&capture.kinds, limit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::sample;

    #[test]
    fn a_merged_capture_lists_its_processes() {
        let mut a = sample::capture();
        let mut b = sample::capture();
        (a.meta.pid, b.meta.pid) = (7, 8);
        let text = render(&crate::report::merge::merge(&[a, b]), 10);
        assert!(
            text.contains("2 processes, figures added")
                && text.contains("  pid 8: julia.py --fast; peak 91.6 MiB"),
            "{text}"
        );
        assert!(!render(&sample::capture(), 10).contains("processes"));
    }

    #[test]
    fn names_the_peak_line_first() {
        let text = render(&sample::capture(), 10);
        let first = text.lines().find(|l| l.starts_with("#1:")).unwrap();
        assert_eq!(
            first,
            "#1: julia.py:45: size=61.0 MiB, count=2000000, average=32 B"
        );
        assert!(text.contains("Partition of a set of 2000003 objects."));
        // Cumulative: the <module> line is credited with both sites.
        assert!(
            text.contains("#1: julia.py:80: size=61.0 MiB, count=2000010"),
            "{text}"
        );
    }
}
