//! The one data model every report is rendered from, and that a capture file
//! stores: call sites with resolved frames and their figures, object kinds at
//! exit, memory over time, and what was run.
//!
//! Figures are bytes and block counts as the tracking engine keeps them:
//! `live` is what was still allocated when the capture was taken, `total` is
//! everything allocated over the run, `peak` is what was live at the moment
//! the program's traced memory was highest.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    pub meta: Meta,
    /// Every distinct frame, referred to by index from `Site::stack`.
    pub frames: Vec<Frame>,
    pub sites: Vec<Site>,
    /// Objects alive at exit, by kind (heapy's names); empty when the heap
    /// could not be walked.
    #[serde(default)]
    pub kinds: Vec<Kind>,
    /// Traced memory over the run, oldest first.
    #[serde(default)]
    pub timeline: Vec<Sample>,
    /// The largest kinds at exit joined with the lines that allocated them
    /// and what holds them; absent in captures older than report schema 2,
    /// and when the heap was not walked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<Joined>,
    /// When several processes' captures are reported as one (`merge.rs`),
    /// each process's own run, in the order given; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<Meta>,
}

/// What is alive at exit, where it was allocated, who holds it: the
/// answer `heap().bysite` and `path_to_root()` give, computed when the
/// capture was written (the objects are gone by the time it is read).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Joined {
    /// The largest kinds by bytes, largest first.
    pub kinds: Vec<JoinedKind>,
    /// Why some paths are missing (e.g. the time budget was spent), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Seconds the table took to compute at exit.
    #[serde(default)]
    pub seconds: f64,
    /// 1: every object's site was looked up; n: one object in n was, and
    /// the sites' figures are scaled up from that sample (`note` says so).
    #[serde(default = "one")]
    pub site_stride: u64,
}

fn one() -> u64 {
    1
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JoinedKind {
    /// heapy's name for the kind: `list`, `__main__.Order`, `dict of module`.
    pub name: String,
    pub count: u64,
    pub bytes: u64,
    /// The lines that allocated the most of this kind's bytes, largest first.
    pub sites: Vec<JoinedSite>,
    /// A shortest reference chain from a module (or a running frame) to one
    /// object of this kind from its first site, as `path_to_root()` writes
    /// it (`__main__.AUDIT_LOG[0]`); absent when not searched or not found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JoinedSite {
    /// The allocating frame; absent for objects heapsite has no record of
    /// (allocated before tracking started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<Frame>,
    /// The innermost frame of the program's own code (not the standard
    /// library's, nor an installed package's) when the allocating frame
    /// is not one: the program's line that called `json.loads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_frame: Option<Frame>,
    pub count: u64,
    pub bytes: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// The program's command line as the interpreter saw it (`sys.argv`).
    pub argv: Vec<String>,
    pub pid: u32,
    pub python_version: String,
    pub heapsite_version: String,
    /// Seconds since the Unix epoch when tracing started.
    pub started: f64,
    /// Seconds from the start of tracing to the capture.
    pub duration: f64,
    /// Frames recorded per call site.
    pub frames_limit: u32,
    /// Whether native (malloc/mmap) allocations were tracked too.
    pub native: bool,
    /// Whether native blocks' sites start with native (C) frames.
    #[serde(default)]
    pub native_frames: bool,
    /// Traced bytes at the peak, and live when the capture was taken.
    pub peak_bytes: u64,
    pub live_bytes: u64,
    /// Set by a report that folded import-system frames into the lines that
    /// imported (`report::plumbing`); a capture file stores its sites as
    /// recorded, so this is never set there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub import_system_folded: bool,
    /// Mean bytes between samples when tracing sampled allocations (every
    /// figure is then an estimate); 0, and absent from the file, when every
    /// allocation was recorded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sample_rate: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl Meta {
    /// "sampled, one per 512.0 KiB allocated on average: figures are
    /// estimates", or None when every allocation was recorded.
    pub fn sampling_note(&self) -> Option<String> {
        (self.sample_rate > 0).then(|| {
            format!(
                "sampled, one per {} allocated on average: figures are estimates, the peak an overestimate",
                super::format::format_size(self.sample_rate as f64, false)
            )
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct Frame {
    pub filename: String,
    pub lineno: u32,
    pub function: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Indices into `Capture::frames`, the allocating frame first.
    pub stack: Vec<u32>,
    pub live_bytes: u64,
    pub live_count: u64,
    pub total_bytes: u64,
    pub total_count: u64,
    pub peak_bytes: u64,
    pub peak_count: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Kind {
    pub name: String,
    pub count: u64,
    pub bytes: u64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Seconds since tracing started.
    pub t: f64,
    pub bytes: u64,
}

/// What only the Python side knows of a capture, as `write_capture` takes
/// it: the run's command line and times, the native flags, the traced
/// memory read before the heap walk (which allocates), memory over time and
/// the kinds and joined tables the walk computed. The rest of the capture
/// (frames, sites, pid, versions, frames limit) is the engine's and is built
/// in Rust (`Capture::assemble`), so these structs are the file's one model.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Run {
    pub argv: Vec<String>,
    pub started: f64,
    pub duration: f64,
    pub native: bool,
    #[serde(default)]
    pub native_frames: bool,
    pub peak_bytes: u64,
    pub live_bytes: u64,
    #[serde(default)]
    pub kinds: Vec<Kind>,
    #[serde(default)]
    pub timeline: Vec<Sample>,
    #[serde(default)]
    pub joined: Option<Joined>,
}

/// What the process and the engine say of themselves in `Meta`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Process {
    pub pid: u32,
    pub python_version: String,
    pub heapsite_version: String,
    pub frames_limit: u32,
    /// See `Meta::sample_rate`.
    pub sample_rate: u64,
}

/// One call site as the engine has it: frames as `(filename, lineno,
/// function)`, the allocating frame first, and its figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawSite {
    pub frames: Vec<(String, i64, String)>,
    pub live_bytes: i64,
    pub live_count: i64,
    pub total_bytes: i64,
    pub total_count: i64,
    pub peak_bytes: i64,
    pub peak_count: i64,
}

/// A figure the engine keeps signed (a free of a block allocated before a
/// reset may take it below zero for a while), as the file stores it.
fn clamp(value: i64) -> u64 {
    value.max(0) as u64
}

/// Which figure of a site a view ranks by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Peak,
    Total,
    Live,
}

impl View {
    pub const ALL: [View; 3] = [View::Peak, View::Total, View::Live];

    pub fn bytes(self, site: &Site) -> u64 {
        match self {
            View::Peak => site.peak_bytes,
            View::Total => site.total_bytes,
            View::Live => site.live_bytes,
        }
    }

    pub fn count(self, site: &Site) -> u64 {
        match self {
            View::Peak => site.peak_count,
            View::Total => site.total_count,
            View::Live => site.live_count,
        }
    }

    /// Short name, as used in JSON keys, HTML ids and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            View::Peak => "peak",
            View::Total => "total",
            View::Live => "live",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            View::Peak => "live at peak",
            View::Total => "allocated in total",
            View::Live => "still live at exit",
        }
    }
}

impl Capture {
    /// The capture of a run: `run` from the Python side, the sites from
    /// the engine (frames shared between sites stored once), leaving out the
    /// sites whose allocating frame is in a file under `own_prefix`
    /// (heapsite's own package: the capture's own work, not the program's).
    pub fn assemble(
        run: Run,
        process: Process,
        sites: impl IntoIterator<Item = RawSite>,
        own_prefix: &str,
    ) -> Capture {
        let mut frames = Vec::new();
        let mut index: std::collections::HashMap<Frame, u32> = std::collections::HashMap::new();
        let mut kept = Vec::new();
        for site in sites {
            if let Some((top, _, _)) = site.frames.first() {
                if !own_prefix.is_empty() && top.starts_with(own_prefix) {
                    continue;
                }
            }
            let stack = site
                .frames
                .into_iter()
                .map(|(filename, lineno, function)| {
                    let frame = Frame {
                        filename,
                        lineno: lineno.clamp(0, u32::MAX as i64) as u32,
                        function,
                    };
                    *index.entry(frame).or_insert_with_key(|frame| {
                        frames.push(frame.clone());
                        (frames.len() - 1) as u32
                    })
                })
                .collect();
            kept.push(Site {
                stack,
                live_bytes: clamp(site.live_bytes),
                live_count: clamp(site.live_count),
                total_bytes: clamp(site.total_bytes),
                total_count: clamp(site.total_count),
                peak_bytes: clamp(site.peak_bytes),
                peak_count: clamp(site.peak_count),
            });
        }
        Capture {
            meta: Meta {
                argv: run.argv,
                pid: process.pid,
                python_version: process.python_version,
                heapsite_version: process.heapsite_version,
                started: run.started,
                duration: run.duration.max(0.0),
                frames_limit: process.frames_limit,
                native: run.native,
                native_frames: run.native_frames,
                peak_bytes: run.peak_bytes,
                live_bytes: run.live_bytes,
                import_system_folded: false,
                sample_rate: process.sample_rate,
            },
            frames,
            sites: kept,
            kinds: run.kinds,
            timeline: run.timeline,
            joined: run.joined,
            processes: Vec::new(),
        }
    }

    /// Checks what serde cannot: every frame index points at a frame.
    pub fn validate(&self) -> Result<(), String> {
        let frames = self.frames.len();
        for (i, site) in self.sites.iter().enumerate() {
            if let Some(bad) = site.stack.iter().find(|&&f| f as usize >= frames) {
                return Err(format!(
                    "site {i} refers to frame {bad}, but there are only {frames} frames"
                ));
            }
        }
        Ok(())
    }

    pub fn frame(&self, index: u32) -> &Frame {
        &self.frames[index as usize]
    }

    /// The sites with a non-zero figure in `view`, largest first (ties by
    /// allocating frame, so the order is stable).
    #[allow(dead_code)] // used by the html and pprof renderers
    pub fn ranked(&self, view: View) -> Vec<&Site> {
        let mut sites: Vec<&Site> = self.sites.iter().filter(|s| view.bytes(s) > 0).collect();
        sites.sort_by(|a, b| {
            view.bytes(b)
                .cmp(&view.bytes(a))
                .then_with(|| self.top_frame(a).cmp(&self.top_frame(b)))
        });
        sites
    }

    /// The allocating frame of a site as (file, line), for ordering and
    /// labels; sites without frames sort last.
    pub fn top_frame(&self, site: &Site) -> (String, u32) {
        match site.stack.first() {
            Some(&f) => (self.frame(f).filename.clone(), self.frame(f).lineno),
            None => (String::from("\u{10ffff}"), 0),
        }
    }

    pub fn total_of(&self, view: View) -> (u64, u64) {
        self.sites.iter().fold((0u64, 0u64), |(b, c), s| {
            (
                b.saturating_add(view.bytes(s)),
                c.saturating_add(view.count(s)),
            )
        })
    }
}

#[cfg(test)]
pub mod sample {
    //! A small capture for the renderers' unit tests.
    use super::*;

    pub fn capture() -> Capture {
        let frame = |filename: &str, lineno, function: &str| Frame {
            filename: filename.into(),
            lineno,
            function: function.into(),
        };
        let site = |stack: Vec<u32>, live: u64, total: u64, peak: u64, count: u64| Site {
            stack,
            live_bytes: live,
            live_count: count,
            total_bytes: total,
            total_count: count * 2,
            peak_bytes: peak,
            peak_count: count,
        };
        Capture {
            meta: Meta {
                argv: vec!["julia.py".into(), "--fast".into()],
                pid: 42,
                python_version: "3.11.7".into(),
                heapsite_version: "0.1.0".into(),
                started: 1_700_000_000.0,
                duration: 2.5,
                frames_limit: 16,
                native: false,
                native_frames: false,
                peak_bytes: 96_000_000,
                live_bytes: 1_000,
                import_system_folded: false,
                sample_rate: 0,
            },
            frames: vec![
                frame("julia.py", 45, "calc_pure_python"),
                frame("julia.py", 80, "<module>"),
                frame("<b&d>.py", 7, "helper"),
            ],
            sites: vec![
                site(vec![0, 1], 0, 128_000_000, 64_000_000, 2_000_000),
                site(vec![2, 1], 1_000, 2_000, 1_500, 10),
            ],
            kinds: vec![
                Kind {
                    name: "complex".into(),
                    count: 2_000_000,
                    bytes: 64_000_000,
                },
                Kind {
                    name: "list".into(),
                    count: 3,
                    bytes: 16_000_000,
                },
            ],
            joined: Some(Joined {
                kinds: vec![
                    JoinedKind {
                        name: "complex".into(),
                        count: 2_000_000,
                        bytes: 64_000_000,
                        sites: vec![JoinedSite {
                            frame: Some(frame("julia.py", 45, "calc_pure_python")),
                            program_frame: None,
                            count: 2_000_000,
                            bytes: 64_000_000,
                        }],
                        path: Some("__main__.zs[0]".into()),
                    },
                    JoinedKind {
                        name: "list".into(),
                        count: 3,
                        bytes: 16_000_000,
                        sites: vec![
                            JoinedSite {
                                frame: Some(frame(
                                    "/usr/lib/python3.12/json/decoder.py",
                                    353,
                                    "raw_decode",
                                )),
                                program_frame: Some(frame("<b&d>.py", 7, "helper")),
                                count: 2,
                                bytes: 15_000_000,
                            },
                            JoinedSite {
                                frame: None,
                                program_frame: None,
                                count: 1,
                                bytes: 1_000_000,
                            },
                        ],
                        path: None,
                    },
                ],
                note: Some("paths: 1 of 2 kinds searched".into()),
                seconds: 0.25,
                site_stride: 1,
            }),
            timeline: vec![
                Sample { t: 0.0, bytes: 0 },
                Sample {
                    t: 1.0,
                    bytes: 96_000_000,
                },
                Sample {
                    t: 2.5,
                    bytes: 1_000,
                },
            ],
            processes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(frames: &[(&str, i64, &str)], figure: i64) -> RawSite {
        RawSite {
            frames: frames
                .iter()
                .map(|&(f, l, n)| (f.to_string(), l, n.to_string()))
                .collect(),
            live_bytes: figure,
            live_count: figure,
            total_bytes: figure,
            total_count: figure,
            peak_bytes: figure,
            peak_count: figure,
        }
    }

    #[test]
    fn assemble_shares_frames_clamps_and_leaves_out_own_sites() {
        let run = Run {
            argv: vec!["a.py".into()],
            duration: -1.0,
            peak_bytes: 10,
            live_bytes: 5,
            ..Run::default()
        };
        let process = Process {
            pid: 7,
            python_version: "3.12.1".into(),
            heapsite_version: "0.1.0".into(),
            frames_limit: 16,
            sample_rate: 0,
        };
        let sites = vec![
            raw(&[("a.py", 3, "f"), ("a.py", 9, "<module>")], 100),
            raw(
                &[
                    ("/pkg/heapsite/_capture.py", 50, "write"),
                    ("a.py", 9, "<module>"),
                ],
                1,
            ),
            raw(&[("a.py", -1, "g"), ("a.py", 9, "<module>")], -4),
        ];
        let capture = Capture::assemble(run, process, sites, "/pkg/heapsite/");
        assert_eq!(capture.validate(), Ok(()));
        assert_eq!(capture.sites.len(), 2);
        assert_eq!(capture.frames.len(), 3);
        assert_eq!(capture.sites[0].stack, vec![0, 1]);
        assert_eq!(capture.sites[1].stack, vec![2, 1]);
        assert_eq!(capture.frames[2].lineno, 0);
        assert_eq!(capture.sites[1].live_bytes, 0);
        assert_eq!(capture.meta.pid, 7);
        assert_eq!(capture.meta.duration, 0.0);
        assert_eq!((capture.meta.peak_bytes, capture.meta.live_bytes), (10, 5));
    }

    #[test]
    fn a_run_with_an_unknown_field_is_refused() {
        let json = r#"{"argv": [], "started": 0, "duration": 0, "native": false,
            "peak_bytes": 0, "live_bytes": 0, "pid": 1}"#;
        assert!(serde_json::from_str::<Run>(json).is_err());
    }
}
