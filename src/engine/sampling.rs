//! Sampled tracing: an allocation is recorded with probability
//! `1 - exp(-size / rate)`, as tcmalloc and Go's runtime sample, and counted
//! with the weight that makes every figure an unbiased estimate.
//!
//! How an allocation is chosen. A countdown of bytes is drawn from the
//! exponential distribution of mean `rate`; each allocation takes its size off
//! the countdown, and the one that takes it to zero or below is sampled and
//! draws a new countdown. The exponential distribution has no memory, so an
//! allocation of `size` bytes is sampled with probability
//! `p = 1 - exp(-size / rate)` whatever came before it. An unsampled event
//! costs a subtraction and a compare: no frame is read, no table touched.
//!
//! How a sampled one is counted. Its record keeps its real size; the
//! counters get `size / p` bytes and `1 / p` blocks, computed again from the
//! size and address when the block is freed, so the same amounts come off.
//! `1 / p` is rarely whole: the count is rounded up or down at random, with
//! the chance that keeps its mean exact, the "random" being a hash of the
//! block's address so that its free rounds the same way.
//!
//! How a free finds out it has nothing to do. Sampled blocks are few (one per
//! `rate` bytes live, plus the large ones), so a counting filter over their
//! addresses (`FILTER`: one byte per bucket) answers "never sampled" for
//! nearly every free with one load, and only a possible hit looks in the
//! tables. A bucket that reaches 255 stays there (a few more lookups, never
//! a missed free); the filter is emptied with the tables.
//!
//! Countdowns. The choice is made first thing in each hook, before asking
//! which interpreter or thread calls, so that a passed-over event pays for
//! nothing else. MEM and OBJ events share one countdown updated with a plain
//! load and store: the main interpreter's GIL serialises nearly all of them,
//! and a subinterpreter with its own GIL racing it only perturbs an interval.
//! RAW and native events, from any thread, share one updated with a
//! compare-and-swap (`take_raw`): of the threads that find it spent, one
//! samples and draws the next interval. An event chosen but then not
//! recorded (a nested call, a subinterpreter's) is simply dropped; that
//! biases nothing else, the distribution having no memory.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering::Relaxed};

/// Mean bytes between samples; 0 when every allocation is recorded.
static RATE: AtomicU64 = AtomicU64::new(0);

const FILTER_BITS: u32 = 17;
static FILTER: [AtomicU8; 1 << FILTER_BITS] = [const { AtomicU8::new(0) }; 1 << FILTER_BITS];

/// Bytes left before the next sampled MEM/OBJ event, and RAW/native event.
static GIL_LEFT: AtomicI64 = AtomicI64::new(0);
static RAW_LEFT: AtomicI64 = AtomicI64::new(0);
/// The generator's state, advanced at each crossing. A plain load and
/// store, no lock (a lock held across fork would stay held in the child):
/// two threads crossing at once may draw the same interval, which is harmless.
static RNG: AtomicU64 = AtomicU64::new(1);

/// Whether tracing samples (rather than records every allocation).
#[inline(always)]
pub fn on() -> bool {
    RATE.load(Relaxed) != 0
}

/// The mean bytes between samples, 0 when not sampling.
pub fn rate() -> u64 {
    RATE.load(Relaxed)
}

/// Sets the rate (0: record everything) and empties the filter; called with
/// the tables cleared, before the hooks record anything. GIL held.
pub fn configure(rate: u64, seed: u64) {
    RATE.store(rate, Relaxed);
    crate::engine::exact_path::refresh();
    for bucket in FILTER.iter() {
        bucket.store(0, Relaxed);
    }
    let mut rng = seed | 1;
    GIL_LEFT.store(next_interval(&mut rng, rate), Relaxed);
    RAW_LEFT.store(next_interval(&mut rng, rate), Relaxed);
    RNG.store(rng, Relaxed);
}

/// Empties the filter (the tables were cleared). GIL held.
pub fn clear_filter() {
    for bucket in FILTER.iter() {
        bucket.store(0, Relaxed);
    }
}

/// xorshift64*: fast, and plenty for drawing intervals.
fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// An exponentially distributed number of bytes with mean `rate`.
fn next_interval(state: &mut u64, rate: u64) -> i64 {
    // A uniform number in (0, 1]: never 0, whose logarithm is infinite.
    let uniform = ((next_random(state) >> 11) + 1) as f64 / (1u64 << 53) as f64;
    (-uniform.ln() * rate as f64).ceil() as i64
}

extern "C" {
    fn hs_pass_over_begin();
    fn hs_pass_over_end();
    fn hs_passing_over_now() -> std::ffi::c_int;
}

/// pymalloc serves requests up to this size itself; larger ones go down to
/// PyMem_RawMalloc (CPython's SMALL_REQUEST_THRESHOLD).
pub const PYMALLOC_LARGEST: usize = 512;

/// Whether a passed-over malloc of `size` bytes may call a hook below it:
/// a small request reaches nothing below unless pymalloc needs a new arena,
/// which only the native hooks (`native`) see.
#[inline(always)]
pub fn reaches_below(size: usize, native: bool) -> bool {
    size > PYMALLOC_LARGEST || native
}

/// Runs a MEM/OBJ allocation that sampling passed over with the thread
/// marked (sampling.c) when it may call a hook below (`reaches_below`;
/// always for calloc and realloc, whose old block may be either side), so
/// that those calls (PyMem_RawMalloc, and under preloading malloc and mmap)
/// pass too.
#[inline(always)]
pub fn passing_over<R>(reaches_below: bool, allocate: impl FnOnce() -> R) -> R {
    if !reaches_below {
        return allocate();
    }
    // SAFETY: plain thread-local flag accessors (sampling.c).
    unsafe { hs_pass_over_begin() };
    let result = allocate();
    // SAFETY: as above.
    unsafe { hs_pass_over_end() };
    result
}

/// Whether the calling thread is inside a passed-over allocation.
#[inline(always)]
pub fn inside_passed_over() -> bool {
    // SAFETY: plain thread-local flag accessor (sampling.c).
    unsafe { hs_passing_over_now() != 0 }
}

/// Whether a MEM or OBJ allocation of `size` bytes is sampled.
#[inline(always)]
pub fn take_mem(size: usize) -> bool {
    // A load and a store, not a locked read-modify-write (module note).
    let left = GIL_LEFT.load(Relaxed) - size as i64;
    GIL_LEFT.store(left, Relaxed);
    left <= 0 && crossed(&GIL_LEFT)
}

/// `take_mem` in two halves, for a hook whose common case must call
/// nothing: takes the size off, and says whether the countdown crossed zero
/// (the allocation is then sampled, and `redraw_mem` must follow).
#[inline(always)]
pub fn count_down_mem(size: usize) -> bool {
    let left = GIL_LEFT.load(Relaxed) - size as i64;
    GIL_LEFT.store(left, Relaxed);
    left <= 0
}

/// Draws the next MEM/OBJ interval after `count_down_mem` crossed zero.
#[cold]
pub fn redraw_mem() {
    crossed(&GIL_LEFT);
}

/// Whether a RAW or native allocation of `size` bytes is sampled. One
/// compare-and-swap either takes the bytes off or, for the event that
/// crosses zero, puts the next interval in their place: with a subtraction
/// first and the new interval stored after, every thread allocating in
/// between would see the countdown spent and sample too, each weighted as
/// if chosen with chance `p` (an overestimate under contention).
#[inline(always)]
pub fn take_raw(size: usize) -> bool {
    take_atomically(&RAW_LEFT, size, &RATE)
}

#[inline(always)]
fn take_atomically(countdown: &AtomicI64, size: usize, rate: &AtomicU64) -> bool {
    let size = size as i64;
    let mut left = countdown.load(Relaxed);
    loop {
        let (next, sampled) = if left > size {
            (left - size, false)
        } else {
            (draw_interval(rate.load(Relaxed)), true)
        };
        match countdown.compare_exchange_weak(left, next, Relaxed, Relaxed) {
            Ok(_) => return sampled,
            Err(now) => left = now,
        }
    }
}

/// A countdown reached zero: draws the next interval. Always true.
#[cold]
fn crossed(left: &AtomicI64) -> bool {
    left.store(draw_interval(RATE.load(Relaxed)), Relaxed);
    true
}

/// The next interval between samples.
#[cold]
fn draw_interval(rate: u64) -> i64 {
    let mut rng = RNG.load(Relaxed);
    let next = next_interval(&mut rng, rate);
    RNG.store(rng, Relaxed);
    next
}

#[inline(always)]
fn mix(addr: usize) -> u64 {
    ((addr as u64) >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[inline(always)]
fn bucket(addr: usize) -> &'static AtomicU8 {
    &FILTER[(mix(addr) >> (64 - FILTER_BITS)) as usize]
}

/// Notes a sampled block at `addr` (recorded in a table).
pub fn mark(addr: usize) {
    let bucket = bucket(addr);
    // Saturating: a full bucket stays full (see the module note).
    let _ = bucket.fetch_update(Relaxed, Relaxed, |n| n.checked_add(1));
}

/// Notes that the sampled block at `addr` left its table.
pub fn unmark(addr: usize) {
    let bucket = bucket(addr);
    let _ = bucket.fetch_update(Relaxed, Relaxed, |n| (n != 255 && n != 0).then(|| n - 1));
}

/// False when the block at `addr` was certainly never sampled: its free
/// need not look in the tables.
#[inline(always)]
pub fn maybe_sampled(addr: usize) -> bool {
    bucket(addr).load(Relaxed) != 0
}

/// What a block of `size` bytes at `addr` counts for: (bytes, blocks).
/// Exact tracing: itself. Sampled: `size / p` bytes and `1 / p` blocks,
/// rounded at random by the address (see the module note).
#[inline(always)]
pub fn weight(size: usize, addr: usize) -> (i64, i64) {
    let rate = RATE.load(Relaxed);
    if rate == 0 {
        return (size as i64, 1);
    }
    weight_at(size, addr, rate)
}

#[cold]
fn weight_at(size: usize, addr: usize, rate: u64) -> (i64, i64) {
    if size == 0 {
        // Sampled only when the countdown was already spent: p is 0 in the
        // limit, so no weight is right; it counts as one block of no bytes.
        return (0, 1);
    }
    let size_f = size as f64;
    let chance = -(-size_f / rate as f64).exp_m1(); // 1 - exp(-size/rate)
    let blocks = 1.0 / chance;
    let whole = blocks.floor();
    let fraction = blocks - whole;
    // The address's hash, as a number in [0, 1).
    let draw = (mix(addr).rotate_left(17) >> 11) as f64 / (1u64 << 53) as f64;
    let count = whole as i64 + i64::from(draw < fraction);
    ((size_f * blocks).round() as i64, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_have_the_rates_mean() {
        let mut rng = 0x1234_5678_9abc_def1;
        let n = 200_000;
        let sum: i64 = (0..n).map(|_| next_interval(&mut rng, 4096)).sum();
        let mean = sum as f64 / n as f64;
        assert!((mean - 4096.0).abs() < 4096.0 * 0.02, "mean {mean}");
    }

    #[test]
    fn threads_sharing_a_countdown_sample_at_the_rate() {
        // Four threads taking small events from one countdown: as many
        // samples as one thread would take (bytes / rate), not one more per
        // thread that found the countdown spent before the next interval.
        let (countdown, rate) = (AtomicI64::new(4096), AtomicU64::new(4096));
        let (threads, events, size) = (4, 2_000_000, 64usize);
        let start = std::sync::Barrier::new(threads);
        let sampled: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        (0..events)
                            .filter(|_| take_atomically(&countdown, size, &rate))
                            .count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        let want = (threads * events * size) as f64 / 4096.0;
        assert!(
            (sampled as f64 - want).abs() < want * 0.03,
            "{sampled} samples, want about {want}"
        );
    }

    #[test]
    fn weights_are_unbiased_in_bytes_and_blocks() {
        let rate = 512 * 1024;
        for size in [16usize, 64, 1000, 100_000, 600_000, 10_000_000] {
            let chance = 1.0 - (-(size as f64) / rate as f64).exp();
            let n = 100_000;
            let (mut bytes, mut blocks) = (0f64, 0f64);
            for i in 0..n {
                let (b, c) = weight_at(size, 0x7f00_0000_0000 + i * 64, rate);
                bytes += b as f64;
                blocks += c as f64;
            }
            // Expected per sampled block: size / p bytes and 1 / p blocks.
            let want_blocks = 1.0 / chance;
            let got_blocks = blocks / n as f64;
            assert!(
                (got_blocks - want_blocks).abs() <= want_blocks * 0.01 + 0.01,
                "size {size}: {got_blocks} blocks, want {want_blocks}"
            );
            let got_bytes = bytes / n as f64;
            assert!((got_bytes - size as f64 * want_blocks).abs() <= size as f64 * 0.01 + 1.0);
        }
    }

    #[test]
    fn the_filter_counts_and_saturates() {
        let addr = 0x5555_0000_1000usize;
        assert!(!maybe_sampled(addr));
        mark(addr);
        mark(addr);
        unmark(addr);
        assert!(maybe_sampled(addr));
        unmark(addr);
        assert!(!maybe_sampled(addr));
        for _ in 0..300 {
            mark(addr);
        }
        for _ in 0..300 {
            unmark(addr);
        }
        assert!(maybe_sampled(addr), "a full bucket stays full");
        clear_filter();
        assert!(!maybe_sampled(addr));
    }
}
