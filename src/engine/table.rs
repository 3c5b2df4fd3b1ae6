//! Live allocations: address -> (size, site, domain).
//!
//! One open-addressing table (linear probing) serves every domain, wrapped
//! two ways:
//! - [`crate::engine::nursery::GilTable`] for MEM and OBJ, which CPython only calls
//!   with the GIL held: the GIL is the lock, so the hot path has no atomics;
//! - [`RawTable`] for RAW, called from any thread without the GIL: the same
//!   table in shards behind spin locks that are held for a few instructions.
//!
//! A slot is 12 bytes: the address (8-byte aligned, below 2^47, so 44 bits)
//! and the size (20 bits) share a word, the site and domain take the rest.
//! The rare allocation that does not fit (1 MiB or more, or an odd address)
//! keeps its exact figures in a side map.
//!
//! A free leaves a tombstone that keeps the address: programs free and
//! allocate the same address over and over (pymalloc hands back the block it
//! freed last), and the next allocation there revives the tombstone in place,
//! so neither side shifts entries. A tombstone followed by an empty slot ends
//! its run and is simply emptied. Once live and dead slots fill 75% of the
//! table it is rebuilt without tombstones, 1.3x larger if more than 60% is
//! live: 16-26 bytes per live allocation (tracemalloc needs about 97).
//!
//! The table's own memory (slots, side maps) is allocated and freed only
//! inside `own_memory::own_memory`: a RAW shard does so under its lock, and under
//! LD_PRELOAD the free would otherwise come back to the native hook and wait
//! for that same lock.

use crate::engine::own_memory::own_memory;
use crate::engine::sync::{SpinGuard, SpinLock};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// A side map; grown with `try_reserve`, so that running out of memory
/// drops a record instead of aborting the program.
type SideMap<V> = HashMap<usize, V, BuildHasherDefault<DefaultHasher>>;

/// Which allocator domain an allocation came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Domain {
    Raw = 0,
    Mem = 1,
    Obj = 2,
}

/// What the table remembers of one live allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub size: usize,
    pub site: u32,
    pub domain: Domain,
}

const SITE_BITS: u32 = 30;
const SITE_MASK: u32 = (1 << SITE_BITS) - 1;
const KEY_BITS: u32 = 44;
const KEY_MASK: u64 = (1 << KEY_BITS) - 1;
/// The size field's largest value; it means "exact size in `huge`".
const SIZE_SPILLED: u64 = (1 << (64 - KEY_BITS)) - 1;
/// The domain field's fourth value marks a tombstone.
const DEAD: u32 = 3 << SITE_BITS;
/// Rebuild once live + dead slots reach 3/4 of the capacity...
const MAX_OCCUPIED: (usize, usize) = (3, 4);
/// ...into a 1.3x larger table if more than 3/5 are live.
const GROW_LIVE: (usize, usize) = (3, 5);
/// A table never has fewer slots than this, when every block is recorded...
const MIN_CAPACITY: usize = 1 << 12;
/// ...but a RAW shard has a sixteenth of it, so that the RAW table as a
/// whole starts as small as the GIL table: a pure-Python program makes few
/// RAW blocks, yet its 16 shards at 4,096 slots each were 768 KiB, 11% of
/// what heapsite held after pyperf's imports at 16 frames, every process.
const MIN_CAPACITY_RAW_SHARD: usize = MIN_CAPACITY / RAW_SHARDS;
/// ...and when blocks are sampled: a few hundred live, spread over the RAW
/// table's 16 shards, where 4,096 slots in each were 780 KB for a dozen
/// blocks (sampled tracing reported 74 KB of bookkeeping before sampled
/// MEM/OBJ blocks went to the RAW table, 860 KB after).
const MIN_CAPACITY_SAMPLED: usize = 1 << 6;
/// Which of the two applies: set as tracing starts, tables cleared.
static SAMPLED_SIZES: AtomicBool = AtomicBool::new(false);

/// Sizes tables for sampled tracing (few blocks) or not. Called with the
/// tables cleared, as tracing starts.
pub fn size_for_sampling(sampled: bool) {
    SAMPLED_SIZES.store(sampled, Relaxed);
}

/// Once fewer than 1/8 of the slots are live, the next reading of the
/// figures (`shrink_if_sparse`, from hook::shrink_tables) rebuilds the
/// table with 4 slots for each live one (at least its `fewest_slots`): a program
/// past its peak (a million blocks made and dropped) does not keep paying
/// for it. heapsite's table
/// held 20 MB at 16 frames after a peak of 600,000 blocks, where
/// tracemalloc's, which shrinks as it frees, held 12 KB. Not as it frees:
/// pyperformance's float makes and drops 300,000 blocks a loop, and a table
/// shrunk at each loop's end and grown again in the next cost it 1.59x ->
/// 1.73x plain in time and 1.65x -> 1.85x in peak RSS at 16 frames.
const SHRINK_LIVE: usize = 8;
const SHRUNK_SLOTS_PER_LIVE: usize = 4;

#[derive(Clone, Copy)]
#[repr(C, packed(4))]
struct Slot {
    word: u64, // address >> 3 in the low 44 bits (0 = empty), size above
    tag: u32,  // site id in the low 30 bits, domain in the top 2
}

const EMPTY: Slot = Slot { word: 0, tag: 0 };

impl Slot {
    #[inline(always)]
    fn key(self) -> u64 {
        self.word & KEY_MASK
    }

    #[inline(always)]
    fn is_dead(self) -> bool {
        self.tag >= DEAD
    }
}

/// The slot key of an address, if it fits one (it nearly always does).
#[inline(always)]
fn key_of(addr: usize) -> Option<u64> {
    let addr = addr as u64;
    (addr & 7 == 0 && addr >> (KEY_BITS + 3) == 0 && addr != 0).then_some(addr >> 3)
}

#[inline(always)]
fn home(key: u64, capacity: usize) -> usize {
    // Fibonacci hashing spreads pymalloc's consecutive blocks; the multiply-
    // shift maps onto any capacity, so growth need not double.
    let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h as u128 * capacity as u128) >> 64) as usize
}

pub struct AddrTable {
    slots: Vec<Slot>,
    /// Live slots.
    len: usize,
    /// Tombstones.
    dead: usize,
    /// Rebuild when len + dead reaches this.
    rebuild_at: usize,
    /// Rebuild smaller, when the figures are next read, below this len.
    shrink_at: usize,
    /// The fewest slots the table has when every block is recorded
    /// (MIN_CAPACITY or MIN_CAPACITY_RAW_SHARD).
    min_slots: usize,
    /// Exact sizes of slots whose size field is SIZE_SPILLED.
    huge: SideMap<usize>,
    /// Allocations whose address fits no slot (odd or very high addresses).
    odd: SideMap<Record>,
}

impl AddrTable {
    pub const fn new() -> Self {
        Self::with_min_slots(MIN_CAPACITY)
    }

    const fn with_min_slots(min_slots: usize) -> Self {
        Self {
            slots: Vec::new(),
            len: 0,
            dead: 0,
            rebuild_at: 0,
            shrink_at: 0,
            min_slots,
            huge: SideMap::with_hasher(BuildHasherDefault::new()),
            odd: SideMap::with_hasher(BuildHasherDefault::new()),
        }
    }

    /// The fewest slots the table has now: its own minimum, or fewer while
    /// blocks are sampled.
    fn fewest_slots(&self) -> usize {
        if SAMPLED_SIZES.load(Relaxed) {
            MIN_CAPACITY_SAMPLED.min(self.min_slots)
        } else {
            self.min_slots
        }
    }

    pub fn len(&self) -> usize {
        self.len + self.odd.len()
    }

    /// Bytes this table holds for its own bookkeeping.
    #[cfg(test)]
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + (self.huge.len() + self.odd.len()) * 48
    }

    pub fn clear(&mut self) {
        own_memory(|| {
            self.slots = Vec::new();
            self.huge.clear();
            self.odd.clear();
        });
        self.len = 0;
        self.dead = 0;
        self.rebuild_at = 0;
        self.shrink_at = 0;
    }

    #[inline(always)]
    fn slot(&self, i: usize) -> Slot {
        debug_assert!(i < self.slots.len());
        // SAFETY: every probe index is reduced modulo the capacity.
        unsafe { *self.slots.get_unchecked(i) }
    }

    #[inline(always)]
    fn set(&mut self, i: usize, slot: Slot) {
        debug_assert!(i < self.slots.len());
        // SAFETY: as in `slot`.
        unsafe { *self.slots.get_unchecked_mut(i) = slot };
    }

    #[inline(always)]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// Index of the live slot holding `key`, if any.
    #[inline(always)]
    fn find(&self, key: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mut i = home(key, self.slots.len());
        loop {
            let slot = self.slot(i);
            let k = slot.key();
            if k == key {
                // A key has at most one slot in its run: insert stops at it.
                return (!slot.is_dead()).then_some(i);
            }
            if k == 0 {
                return None;
            }
            i = self.next(i);
        }
    }

    /// Records `addr`. Returns the record it replaced, if the address was
    /// already live (a free heapsite did not see), so the caller can undo it.
    /// Returns Err(()) only when memory for growth could not be had.
    #[inline]
    pub fn insert(&mut self, addr: usize, record: Record) -> Result<Option<Record>, ()> {
        debug_assert!(record.site <= SITE_MASK);
        let Some(key) = key_of(addr) else {
            return own_memory(|| {
                self.odd.try_reserve(1).map_err(|_| ())?;
                Ok(self.odd.insert(addr, record))
            });
        };
        if self.len + self.dead >= self.rebuild_at {
            self.rebuild()?;
        }
        // A spilled size replaced here is the replaced record's: read before
        // `decode` below would find the new one in `huge`.
        let (size, replaced_huge) = if record.size as u64 >= SIZE_SPILLED {
            own_memory(|| self.huge.try_reserve(1)).map_err(|_| ())?;
            (SIZE_SPILLED, self.huge.insert(addr, record.size))
        } else {
            (record.size as u64, None)
        };
        let slot = Slot {
            word: key | (size << KEY_BITS),
            tag: record.site | ((record.domain as u32) << SITE_BITS),
        };
        let mut i = home(key, self.slots.len());
        let mut first_dead = None;
        loop {
            let current = self.slot(i);
            let k = current.key();
            if k == key {
                self.set(i, slot);
                if current.is_dead() {
                    self.dead -= 1;
                    self.len += 1;
                    return Ok(None);
                }
                let mut old = self.decode(addr, current);
                if let Some(replaced) = replaced_huge {
                    old.size = replaced;
                }
                if size != SIZE_SPILLED && current.word >> KEY_BITS == SIZE_SPILLED {
                    own_memory(|| self.huge.remove(&addr));
                }
                return Ok(Some(old));
            }
            if k == 0 {
                // Not in the run: take its first tombstone, else this slot.
                match first_dead {
                    Some(reused) => {
                        self.set(reused, slot);
                        self.dead -= 1;
                    }
                    None => self.set(i, slot),
                }
                self.len += 1;
                return Ok(None);
            }
            if first_dead.is_none() && current.is_dead() {
                first_dead = Some(i);
            }
            i = self.next(i);
        }
    }

    /// Forgets `addr`, returning what was recorded for it.
    #[inline]
    pub fn remove(&mut self, addr: usize) -> Option<Record> {
        let Some(key) = key_of(addr) else {
            return if self.odd.is_empty() {
                None
            } else {
                own_memory(|| self.odd.remove(&addr))
            };
        };
        let i = self.find(key)?;
        let slot = self.slot(i);
        let record = self.decode(addr, slot);
        if slot.word >> KEY_BITS == SIZE_SPILLED {
            own_memory(|| self.huge.remove(&addr));
        }
        self.len -= 1;
        if self.slot(self.next(i)).key() == 0 {
            // Last of its run: nothing probes past it.
            self.set(i, EMPTY);
        } else {
            self.set(
                i,
                Slot {
                    word: slot.key(),
                    tag: DEAD,
                },
            );
            self.dead += 1;
        }
        Some(record)
    }

    /// Asks the CPU to start loading `addr`'s slot, so that an insert or
    /// remove a little later does not wait for memory.
    #[inline(always)]
    pub fn prefetch(&self, addr: usize) {
        let (Some(key), false) = (key_of(addr), self.slots.is_empty()) else {
            return;
        };
        let slot = self
            .slots
            .as_ptr()
            .wrapping_add(home(key, self.slots.len()));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetching is a hint; it never faults, whatever the address.
        unsafe {
            std::arch::x86_64::_mm_prefetch(slot.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    pub fn get(&self, addr: usize) -> Option<Record> {
        match key_of(addr) {
            Some(key) => self.find(key).map(|i| self.decode(addr, self.slot(i))),
            None => self.odd.get(&addr).copied(),
        }
    }

    /// Visits every live allocation (for trace-level reports).
    pub fn for_each(&self, mut visit: impl FnMut(usize, Record)) {
        for slot in self.slots.iter().filter(|s| s.key() != 0 && !s.is_dead()) {
            let addr = (slot.key() << 3) as usize;
            visit(addr, self.decode(addr, *slot));
        }
        for (&addr, &record) in &self.odd {
            visit(addr, record);
        }
    }

    #[inline(always)]
    fn decode(&self, addr: usize, slot: Slot) -> Record {
        let size = slot.word >> KEY_BITS;
        let size = if size == SIZE_SPILLED {
            self.huge.get(&addr).copied().unwrap_or(size as usize)
        } else {
            size as usize
        };
        let tag = slot.tag;
        let domain = match tag >> SITE_BITS {
            0 => Domain::Raw,
            1 => Domain::Mem,
            _ => Domain::Obj,
        };
        Record {
            size,
            site: tag & SITE_MASK,
            domain,
        }
    }

    /// Rebuilds the table without tombstones, larger if it is mostly live.
    #[cold]
    fn rebuild(&mut self) -> Result<(), ()> {
        let old_cap = self.slots.len();
        let grow = self.len * GROW_LIVE.1 >= old_cap * GROW_LIVE.0;
        let new_cap = if grow { old_cap * 13 / 10 } else { old_cap };
        match own_memory(|| self.rebuild_into(new_cap)) {
            Ok(()) => Ok(()),
            // Keep going in the table we have while it has room.
            Err(()) if self.len + self.dead + 1 < old_cap => Ok(()),
            Err(()) => Err(()),
        }
    }

    /// Rebuilds the table smaller if few of its slots are live (see
    /// SHRINK_LIVE); without the memory for that, keeps the one it has.
    pub fn shrink_if_sparse(&mut self) {
        let new_cap = self.len * SHRUNK_SLOTS_PER_LIVE;
        if self.len < self.shrink_at && new_cap.max(self.fewest_slots()) < self.slots.len() {
            let _ = own_memory(|| self.rebuild_into(new_cap));
        }
    }

    /// Moves the live slots into a new table of `new_cap` slots (at least
    /// `fewest_slots`); Err(()) with the table unchanged when memory for it
    /// cannot be had.
    fn rebuild_into(&mut self, new_cap: usize) -> Result<(), ()> {
        let min = self.fewest_slots();
        let new_cap = new_cap.max(min);
        let mut fresh: Vec<Slot> = Vec::new();
        fresh.try_reserve_exact(new_cap).map_err(|_| ())?;
        fresh.resize(new_cap, EMPTY);
        let old = std::mem::replace(&mut self.slots, fresh);
        for slot in old.into_iter().filter(|s| s.key() != 0 && !s.is_dead()) {
            let mut i = home(slot.key(), new_cap);
            while self.slot(i).key() != 0 {
                i = self.next(i);
            }
            self.set(i, slot);
        }
        self.dead = 0;
        self.rebuild_at = new_cap * MAX_OCCUPIED.0 / MAX_OCCUPIED.1;
        self.shrink_at = if new_cap > min {
            new_cap / SHRINK_LIVE
        } else {
            0
        };
        Ok(())
    }
}

const RAW_SHARDS: usize = 16;

/// The RAW domain's table: sharded by address so threads rarely meet.
pub struct RawTable {
    shards: [SpinLock<AddrTable>; RAW_SHARDS],
}

impl RawTable {
    pub const fn new() -> Self {
        Self {
            shards: [const { SpinLock::new(AddrTable::with_min_slots(MIN_CAPACITY_RAW_SHARD)) };
                RAW_SHARDS],
        }
    }

    #[inline]
    pub fn shard(&self, addr: usize) -> SpinGuard<'_, AddrTable> {
        self.shards[(addr >> 4) % RAW_SHARDS].lock()
    }

    pub fn shards(&self) -> &[SpinLock<AddrTable>] {
        &self.shards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(size: usize, site: u32) -> Record {
        Record {
            size,
            site,
            domain: Domain::Obj,
        }
    }

    #[test]
    fn insert_get_remove_against_a_model() {
        let mut table = AddrTable::new();
        let mut model = std::collections::HashMap::new();
        let mut x: u64 = 88172645463325252;
        for step in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let addr = ((x % 50_000) as usize + 1) * 16;
            if x.is_multiple_of(3) {
                assert_eq!(table.remove(addr), model.remove(&addr), "step {step}");
            } else {
                let r = rec((x % 1000) as usize, (step % 1000) as u32);
                assert_eq!(table.insert(addr, r).unwrap(), model.insert(addr, r));
            }
            assert_eq!(table.len(), model.len());
            assert!(table.len + table.dead <= table.slots.len());
        }
        for (addr, r) in &model {
            assert_eq!(table.get(*addr), Some(*r));
        }
        let mut seen = 0;
        table.for_each(|_, _| seen += 1);
        assert_eq!(seen, model.len());
    }

    #[test]
    fn a_table_past_its_peak_shrinks_and_keeps_what_lives() {
        let mut table = AddrTable::new();
        let addr = |i: usize| (i + 1) * 16;
        for i in 0..600_000 {
            table.insert(addr(i), rec(32, i as u32)).unwrap();
        }
        let peak = table.memory_bytes();
        // Drop all but every 10,000th block, as a program past its peak.
        for i in (0..600_000).filter(|i| i % 10_000 != 0) {
            assert_eq!(table.remove(addr(i)), Some(rec(32, i as u32)));
        }
        assert_eq!(table.len(), 60);
        assert_eq!(
            table.memory_bytes(),
            peak,
            "frees alone leave the table as it is"
        );
        table.shrink_if_sparse();
        assert!(table.memory_bytes() <= MIN_CAPACITY * std::mem::size_of::<Slot>());
        assert!(peak > 100 * table.memory_bytes(), "{peak} at the peak");
        for i in 0..600_000 {
            let kept = (i % 10_000 == 0).then_some(rec(32, i as u32));
            assert_eq!(table.get(addr(i)), kept, "block {i}");
        }
        // And it grows again.
        for i in 600_000..700_000 {
            table.insert(addr(i), rec(8, 1)).unwrap();
        }
        assert_eq!(table.len(), 100_060);
        assert_eq!(table.get(addr(650_000)), Some(rec(8, 1)));
    }

    #[test]
    fn the_raw_table_starts_as_small_as_one_table() {
        let raw = RawTable::new();
        // A block in every shard (shards are chosen by address >> 4).
        for i in 0..RAW_SHARDS * 4 {
            let addr = (i + 1) * 16;
            raw.shard(addr).insert(addr, rec(32, i as u32)).unwrap();
        }
        let held: usize = raw.shards().iter().map(|s| s.lock().memory_bytes()).sum();
        assert!(raw.shards().iter().all(|s| s.lock().len() == 4));
        assert_eq!(held, MIN_CAPACITY * std::mem::size_of::<Slot>());
        // A shard grows past its minimum like any table, and keeps it all.
        for i in 0..10_000 {
            let addr = (i + 100) * 16 * RAW_SHARDS; // past the first blocks
            raw.shard(addr).insert(addr, rec(48, 7)).unwrap();
        }
        let shard = raw.shard(16 * RAW_SHARDS);
        assert_eq!(shard.len(), 10_000 + 4);
        assert!(shard.memory_bytes() > 10_000 * std::mem::size_of::<Slot>());
        assert_eq!(shard.get(16 * RAW_SHARDS * 5_000), Some(rec(48, 7)));
        assert_eq!(shard.get(16 * RAW_SHARDS), Some(rec(32, 15)));
    }

    #[test]
    fn huge_sizes_are_exact() {
        let mut table = AddrTable::new();
        for big in [SIZE_SPILLED as usize, (u32::MAX as usize) + 12345] {
            table.insert(4096, rec(big, 7)).unwrap();
            assert_eq!(table.get(4096).unwrap().size, big);
            assert_eq!(table.remove(4096).unwrap().size, big);
            assert!(table.huge.is_empty());
        }
        // A huge block replaced by a small one at the same address.
        table.insert(4096, rec(1 << 30, 1)).unwrap();
        assert_eq!(
            table.insert(4096, rec(8, 2)).unwrap().unwrap().size,
            1 << 30
        );
        assert!(table.huge.is_empty());
        assert_eq!(table.get(4096).unwrap().size, 8);
    }

    #[test]
    fn odd_and_high_addresses_are_kept_too() {
        let mut table = AddrTable::new();
        for addr in [4097usize, 1 << 50, usize::MAX - 7] {
            table.insert(addr, rec(10, 3)).unwrap();
            assert_eq!(table.get(addr), Some(rec(10, 3)));
        }
        assert_eq!(table.len(), 3);
        let mut seen = vec![];
        table.for_each(|addr, _| seen.push(addr));
        assert_eq!(seen.len(), 3);
        assert_eq!(table.remove(4097), Some(rec(10, 3)));
        assert_eq!(table.remove(4097), None);
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn slots_are_twelve_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 12);
    }

    #[test]
    fn domain_and_site_round_trip() {
        let mut table = AddrTable::new();
        let r = Record {
            size: 10,
            site: SITE_MASK,
            domain: Domain::Mem,
        };
        table.insert(64, r).unwrap();
        assert_eq!(table.get(64), Some(r));
    }
}
