//! pprof output (placeholder until the profile.proto encoder lands).

use super::model::Capture;

pub fn render(_capture: &Capture) -> Vec<u8> {
    Vec::new()
}
