//! Memory over time: a background thread reads the traced total every
//! interval, without the GIL (the global counters are atomics), so the
//! program is not slowed or rescheduled by it.
//!
//! The series keeps at most `MAX_SAMPLES` points: when full, every other
//! point is dropped and the interval doubles, so a long run still spans its
//! whole duration. After fork the child has no sampler thread; Python's
//! at-fork hook starts one again (`after_fork_in_child`).
//!
//! Fork: the series' lock is taken around `fork()` by pthread_atfork
//! handlers (`fork_prepare`, `fork_release`), so the child gets the series
//! whole and its lock free from its first instruction. Releasing it later,
//! in Python's at-fork hook, was too late: Python code runs in the child
//! before that hook (other hooks, a signal handler: heapsite's SIGTERM
//! handler in a --follow-fork child stops the timeline to write its
//! capture), and it spun forever on a lock the parent's sampler thread held
//! at the fork. Lock order: the series before the RAW shards (its holder
//! may allocate; the engine's fork handlers, registered earlier, run after
//! this one's prepare).

use crate::engine::counters;
use crate::engine::sync::SpinLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Once;
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
static FORK_HANDLERS: Once = Once::new();

/// pthread_atfork prepare: no thread is inside the series while the
/// process is copied. Its holders (the sampler, start/stop) never fork.
extern "C" fn fork_prepare() {
    SERIES.acquire_raw();
}

/// pthread_atfork parent and child: the lock `fork_prepare` took.
extern "C" fn fork_release() {
    // SAFETY: taken by fork_prepare in this thread (in the child: the copy
    // of this thread, the only one there).
    unsafe { SERIES.release_raw() };
}

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
    FORK_HANDLERS.call_once(|| {
        // SAFETY: plain function pointers with static lifetime.
        unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_release), Some(fork_release)) };
    });
    let generation = GENERATION.fetch_add(1, AcqRel) + 1;
    {
        let mut series = SERIES.lock();
        series.started = Some(Instant::now());
        series.interval = interval;
        series.samples.clear();
        sample_now(&mut series);
    }
    RUNNING.store(true, Release);
    let spawned = super::own_thread::spawn("heapsite-timeline", move || loop {
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

/// In a forked child: the parent's sampler thread is gone; restart
/// sampling (same series) if it was running. The lock is free (fork_release).
pub fn after_fork_in_child() {
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
