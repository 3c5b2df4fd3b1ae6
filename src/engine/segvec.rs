//! An append-only array whose elements never move, readable without a lock.
//!
//! Sites are created while other threads read their counters (the RAW domain
//! runs without the GIL), so the per-site storage cannot be a `Vec` that
//! reallocates. Segment `k` holds `BASE << k` zero-initialised elements up to
//! `DOUBLINGS` segments, then every segment holds the last size; each is
//! allocated on first use and installed with a compare-and-swap (two threads
//! racing to make one keep the first; the other frees its own), so that no
//! lock is held that a `fork()` could leave taken in the child (a C thread
//! may grow an array without the GIL: src/engine/counters.rs's extra
//! blocks); readers only load a pointer.
//!
//! Why stop doubling: a doubling array holds up to twice what it uses (38,000
//! sites of 120 bytes had 65,000 slots, 3.9 MB). Past `BASE << (DOUBLINGS -
//! 1)` elements the waste is at most one segment.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::atomic::{AtomicPtr, Ordering};

const BASE: usize = 256;
/// Segments that double; the ones after are all `BASE << (DOUBLINGS - 1)`.
const DOUBLINGS: usize = 4;
/// Elements in the doubling segments.
const DOUBLED: usize = BASE * ((1 << DOUBLINGS) - 1);
/// About 16.8 million elements: far beyond any real site count (ids past
/// it count at the overflow site). The pointers are 64 KiB of zeroed
/// statics, untouched (so not resident) but for the segments in use.
const SEGMENTS: usize = 8192;

/// Marker for types whose all-zero bit pattern is a valid, empty value.
///
/// # Safety
/// Implementors must be valid when zero-initialised (atomics, integers,
/// raw pointers) and must not need `Drop`.
pub unsafe trait Zeroable {}

pub struct SegVec<T: Zeroable> {
    segments: [AtomicPtr<T>; SEGMENTS],
}

// SAFETY: elements are only reached through shared references and T is Sync.
unsafe impl<T: Zeroable + Sync> Sync for SegVec<T> {}

#[inline(always)]
fn locate(index: usize) -> (usize, usize) {
    if index < BASE {
        // The first segment: where a log that starts again at every new
        // peak (src/engine/counters.rs's PEAK_LOG, from its second entry
        // on) does nearly all its reads and writes; without this branch,
        // retained at 16 frames took +0.2% in instructions.
        return (0, index);
    }
    if index >= DOUBLED {
        let last = BASE << (DOUBLINGS - 1);
        let past = index - DOUBLED;
        return (DOUBLINGS + past / last, past % last);
    }
    let slot = index / BASE + 1;
    let segment = (usize::BITS - 1 - slot.leading_zeros()) as usize;
    (segment, index - BASE * ((1 << segment) - 1))
}

/// Elements in segment `segment`.
fn segment_len(segment: usize) -> usize {
    BASE << segment.min(DOUBLINGS - 1)
}

impl<T: Zeroable> SegVec<T> {
    pub const fn new() -> Self {
        Self {
            segments: [const { AtomicPtr::new(std::ptr::null_mut()) }; SEGMENTS],
        }
    }

    /// The element at `index`, if its segment exists.
    #[inline(always)]
    pub fn get(&self, index: usize) -> Option<&T> {
        let (segment, offset) = locate(index);
        let base = self.segments.get(segment)?.load(Ordering::Acquire);
        if base.is_null() {
            return None;
        }
        // SAFETY: the segment holds segment_len(segment) initialised elements and is never freed.
        Some(unsafe { &*base.add(offset) })
    }

    /// The element at `index`, allocating its segment if needed. Returns None
    /// only when the index is beyond capacity or memory is exhausted.
    pub fn get_or_grow(&self, index: usize) -> Option<&T> {
        if let Some(element) = self.get(index) {
            return Some(element);
        }
        let (segment, _) = locate(index);
        if segment >= SEGMENTS {
            return None;
        }
        let layout = Layout::array::<T>(segment_len(segment)).ok()?;
        // SAFETY: layout is non-zero sized; T is valid when zeroed.
        let base = unsafe { alloc_zeroed(layout) } as *mut T;
        if base.is_null() {
            return None;
        }
        let slot = &self.segments[segment];
        if let Err(_installed) = slot.compare_exchange(
            std::ptr::null_mut(),
            base,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // Another thread installed the segment first; ours was never seen.
            // SAFETY: `base` was allocated above with `layout` and not shared.
            unsafe { dealloc(base.cast(), layout) };
        }
        self.get(index)
    }

    /// The index of the element at `element`, if it is one of this array's
    /// first `len` elements.
    pub fn index_of(&self, element: *const T, len: usize) -> Option<usize> {
        let size = std::mem::size_of::<T>();
        let address = element as usize;
        let last = locate(len.checked_sub(1)?).0;
        let mut first = 0;
        for (segment, base) in self.segments.iter().enumerate().take(last + 1) {
            let base = base.load(Ordering::Acquire) as usize;
            let seg_len = segment_len(segment);
            let offset = address.wrapping_sub(base);
            // A segment not made (its allocation failed) holds nothing.
            if base != 0 && offset < seg_len * size && offset.is_multiple_of(size) {
                return Some(first + offset / size).filter(|&index| index < len);
            }
            first += seg_len;
        }
        None
    }

    /// Bytes allocated for segments so far.
    #[cfg(test)]
    pub fn allocated_bytes(&self) -> usize {
        (0..SEGMENTS)
            .filter(|&s| !self.segments[s].load(Ordering::Acquire).is_null())
            .map(|s| segment_len(s) * std::mem::size_of::<T>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn index_of_finds_each_element_and_nothing_else() {
        let array: SegVec<Cell> = SegVec::new();
        let last = DOUBLED + 3 * (BASE << (DOUBLINGS - 1)) + 5;
        for index in 0..=last {
            array.get_or_grow(index).expect("memory");
        }
        let len = last + 1;
        for index in 0..len {
            let element = array.get(index).expect("made in order") as *const Cell;
            assert_eq!(array.index_of(element, len), Some(index));
            assert_eq!(array.index_of(element, index), None); // past the first `index`
            let inside = (element as usize + 1) as *const Cell;
            assert_eq!(array.index_of(inside, len), None);
        }
        let outside = Cell(AtomicU64::new(0));
        assert_eq!(array.index_of(&outside, len), None);
    }

    struct Cell(AtomicU64);
    // SAFETY: an all-zero AtomicU64 is a valid 0.
    unsafe impl Zeroable for Cell {}

    #[test]
    fn locate_covers_indices_contiguously() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(BASE - 1), (0, BASE - 1));
        assert_eq!(locate(BASE), (1, 0));
        assert_eq!(locate(3 * BASE - 1), (1, 2 * BASE - 1));
        assert_eq!(locate(3 * BASE), (2, 0));
        assert_eq!(
            locate(DOUBLED - 1),
            (DOUBLINGS - 1, (BASE << (DOUBLINGS - 1)) - 1)
        );
        assert_eq!(locate(DOUBLED), (DOUBLINGS, 0));
        let last = BASE << (DOUBLINGS - 1);
        assert_eq!(locate(DOUBLED + last), (DOUBLINGS + 1, 0));
        assert_eq!(locate(DOUBLED + 5 * last + 7), (DOUBLINGS + 5, 7));
    }

    #[test]
    fn waste_is_at_most_one_segment() {
        let v: SegVec<Cell> = SegVec::new();
        let n = 40_000;
        for i in 0..n {
            v.get_or_grow(i).unwrap();
        }
        let slots = v.allocated_bytes() / std::mem::size_of::<Cell>();
        assert!(slots - n < BASE << (DOUBLINGS - 1), "{slots} slots for {n}");
    }

    #[test]
    fn elements_are_stable_and_zeroed() {
        let v: SegVec<Cell> = SegVec::new();
        assert!(v.get(5).is_none());
        for i in 0..5000 {
            let c = v.get_or_grow(i).unwrap();
            assert_eq!(c.0.load(Ordering::Relaxed), 0);
            c.0.store(i as u64, Ordering::Relaxed);
        }
        for i in 0..5000 {
            assert_eq!(v.get(i).unwrap().0.load(Ordering::Relaxed), i as u64);
        }
    }
}
