//! The HTML report: one self-contained page (no network: styles, script and
//! pictures are all inline) with the run's header, what is alive at exit
//! joined with where it was allocated and what holds it, three flamegraphs (live at
//! peak, allocated in total, still live at exit) switched by buttons, memory
//! over time, the top lines as the text report ranks them, and the objects
//! alive at exit in heapy's table.

mod base64;
mod chart;
mod flame;

use super::format::{format_size, heapy_table, statistic};
use super::joined;
use super::model::{Capture, View};
use super::text::{beyond, by_line, source_line};
use std::collections::HashMap;
use std::fmt::Write;

/// `text` safe inside HTML text and double- or single-quoted attributes;
/// file names, functions and argv are the program's and can hold anything.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn header(capture: &Capture) -> String {
    let meta = &capture.meta;
    let (total, blocks) = capture.total_of(View::Total);
    let rows = [
        ("Command", meta.argv.join(" ")),
        ("PID", meta.pid.to_string()),
        ("Python", format!("CPython {}", meta.python_version)),
        ("Duration", format!("{:.2} s traced", meta.duration)),
        ("Peak", format_size(meta.peak_bytes as f64, false)),
        (
            "Still live at exit",
            format_size(meta.live_bytes as f64, false),
        ),
        (
            "Allocated in total",
            format!("{} in {blocks} blocks", format_size(total as f64, false)),
        ),
        (
            "Frames per site",
            format!(
                "{}{}",
                meta.frames_limit,
                if meta.native {
                    ", native memory included"
                } else {
                    ""
                }
            ),
        ),
        ("heapsite", meta.heapsite_version.clone()),
    ];
    let mut rows = rows.to_vec();
    if meta.import_system_folded {
        rows.push(("Imports", super::plumbing::FOLDED_NOTE.to_string()));
    }
    if let Some(note) = meta.sampling_note() {
        rows.push(("Sampling", note));
    }
    let breakdown = super::text::processes(capture);
    if !breakdown.is_empty() {
        rows.push(("Processes", breakdown));
    }
    let mut out = String::from("<table id=\"meta\">\n");
    for (name, value) in rows {
        let _ = writeln!(out, "<tr><th>{name}</th><td>{}</td></tr>", escape(&value));
    }
    out + "</table>\n"
}

/// The buttons and one iframe (or a note) per view; the first view with
/// something in it is shown.
fn flamegraphs(capture: &Capture) -> String {
    let flames: Vec<_> = View::ALL
        .iter()
        .map(|&view| (view, flame::render(capture, view)))
        .collect();
    let shown = flames.iter().position(|(_, f)| f.is_some()).unwrap_or(0);
    let mut out = String::from("<div id=\"views\">");
    for (i, (view, _)) in flames.iter().enumerate() {
        let _ = write!(
            out,
            "<button type=\"button\" data-view=\"{}\" aria-pressed=\"{}\">{}</button>",
            view.name(),
            i == shown,
            view.title()
        );
    }
    out += "</div>\n";
    for (i, (view, flame)) in flames.iter().enumerate() {
        let class = if i == shown { "flame" } else { "flame off" };
        let _ = writeln!(out, "<div class=\"{class}\" id=\"flame-{}\">", view.name());
        match flame {
            Some(flame) => {
                let _ = writeln!(
                    out,
                    "<iframe title=\"flamegraph: {}\" height=\"{}\" src=\"{}\"></iframe>",
                    view.title(),
                    flame.height,
                    flame::data_url(&flame.svg)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "<p class=\"note\">Nothing {}: no flamegraph to draw.</p>",
                    view.title()
                );
            }
        }
        out += "</div>\n";
    }
    out
}

/// The top lines of a view as a table, ranked as the text report ranks them.
fn top_lines(capture: &Capture, view: View, limit: usize) -> String {
    let stats = by_line(capture, view);
    let mut out = format!(
        "<h2>Top {} lines by memory {}</h2>\n",
        limit.min(stats.len()),
        view.title()
    );
    if stats.is_empty() {
        return out + "<p class=\"note\">None.</p>\n";
    }
    let _ = writeln!(
        out,
        "<table class=\"lines\" id=\"top-{}\">\n\
         <tr><th>#</th><th>Line</th><th>Size</th><th>Count</th><th>Average</th><th>Source</th></tr>",
        view.name()
    );
    let mut sources = HashMap::new();
    for (index, stat) in stats.iter().take(limit).enumerate() {
        let average = if stat.count > 0 {
            format_size(stat.bytes as f64 / stat.count as f64, false)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "<tr><td class=\"num\">{}</td><td>{}:{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td><code>{}</code></td></tr>",
            index + 1,
            escape(&stat.filename),
            stat.lineno,
            format_size(stat.bytes as f64, false),
            stat.count,
            average,
            escape(&source_line(&stat.filename, stat.lineno, &mut sources))
        );
    }
    out += "</table>\n";
    if let Some((lines, bytes, count)) = beyond(&stats, limit) {
        let _ = writeln!(
            out,
            "<p>{lines} other lines: {}</p>",
            statistic(bytes, count)
        );
    }
    let total: u64 = stats.iter().map(|s| s.bytes).sum();
    let _ = writeln!(out, "<p>Total: {}</p>", format_size(total as f64, false));
    out
}

fn kinds(capture: &Capture) -> String {
    let mut out = String::from("<h2>Objects alive at exit, by kind</h2>\n");
    if capture.kinds.is_empty() {
        out += "<p class=\"note\">Not recorded (the heap could not be walked).</p>\n";
    } else {
        let _ = writeln!(
            out,
            "<pre id=\"kinds\">{}</pre>",
            escape(&heapy_table(&capture.kinds))
        );
    }
    out
}

pub fn render(capture: &Capture, limit: usize) -> String {
    let command = escape(&capture.meta.argv.join(" "));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>heapsite: {command}</title>\n<style>\n{}</style>\n</head>\n<body>\n\
         <h1>heapsite: {command}</h1>",
        include_str!("html/page.css")
    );
    out += &header(capture);
    out += &joined::html(capture);
    out += "<h2>Flamegraphs</h2>\n";
    out += &flamegraphs(capture);
    out += "<h2>Memory over time</h2>\n";
    out += &chart::render(&capture.timeline);
    for view in [View::Peak, View::Live] {
        out += &top_lines(capture, view, limit);
    }
    out += &kinds(capture);
    let _ = writeln!(
        out,
        "<script>\n{}</script>\n</body>\n</html>",
        include_str!("html/page.js")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::sample;

    /// The SVG inside the iframe of `view`, decoded back from its data URL.
    fn svg_of(page: &str, view: View) -> String {
        let start = page
            .find(&format!("id=\"flame-{}\"", view.name()))
            .expect("the view's block");
        let prefix = "data:image/svg+xml;base64,";
        let from = start + page[start..].find(prefix).expect("a data URL") + prefix.len();
        let encoded = &page[from..from + page[from..].find('"').unwrap()];
        String::from_utf8(decode(encoded)).unwrap()
    }

    fn decode(text: &str) -> Vec<u8> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        let mut out = Vec::new();
        for chunk in text.as_bytes().chunks(4) {
            let n = chunk
                .iter()
                .filter(|&&c| c != b'=')
                .enumerate()
                .fold(0u32, |n, (i, &c)| n | u32::from(value(c)) << (18 - 6 * i));
            let real = chunk.iter().filter(|&&c| c != b'=').count() - 1;
            out.extend((0..real).map(|i| (n >> (16 - 8 * i)) as u8));
        }
        out
    }

    #[test]
    fn one_self_contained_page_with_the_tables() {
        let page = render(&sample::capture(), 10);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<title>heapsite: julia.py --fast</title>"));
        assert!(!page.contains("http://") && !page.contains("https://"));
        assert!(!page.contains("<link") && !page.contains("src=\"/"));
        assert!(page.contains("<th>PID</th><td>42</td>"));
        assert!(page.contains("CPython 3.11.7"));
        assert!(page.contains("<td>91.6 MiB</td>")); // the peak
        assert!(page.contains("id=\"top-peak\"") && page.contains("id=\"top-live\""));
        assert!(page.contains("<td>julia.py:45</td><td class=\"num\">61.0 MiB</td>"));
        assert!(page.contains("Partition of a set of 2000003 objects."));
    }

    #[test]
    fn escapes_what_the_program_named() {
        let page = render(&sample::capture(), 10);
        assert!(page.contains("&lt;b&amp;d&gt;.py:7"));
        assert!(!page.contains("<b&d>"));
        assert_eq!(escape("a\"b'c"), "a&quot;b&#39;c");
        // Inside the SVG, inferno escapes as XML. (Live at exit, where the
        // helper's site is all there is: at the peak it is too narrow to draw.)
        let svg = svg_of(&page, View::Live);
        assert!(svg.contains("helper (&lt;b&amp;d&gt;.py:7)"), "{svg}");
        assert!(!svg.contains("<b&d>"));
    }

    #[test]
    fn folded_stacks_root_first_with_the_views_bytes() {
        let capture = sample::capture();
        assert_eq!(
            flame::folded(&capture, View::Peak),
            [
                "<module> (julia.py:80);calc_pure_python (julia.py:45) 64000000",
                "<module> (julia.py:80);helper (<b&d>.py:7) 1500",
            ]
        );
        // Nothing of the first site is live at exit.
        assert_eq!(
            flame::folded(&capture, View::Live),
            ["<module> (julia.py:80);helper (<b&d>.py:7) 1000"]
        );
    }

    #[test]
    fn deep_stacks_keep_their_innermost_frames_under_one_folded_frame() {
        let mut capture = sample::capture();
        capture.sites[0].stack = (0..300).map(|i| [0, 1, 2][i % 3]).collect();
        let lines = flame::folded(&capture, View::Peak);
        let deep = lines
            .iter()
            .find(|line| line.starts_with("[172 outer frames folded];"))
            .expect("the deep site, folded");
        assert_eq!(deep.matches(';').count(), flame::MAX_DEPTH);
        assert!(deep.ends_with(";calc_pure_python (julia.py:45) 64000000"));
        let svg = svg_of(&render(&capture, 10), View::Peak);
        assert!(svg.contains("have their outer frames folded"));
    }

    #[test]
    fn three_flamegraphs_titled_by_view_the_first_shown() {
        let page = render(&sample::capture(), 10);
        for view in View::ALL {
            let svg = svg_of(&page, view);
            assert!(svg.contains(&format!(">{}</text>", view.title())), "{svg}");
            assert!(svg.contains("calc_pure_python") == (view != View::Live));
            assert!(svg.contains("history.replaceState = function"));
            assert!(svg.contains("id=\"matched\""));
        }
        assert!(page.contains("<div class=\"flame\" id=\"flame-peak\">"));
        assert!(page.contains("<div class=\"flame off\" id=\"flame-total\">"));
        assert!(page.contains("data-view=\"live\" aria-pressed=\"false\""));
    }

    #[test]
    fn a_view_without_bytes_gets_a_note() {
        let mut capture = sample::capture();
        for site in &mut capture.sites {
            site.live_bytes = 0;
            site.live_count = 0;
        }
        let page = render(&capture, 10);
        let block = &page[page.find("id=\"flame-live\"").unwrap()..];
        let block = &block[..block.find("</div>").unwrap()];
        assert!(block.contains("Nothing still live at exit"), "{block}");
        assert!(!block.contains("<iframe"));
        // And with nothing at all, the page still renders, all notes.
        let empty = render(&Capture::default(), 10);
        assert_eq!(empty.matches("no flamegraph to draw").count(), 3);
        assert!(empty.contains("id=\"timeline-empty\""));
        assert!(empty.contains("Not recorded"));
    }

    #[test]
    fn many_small_sites_stay_a_bounded_drawing() {
        use crate::report::model::{Frame, Site};
        // A thousand sites of about 0.1 % each, all wider than MIN_WIDTH.
        let mut capture = sample::capture();
        capture.sites[0].peak_bytes = 1_500_000;
        for i in 0..1000u32 {
            capture.frames.push(Frame {
                filename: format!("mod{i}.py"),
                lineno: i,
                function: format!("f{i}"),
            });
            capture.sites.push(Site {
                stack: vec![capture.frames.len() as u32 - 1, 1],
                peak_bytes: 1_000 + u64::from(i),
                peak_count: 1,
                ..Site::default()
            });
        }
        let svg = svg_of(&render(&capture, 10), View::Peak);
        let drawn = svg.matches("<g>").count();
        assert!((100..=301).contains(&drawn), "{drawn} frames drawn");
        assert!(svg.contains("calc_pure_python"), "the widest site stays");
        assert!(svg.contains("f999 (mod999.py:999)") && !svg.contains("f0 (mod0.py:0)"));
    }

    #[test]
    fn memory_over_time() {
        let page = render(&sample::capture(), 10);
        assert!(page.contains("<svg id=\"timeline\""));
        // Three samples: start, the peak at the top of the plot, the end.
        assert!(page
            .contains("<polyline class=\"memory\" points=\"70.0,196.0 358.0,10.0 790.0,196.0\"/>"));
        assert!(page.contains(">91.6 MiB</text>"));
        assert!(page.contains(">2.50 s</text>"));
    }

    #[test]
    fn long_timelines_are_thinned_but_keep_the_peak() {
        let mut capture = sample::capture();
        capture.timeline = (0..100_000u32)
            .map(|i| crate::report::model::Sample {
                t: f64::from(i) / 1000.0,
                bytes: if i == 54_321 {
                    10_000_000
                } else {
                    u64::from(i % 7) * 1000
                },
            })
            .collect();
        let page = render(&capture, 10);
        let points = &page[page.find("points=\"").unwrap()..];
        let points = &points[..points.find("\"/>").unwrap()];
        assert!(points.split(' ').count() <= 2 * 720);
        assert!(points.contains(",10.0"), "the peak reaches the top");
    }
}
