//! Memory over time: the capture's timeline as one inline SVG polyline, drawn
//! here rather than by a charting script so the page needs no JavaScript
//! library and stays readable when scripts are off.

use super::escape;
use crate::report::format::format_size;
use crate::report::model::Sample;
use std::fmt::Write;

// Drawing area inside the SVG's own coordinates; the SVG scales to the page
// width through its viewBox.
const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 70.0; // room for the byte labels
const BOTTOM: f64 = 24.0; // room for the time labels
const TOP: f64 = 10.0;
const RIGHT: f64 = 10.0;

pub fn render(timeline: &[Sample]) -> String {
    if timeline.is_empty() {
        return "<p class=\"note\" id=\"timeline-empty\">No memory samples were recorded \
                for this run (the timeline is empty).</p>\n"
            .to_string();
    }
    let t0 = timeline[0].t;
    let span = (timeline[timeline.len() - 1].t - t0).max(f64::EPSILON);
    let most = timeline.iter().map(|s| s.bytes).max().unwrap_or(0).max(1) as f64;
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |t: f64| LEFT + (t - t0) / span * plot_w;
    let y = |bytes: u64| TOP + plot_h - bytes as f64 / most * plot_h;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg id=\"timeline\" class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         role=\"img\" aria-label=\"traced memory over time\">"
    );
    // Axes, then four horizontal grid lines labelled in tracemalloc's units.
    let _ = writeln!(
        out,
        "<path class=\"axis\" d=\"M{LEFT},{TOP} V{} H{}\"/>",
        TOP + plot_h,
        LEFT + plot_w
    );
    for step in 1..=4 {
        let bytes = most * f64::from(step) / 4.0;
        let gy = y(bytes as u64);
        let _ = writeln!(
            out,
            "<path class=\"grid\" d=\"M{LEFT},{gy:.1} H{}\"/><text class=\"ylabel\" x=\"{}\" \
             y=\"{:.1}\">{}</text>",
            LEFT + plot_w,
            LEFT - 4.0,
            gy + 4.0,
            escape(&format_size(bytes, false))
        );
    }
    let _ = writeln!(
        out,
        "<text class=\"ylabel\" x=\"{}\" y=\"{}\">0 B</text>",
        LEFT - 4.0,
        TOP + plot_h + 4.0
    );
    let _ = writeln!(
        out,
        "<text class=\"xlabel\" x=\"{LEFT}\" y=\"{}\">{:.2} s</text>\
         <text class=\"xlabel end\" x=\"{}\" y=\"{}\">{:.2} s</text>",
        HEIGHT - 6.0,
        t0,
        LEFT + plot_w,
        HEIGHT - 6.0,
        t0 + span
    );
    let points: Vec<String> = thin(timeline, t0, span, plot_w as usize)
        .iter()
        .map(|s| format!("{:.1},{:.1}", x(s.t), y(s.bytes)))
        .collect();
    let _ = writeln!(
        out,
        "<polyline class=\"memory\" points=\"{}\"/>",
        points.join(" ")
    );
    out += "</svg>\n";
    out
}

/// At most the lowest and the highest sample of each horizontal unit, in time
/// order: a long run's timeline can hold far more samples than the chart has
/// room for, and the page must stay small, but its peaks must still show.
fn thin(timeline: &[Sample], t0: f64, span: f64, columns: usize) -> Vec<Sample> {
    if timeline.len() <= 2 * columns {
        return timeline.to_vec();
    }
    let column = |s: &Sample| (((s.t - t0) / span * columns as f64) as usize).min(columns - 1);
    let mut out: Vec<Sample> = Vec::with_capacity(2 * columns + 2);
    let mut start = 0;
    while start < timeline.len() {
        let here = column(&timeline[start]);
        let end = start
            + timeline[start..]
                .iter()
                .take_while(|s| column(s) == here)
                .count();
        let group = &timeline[start..end];
        let low = (0..group.len())
            .min_by_key(|&i| group[i].bytes)
            .unwrap_or(0);
        let high = (0..group.len())
            .max_by_key(|&i| group[i].bytes)
            .unwrap_or(0);
        out.push(group[low.min(high)]);
        if low != high {
            out.push(group[low.max(high)]);
        }
        start = end;
    }
    out
}
