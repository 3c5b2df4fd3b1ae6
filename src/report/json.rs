//! The JSON report: the capture's model as documented in docs/json-report.md,
//! tagged with a schema name and version so consumers can check what they read.

use super::model::Capture;
use serde::Serialize;

pub const SCHEMA: &str = "heapsite-report";
/// 2: the `joined` table (what is alive at exit, where, held by what).
pub const SCHEMA_VERSION: u32 = 2;

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
        assert_eq!(value["schema_version"], 2);
        assert_eq!(value["joined"]["kinds"][0]["path"], "__main__.zs[0]");
        assert_eq!(
            value["joined"]["kinds"][0]["sites"][0]["frame"]["lineno"],
            45
        );
    }

    #[test]
    fn a_capture_from_before_the_joined_table_still_reads() {
        let mut old = serde_json::to_value(sample::capture()).unwrap();
        old.as_object_mut().unwrap().remove("joined");
        let capture: Capture = serde_json::from_value(old).unwrap();
        assert_eq!(capture.joined, None);
        assert!(!render(&capture).contains("\"joined\""));
    }
}
