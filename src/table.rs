//! Live allocations: address -> (size, site, domain).
//!
//! One open-addressing table (linear probing, backward-shift deletion, no
//! tombstones) serves every domain, wrapped two ways:
//! - [`GilTable`] for MEM and OBJ, which CPython only calls with the GIL held:
//!   the GIL is the lock, so the hot path has no atomics at all;
//! - [`RawTable`] for RAW, called from any thread without the GIL: the same
//!   table in shards behind spin locks that are held for a few instructions.
//!
//! A slot is 16 bytes. Capacity grows by 1.3x once 85% full, so the table
//! stays between 65% and 85% full: 19-25 bytes per live allocation, where
//! tracemalloc needs about 97.

use std::cell::UnsafeCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

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
/// Sizes at or above this are kept exactly in a side map (rare: >= 4 GiB).
const HUGE: u32 = u32::MAX;

#[derive(Clone, Copy)]
#[repr(C)]
struct Slot {
    addr: usize, // 0 = empty: a null pointer is never recorded
    size: u32,
    tag: u32, // site id in the low 30 bits, domain in the top 2
}

const EMPTY: Slot = Slot {
    addr: 0,
    size: 0,
    tag: 0,
};

pub struct AddrTable {
    slots: Vec<Slot>,
    len: usize,
    huge: BTreeMap<usize, usize>,
}

#[inline(always)]
fn home(addr: usize, capacity: usize) -> usize {
    // Fibonacci hashing spreads pymalloc's consecutive blocks; the multiply-
    // shift maps onto any capacity, so growth need not double.
    let h = ((addr as u64) >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h as u128 * capacity as u128) >> 64) as usize
}

impl AddrTable {
    pub const fn new() -> Self {
        Self {
            slots: Vec::new(),
            len: 0,
            huge: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes this table holds for its own bookkeeping.
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>() + self.huge.len() * 48
    }

    pub fn clear(&mut self) {
        self.slots = Vec::new();
        self.len = 0;
        self.huge.clear();
    }

    /// Records `addr`. Returns the record it replaced, if the address was
    /// already live (a free heapsite did not see), so the caller can undo it.
    /// Returns Err(()) only when memory for growth could not be had.
    #[inline]
    pub fn insert(&mut self, addr: usize, record: Record) -> Result<Option<Record>, ()> {
        debug_assert!(addr != 0 && record.site <= SITE_MASK);
        if (self.len + 1) * 20 > self.slots.len() * 17 {
            self.grow()?;
        }
        let size = if record.size >= HUGE as usize {
            self.huge.insert(addr, record.size);
            HUGE
        } else {
            record.size as u32
        };
        let slot = Slot {
            addr,
            size,
            tag: record.site | ((record.domain as u32) << SITE_BITS),
        };
        let cap = self.slots.len();
        let mut i = home(addr, cap);
        loop {
            let current = self.slots[i];
            if current.addr == 0 {
                self.slots[i] = slot;
                self.len += 1;
                return Ok(None);
            }
            if current.addr == addr {
                self.slots[i] = slot;
                let old = self.decode(&current);
                if size != HUGE && current.size == HUGE {
                    self.huge.remove(&addr);
                }
                return Ok(Some(old));
            }
            i += 1;
            if i == cap {
                i = 0;
            }
        }
    }

    /// Forgets `addr`, returning what was recorded for it.
    #[inline]
    pub fn remove(&mut self, addr: usize) -> Option<Record> {
        let cap = self.slots.len();
        if cap == 0 {
            return None;
        }
        let mut i = home(addr, cap);
        loop {
            let current = self.slots[i];
            if current.addr == 0 {
                return None;
            }
            if current.addr == addr {
                let record = self.decode(&current);
                if current.size == HUGE {
                    self.huge.remove(&addr);
                }
                self.shift_back(i);
                self.len -= 1;
                return Some(record);
            }
            i += 1;
            if i == cap {
                i = 0;
            }
        }
    }

    pub fn get(&self, addr: usize) -> Option<Record> {
        let cap = self.slots.len();
        if cap == 0 {
            return None;
        }
        let mut i = home(addr, cap);
        loop {
            let current = self.slots[i];
            if current.addr == 0 {
                return None;
            }
            if current.addr == addr {
                return Some(self.decode(&current));
            }
            i = (i + 1) % cap;
        }
    }

    /// Visits every live allocation (for trace-level reports).
    #[allow(dead_code)]
    pub fn for_each(&self, mut visit: impl FnMut(usize, Record)) {
        for slot in self.slots.iter().filter(|s| s.addr != 0) {
            visit(slot.addr, self.decode(slot));
        }
    }

    #[inline(always)]
    fn decode(&self, slot: &Slot) -> Record {
        let size = if slot.size == HUGE {
            self.huge.get(&slot.addr).copied().unwrap_or(HUGE as usize)
        } else {
            slot.size as usize
        };
        let domain = match slot.tag >> SITE_BITS {
            0 => Domain::Raw,
            1 => Domain::Mem,
            _ => Domain::Obj,
        };
        Record {
            size,
            site: slot.tag & SITE_MASK,
            domain,
        }
    }

    /// Closes the hole at `hole` by moving later entries of the same probe
    /// run back, so lookups never need tombstones.
    fn shift_back(&mut self, mut hole: usize) {
        let cap = self.slots.len();
        let mut j = hole;
        loop {
            j = if j + 1 == cap { 0 } else { j + 1 };
            let entry = self.slots[j];
            if entry.addr == 0 {
                break;
            }
            let displacement = (j + cap - home(entry.addr, cap)) % cap;
            let gap = (j + cap - hole) % cap;
            if gap <= displacement {
                self.slots[hole] = entry;
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
    }

    #[cold]
    fn grow(&mut self) -> Result<(), ()> {
        let old_cap = self.slots.len();
        let new_cap = (old_cap * 13 / 10).max(1 << 12);
        let mut fresh: Vec<Slot> = Vec::new();
        if fresh.try_reserve_exact(new_cap).is_err() {
            // Keep going in the table we have while it has room.
            return if self.len < old_cap { Ok(()) } else { Err(()) };
        }
        fresh.resize(new_cap, EMPTY);
        let old = std::mem::replace(&mut self.slots, fresh);
        for slot in old.into_iter().filter(|s| s.addr != 0) {
            let mut i = home(slot.addr, new_cap);
            while self.slots[i].addr != 0 {
                i = if i + 1 == new_cap { 0 } else { i + 1 };
            }
            self.slots[i] = slot;
        }
        Ok(())
    }
}

/// A value that is only touched by the thread holding the GIL.
pub struct GilCell<T>(UnsafeCell<T>);

// SAFETY: every access goes through `get`, whose callers hold the GIL, which
// serialises them.
unsafe impl<T> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    /// # Safety
    /// The calling thread holds the GIL and no other reference from `get` is live.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self) -> &mut T {
        &mut *self.0.get()
    }
}

/// The MEM and OBJ domains' table.
pub type GilTable = GilCell<AddrTable>;

/// A spin lock: the critical sections are a table probe (rarely a rehash), and
/// unlike std's Mutex it can be taken and released around `fork()`.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock serialises all access to `value`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

pub struct SpinGuard<'a, T>(&'a SpinLock<T>);

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    #[inline]
    pub fn lock(&self) -> SpinGuard<'_, T> {
        self.acquire();
        SpinGuard(self)
    }

    #[inline]
    fn acquire(&self) {
        let mut spins = 0u32;
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Takes the lock with no guard (fork preparation).
    pub fn acquire_raw(&self) {
        self.acquire();
    }

    /// # Safety
    /// Only after `acquire_raw` by this thread, or in a forked child where the
    /// holder no longer exists.
    pub unsafe fn release_raw(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

impl<T> std::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.0.value.get() }
    }
}

impl<T> std::ops::DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock.
        unsafe { &mut *self.0.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.0.locked.store(false, Ordering::Release);
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
            shards: [const { SpinLock::new(AddrTable::new()) }; RAW_SHARDS],
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
        }
        for (addr, r) in &model {
            assert_eq!(table.get(*addr), Some(*r));
        }
        let mut seen = 0;
        table.for_each(|_, _| seen += 1);
        assert_eq!(seen, model.len());
    }

    #[test]
    fn huge_sizes_are_exact() {
        let mut table = AddrTable::new();
        let big = (u32::MAX as usize) + 12345;
        table.insert(4096, rec(big, 7)).unwrap();
        assert_eq!(table.get(4096).unwrap().size, big);
        assert_eq!(table.remove(4096).unwrap().size, big);
        assert!(table.huge.is_empty());
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
