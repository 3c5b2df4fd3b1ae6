//! Interned frames: every distinct frame the live sites name is stored once,
//! and a site stores its stack as frame ids (src/engine/sites.rs), packed in
//! 16 bits each where they fit (src/engine/id_lists.rs).
//!
//! Why: at 16 frames a site's frames were 256 bytes of its own, although
//! most of a program's stacks share their outer frames with many others (a
//! recursive deepcopy makes tens of thousands of sites out of a few hundred
//! frames). An id costs 2 bytes per frame per site (4 past 65,536 entries);
//! each distinct frame costs one entry here.
//!
//! Why by line: a report names a frame by file, function and line, so two
//! offsets of one line (a line's several calls or allocating instructions)
//! are one frame here, and stacks that differ only by them are one site.
//! Resolving an offset to its line walks the code object's line table,
//! which is what makes tracemalloc slow per allocation; here it is done once
//! per (code, offset) first seen (`by_offset`), and the allocation hook
//! only gets here on a miss of its cache of recent stacks.
//!
//! Lifetimes: an entry lives while a site names it (`refs`). When the code
//! object of a Python entry dies, the entry is retired in place
//! (`retire_in_place`): it becomes the frame's record of
//! src/engine/retired.rs, for every site naming it at once, and leaves both
//! indexes (`kill`), so a new code object at the freed one's address never
//! maps onto it.
//! `by_offset` keys are not removed one by one (an entry has several): each
//! remembers the entry's generation, is ignored once it changed, and the
//! stale ones are dropped before the index grows.
//!
//! Only the GIL holder touches it; growth is fallible (src/engine/fallible.rs).

use crate::engine::frames::RawFrame;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

pub type FrameId = u32;

/// Hashes a (pointer, offset or line) key: one multiply-rotate per word.
#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(26)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(23) ^ value).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    }
    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }
    fn write_i32(&mut self, value: i32) {
        self.write_u64(value as u32 as u64);
    }
}

type Map<V> = HashMap<(usize, i32), V, BuildHasherDefault<WordHasher>>;

/// The memo's slot for a (code, offset) key: the top bits of a product.
#[inline(always)]
fn recent_slot((code, offset): (usize, i32)) -> usize {
    let word = (code as u64) ^ (offset as u32 as u64).wrapping_mul(0xE703_7ED1_A0B4_28DB);
    (word.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - RECENT_SLOTS.trailing_zeros())) as usize
}

struct Entry {
    /// The frame, with the first offset seen on its line (what a report
    /// resolves to that line).
    frame: RawFrame,
    /// Its line (Python frames); its offset for other kinds, which are
    /// interned as they are.
    line: i32,
    /// Sites naming it; 0 once free.
    refs: u32,
    /// Bumped when the entry is killed or freed: `by_offset` keys holding
    /// an older one are stale.
    generation: u32,
    /// Still in the indexes (its code object alive).
    indexed: bool,
    /// A retired frame's entry holds one user of its record
    /// (src/engine/retired.rs), given back when the entry is freed.
    owns_record: bool,
}

/// A recent `by_offset` answer, in a direct-mapped memo before it.
#[derive(Clone, Copy)]
struct Recent {
    code: usize,
    offset: i32,
    id: FrameId,
    /// The entry's generation then: the memo goes stale as keys do.
    generation: u32,
}

/// A frame known by its instruction pointer (`frames::read_words`) and the
/// entry it was found to be, in a direct-mapped memo: a miss of the hooks'
/// cache then finds its frames' ids without reading code objects (on 3.11+,
/// where an instruction pointer names code and offset while the code lives).
#[derive(Clone, Copy)]
struct RecentWord {
    /// 0 in an empty slot: no instruction pointer is.
    word: u64,
    id: FrameId,
    /// The entry's generation then: stale once its code object died.
    generation: u32,
}

/// Slots of the memo of instruction pointers: a program's hot lines are a
/// few hundred, whatever its stacks.
const WORD_SLOTS: usize = 1024;

/// The memo's slot for an instruction pointer.
#[inline(always)]
fn word_slot(word: u64) -> usize {
    (word.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - WORD_SLOTS.trailing_zeros())) as usize
}

/// No frame has this offset (native and retired markers are other values).
const NO_OFFSET: i32 = i32::MIN;

/// Slots of the memo: a deep recursion's misses of the hooks' cache look up
/// every frame of the stack here, and its frames are a few hundred.
const RECENT_SLOTS: usize = 1024;

pub struct FrameTable {
    entries: Vec<Entry>,
    free: Vec<FrameId>,
    /// `by_offset`'s recent answers: one multiply and a compare, where the
    /// map's lookup is about 30 instructions (callgrind: two thirds of a
    /// 16-frame miss's interning, on a recursion of coroutines).
    recent: [Recent; RECENT_SLOTS],
    /// Instruction pointers to entries (see `RecentWord`).
    words: [RecentWord; WORD_SLOTS],
    /// (code, offset) -> (entry, its generation then): the hot lookup.
    by_offset: Map<(FrameId, u32)>,
    /// (code, line) -> entry, for Python frames: where offsets merge.
    by_line: Map<FrameId>,
}

impl FrameTable {
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
            free: Vec::new(),
            recent: [Recent {
                code: 0,
                offset: NO_OFFSET,
                id: 0,
                generation: 0,
            }; RECENT_SLOTS],
            words: [RecentWord {
                word: 0,
                id: 0,
                generation: 0,
            }; WORD_SLOTS],
            by_offset: HashMap::with_hasher(BuildHasherDefault::new()),
            by_line: HashMap::with_hasher(BuildHasherDefault::new()),
        }
    }

    /// The frame with id `id` (its representative offset).
    #[inline]
    pub fn frame(&self, id: FrameId) -> RawFrame {
        self.entries[id as usize].frame
    }

    /// Writes the ids of `frames` into `out` (as long), making entries for
    /// frames not seen yet; `line_of` resolves a new (code, offset) of a
    /// Python frame. False when memory for an entry cannot be had: entries
    /// made by this call that no site names are then freed again.
    pub fn ids_of(
        &mut self,
        frames: &[RawFrame],
        out: &mut [FrameId],
        mut line_of: impl FnMut(&RawFrame) -> i32,
    ) -> bool {
        for (i, frame) in frames.iter().enumerate() {
            match self.id_of(frame, &mut line_of) {
                Some(id) => out[i] = id,
                None => {
                    self.forget_unnamed(&out[..i]);
                    return false;
                }
            }
        }
        true
    }

    /// Whether entry `id` is still what a memo or `by_offset` key found at
    /// `generation` (never killed or freed since). An id past the table, as
    /// an empty memo slot may hold, is not.
    #[inline(always)]
    fn still(&self, id: FrameId, generation: u32) -> bool {
        self.entries
            .get(id as usize)
            .is_some_and(|entry| entry.generation == generation)
    }

    /// Writes into `out` the ids of the frames with instruction pointers
    /// `words` (`frames::read_words`), from the memo alone: false when one of
    /// them is not there, or went stale.
    pub fn ids_of_words(&self, words: &[u64], out: &mut [FrameId]) -> bool {
        for (&word, out) in words.iter().zip(out.iter_mut()) {
            let recent = self.words[word_slot(word)];
            if recent.word != word || !self.still(recent.id, recent.generation) {
                return false;
            }
            *out = recent.id;
        }
        true
    }

    /// Remembers that the frames with instruction pointers `words` are the
    /// entries `ids` (as `ids_of` found them, in the same order).
    pub fn remember_words(&mut self, words: &[u64], ids: &[FrameId]) {
        for (&word, &id) in words.iter().zip(ids) {
            self.words[word_slot(word)] = RecentWord {
                word,
                id,
                generation: self.entries[id as usize].generation,
            };
        }
    }

    #[inline]
    fn id_of(
        &mut self,
        frame: &RawFrame,
        line_of: &mut impl FnMut(&RawFrame) -> i32,
    ) -> Option<FrameId> {
        let key = (frame.code as usize, frame.offset);
        let slot = recent_slot(key);
        let recent = self.recent[slot];
        if recent.code == key.0
            && recent.offset == key.1
            && self.still(recent.id, recent.generation)
        {
            return Some(recent.id);
        }
        let id = match self.by_offset.get(&key) {
            Some(&(id, generation)) if self.still(id, generation) => id,
            _ => self.id_of_new_offset(frame, key, line_of)?,
        };
        self.recent[slot] = Recent {
            code: key.0,
            offset: key.1,
            id,
            generation: self.entries[id as usize].generation,
        };
        Some(id)
    }

    #[cold]
    fn id_of_new_offset(
        &mut self,
        frame: &RawFrame,
        key: (usize, i32),
        line_of: &mut impl FnMut(&RawFrame) -> i32,
    ) -> Option<FrameId> {
        let python = frame.is_python();
        let line = if python { line_of(frame) } else { frame.offset };
        let line_key = (frame.code as usize, line);
        let id = match self.by_line.get(&line_key) {
            Some(&id) => id,
            None => {
                let id = self.make(*frame, line)?;
                if self.by_line.try_reserve(1).is_err() {
                    self.forget_unnamed(&[id]);
                    return None;
                }
                self.by_line.insert(line_key, id);
                id
            }
        };
        if !self.room_by_offset() {
            self.forget_unnamed(&[id]);
            return None;
        }
        self.by_offset
            .insert(key, (id, self.entries[id as usize].generation));
        Some(id)
    }

    /// Room for one more `by_offset` key, dropping stale ones before growing.
    fn room_by_offset(&mut self) -> bool {
        if self.by_offset.len() == self.by_offset.capacity() {
            let entries = &self.entries;
            self.by_offset
                .retain(|_, &mut (id, generation)| entries[id as usize].generation == generation);
        }
        self.by_offset.try_reserve(1).is_ok()
    }

    fn make(&mut self, frame: RawFrame, line: i32) -> Option<FrameId> {
        let entry = |generation| Entry {
            frame,
            line,
            refs: 0,
            generation,
            indexed: true,
            owns_record: false,
        };
        if let Some(id) = self.free.pop() {
            let slot = &mut self.entries[id as usize];
            *slot = entry(slot.generation);
            return Some(id);
        }
        self.entries.try_reserve(1).ok()?;
        // The free list must be able to take every entry back without
        // allocating (`release` runs where allocation may not fail).
        self.free.try_reserve(self.entries.len() + 1).ok()?;
        self.entries.push(entry(0));
        Some((self.entries.len() - 1) as FrameId)
    }

    /// Entries among `ids` that no site names (made by a failed call) go.
    fn forget_unnamed(&mut self, ids: &[FrameId]) {
        for &id in ids {
            if self.entries[id as usize].refs == 0 && self.entries[id as usize].indexed {
                self.unindex(id);
                self.free_entry(id);
            }
        }
    }

    /// A new site names these frames.
    pub fn hold(&mut self, ids: &[FrameId]) {
        for &id in ids {
            self.entries[id as usize].refs += 1;
        }
    }

    /// The code object of entry `id` is dying and `record` (a retired
    /// frame, whose hold on its record the entry takes) stands for the
    /// frame from now on: every site naming the entry names the record. It
    /// leaves the indexes (`kill`); nothing looks a retired frame up.
    pub fn retire_in_place(&mut self, id: FrameId, record: RawFrame) {
        debug_assert!(record.is_retired());
        self.kill(id);
        let entry = &mut self.entries[id as usize];
        debug_assert!(entry.frame.is_python() && !entry.owns_record);
        entry.frame = record;
        entry.owns_record = true;
    }

    /// A site no longer names these frames; the last one frees an entry.
    /// `give_back` gets the frame of a freed entry that held a record, whose
    /// hold the caller gives back when no report can be reading it.
    pub fn release(&mut self, ids: &[FrameId], mut give_back: impl FnMut(RawFrame)) {
        for &id in ids {
            let entry = &mut self.entries[id as usize];
            debug_assert!(entry.refs > 0, "frame {id} released more than held");
            entry.refs -= 1;
            if entry.refs == 0 {
                let record = std::mem::take(&mut entry.owns_record).then_some(entry.frame);
                if entry.indexed {
                    self.unindex(id);
                }
                self.free_entry(id);
                // Last: `give_back` allocates, and no entry is borrowed
                // across it.
                if let Some(frame) = record {
                    give_back(frame);
                }
            }
        }
    }

    /// The code object of entry `id` is dying: it leaves the indexes now,
    /// though sites may still name it until they are retired.
    pub fn kill(&mut self, id: FrameId) {
        if self.entries[id as usize].indexed {
            self.unindex(id);
        }
    }

    fn unindex(&mut self, id: FrameId) {
        let entry = &mut self.entries[id as usize];
        entry.indexed = false;
        entry.generation = entry.generation.wrapping_add(1);
        let key = (entry.frame.code as usize, entry.line);
        if self.by_line.get(&key) == Some(&id) {
            self.by_line.remove(&key);
        }
    }

    fn free_entry(&mut self, id: FrameId) {
        let entry = &mut self.entries[id as usize];
        entry.generation = entry.generation.wrapping_add(1);
        entry.refs = 0;
        entry.indexed = false;
        // Reserved in `make`: never allocates.
        self.free.push(id);
    }

    /// Entries in use.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(code: usize, offset: i32) -> RawFrame {
        let mut f = RawFrame::NONE;
        f.code = code as *mut std::ffi::c_void;
        f.offset = offset;
        f
    }

    /// Offsets 0..10 are line 1, 10.. line 2.
    fn line_of(f: &RawFrame) -> i32 {
        1 + (f.offset >= 10) as i32
    }

    fn ids(table: &mut FrameTable, frames: &[RawFrame]) -> Vec<FrameId> {
        let mut out = vec![0; frames.len()];
        assert!(table.ids_of(frames, &mut out, line_of));
        out
    }

    #[test]
    fn offsets_of_one_line_are_one_frame() {
        let mut table = FrameTable::new();
        let a = ids(
            &mut table,
            &[frame(0x1000, 2), frame(0x1000, 8), frame(0x1000, 12)],
        );
        assert_eq!(a[0], a[1], "two offsets on line 1");
        assert_ne!(a[0], a[2], "line 2 is another frame");
        assert_eq!(table.len(), 2);
        // The first offset seen stands for the line.
        assert_eq!(table.frame(a[1]).offset, 2);
        let mut lines_resolved = 0;
        let mut out = [0; 2];
        table.ids_of(&[frame(0x1000, 8), frame(0x1000, 12)], &mut out, |f| {
            lines_resolved += 1;
            line_of(f)
        });
        assert_eq!(
            lines_resolved, 0,
            "a (code, offset) seen before is not resolved again"
        );
    }

    #[test]
    fn killed_frames_never_match_a_new_code_object_at_their_address() {
        let mut table = FrameTable::new();
        let old = ids(&mut table, &[frame(0x2000, 4)]);
        table.hold(&old);
        table.kill(old[0]); // its code object dies; a retired site still names it
        let new = ids(&mut table, &[frame(0x2000, 4)]);
        assert_ne!(old, new);
        table.hold(&new);
        table.release(&old, |_| ());
        assert_eq!(table.len(), 1);
        // The freed id is reused, and the old offset key does not reach it.
        let other = ids(&mut table, &[frame(0x3000, 4)]);
        assert_eq!(other[0], old[0]);
        assert_eq!(ids(&mut table, &[frame(0x2000, 4)]), new);
    }

    #[test]
    fn a_frame_retired_in_place_keeps_its_id_and_gives_its_record_back_once() {
        let mut table = FrameTable::new();
        let dying = frame(0x6000, 4);
        let two_sites = ids(&mut table, &[dying]);
        table.hold(&two_sites);
        table.hold(&two_sites);
        let record = RawFrame::retired_at(0xdead0);
        table.retire_in_place(two_sites[0], record);
        // Every site naming the entry names the record now, under its old id.
        assert_eq!(table.frame(two_sites[0]), record);
        // A new code object at the dead one's address is another entry.
        let new = ids(&mut table, &[dying]);
        assert_ne!(new, two_sites);
        // The record is given back when the last site lets go, not before.
        let mut given_back = Vec::new();
        table.release(&two_sites, |f| given_back.push(f));
        assert!(given_back.is_empty());
        table.release(&two_sites, |f| given_back.push(f));
        assert_eq!(given_back, vec![record]);
    }

    #[test]
    fn the_memo_of_recent_offsets_goes_stale_with_its_entry() {
        let mut table = FrameTable::new();
        let (gone, reused) = ((0x4000, 6), (0x5000, 6));
        assert_ne!(recent_slot(gone), recent_slot(reused), "two memo slots");
        let first = ids(&mut table, &[frame(gone.0, gone.1)]);
        table.hold(&first);
        table.release(&first, |_| ()); // freed: its id can name another frame
        let other = ids(&mut table, &[frame(reused.0, reused.1)]);
        assert_eq!(other, first, "the freed id is reused");
        // The memo still maps `gone` to that id, which names `reused` now.
        let again = ids(&mut table, &[frame(gone.0, gone.1)]);
        assert_ne!(again, first);
        assert_eq!(table.frame(again[0]).code as usize, gone.0);
        assert_eq!(ids(&mut table, &[frame(reused.0, reused.1)]), other);
    }

    #[test]
    fn the_memo_of_instruction_pointers_goes_stale_with_its_entry() {
        let mut table = FrameTable::new();
        let (ip, other_ip) = (0x4000_00b8u64, 0x7000_00c0u64);
        let first = ids(&mut table, &[frame(0x4000, 0)]);
        table.hold(&first);
        table.remember_words(&[ip], &first);
        let mut out = [0];
        assert!(table.ids_of_words(&[ip], &mut out), "a live entry is found");
        assert_eq!(out, [first[0]]);
        assert!(
            !table.ids_of_words(&[ip, other_ip], &mut [0, 0]),
            "one unknown word fails all"
        );
        // Its code object dies: a new one at its address must not map onto it.
        table.kill(first[0]);
        assert!(
            !table.ids_of_words(&[ip], &mut out),
            "a killed entry is stale"
        );
        table.release(&first, |_| ());
        let reused = ids(&mut table, &[frame(0x5000, 6)]);
        assert_eq!(reused, first, "the freed id is reused");
        assert!(!table.ids_of_words(&[ip], &mut out), "a reused id is stale");
    }

    #[test]
    fn released_frames_are_freed_and_stale_keys_dropped() {
        let mut table = FrameTable::new();
        for round in 0..50usize {
            let frames: Vec<RawFrame> = (0..16)
                .map(|i| frame(0x10_000 * (round + 1), i * 10))
                .collect();
            let got = ids(&mut table, &frames);
            table.hold(&got);
            table.release(&got, |_| ());
        }
        assert_eq!(table.len(), 0);
        assert!(
            table.by_offset.len() <= 64,
            "stale offset keys pile up: {}",
            table.by_offset.len()
        );
        assert!(table.by_line.is_empty());
    }
}
