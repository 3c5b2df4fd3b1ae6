//! The flamegraphs: one per view, drawn by inferno from folded stacks, each
//! put in its own `<iframe>` as a `data:` URL.
//!
//! Why iframes: inferno's SVG carries its own script (zoom, search) that
//! looks its elements up by global ids ("frames", "matched", ...) and keeps
//! its state in global variables, so three SVGs inlined in one document would
//! trample each other. A document of its own per flamegraph keeps each one
//! whole, and a `data:` URL keeps the report one self-contained file.

use super::base64;
use crate::report::format::format_size;
use crate::report::model::{Capture, View};
use inferno::flamegraph::{self, color::BasicPalette, color::Palette, Options};
use std::collections::{BTreeMap, HashMap};

/// One view's flamegraph: the SVG and its height in pixels (for the iframe).
pub struct Flame {
    pub svg: String,
    pub height: usize,
}

/// "function (file:line)", the label of one frame. ';' separates frames in
/// the folded format, so it cannot appear inside a label; newlines would end
/// the line.
fn label(capture: &Capture, index: u32) -> String {
    let frame = capture.frame(index);
    format!("{} ({}:{})", frame.function, frame.filename, frame.lineno)
        .replace(';', ",")
        .replace(['\n', '\r'], " ")
}

/// Stacks deeper than this are drawn with their innermost MAX_DEPTH frames
/// under one frame that stands for the outer ones: drawing work grows with
/// depth, and a capture from elsewhere may hold stacks thousands of frames
/// deep (heapsite records at most 128).
pub const MAX_DEPTH: usize = 128;

/// One site's stack in the folded format, root first (a site's stack is
/// innermost first), its outer frames folded past MAX_DEPTH.
fn folded_stack(capture: &Capture, stack: &[u32]) -> String {
    if stack.is_empty() {
        return String::from("[no Python frames]");
    }
    let kept = &stack[..stack.len().min(MAX_DEPTH)];
    let mut labels: Vec<String> = kept.iter().rev().map(|&f| label(capture, f)).collect();
    if stack.len() > MAX_DEPTH {
        labels.insert(
            0,
            format!("[{} outer frames folded]", stack.len() - MAX_DEPTH),
        );
    }
    labels.join(";")
}

/// The view's sites as folded stacks ("root;...;allocating bytes"), root
/// first as flamegraphs draw them. Sites whose frames resolve alike are
/// summed, and the map keeps the order stable.
pub fn folded(capture: &Capture, view: View) -> Vec<String> {
    let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
    for site in &capture.sites {
        let bytes = view.bytes(site);
        if bytes == 0 {
            continue;
        }
        let entry = stacks
            .entry(folded_stack(capture, &site.stack))
            .or_default();
        *entry = entry.saturating_add(bytes);
    }
    stacks
        .into_iter()
        .map(|(stack, bytes)| format!("{stack} {bytes}"))
        .collect()
}

/// Runs before inferno's own script inside the SVG document. In a `data:`
/// document (an opaque origin) `history.replaceState` throws, and inferno
/// calls it to remember zoom and search in the URL half-way through both, so
/// they would stop before updating the picture; the state only has nowhere to
/// be kept, so dropping it is harmless.
const SHIM: &str = "<script type=\"text/ecmascript\"><![CDATA[\
(function () { var replace = history.replaceState.bind(history);\
 history.replaceState = function (s, t, u) { try { replace(s, t, u); } catch (e) {} }; })();\
]]></script>";

/// None when nothing was allocated in that view (or inferno failed).
pub fn render(capture: &Capture, view: View) -> Option<Flame> {
    let lines = folded(capture, view);
    if lines.is_empty() {
        return None;
    }
    let (bytes, count) = capture.total_of(view);
    let mut options = Options::default();
    options.title = view.title().to_string();
    let deepest = capture
        .sites
        .iter()
        .map(|s| s.stack.len())
        .max()
        .unwrap_or(0);
    let folding = if deepest > MAX_DEPTH {
        format!("; stacks deeper than {MAX_DEPTH} frames have their outer frames folded")
    } else {
        String::new()
    };
    options.subtitle = Some(format!(
        "{} in {count} blocks; frames are function (file:line), the allocating line on top{folding}",
        format_size(bytes as f64, false)
    ));
    options.count_name = "bytes".to_string();
    options.colors = Palette::Basic(BasicPalette::Mem);
    options.hash = true; // a function keeps its colour across the three views
    options.min_width = min_width(&lines);
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg).ok()?;
    let mut svg = String::from_utf8(svg).ok()?;
    let height = root_height(&svg)?;
    // After the root element's opening tag, so the shim runs first.
    let open = svg.find("<svg")?;
    let end = open + svg[open..].find('>')? + 1;
    svg.insert_str(end, SHIM);
    Some(Flame { svg, height })
}

/// Frames narrower than this percentage of the whole are left out: 0.05 %,
/// about half a pixel of inferno's default 1200-px drawing. (inferno's own
/// default, 0.01 %, keeps thousands of invisible frames of a program's imports
/// and makes the page megabytes.) inferno takes `min_width` as a percentage.
const MIN_WIDTH: f64 = 0.05;
/// At most this many frames are drawn per view (about 360 bytes each once
/// encoded), so that the page stays a few hundred KB whatever the program.
const MAX_FRAMES: usize = 300;

/// inferno's `min_width` (percent) for these folded stacks: MIN_WIDTH, or
/// wider if that would still draw more than MAX_FRAMES frames. A frame is a
/// distinct stack prefix, as wide as the bytes of the stacks under it.
fn min_width(lines: &[String]) -> f64 {
    // Each distinct prefix is a node of a tree, found by (parent, label):
    // linear in the frames, where hashing whole prefixes was quadratic.
    let mut nodes: HashMap<(usize, &str), usize> = HashMap::new();
    let mut widths: Vec<u64> = Vec::new();
    let mut total: u64 = 0;
    for line in lines {
        let Some((stack, bytes)) = line.rsplit_once(' ') else {
            continue;
        };
        let bytes: u64 = bytes.parse().unwrap_or(0);
        total = total.saturating_add(bytes);
        let mut parent = usize::MAX; // the root
        for frame in stack.split(';') {
            let next = widths.len();
            let node = *nodes.entry((parent, frame)).or_insert(next);
            if node == next {
                widths.push(0);
            }
            widths[node] = widths[node].saturating_add(bytes);
            parent = node;
        }
    }
    if widths.len() <= MAX_FRAMES || total == 0 {
        return MIN_WIDTH;
    }
    widths.sort_unstable_by(|a, b| b.cmp(a));
    // Just wider than the first frame that must go (ties go with it).
    let cut = widths[MAX_FRAMES] as f64 / total as f64 * 100.0;
    MIN_WIDTH.max(cut * (1.0 + 1e-9))
}

/// The `height` attribute of the root `<svg>` element inferno wrote.
fn root_height(svg: &str) -> Option<usize> {
    let open = svg.find("<svg")?;
    let tag = &svg[open..open + svg[open..].find('>')?];
    let value = tag.split(" height=\"").nth(1)?;
    value[..value.find('"')?].parse().ok()
}

/// The SVG as a `data:` URL, for an iframe's `src`.
pub fn data_url(svg: &str) -> String {
    format!(
        "data:image/svg+xml;base64,{}",
        base64::encode(svg.as_bytes())
    )
}
