//! The joined answer, "30000 `__main__.Order`, 2.3 MiB, allocated at
//! `orders.py:19`, held by `__main__.AUDIT_LOG[0]`": the capture's
//! `Joined` table (what is alive at exit, where it was allocated, what
//! holds it) as the text report leads with it, as the HTML page's first
//! table, and as one line per kind for pprof's comments.

use super::format::format_size;
use super::html::escape;
use super::model::{Capture, Frame, Joined, JoinedKind, JoinedSite};
use std::fmt::Write;

const TITLE: &str = "What is alive at exit, where it was allocated, what holds it";

/// Widest kind name the text table pads to; longer names push their line.
const NAME_COLUMN: usize = 32;

/// A library file by its path inside the library, as it is imported:
/// ".../lib/python3.12/json/decoder.py" as "json/decoder.py". The
/// program's own files keep the path they were run by.
fn short_path(filename: &str) -> &str {
    for root in ["/site-packages/", "/dist-packages/"] {
        if let Some(at) = filename.rfind(root) {
            return &filename[at + root.len()..];
        }
    }
    let stdlib = "/lib/python";
    if let Some(at) = filename.rfind(stdlib) {
        let version = &filename[at + stdlib.len()..];
        if let Some(slash) = version.find('/') {
            return &version[slash + 1..];
        }
    }
    filename
}

fn frame_text(frame: &Frame) -> String {
    format!(
        "{}:{} ({})",
        short_path(&frame.filename),
        frame.lineno,
        frame.function
    )
}

/// Where a site is: the program's line first, the library line it went
/// through after ("app.py:9 (load) via json/decoder.py:353 (raw_decode)").
pub fn site_text(site: &JoinedSite) -> String {
    match (&site.frame, &site.program_frame) {
        (None, _) => String::from("<before tracking>"),
        (Some(frame), None) => frame_text(frame),
        (Some(frame), Some(program)) => {
            format!("{} via {}", frame_text(program), frame_text(frame))
        }
    }
}

/// The share of its kind's bytes a site allocated, as "61%".
fn share(site: &JoinedSite, kind: &JoinedKind) -> String {
    if kind.bytes == 0 {
        return String::from("-");
    }
    format!("{:.0}%", site.bytes as f64 * 100.0 / kind.bytes as f64)
}

fn held_by(kind: &JoinedKind) -> String {
    kind.path
        .as_ref()
        .map(|path| format!("  held by {path}"))
        .unwrap_or_default()
}

/// "61% at app.py:9 (load)" for the kind's first site and each other one
/// with at least 1% of its bytes (the rest is noise on a first screen).
fn sites_text(kind: &JoinedKind) -> Vec<String> {
    kind.sites
        .iter()
        .enumerate()
        .filter(|(i, site)| *i == 0 || site.bytes * 100 >= kind.bytes)
        .map(|(_, site)| format!("{} at {}", share(site, kind), site_text(site)))
        .collect()
}

/// One kind on one line, unpadded: what pprof's comments carry.
pub fn summary(kind: &JoinedKind) -> String {
    let sites = sites_text(kind);
    let place = if sites.is_empty() {
        String::new()
    } else {
        format!(", {}", sites.join("; "))
    };
    format!(
        "{} {} {}{place}{}",
        kind.count,
        kind.name,
        format_size(kind.bytes as f64, false),
        held_by(kind)
    )
}

fn heading(joined: &Joined) -> String {
    format!(
        "{TITLE} (largest {} kinds; computed at exit in {:.2} s):\n",
        joined.kinds.len(),
        joined.seconds
    )
}

/// The text report's first table: per kind, one line with its count, size,
/// top allocating line and holder, and one more for its other lines.
pub fn text(capture: &Capture, limit: usize) -> String {
    let Some(joined) = &capture.joined else {
        return format!("{TITLE}: not recorded in this capture\n");
    };
    let kinds: Vec<&JoinedKind> = joined.kinds.iter().take(limit).collect();
    let count_width = kinds
        .iter()
        .map(|k| k.count.to_string().len())
        .max()
        .unwrap_or(1);
    let name_width = kinds
        .iter()
        .map(|k| k.name.len())
        .max()
        .unwrap_or(0)
        .min(NAME_COLUMN);
    let mut out = heading(joined);
    for kind in kinds {
        let sites = sites_text(kind);
        let first = sites.first().map(|s| format!("  {s}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:>count_width$} {:<name_width$} {:>9}{first}{}",
            kind.count,
            kind.name,
            format_size(kind.bytes as f64, false),
            held_by(kind)
        );
        if sites.len() > 1 {
            let indent = count_width + name_width + 13;
            let _ = writeln!(out, "{:indent$}{}", "", sites[1..].join("; "));
        }
    }
    if let Some(note) = &joined.note {
        let _ = writeln!(out, "({note})");
    }
    out
}

/// The HTML page's first table: a row per kind, its lines in one cell.
pub fn html(capture: &Capture) -> String {
    let mut out = format!("<h2>{TITLE}</h2>\n");
    let Some(joined) = &capture.joined else {
        return out + "<p class=\"note\">Not recorded in this capture.</p>\n";
    };
    let _ = writeln!(
        out,
        "<p>The largest kinds of object alive at exit, computed in {:.2} s.</p>\n\
         <table id=\"joined\">\n<tr><th>Count</th><th>Size</th><th>Kind</th>\
         <th>Allocated at</th><th>Held by</th></tr>",
        joined.seconds
    );
    for kind in &joined.kinds {
        let sites: Vec<String> = kind
            .sites
            .iter()
            .map(|site| {
                format!(
                    "{} ({}, {}) at <code>{}</code>",
                    share(site, kind),
                    format_size(site.bytes as f64, false),
                    site.count,
                    escape(&site_text(site))
                )
            })
            .collect();
        let holder = kind.path.as_deref().map(escape).unwrap_or_default();
        let _ = writeln!(
            out,
            "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td>\
             <td>{}</td><td><code>{holder}</code></td></tr>",
            kind.count,
            format_size(kind.bytes as f64, false),
            escape(&kind.name),
            sites.join("<br>")
        );
    }
    out += "</table>\n";
    if let Some(note) = &joined.note {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(note));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::sample;

    #[test]
    fn one_line_per_kind_with_site_and_holder() {
        let text = text(&sample::capture(), 10);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with(TITLE), "{text}");
        assert!(lines[0].contains("computed at exit in 0.25 s"), "{text}");
        assert_eq!(
            lines[1],
            "2000000 complex  61.0 MiB  100% at julia.py:45 (calc_pure_python)  \
             held by __main__.zs[0]"
        );
        // The program's line leads, the library's follows; the second site
        // goes on its own line, under the first.
        assert_eq!(
            lines[2],
            "      3 list     15.3 MiB  94% at <b&d>.py:7 (helper) via \
             json/decoder.py:353 (raw_decode)"
        );
        assert_eq!(lines[3].trim_start(), "6% at <before tracking>");
        assert_eq!(lines[4], "(paths: 1 of 2 kinds searched)");
    }

    #[test]
    fn limits_rows_and_says_when_not_recorded() {
        let capture = sample::capture();
        assert_eq!(text(&capture, 1).lines().count(), 3);
        let old = Capture {
            joined: None,
            ..capture
        };
        assert!(text(&old, 10).contains("not recorded"));
        assert!(html(&old).contains("Not recorded"));
    }

    #[test]
    fn library_paths_from_their_root_small_sites_left_out() {
        assert_eq!(
            short_path("/usr/lib/python3.12/json/decoder.py"),
            "json/decoder.py"
        );
        assert_eq!(
            short_path("/v/lib/python3.12/site-packages/a/b.py"),
            "a/b.py"
        );
        assert_eq!(short_path("app/main.py"), "app/main.py");
        let mut capture = sample::capture();
        let list = &mut capture.joined.as_mut().unwrap().kinds[1];
        list.sites[1].bytes = list.bytes / 200;
        assert!(!text(&capture, 10).contains("before tracking"));
    }

    #[test]
    fn html_rows_escaped() {
        let page = html(&sample::capture());
        assert!(page.contains("<table id=\"joined\">"));
        assert!(page.contains("<td>complex</td>"));
        assert!(page.contains("<code>__main__.zs[0]</code>"));
        assert!(page.contains("&lt;b&amp;d&gt;.py:7 (helper) via"));
        assert!(!page.contains("<b&d>"));
    }

    #[test]
    fn summary_is_one_line() {
        let capture = sample::capture();
        let kinds = &capture.joined.as_ref().unwrap().kinds;
        assert_eq!(
            summary(&kinds[0]),
            "2000000 complex 61.0 MiB, 100% at julia.py:45 (calc_pure_python)  \
             held by __main__.zs[0]"
        );
    }
}
