//! pprof output: a gzipped `perftools.profiles.Profile` (pprof's
//! `profile.proto`), the format `go tool pprof`, Pyroscope, Parca and most
//! profiling back ends read.
//!
//! Heap profiles there follow Go's convention: `alloc_objects`/`alloc_space`
//! for everything allocated over the run and `inuse_objects`/`inuse_space`
//! for what is still allocated, which here is what was live when the capture
//! was taken (the program's exit under `heapsite run`). heapsite also knows
//! what each site held at the moment traced memory peaked, the figure its text
//! report leads with, so that is a third pair, `peak_objects`/`peak_space`.
//!
//! One `Sample` per call site, its locations leaf (the allocating frame)
//! first, as the capture's `Site::stack` is; one `Location` per distinct
//! frame (file, line, function) and one `Function` per distinct (function,
//! file), since pprof's function views group by `Function`. The figures are
//! exact counts, or a sampled capture's estimates (already weighted, as Go's
//! own profiles are): `period` is then the mean bytes between samples, as Go
//! sets it, else 1.

use super::joined;
use super::model::{Capture, Frame, Site};
use flate2::{write::GzEncoder, Compression};
use prost::Message;
use std::collections::HashMap;
use std::io::Write;

/// The messages of `profile.proto` that heapsite writes, with that file's
/// field numbers (tests/data/profile.proto is the schema they match).
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

/// The sample types, in the order of every sample's values: Go's heap-profile
/// four, then heapsite's peak pair.
pub const SAMPLE_TYPES: [(&str, &str); 6] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
    ("peak_objects", "count"),
    ("peak_space", "bytes"),
];

/// Which sample types a profile carries and which one a viewer shows first.
pub struct Convention {
    /// How many of `SAMPLE_TYPES`, from the first.
    types: usize,
    default: &'static str,
}

/// A capture file's profile. Memory live at the peak answers the question
/// people profile memory for ("what made my program this big?") and is
/// what the text report leads with; `inuse_space` is Go's default, but at a
/// program's exit most of its memory is usually freed already, so that
/// view would often be nearly empty. It is also the last type, which is
/// what a client that ignores `default_sample_type` falls back to.
pub const CAPTURE: Convention = Convention {
    types: 6,
    default: "peak_space",
};

/// A running program's profile, as Go's `/debug/pprof/heap` serves it:
/// exactly Go's four sample types, `inuse_space` first, so `go tool pprof`
/// and the Parca and Pyroscope scrapers read it as they read Go's.
pub const GO_HEAP: Convention = Convention {
    types: 4,
    default: "inuse_space",
};

/// The same profile as Go's `/debug/pprof/allocs` serves it, `alloc_space`
/// first: where Parca's and Grafana Alloy's memory scrapes look by default.
pub const GO_ALLOCS: Convention = Convention {
    types: 4,
    default: "alloc_space",
};

/// The function name of the one location given to a site without Python
/// frames (memory allocated outside any Python code), so that its bytes
/// still show in flamegraphs, which drop samples without locations.
pub const NO_FRAME: &str = "<no Python frame>";

fn values(site: &Site, convention: &Convention) -> Vec<i64> {
    [
        site.total_count,
        site.total_bytes,
        site.live_count,
        site.live_bytes,
        site.peak_count,
        site.peak_bytes,
    ]
    .iter()
    .take(convention.types)
    .map(|&v| i64::try_from(v).unwrap_or(i64::MAX))
    .collect()
}

fn nanos(seconds: f64) -> i64 {
    if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1e9).round().min(i64::MAX as f64) as i64
    } else {
        0
    }
}

/// The string table: "" at index 0, each distinct string once.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut strings = Strings::default();
        strings.add("");
        strings
    }

    fn add(&mut self, text: &str) -> i64 {
        if let Some(&i) = self.index.get(text) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(text.to_string());
        self.index.insert(text.to_string(), i);
        i
    }
}

/// Locations and functions, each interned once, ids from 1.
struct Symbols<'a> {
    strings: Strings,
    locations: Vec<proto::Location>,
    functions: Vec<proto::Function>,
    location_ids: HashMap<&'a Frame, u64>,
    function_ids: HashMap<(&'a str, &'a str), u64>,
}

impl<'a> Symbols<'a> {
    fn location(&mut self, frame: &'a Frame) -> u64 {
        if let Some(&id) = self.location_ids.get(frame) {
            return id;
        }
        let function_id = self.function(&frame.function, &frame.filename);
        let id = self.locations.len() as u64 + 1;
        self.locations.push(proto::Location {
            id,
            line: vec![proto::Line {
                function_id,
                line: i64::from(frame.lineno),
            }],
            ..Default::default()
        });
        self.location_ids.insert(frame, id);
        id
    }

    fn function(&mut self, name: &'a str, filename: &'a str) -> u64 {
        if let Some(&id) = self.function_ids.get(&(name, filename)) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let name_index = self.strings.add(name);
        self.functions.push(proto::Function {
            id,
            name: name_index,
            system_name: name_index,
            filename: self.strings.add(filename),
            start_line: 0, // not recorded
        });
        self.function_ids.insert((name, filename), id);
        id
    }
}

/// The joined table as comments, a line per kind: pprof's samples are call
/// sites, and a kind at exit is not one (a site allocates several kinds,
/// and a kind comes from several sites), so it cannot be a sample label
/// without counting a site's bytes more than once.
fn joined_comments(capture: &Capture) -> Vec<String> {
    capture
        .joined
        .iter()
        .flat_map(|joined| &joined.kinds)
        .map(|kind| format!("alive at exit: {}", joined::summary(kind)))
        .collect()
}

/// The profile message, before encoding.
pub fn profile(capture: &Capture, convention: &Convention) -> proto::Profile {
    let mut strings = Strings::new();
    let sample_type = SAMPLE_TYPES[..convention.types]
        .iter()
        .map(|(kind, unit)| proto::ValueType {
            r#type: strings.add(kind),
            unit: strings.add(unit),
        })
        .collect();
    // A sampled peak overstates (the highest of many noisy readings): a
    // sampled capture's profile opens on what is live instead.
    let default = if capture.meta.sample_rate > 0 && convention.default == "peak_space" {
        "inuse_space"
    } else {
        convention.default
    };
    let default_sample_type = strings.add(default);
    let period_type = Some(proto::ValueType {
        r#type: strings.add("space"),
        unit: strings.add("bytes"),
    });
    let meta = &capture.meta;
    let comment = [
        format!("argv: {}", meta.argv.join(" ")),
        format!("pid: {}", meta.pid),
        format!("python: CPython {}", meta.python_version),
        format!("heapsite: {}", meta.heapsite_version),
        format!("frames per site: {}", meta.frames_limit),
        format!("native memory included: {}", meta.native),
        format!("sampling: {}", meta.sampling_note().unwrap_or("off".into())),
        format!("peak traced bytes: {}", meta.peak_bytes),
        format!("live traced bytes: {}", meta.live_bytes),
    ]
    .into_iter()
    .chain(joined_comments(capture))
    .map(|text| strings.add(&text))
    .collect();

    let no_frame = Frame {
        filename: String::new(),
        lineno: 0,
        function: NO_FRAME.to_string(),
    };
    let mut symbols = Symbols {
        strings,
        locations: Vec::new(),
        functions: Vec::new(),
        location_ids: HashMap::new(),
        function_ids: HashMap::new(),
    };
    let mut sample = Vec::with_capacity(capture.sites.len());
    for site in &capture.sites {
        let value = values(site, convention);
        if value.iter().all(|&v| v == 0) {
            continue;
        }
        let location_id = if site.stack.is_empty() {
            vec![symbols.location(&no_frame)]
        } else {
            site.stack
                .iter()
                .map(|&f| symbols.location(capture.frame(f)))
                .collect()
        };
        sample.push(proto::Sample {
            location_id,
            value,
            label: Vec::new(),
        });
    }

    proto::Profile {
        sample_type,
        sample,
        location: symbols.locations,
        function: symbols.functions,
        string_table: symbols.strings.table,
        time_nanos: nanos(meta.started),
        duration_nanos: nanos(meta.duration),
        period_type,
        period: (meta.sample_rate as i64).max(1),
        comment,
        default_sample_type,
        ..Default::default()
    }
}

/// The gzipped, encoded profile, as pprof reads it from a file or from
/// Go's `/debug/pprof/heap`.
pub fn render(capture: &Capture, convention: &Convention) -> Vec<u8> {
    let bytes = profile(capture, convention).encode_to_vec();
    let mut gzip = GzEncoder::new(Vec::with_capacity(bytes.len() / 2), Compression::default());
    gzip.write_all(&bytes)
        .and_then(|()| gzip.finish())
        .expect("writing to memory does not fail")
}

#[cfg(test)]
mod tests {
    use super::proto::Profile;
    use super::*;
    use crate::report::model::sample;
    use flate2::read::GzDecoder;
    use std::io::Read;

    fn decode(bytes: &[u8]) -> Profile {
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzipped");
        let mut raw = Vec::new();
        GzDecoder::new(bytes).read_to_end(&mut raw).unwrap();
        Profile::decode(raw.as_slice()).unwrap()
    }

    fn text(profile: &Profile, index: i64) -> &str {
        &profile.string_table[index as usize]
    }

    /// Each sample as its values and its stack as "function file:line",
    /// leaf first.
    fn samples(profile: &Profile) -> Vec<(Vec<i64>, Vec<String>)> {
        profile
            .sample
            .iter()
            .map(|s| {
                let stack = s
                    .location_id
                    .iter()
                    .map(|&id| {
                        let location = &profile.location[id as usize - 1];
                        assert_eq!(location.id, id);
                        assert_eq!(location.line.len(), 1);
                        let line = &location.line[0];
                        let function = &profile.function[line.function_id as usize - 1];
                        assert_eq!(function.id, line.function_id);
                        format!(
                            "{} {}:{}",
                            text(profile, function.name),
                            text(profile, function.filename),
                            line.line
                        )
                    })
                    .collect();
                (s.value.clone(), stack)
            })
            .collect()
    }

    #[test]
    fn declares_go_heap_sample_types_and_peak() {
        let profile = decode(&render(&sample::capture(), &CAPTURE));
        assert_eq!(profile.string_table[0], "");
        let types: Vec<(&str, &str)> = profile
            .sample_type
            .iter()
            .map(|t| (text(&profile, t.r#type), text(&profile, t.unit)))
            .collect();
        assert_eq!(types, SAMPLE_TYPES);
        assert_eq!(text(&profile, profile.default_sample_type), "peak_space");
        let period = profile.period_type.as_ref().unwrap();
        assert_eq!(
            (text(&profile, period.r#type), text(&profile, period.unit)),
            ("space", "bytes")
        );
        assert_eq!(profile.period, 1);
    }

    #[test]
    fn go_heap_has_exactly_gos_four_types_inuse_space_first() {
        let profile = decode(&render(&sample::capture(), &GO_HEAP));
        let types: Vec<&str> = profile
            .sample_type
            .iter()
            .map(|t| text(&profile, t.r#type))
            .collect();
        assert_eq!(
            types,
            [
                "alloc_objects",
                "alloc_space",
                "inuse_objects",
                "inuse_space"
            ]
        );
        assert_eq!(text(&profile, profile.default_sample_type), "inuse_space");
        let allocs = decode(&render(&sample::capture(), &GO_ALLOCS));
        assert_eq!(text(&allocs, allocs.default_sample_type), "alloc_space");
        assert_eq!(allocs.sample_type, profile.sample_type);
        assert_eq!(
            samples(&profile)[1].0,
            vec![20, 2_000, 10, 1_000],
            "the figures of the four types only"
        );
    }

    #[test]
    fn a_sampled_capture_gives_its_rate_as_period_and_says_so() {
        let mut capture = sample::capture();
        capture.meta.sample_rate = 512 * 1024;
        let profile = decode(&render(&capture, &CAPTURE));
        assert_eq!(profile.period, 512 * 1024);
        let comments: Vec<&str> = profile.comment.iter().map(|&i| text(&profile, i)).collect();
        assert!(
            comments.contains(
                &"sampling: sampled, one per 512 KiB allocated on average: figures are estimates, the peak an overestimate"
            ),
            "{comments:?}"
        );
        // The peak overstates when sampled: the profile opens on what is live.
        assert_eq!(text(&profile, profile.default_sample_type), "inuse_space");
        let header = crate::report::text::header(&capture);
        assert!(header.contains("sampled, one per 512 KiB"), "{header}");
    }

    #[test]
    fn one_sample_per_site_with_its_figures_and_stack() {
        let profile = decode(&render(&sample::capture(), &CAPTURE));
        assert_eq!(
            samples(&profile),
            vec![
                (
                    vec![4_000_000, 128_000_000, 2_000_000, 0, 2_000_000, 64_000_000],
                    vec![
                        "calc_pure_python julia.py:45".to_string(),
                        "<module> julia.py:80".to_string()
                    ]
                ),
                (
                    vec![20, 2_000, 10, 1_000, 10, 1_500],
                    vec![
                        "helper <b&d>.py:7".to_string(),
                        "<module> julia.py:80".to_string()
                    ]
                ),
            ]
        );
        // The shared caller is one location and one function.
        assert_eq!(profile.location.len(), 3);
        assert_eq!(profile.function.len(), 3);
        assert_eq!(
            profile.sample[0].location_id[1],
            profile.sample[1].location_id[1]
        );
    }

    #[test]
    fn strings_are_distinct_and_metadata_is_carried() {
        let profile = decode(&render(&sample::capture(), &CAPTURE));
        let mut seen = std::collections::HashSet::new();
        assert!(profile.string_table.iter().all(|s| seen.insert(s)));
        let comments: Vec<&str> = profile.comment.iter().map(|&c| text(&profile, c)).collect();
        assert!(comments.contains(&"argv: julia.py --fast"));
        assert!(comments.contains(&"pid: 42"));
        assert!(comments.contains(
            &"alive at exit: 2000000 complex 61.0 MiB, 100% at julia.py:45 (calc_pure_python)  \
              held by __main__.zs[0]"
        ));
        assert!(comments.contains(&"python: CPython 3.11.7"));
        assert_eq!(profile.time_nanos, 1_700_000_000_000_000_000);
        assert_eq!(profile.duration_nanos, 2_500_000_000);
    }

    #[test]
    fn frameless_and_empty_sites() {
        let mut capture = sample::capture();
        capture.sites[1].stack.clear();
        capture.sites.push(Site::default());
        let profile = decode(&render(&capture, &CAPTURE));
        let got = samples(&profile);
        assert_eq!(got.len(), 2, "the all-zero site is left out");
        assert_eq!(got[1].1, vec![format!("{NO_FRAME} :0")]);

        let empty = decode(&render(&Capture::default(), &CAPTURE));
        assert!(empty.sample.is_empty() && empty.location.is_empty());
        assert_eq!(empty.sample_type.len(), SAMPLE_TYPES.len());
    }
}
