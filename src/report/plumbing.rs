//! Frames of the interpreter's own machinery, which every report folds away
//! unless asked to show them.
//!
//! The import system (`<frozen importlib._bootstrap>` and friends) sits
//! between the line that imported and the module's code, and allocates on
//! its own (module objects, the code unmarshalled from a `.pyc`): shown as
//! they are, its frames take 1-3.5 MiB rows of every report that say
//! nothing about the program. Folded, as memray's flamegraph does when
//! asked, an import's memory is the importing line's: `app.py:3` rather
//! than `<frozen importlib._bootstrap_external>:753`.
//!
//! A thread's entry frames (`threading.py`'s bootstrap, a pool's worker
//! loop) are under every allocation the thread makes, so the table of lines
//! "with what their callees allocated" would be led by them; they are left
//! out of that table only (they stay in the sites and flamegraphs, where
//! they show which thread allocated).

use super::model::{Capture, Frame, Site};
use std::collections::HashMap;

/// What a report folded says, once, under its header.
pub const FOLDED_NOTE: &str = "import-system frames folded into the lines that imported \
     (--show-import-system shows them)";

/// Whether a frame is the import system's: importlib's bootstrap (frozen,
/// or a source file in interpreters built without freezing it), zipimport,
/// and `importlib.import_module`, the import statement's library form.
pub fn is_import_system(frame: &Frame) -> bool {
    let file = frame.filename.as_str();
    file.starts_with("<frozen importlib.")
        || file == "<frozen zipimport>"
        || file.ends_with("/importlib/_bootstrap.py")
        || file.ends_with("/importlib/_bootstrap_external.py")
        || (file.ends_with("/importlib/__init__.py") && frame.function == "import_module")
}

/// Whether a frame is one a thread starts in: it is under all the thread
/// allocates, so crediting it with its callees ranks nothing.
pub fn is_thread_entry(frame: &Frame) -> bool {
    let file = frame.filename.as_str();
    let function = frame.function.as_str();
    let last = function.rsplit('.').next().unwrap_or(function);
    (file.ends_with("/threading.py") && matches!(last, "_bootstrap" | "_bootstrap_inner" | "run"))
        || (file.ends_with("/concurrent/futures/thread.py") && matches!(last, "_worker" | "run"))
}

/// The capture as a report shows it: sites with the same stack merged
/// (sites differ by instruction offset, which no report shows, so one line
/// can be several sites) and, if `fold`, import-system frames taken out of
/// every stack (a stack made only of them stays as it is: nothing imported
/// it that the capture knows of) with `meta.import_system_folded` set when
/// anything was folded.
pub fn as_shown(capture: &Capture, fold: bool) -> Capture {
    let import_frames: Vec<bool> = capture
        .frames
        .iter()
        .map(|frame| fold && is_import_system(frame))
        .collect();
    let mut folded = Capture {
        meta: capture.meta.clone(),
        frames: Vec::new(),
        sites: Vec::new(),
        kinds: capture.kinds.clone(),
        timeline: capture.timeline.clone(),
        joined: capture.joined.clone(),
        processes: capture.processes.clone(),
    };
    let mut frame_index: HashMap<u32, u32> = HashMap::new();
    let mut site_index: HashMap<Vec<u32>, usize> = HashMap::new();
    for site in &capture.sites {
        let kept: Vec<u32> = site
            .stack
            .iter()
            .copied()
            .filter(|&f| !import_frames[f as usize])
            .collect();
        let stack = if kept.is_empty() { &site.stack } else { &kept };
        if stack.len() != site.stack.len() {
            // Only set when folding: the frames are then the import system's.
            folded.meta.import_system_folded = true;
        }
        let stack: Vec<u32> = stack
            .iter()
            .map(|&f| {
                *frame_index.entry(f).or_insert_with(|| {
                    folded.frames.push(capture.frame(f).clone());
                    (folded.frames.len() - 1) as u32
                })
            })
            .collect();
        match site_index.get(&stack) {
            Some(&at) => add(&mut folded.sites[at], site),
            None => {
                site_index.insert(stack.clone(), folded.sites.len());
                folded.sites.push(Site {
                    stack,
                    ..site.clone()
                });
            }
        }
    }
    folded
}

/// Adds a site's figures into another's. Peaks add up too: each is what
/// its site had live at the same moment, the program's peak.
pub(super) fn add(into: &mut Site, site: &Site) {
    into.live_bytes = into.live_bytes.saturating_add(site.live_bytes);
    into.live_count = into.live_count.saturating_add(site.live_count);
    into.total_bytes = into.total_bytes.saturating_add(site.total_bytes);
    into.total_count = into.total_count.saturating_add(site.total_count);
    into.peak_bytes = into.peak_bytes.saturating_add(site.peak_bytes);
    into.peak_count = into.peak_count.saturating_add(site.peak_count);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(filename: &str, lineno: u32, function: &str) -> Frame {
        Frame {
            filename: filename.into(),
            lineno,
            function: function.into(),
        }
    }

    fn site(stack: Vec<u32>, bytes: u64) -> Site {
        Site {
            stack,
            live_bytes: bytes,
            live_count: 1,
            total_bytes: bytes,
            total_count: 1,
            peak_bytes: bytes,
            peak_count: 1,
        }
    }

    fn capture() -> Capture {
        Capture {
            frames: vec![
                frame("<frozen importlib._bootstrap_external>", 753, "get_code"),
                frame("<frozen importlib._bootstrap>", 1360, "_find_and_load"),
                frame("/app/app.py", 3, "<module>"),
                frame("/app/big.py", 10, "<module>"),
                frame("/app/app.py", 4, "<module>"),
            ],
            sites: vec![
                // The .pyc's code, unmarshalled for `import big` at app.py:3.
                site(vec![0, 1, 2], 1000),
                // big.py's own line, run by that import.
                site(vec![3, 1, 2], 200),
                // Another import-system line under the same import.
                site(vec![1, 2], 30),
                // A line of the program's that imports nothing.
                site(vec![4], 5),
                // Only import-system frames: kept as it is.
                site(vec![0, 1], 7),
            ],
            ..Capture::default()
        }
    }

    #[test]
    fn import_memory_is_the_importing_lines() {
        let folded = as_shown(&capture(), true);
        assert!(folded.meta.import_system_folded);
        let sites: Vec<(Vec<String>, u64)> = folded
            .sites
            .iter()
            .map(|s| {
                let stack = s
                    .stack
                    .iter()
                    .map(|&f| {
                        let f = folded.frame(f);
                        format!("{}:{}", f.filename, f.lineno)
                    })
                    .collect();
                (stack, s.peak_bytes)
            })
            .collect();
        let text = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            sites,
            vec![
                (text(&["/app/app.py:3"]), 1030),
                (text(&["/app/big.py:10", "/app/app.py:3"]), 200),
                (text(&["/app/app.py:4"]), 5),
                (
                    text(&[
                        "<frozen importlib._bootstrap_external>:753",
                        "<frozen importlib._bootstrap>:1360"
                    ]),
                    7
                ),
            ]
        );
        let total = |c: &Capture| c.sites.iter().map(|s| s.total_bytes).sum::<u64>();
        assert_eq!(total(&folded), total(&capture()));
        assert!(folded.validate().is_ok());
    }

    #[test]
    fn a_capture_without_imports_is_unchanged() {
        let mut plain = capture();
        plain.frames.retain(|f| !is_import_system(f));
        plain.sites = vec![site(vec![0], 1), site(vec![1, 0], 2), site(vec![2], 3)];
        let folded = as_shown(&plain, true);
        assert_eq!(folded, plain);
        assert!(!folded.meta.import_system_folded);
    }

    #[test]
    fn sites_of_one_stack_are_one_site_folded_or_not() {
        let mut twice = capture();
        twice.sites = vec![site(vec![4], 5), site(vec![3, 1, 2], 200), site(vec![4], 6)];
        for fold in [false, true] {
            let shown = as_shown(&twice, fold);
            assert_eq!(shown.sites.len(), 2);
            assert_eq!(shown.sites[0].live_bytes, 11);
            assert_eq!(shown.sites[0].live_count, 2);
            assert_eq!(shown.meta.import_system_folded, fold);
        }
    }

    #[test]
    fn what_counts_as_plumbing() {
        assert!(is_import_system(&frame(
            "<frozen importlib._bootstrap>",
            1,
            "_call_with_frames_removed"
        )));
        assert!(is_import_system(&frame(
            "<frozen zipimport>",
            1,
            "load_module"
        )));
        assert!(is_import_system(&frame(
            "/usr/lib/python3.12/importlib/__init__.py",
            90,
            "import_module"
        )));
        assert!(!is_import_system(&frame(
            "/usr/lib/python3.12/importlib/__init__.py",
            90,
            "reload"
        )));
        assert!(!is_import_system(&frame("<frozen posixpath>", 1, "join")));
        assert!(is_thread_entry(&frame(
            "/usr/lib/python3.12/threading.py",
            1010,
            "Thread.run"
        )));
        assert!(is_thread_entry(&frame(
            "/usr/lib/python3.12/concurrent/futures/thread.py",
            92,
            "_worker"
        )));
        assert!(!is_thread_entry(&frame(
            "/usr/lib/python3.12/threading.py",
            300,
            "Condition.wait"
        )));
    }
}
