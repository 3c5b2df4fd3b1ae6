//! The JSON report: the capture's model as documented in docs/json-report.md,
//! tagged with a schema name and version so consumers can check what they read.

use super::model::Capture;
use serde::Serialize;

pub const SCHEMA: &str = "heapsite-report";
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct Tagged<'a> {
    schema: &'static str,
    schema_version: u32,
    #[serde(flatten)]
    capture: &'a Capture,
}

pub fn render(capture: &Capture) -> String {
    let mut text = serde_json::to_string_pretty(&Tagged {
        schema: SCHEMA,
        schema_version: SCHEMA_VERSION,
        capture,
    })
    .expect("the model always serialises");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::sample;

    #[test]
    fn carries_the_model() {
        let capture = sample::capture();
        let value: serde_json::Value = serde_json::from_str(&render(&capture)).unwrap();
        assert_eq!(value["schema"], SCHEMA);
        assert_eq!(value["sites"][0]["peak_bytes"], 64_000_000);
        assert_eq!(value["frames"][0]["function"], "calc_pure_python");
    }
}
