//! Memory over time: a background thread reads the traced total every
//! interval, without the GIL (the global counters are atomics), so the
//! program is not slowed or rescheduled by it.
//!
//! The series keeps at most `MAX_SAMPLES` points: when full, every other
//! point is dropped and the interval doubles, so a long run still spans its
//! whole duration. After fork the child has no sampler thread; the child
//! handler clears the lock the parent's thread may have held at the fork.

use crate::engine::counters;
use crate::engine::sync::SpinLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

const MAX_SAMPLES: usize = 4096;

struct Series {
    started: Option<Instant>,
    interval: Duration,
    samples: Vec<(f64, u64)>,
}

static SERIES: SpinLock<Series> = SpinLock::new(Series {
    started: None,
    interval: Duration::from_millis(10),
    samples: Vec::new(),
});
static RUNNING: AtomicBool = AtomicBool::new(false);
/// Bumped by each start, so a sampler thread of an earlier start stops.
static GENERATION: AtomicU64 = AtomicU64::new(0);

fn sample_now(series: &mut Series) {
    let Some(started) = series.started else {
        return;
    };
    let bytes = counters::traced_memory().0.max(0) as u64;
    if series.samples.try_reserve(1).is_err() {
        return; // out of memory: a sample fewer, not an abort
    }
    series
        .samples
        .push((started.elapsed().as_secs_f64(), bytes));
    if series.samples.len() >= MAX_SAMPLES {
        let mut index = 0;
        series.samples.retain(|_| {
            index += 1;
            index % 2 == 1
        });
        series.interval *= 2;
    }
}

/// Starts sampling every `interval` (a fresh series).
pub fn start(interval: Duration) {
    let generation = GENERATION.fetch_add(1, AcqRel) + 1;
    {
        let mut series = SERIES.lock();
        series.started = Some(Instant::now());
        series.interval = interval;
        series.samples.clear();
        sample_now(&mut series);
    }
    RUNNING.store(true, Release);
    let spawned = std::thread::Builder::new()
        .name("heapsite-timeline".into())
        .spawn(move || loop {
            crate::engine::own_memory::own_thread();
            let interval = SERIES.lock().interval;
            std::thread::sleep(interval);
            if !RUNNING.load(Acquire) || GENERATION.load(Acquire) != generation {
                return;
            }
            sample_now(&mut SERIES.lock());
        });
    if spawned.is_err() {
        RUNNING.store(false, Release);
    }
}

/// Stops sampling and returns the series, ending with a sample taken now.
pub fn stop() -> Vec<(f64, u64)> {
    RUNNING.store(false, Release);
    let mut series = SERIES.lock();
    sample_now(&mut series);
    series.started = None;
    std::mem::take(&mut series.samples)
}

/// The series so far, ending with a sample taken now, sampling going on
/// (a capture on demand); empty when not sampling.
pub fn samples() -> Vec<(f64, u64)> {
    let mut series = SERIES.lock();
    if series.started.is_none() {
        return Vec::new();
    }
    sample_now(&mut series);
    let mut copy = Vec::new();
    if copy.try_reserve(series.samples.len()).is_err() {
        return copy; // out of memory: a capture without its timeline
    }
    copy.extend_from_slice(&series.samples);
    copy
}

/// In a forked child: the parent's sampler thread is gone and may have held
/// the lock; restart sampling (same series) if it was running.
pub fn after_fork_in_child() {
    // SAFETY: in the child only this thread exists; any holder is gone.
    unsafe { SERIES.release_raw() };
    if RUNNING.load(Acquire) {
        let interval = SERIES.lock().interval;
        let samples = std::mem::take(&mut SERIES.lock().samples);
        let started = SERIES.lock().started;
        start(interval);
        let mut series = SERIES.lock();
        series.samples = samples;
        series.started = started;
    }
}
