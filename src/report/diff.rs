//! `heapsite diff OLD NEW`: how each allocating line changed between two
//! captures, in tracemalloc's `StatisticDiff` line format, largest change
//! first.

use super::format::format_size;
use super::model::{Capture, View};
use super::text::by_line;
use std::collections::HashMap;
use std::fmt::Write;

pub fn render(old: &Capture, new: &Capture, view: View, limit: usize) -> String {
    let before: HashMap<(String, u32), (u64, u64)> = by_line(old, view)
        .into_iter()
        .map(|s| ((s.filename, s.lineno), (s.bytes, s.count)))
        .collect();
    let mut rows: Vec<(String, u32, u64, i64, u64, i64)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for stat in by_line(new, view) {
        let key = (stat.filename.clone(), stat.lineno);
        let (old_bytes, old_count) = before.get(&key).copied().unwrap_or_default();
        seen.insert(key);
        rows.push((
            stat.filename,
            stat.lineno,
            stat.bytes,
            stat.bytes as i64 - old_bytes as i64,
            stat.count,
            stat.count as i64 - old_count as i64,
        ));
    }
    for ((filename, lineno), (bytes, count)) in &before {
        if !seen.contains(&(filename.clone(), *lineno)) {
            rows.push((
                filename.clone(),
                *lineno,
                0,
                -(*bytes as i64),
                0,
                -(*count as i64),
            ));
        }
    }
    // tracemalloc's order: largest absolute change in size, then size.
    rows.sort_by(|a, b| {
        (b.3.unsigned_abs(), b.2, b.5.unsigned_abs())
            .cmp(&(a.3.unsigned_abs(), a.2, a.5.unsigned_abs()))
            .then_with(|| (&a.0, a.1).cmp(&(&b.0, b.1)))
    });
    let mut out = String::new();
    let (old_peak, new_peak) = (old.meta.peak_bytes as f64, new.meta.peak_bytes as f64);
    let _ = writeln!(
        out,
        "heapsite diff by memory {}: peak {} -> {} ({})",
        view.title(),
        format_size(old_peak, false),
        format_size(new_peak, false),
        format_size(new_peak - old_peak, true)
    );
    for (filename, lineno, bytes, dbytes, count, dcount) in rows.iter().take(limit) {
        let mut line = format!(
            "{filename}:{lineno}: size={} ({}), count={count} ({dcount:+})",
            format_size(*bytes as f64, false),
            format_size(*dbytes as f64, true)
        );
        if *count > 0 {
            line += &format!(
                ", average={}",
                format_size(*bytes as f64 / *count as f64, false)
            );
        }
        let _ = writeln!(out, "{line}");
    }
    if rows.len() > limit {
        let _ = writeln!(out, "{} other lines", rows.len() - limit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::sample;

    #[test]
    fn growth_is_signed_and_ranked() {
        let old = sample::capture();
        let mut new = old.clone();
        new.sites[1].peak_bytes += 10_240;
        new.sites[1].peak_count += 1;
        let text = render(&old, &new, View::Peak, 10);
        let first = text.lines().nth(1).unwrap();
        assert!(
            first.starts_with("<b&d>.py:7: size=11.5 KiB (+10.0 KiB), count=11 (+1)"),
            "{text}"
        );
        assert!(text.contains("julia.py:45: size=61.0 MiB (+0 B), count=2000000 (+0)"));
    }
}
