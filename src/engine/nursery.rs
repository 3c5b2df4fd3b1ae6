//! The MEM and OBJ domains' live allocations: a small direct-mapped nursery
//! in front of the address table.
//!
//! Most Python objects die young, and pymalloc hands the block freed last to
//! the next request of its size. So a free usually finds its block among the
//! few allocated just before, and the next allocation lands in the nursery
//! slot the free just emptied: neither touches the big table, whose slots are
//! cache misses. A block that outlives its nursery slot (another allocation
//! maps there) moves to the table.
//!
//! The table's work is also deferred a few events: a block moving to the
//! table, or an old block being freed, is queued and its slot prefetched; the
//! queue is worked through as it fills, so that up to QUEUE cache misses are in
//! flight at once instead of one after another (building or freeing a large
//! heap is otherwise a chain of misses). A queued free is accounted when it is
//! carried out; the hook settles all queued frees before it accounts an
//! allocation and before anything reads the figures, so the current and peak
//! sizes stay exact.
//!
//! Only the GIL holder touches it (see [`crate::engine::sync::GilCell`]).

use crate::engine::sites::{self, Site};
use crate::engine::table::{AddrTable, Record};

const SLOTS: usize = 64;
/// Deferred table operations of each kind kept in flight.
const QUEUE: usize = 8;

#[derive(Clone, Copy)]
struct Young {
    addr: usize, // 0 = empty
    record: Record,
    /// The record's site, so that freeing a young block needs no lookup.
    site: *const Site,
}

const EMPTY: Young = Young {
    addr: 0,
    record: Record {
        size: 0,
        site: 0,
        domain: crate::engine::table::Domain::Obj,
    },
    site: std::ptr::null(),
};

/// A freed block: its address, record and site.
pub struct Freed {
    pub addr: usize,
    pub record: Record,
    pub site: &'static Site,
}

pub struct GilTable {
    young: [Young; SLOTS],
    young_len: usize,
    old: AddrTable,
    /// Blocks on their way from the nursery to the table.
    moving: Ring<Young>,
    /// Old blocks freed, not yet taken out of the table.
    freeing: Ring<usize>,
}

/// A small FIFO of deferred operations.
struct Ring<T: Copy> {
    items: [T; QUEUE],
    head: usize,
    len: usize,
}

impl<T: Copy> Ring<T> {
    const fn new(empty: T) -> Self {
        Self {
            items: [empty; QUEUE],
            head: 0,
            len: 0,
        }
    }

    /// Adds `item`; returns the oldest one if the ring was full.
    #[inline(always)]
    fn push(&mut self, item: T) -> Option<T> {
        let tail = (self.head + self.len) % QUEUE;
        if self.len == QUEUE {
            let oldest = std::mem::replace(&mut self.items[self.head], item);
            self.head = (self.head + 1) % QUEUE;
            return Some(oldest);
        }
        self.items[tail] = item;
        self.len += 1;
        None
    }

    #[inline(always)]
    fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let item = self.items[self.head];
        self.head = (self.head + 1) % QUEUE;
        self.len -= 1;
        Some(item)
    }

    /// Removes and returns the first item matching `pred`, keeping the order.
    fn take(&mut self, pred: impl Fn(&T) -> bool) -> Option<T> {
        let found = (0..self.len).find(|&i| pred(&self.items[(self.head + i) % QUEUE]))?;
        let item = self.items[(self.head + found) % QUEUE];
        for i in found..self.len - 1 {
            self.items[(self.head + i) % QUEUE] = self.items[(self.head + i + 1) % QUEUE];
        }
        self.len -= 1;
        Some(item)
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        (0..self.len).map(move |i| &self.items[(self.head + i) % QUEUE])
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

#[inline(always)]
fn slot_of(addr: usize) -> usize {
    (((addr >> 4) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize
}

impl GilTable {
    pub const fn new() -> Self {
        Self {
            young: [EMPTY; SLOTS],
            young_len: 0,
            old: AddrTable::new(),
            moving: Ring::new(EMPTY),
            freeing: Ring::new(0),
        }
    }

    /// Carries out the queued frees, reporting each freed block. The hook
    /// calls this before it accounts an allocation or reads any figure.
    #[inline(always)]
    pub fn settle(&mut self, mut freed: impl FnMut(Freed)) {
        while let Some(addr) = self.freeing.pop() {
            if let Some(record) = self.old.remove(addr) {
                freed(Freed {
                    addr,
                    record,
                    site: sites::site(record.site),
                });
            }
        }
    }

    /// Carries out every queued operation (before reading the table); a
    /// stale record met on the way, or one the table had no room for, is
    /// reported as freed.
    fn flush(&mut self, mut freed: impl FnMut(Freed)) {
        self.settle(&mut freed);
        while let Some(young) = self.moving.pop() {
            // Out of memory the young block itself is forgotten, as if freed.
            let forgotten = match self.old.insert(young.addr, young.record) {
                Ok(stale) => stale,
                Err(()) => Some(young.record),
            };
            if let Some(record) = forgotten {
                freed(Freed {
                    addr: young.addr,
                    record,
                    site: sites::site(record.site),
                });
            }
        }
    }

    /// Records `addr` (call `settle` first). Returns a record that had to be
    /// dropped as stale (its address was recorded already: a free heapsite did
    /// not see), so the caller can take it off its site's counters.
    /// Err((lost address, lost record)) when the table could not grow for an
    /// older block on its way from the nursery: `addr` is recorded, `lost` no
    /// longer is, and the caller takes it off its site's counters (its free
    /// will pass unseen).
    ///
    /// A stale record is only noticed where it is met on the way (the same
    /// nursery slot, or the table when a block moves there): looking in the
    /// table on every allocation would undo the nursery. Frees go unseen only
    /// when another tool cuts heapsite out of the allocator chain.
    #[inline(always)]
    pub fn insert(
        &mut self,
        addr: usize,
        record: Record,
        site: &'static Site,
    ) -> Result<Option<Record>, (usize, Record)> {
        let young = Young { addr, record, site };
        let slot = &mut self.young[slot_of(addr)];
        if slot.addr == 0 {
            *slot = young;
            self.young_len += 1;
            return Ok(None);
        }
        if slot.addr == addr {
            let stale = std::mem::replace(slot, young);
            return Ok(Some(stale.record));
        }
        let evicted = std::mem::replace(slot, young);
        self.old.prefetch(evicted.addr);
        match self.moving.push(evicted) {
            Some(due) => self
                .old
                .insert(due.addr, due.record)
                .map_err(|()| (due.addr, due.record)),
            None => Ok(None),
        }
    }

    /// Forgets `addr`, reporting its record to `freed` now (a young block) or
    /// a few frees later (an old one: see the module note).
    #[inline(always)]
    pub fn remove(&mut self, addr: usize, mut freed: impl FnMut(Freed)) {
        let slot = &mut self.young[slot_of(addr)];
        if slot.addr == addr {
            slot.addr = 0;
            self.young_len -= 1;
            // SAFETY: set from a &'static Site on insert.
            let site = unsafe { &*slot.site };
            freed(Freed {
                addr,
                record: slot.record,
                site,
            });
            return;
        }
        if let Some(young) = self.moving.take(|y| y.addr == addr) {
            // SAFETY: as above.
            let site = unsafe { &*young.site };
            freed(Freed {
                addr,
                record: young.record,
                site,
            });
            return;
        }
        self.old.prefetch(addr);
        if let Some(due) = self.freeing.push(addr) {
            if let Some(record) = self.old.remove(due) {
                freed(Freed {
                    addr: due,
                    record,
                    site: sites::site(record.site),
                });
            }
        }
    }

    /// Forgets `addr` if it is young and `take_off` takes it off its site's
    /// figures: true then. Otherwise false, with the block still here, for
    /// `remove` to do. The exact path's free, whose common case calls
    /// nothing (hook.rs, `gil_free`). `addr` is not 0, which marks an
    /// empty slot (whose site is null): a free of NULL never gets here.
    #[inline(always)]
    pub fn remove_young(
        &mut self,
        addr: usize,
        take_off: impl FnOnce(&Site, Record) -> bool,
    ) -> bool {
        debug_assert!(addr != 0, "0 marks an empty nursery slot");
        let slot = &mut self.young[slot_of(addr)];
        // SAFETY: a young block's site was set from a &'static Site on insert.
        if slot.addr != addr || !take_off(unsafe { &*slot.site }, slot.record) {
            return false;
        }
        slot.addr = 0;
        self.young_len -= 1;
        true
    }

    /// The record of `addr` (after carrying out what is queued).
    pub fn get(&mut self, addr: usize, freed: impl FnMut(Freed)) -> Option<Record> {
        self.flush(freed);
        let slot = &self.young[slot_of(addr)];
        if slot.addr == addr && addr != 0 {
            return Some(slot.record);
        }
        self.old.get(addr)
    }

    /// Live blocks, counting queued operations as done (exact once settled:
    /// a queued free may be of a block heapsite never saw).
    pub fn len(&self) -> usize {
        self.young_len + self.moving.len + self.old.len() - self.freeing.len
    }

    /// Gives back the table's memory if few of its slots are live (see
    /// src/engine/table.rs's SHRINK_LIVE).
    pub fn shrink_if_sparse(&mut self) {
        self.old.shrink_if_sparse();
    }

    pub fn clear(&mut self) {
        self.young = [EMPTY; SLOTS];
        self.young_len = 0;
        self.old.clear();
        self.moving.clear();
        self.freeing.clear();
    }

    /// Visits every live allocation (for trace-level reports), after carrying
    /// out what is queued.
    pub fn for_each(&mut self, freed: impl FnMut(Freed), mut visit: impl FnMut(usize, Record)) {
        self.flush(freed);
        debug_assert!(self.moving.iter().next().is_none());
        for young in self.young.iter().filter(|y| y.addr != 0) {
            visit(young.addr, young.record);
        }
        self.old.for_each(visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::table::Domain;

    fn rec(size: usize, site: u32) -> Record {
        Record {
            size,
            site,
            domain: Domain::Mem,
        }
    }

    /// Allocator-like use: an address is only inserted while not live.
    #[test]
    fn behaves_like_a_map() {
        sites::init();
        let mut table = GilTable::new();
        let mut model = std::collections::HashMap::new();
        let mut pending = Vec::new();
        let mut freed = Vec::new();
        let mut x: u64 = 0x2545F4914F6CDD1D;
        for step in 0..100_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let addr = ((x % 30000) as usize + 1) * 16;
            if model.contains_key(&addr) || x.is_multiple_of(5) {
                if let Some(r) = model.remove(&addr) {
                    pending.push((addr, r));
                }
                table.remove(addr, |f| freed.push(f.record));
            } else {
                table.settle(|f| freed.push(f.record));
                let r = rec((x % 999) as usize, (step % 50) as u32);
                assert_eq!(table.insert(addr, r, sites::site(0)).unwrap(), None);
                model.insert(addr, r);
            }
            if step % 1000 == 0 {
                // Every free reported, each exactly once, once settled.
                table.settle(|f| freed.push(f.record));
                assert_eq!(table.len(), model.len());
                let mut want: Vec<Record> = pending.drain(..).map(|(_, r)| r).collect();
                let mut got: Vec<Record> = std::mem::take(&mut freed);
                want.sort_by_key(|r| (r.size, r.site));
                got.sort_by_key(|r| (r.size, r.site));
                assert_eq!(got, want, "step {step}");
                for (addr, r) in &model {
                    assert_eq!(table.get(*addr, |_| unreachable!()), Some(*r));
                }
            }
        }
        let mut seen = 0;
        table.for_each(
            |f| assert!(pending.iter().any(|(_, r)| *r == f.record)),
            |addr, r| {
                assert_eq!(model.get(&addr), Some(&r));
                seen += 1;
            },
        );
        assert_eq!(seen, model.len());
    }
}
