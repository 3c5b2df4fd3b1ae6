//! Where sites keep their frame ids (src/engine/sites.rs): a list of a
//! site's ids, packed into 16 bits each when all of them fit (frame ids
//! number the frame table's entries, which are few thousand in most
//! programs), 32 bits each when one does not.
//!
//! A short list lives in the site's own 8-byte field: up to 4 ids of 16 bits
//! or 2 of 32. A longer one lives in a store of 16-bit units shared by every
//! site, and the field holds its handle.
//!
//! Why not a boxed slice per site, as before: at 16 frames a site's 16 ids
//! were a 64-byte request, an 80-byte malloc chunk, as much as 43% of what a
//! site cost in all (pyperformance's generators: 110,000 sites of distinct
//! stacks, 185 bytes each). Packed in the store they take 32 bytes with no
//! header and no rounding.
//!
//! The store hands out runs of units and never gives memory back: a run a
//! site lets go of (its id reused, src/engine/reuse.rs; its frames lost for
//! want of memory to retire them; a site not made after all) goes on a
//! free list of runs of its length, and the next list of that length takes
//! it. Out of memory for a new segment, no list is stored and the caller
//! makes no site.
//!
//! Only the GIL holder touches the store and the lists (GilCell in sites.rs).

use crate::engine::frame_table::FrameId;
use crate::engine::frames::MAX_FRAMES;
use std::mem::MaybeUninit;

/// A list's shape, stored beside its word: its length (at most
/// `MAX_FRAMES`, 128: 8 bits), and whether its ids are 32 bits wide.
const WIDE: u32 = 1 << 8;
const _: () = assert!(MAX_FRAMES < WIDE as usize);
/// The largest shape: sites keep it in the bits below their depth.
pub const MAX_SHAPE: u32 = WIDE | MAX_FRAMES as u32;
/// The most 16-bit units one list takes: MAX_FRAMES ids of 32 bits.
const MAX_UNITS: usize = 2 * MAX_FRAMES;
/// Units the site's own 8-byte field holds.
const INLINE_UNITS: usize = 4;
/// No run: the end of a free list.
const NO_RUN: u32 = u32::MAX;
/// Units in the first segment; each next one doubles up to `LAST_SEGMENT`,
/// so that a program of a few sites does not pay for 128 KiB.
const FIRST_SEGMENT: usize = 4096;
/// A handle is a segment's index (high 16 bits) and a unit's offset in it
/// (low 16 bits), so no segment is longer than 2^16 units.
const LAST_SEGMENT: usize = 1 << 16;

/// A site's list as the site keeps it: `word` in its 8-byte field and
/// `shape` (length, WIDE) beside it. All zero is the empty list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    pub word: u64,
    pub shape: u32,
}

impl Stored {
    pub const EMPTY: Stored = Stored { word: 0, shape: 0 };

    /// How many ids the list holds.
    pub fn len(self) -> usize {
        (self.shape & !WIDE) as usize
    }

    fn wide(self) -> bool {
        self.shape & WIDE != 0
    }

    /// 16-bit units the ids take.
    fn units(self) -> usize {
        self.len() * if self.wide() { 2 } else { 1 }
    }

    fn inline(self) -> bool {
        self.units() <= INLINE_UNITS
    }
}

/// A 32-bit id from its two units, low half first.
#[inline(always)]
fn join(low: u16, high: u16) -> u32 {
    u32::from(low) | u32::from(high) << 16
}

/// A 32-bit id (or a free run's link) as two units, low half first.
#[inline(always)]
fn split(value: u32) -> [u16; 2] {
    [value as u16, (value >> 16) as u16]
}

/// The four 16-bit units of a site's word, lowest first.
#[inline(always)]
fn word_units(word: u64) -> [u16; INLINE_UNITS] {
    [0, 1, 2, 3].map(|i| (word >> (16 * i)) as u16)
}

/// The ids of a list, copied out (up to MAX_FRAMES, most recent first).
pub struct Ids {
    buf: [MaybeUninit<FrameId>; MAX_FRAMES],
    len: usize,
}

impl std::ops::Deref for Ids {
    type Target = [FrameId];
    fn deref(&self) -> &[FrameId] {
        // SAFETY: the first `len` elements were written (`IdLists::load`).
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast(), self.len) }
    }
}

pub struct IdLists {
    segments: Vec<Vec<u16>>,
    /// Units handed out of the last segment.
    top: usize,
    /// The first free run of each length in units (NO_RUN: none); a free
    /// run's first two units hold the next one's handle.
    free: [u32; MAX_UNITS + 1],
}

impl IdLists {
    pub const fn new() -> Self {
        IdLists {
            segments: Vec::new(),
            top: 0,
            free: [NO_RUN; MAX_UNITS + 1],
        }
    }

    /// Stores `ids`; None when a segment is needed and memory for it cannot
    /// be had, or for more than MAX_FRAMES ids.
    pub fn store(&mut self, ids: &[FrameId]) -> Option<Stored> {
        if ids.len() > MAX_FRAMES {
            return None; // no caller has more; the free lists stop there
        }
        let wide = ids.iter().any(|&id| id > u32::from(u16::MAX));
        let shape = ids.len() as u32 | if wide { WIDE } else { 0 };
        let mut stored = Stored { word: 0, shape };
        if stored.inline() {
            let bits = if wide { 32 } else { 16 };
            for (i, &id) in ids.iter().enumerate() {
                stored.word |= u64::from(id) << (bits * i);
            }
            return Some(stored);
        }
        let handle = self.take_run(stored.units())?;
        let run = self.run_mut(handle, stored.units());
        if wide {
            for (pair, &id) in run.chunks_exact_mut(2).zip(ids) {
                pair.copy_from_slice(&split(id));
            }
        } else {
            for (unit, &id) in run.iter_mut().zip(ids) {
                *unit = id as u16;
            }
        }
        stored.word = u64::from(handle);
        Some(stored)
    }

    /// Whether any id of `stored` (most recent first) passes `test`, read
    /// where the ids are kept. What scans every site (a crowded code
    /// object's death, the interner's compare) reads them so: copying them
    /// out first cost those scans about 250 instructions a site, and an
    /// iterator that asked at each id where they are kept about 100
    /// (callgrind, pyperformance's generators at 16 frames).
    #[inline(always)]
    pub fn any(&self, stored: Stored, mut test: impl FnMut(FrameId) -> bool) -> bool {
        let word_units = word_units(stored.word);
        let units = self.units(stored, &word_units);
        if stored.wide() {
            (units.chunks_exact(2)).any(|pair| test(join(pair[0], pair[1])))
        } else {
            units.iter().any(|&unit| test(u32::from(unit)))
        }
    }

    /// The 16-bit units `stored`'s ids take: its run in the store, or
    /// `word_units` (its word's) cut to length.
    #[inline(always)]
    fn units<'a>(&'a self, stored: Stored, word_units: &'a [u16; INLINE_UNITS]) -> &'a [u16] {
        if stored.inline() {
            &word_units[..stored.units()]
        } else {
            self.run(stored.word as u32, stored.units())
        }
    }

    /// The ids of `stored`, copied out.
    pub fn load(&self, stored: Stored) -> Ids {
        let mut out = Ids {
            buf: [MaybeUninit::uninit(); MAX_FRAMES],
            len: 0,
        };
        self.any(stored, |id| {
            out.buf[out.len].write(id);
            out.len += 1;
            false
        });
        out
    }

    /// Whether `stored` holds exactly `ids`, compared where they are kept.
    #[inline(always)]
    pub fn holds(&self, stored: Stored, ids: &[FrameId]) -> bool {
        if stored.len() != ids.len() {
            return false;
        }
        let word_units = word_units(stored.word);
        let units = self.units(stored, &word_units);
        if stored.wide() {
            let mut pairs = units.chunks_exact(2);
            return ids
                .iter()
                .zip(&mut pairs)
                .all(|(&id, pair)| id == join(pair[0], pair[1]));
        }
        // No early exit, so the loop vectorises: the interner compares about
        // one site a probe, nearly always the one it is after.
        let differ =
            (ids.iter().zip(units)).fold(0, |differ, (&id, &unit)| differ | (id ^ u32::from(unit)));
        differ == 0
    }

    /// Lets go of `stored`'s run, for the next list of its length.
    pub fn free(&mut self, stored: Stored) {
        if stored.inline() {
            return;
        }
        let units = stored.units();
        let handle = stored.word as u32;
        let next = self.free[units];
        self.run_mut(handle, 2).copy_from_slice(&split(next));
        self.free[units] = handle;
    }

    /// A run of `units`: a free one of that length, else from the last
    /// segment, else from a new one.
    fn take_run(&mut self, units: usize) -> Option<u32> {
        let head = self.free[units];
        if head != NO_RUN {
            let link = self.run(head, 2);
            self.free[units] = join(link[0], link[1]);
            return Some(head);
        }
        let room = self.segments.last().map_or(0, |last| last.len() - self.top);
        if room < units {
            self.add_segment()?;
        }
        let handle = ((self.segments.len() - 1) << 16 | self.top) as u32;
        self.top += units;
        Some(handle)
    }

    fn add_segment(&mut self) -> Option<()> {
        if self.segments.len() > usize::from(u16::MAX) {
            return None; // 2^16 segments of 2^16 units: handles run out
        }
        let len = (FIRST_SEGMENT << self.segments.len().min(4)).min(LAST_SEGMENT);
        let mut segment = Vec::new();
        segment.try_reserve_exact(len).ok()?;
        segment.resize(len, 0);
        self.segments.try_reserve(1).ok()?;
        self.segments.push(segment);
        self.top = 0;
        Some(())
    }

    fn run(&self, handle: u32, units: usize) -> &[u16] {
        let offset = (handle & 0xFFFF) as usize;
        &self.segments[(handle >> 16) as usize][offset..offset + units]
    }

    fn run_mut(&mut self, handle: u32, units: usize) -> &mut [u16] {
        let offset = (handle & 0xFFFF) as usize;
        &mut self.segments[(handle >> 16) as usize][offset..offset + units]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(lists: &mut IdLists, ids: &[FrameId]) -> Stored {
        let stored = lists.store(ids).expect("memory");
        assert_eq!(&*lists.load(stored), ids);
        stored
    }

    #[test]
    fn short_lists_live_in_the_word_and_long_ones_in_the_store() {
        let mut lists = IdLists::new();
        assert_eq!(round_trip(&mut lists, &[]), Stored::EMPTY);
        for ids in [&[7][..], &[1, 2, 3, 65535], &[70_000, 3]] {
            round_trip(&mut lists, ids);
        }
        assert!(lists.segments.is_empty(), "an inline list took a run");
        let narrow: Vec<FrameId> = (0..16).map(|i| i * 4000).collect();
        let wide: Vec<FrameId> = (0..16).map(|i| i * 300_000 + 1).collect();
        let a = round_trip(&mut lists, &narrow);
        let b = round_trip(&mut lists, &wide);
        assert_eq!(lists.top, 16 + 32, "16 ids of 16 bits, then 16 of 32");
        assert_eq!(
            &*lists.load(a),
            &narrow[..],
            "a later list overwrote an earlier"
        );
        let full: Vec<FrameId> = (0..MAX_FRAMES as u32).map(|i| i << 20).collect();
        round_trip(&mut lists, &full);
        assert_eq!(&*lists.load(b), &wide[..]);
    }

    #[test]
    fn a_list_holds_its_own_ids_and_no_others() {
        let mut lists = IdLists::new();
        let cases: [&[FrameId]; 5] = [&[], &[3, 4], &[70_000, 1], &[1; 9], &[1, 2, 3, 80_000, 5]];
        for ids in cases {
            let stored = lists.store(ids).expect("memory");
            for other in cases {
                assert_eq!(
                    lists.holds(stored, other),
                    ids == other,
                    "{ids:?} {other:?}"
                );
            }
            let mut changed = ids.to_vec();
            if let Some(last) = changed.last_mut() {
                *last ^= 1 << 16; // differs only in the high half
                assert!(!lists.holds(stored, &changed), "{ids:?}");
            }
        }
    }

    #[test]
    fn a_freed_run_goes_to_the_next_list_of_its_length() {
        let mut lists = IdLists::new();
        let first = round_trip(&mut lists, &[1, 2, 3, 4, 5]);
        let other = round_trip(&mut lists, &[9; 6]);
        let top = lists.top;
        lists.free(first);
        let again = round_trip(&mut lists, &[5, 4, 3, 2, 1]);
        assert_eq!(again.word, first.word, "the freed run was not reused");
        assert_eq!(lists.top, top, "a new run was cut though a free one fit");
        round_trip(&mut lists, &[8; 5]); // the free list is empty again
        assert_eq!(lists.top, top + 5);
        assert_eq!(&*lists.load(other), &[9; 6]);
    }

    #[test]
    fn freed_runs_come_back_last_in_first_out_from_any_segment() {
        let mut lists = IdLists::new();
        let filler: Vec<FrameId> = (1..=100).collect();
        for _ in 0..200 {
            round_trip(&mut lists, &filler); // past the first two segments
        }
        let wide: Vec<FrameId> = (0..5).map(|i| 70_000 + i).collect();
        let mut freed = Vec::new();
        let mut neighbours = Vec::new();
        for i in 0..3 {
            freed.push(round_trip(&mut lists, &wide));
            neighbours.push((round_trip(&mut lists, &[i; 10]), i));
        }
        // Links name runs of segment 2 on: their high unit is not zero.
        assert!(freed.iter().all(|stored| stored.word >> 16 >= 2));
        for &stored in &freed {
            lists.free(stored);
        }
        let top = lists.top;
        for &expected in freed.iter().rev() {
            let again = round_trip(&mut lists, &[5, 4, 3, 2, 1, 0, 6, 7, 8, 9]);
            assert_eq!(again.word, expected.word, "not the last run freed");
        }
        assert_eq!(lists.top, top, "a new run was cut though a free one fit");
        for (stored, i) in neighbours {
            assert_eq!(
                &*lists.load(stored),
                &[i; 10],
                "a neighbour was overwritten"
            );
        }
    }

    #[test]
    fn runs_do_not_cross_segments() {
        let mut lists = IdLists::new();
        let ids: Vec<FrameId> = (1..=100).collect();
        let kept: Vec<Stored> = (0..2000).map(|_| round_trip(&mut lists, &ids)).collect();
        assert!(lists.segments.len() > 2);
        for stored in kept {
            assert_eq!(&*lists.load(stored), &ids[..]);
        }
    }
}
