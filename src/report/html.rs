//! The HTML report (placeholder until the flamegraph page lands).

use super::model::Capture;

pub fn render(capture: &Capture, limit: usize) -> String {
    format!("<pre>{}</pre>", super::text::render(capture, limit))
}
