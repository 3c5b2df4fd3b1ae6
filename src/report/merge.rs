//! Several processes of one program as one capture: gunicorn or
//! multiprocessing workers, or `--follow-fork` children, each with a capture
//! of its own, read as one answer with a per-process breakdown
//! (`heapsite report a.capture b.capture ...`).
//!
//! Figures add up: a site's bytes are the sum of its bytes in every process
//! that has it (sites are matched by their frames), kinds by name. A site's
//! "at peak" figure is what it held at its own process's peak, and the
//! merged peak is the sum of the processes' peaks: an upper bound of what
//! they held at once, since their peaks need not coincide (the merged
//! timeline, summed over time, shows what they held together).

use super::model::{Capture, Frame, Joined, JoinedKind, Kind, Meta, Sample, Site};
use std::collections::HashMap;

/// The captures as one; `captures` is not empty. One capture is returned
/// as it is.
pub fn merge(captures: &[Capture]) -> Capture {
    if captures.len() == 1 {
        return captures[0].clone();
    }
    Capture {
        meta: merged_meta(captures),
        processes: captures.iter().map(|c| c.meta.clone()).collect(),
        kinds: merged_kinds(captures),
        timeline: merged_timeline(captures),
        joined: merged_joined(captures),
        ..merged_sites(captures)
    }
}

fn merged_meta(captures: &[Capture]) -> Meta {
    let metas: Vec<&Meta> = captures.iter().map(|c| &c.meta).collect();
    let started = metas
        .iter()
        .map(|m| m.started)
        .fold(f64::INFINITY, f64::min);
    let ended = metas
        .iter()
        .map(|m| m.started + m.duration)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut versions: Vec<&str> = metas.iter().map(|m| m.python_version.as_str()).collect();
    versions.dedup();
    Meta {
        argv: metas[0].argv.clone(),
        pid: metas[0].pid,
        python_version: versions.join(", "),
        heapsite_version: metas[0].heapsite_version.clone(),
        started,
        duration: (ended - started).max(0.0),
        frames_limit: metas.iter().map(|m| m.frames_limit).max().unwrap_or(0),
        native: metas.iter().any(|m| m.native),
        native_frames: metas.iter().any(|m| m.native_frames),
        peak_bytes: metas.iter().map(|m| m.peak_bytes).sum(),
        live_bytes: metas.iter().map(|m| m.live_bytes).sum(),
        import_system_folded: false,
        // Captures sampled at different rates still add up (each figure
        // is an estimate); the report names the largest rate.
        sample_rate: metas.iter().map(|m| m.sample_rate).max().unwrap_or(0),
    }
}

/// Frames and sites of every capture, one site per distinct stack.
fn merged_sites(captures: &[Capture]) -> Capture {
    let mut merged = Capture::default();
    let mut frame_index: HashMap<Frame, u32> = HashMap::new();
    let mut site_index: HashMap<Vec<u32>, usize> = HashMap::new();
    for capture in captures {
        for site in &capture.sites {
            let stack: Vec<u32> = site
                .stack
                .iter()
                .map(|&f| {
                    let frame = capture.frame(f);
                    *frame_index.entry(frame.clone()).or_insert_with(|| {
                        merged.frames.push(frame.clone());
                        (merged.frames.len() - 1) as u32
                    })
                })
                .collect();
            match site_index.get(&stack) {
                Some(&at) => super::plumbing::add(&mut merged.sites[at], site),
                None => {
                    site_index.insert(stack.clone(), merged.sites.len());
                    merged.sites.push(Site {
                        stack,
                        ..site.clone()
                    });
                }
            }
        }
    }
    merged
}

fn merged_kinds(captures: &[Capture]) -> Vec<Kind> {
    let mut by_name: HashMap<&str, (u64, u64)> = HashMap::new();
    for kind in captures.iter().flat_map(|c| &c.kinds) {
        let entry = by_name.entry(&kind.name).or_default();
        entry.0 += kind.count;
        entry.1 += kind.bytes;
    }
    let mut kinds: Vec<Kind> = by_name
        .into_iter()
        .map(|(name, (count, bytes))| Kind {
            name: name.to_string(),
            count,
            bytes,
        })
        .collect();
    kinds.sort_by(|a, b| (b.bytes, b.count, &a.name).cmp(&(a.bytes, a.count, &b.name)));
    kinds
}

/// The processes' memory added up over time: at each moment any process
/// took a sample, each process counts with its latest sample (nothing
/// before it started or after it ended).
fn merged_timeline(captures: &[Capture]) -> Vec<Sample> {
    let started = captures
        .iter()
        .map(|c| c.meta.started)
        .fold(f64::INFINITY, f64::min);
    let mut moments: Vec<f64> = captures
        .iter()
        .flat_map(|c| c.timeline.iter().map(move |s| c.meta.started + s.t))
        .collect();
    moments.sort_by(f64::total_cmp);
    moments.dedup();
    moments
        .into_iter()
        .map(|moment| {
            let bytes = captures
                .iter()
                .filter(|c| moment <= c.meta.started + c.meta.duration)
                .filter_map(|c| {
                    c.timeline
                        .iter()
                        .take_while(|s| c.meta.started + s.t <= moment)
                        .last()
                        .map(|s| s.bytes)
                })
                .sum();
            Sample {
                t: moment - started,
                bytes,
            }
        })
        .collect()
}

fn merged_joined(captures: &[Capture]) -> Option<Joined> {
    let tables: Vec<&Joined> = captures.iter().filter_map(|c| c.joined.as_ref()).collect();
    if tables.is_empty() {
        return None;
    }
    let mut kinds: Vec<JoinedKind> = Vec::new();
    for kind in tables.iter().flat_map(|t| &t.kinds) {
        match kinds.iter_mut().find(|k| k.name == kind.name) {
            None => kinds.push(kind.clone()),
            Some(into) => {
                into.count += kind.count;
                into.bytes += kind.bytes;
                into.path = into.path.take().or_else(|| kind.path.clone());
                for site in &kind.sites {
                    let same = into
                        .sites
                        .iter_mut()
                        .find(|s| s.frame == site.frame && s.program_frame == site.program_frame);
                    match same {
                        Some(s) => {
                            s.count += site.count;
                            s.bytes += site.bytes;
                        }
                        None => into.sites.push(site.clone()),
                    }
                }
            }
        }
    }
    let limit = tables.iter().map(|t| t.kinds.len()).max().unwrap_or(0);
    kinds.sort_by_key(|k| std::cmp::Reverse((k.bytes, k.count)));
    kinds.truncate(limit);
    for kind in &mut kinds {
        kind.sites.sort_by_key(|s| std::cmp::Reverse(s.bytes));
    }
    let mut notes: Vec<String> = tables.iter().filter_map(|t| t.note.clone()).collect();
    notes.dedup();
    Some(Joined {
        kinds,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
        seconds: tables.iter().map(|t| t.seconds).sum(),
        site_stride: tables.iter().map(|t| t.site_stride).max().unwrap_or(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::sample;

    fn worker(pid: u32, started: f64, scale: u64) -> Capture {
        let mut capture = sample::capture();
        capture.meta.pid = pid;
        capture.meta.started = started;
        for site in &mut capture.sites {
            site.live_bytes *= scale;
            site.peak_bytes *= scale;
            site.total_bytes *= scale;
        }
        capture.meta.peak_bytes *= scale;
        capture.timeline = vec![Sample { t: 0.0, bytes: 10 }, Sample { t: 1.0, bytes: 20 }];
        capture
    }

    #[test]
    fn figures_add_up_per_site_and_kind_with_each_process_kept() {
        let (a, b) = (worker(10, 100.0, 1), worker(11, 100.5, 2));
        let merged = merge(&[a.clone(), b.clone()]);
        assert_eq!(merged.processes.len(), 2);
        assert_eq!(merged.processes[1].pid, 11);
        assert_eq!(merged.sites.len(), a.sites.len());
        let total = |c: &Capture| c.sites.iter().map(|s| s.total_bytes).sum::<u64>();
        assert_eq!(total(&merged), total(&a) + total(&b));
        assert_eq!(
            merged.meta.peak_bytes,
            a.meta.peak_bytes + b.meta.peak_bytes
        );
        assert_eq!(merged.kinds[0].count, a.kinds[0].count * 2);
        assert!(merged.validate().is_ok());
        // 100.0: a alone; 100.5: a and b; 101.0: a's second sample and b.
        let timeline: Vec<(f64, u64)> = merged.timeline.iter().map(|s| (s.t, s.bytes)).collect();
        assert_eq!(timeline[..3], [(0.0, 10), (0.5, 20), (1.0, 30)]);
    }

    #[test]
    fn one_capture_is_itself() {
        let a = worker(10, 100.0, 1);
        assert_eq!(merge(std::slice::from_ref(&a)), a);
    }
}
