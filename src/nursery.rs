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
//! Only the GIL holder touches it (see [`crate::sync::GilCell`]).

use crate::sites::{self, Site};
use crate::table::{AddrTable, Record};

const SLOTS: usize = 64;

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
        domain: crate::table::Domain::Obj,
    },
    site: std::ptr::null(),
};

/// A freed block's record and its site.
pub struct Freed {
    pub record: Record,
    pub site: &'static Site,
}

pub struct GilTable {
    young: [Young; SLOTS],
    young_len: usize,
    old: AddrTable,
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
        }
    }

    /// Records `addr`. Returns a record that had to be dropped as stale (its
    /// address was recorded already: a free heapsite did not see), so the
    /// caller can take it off its site's counters. Err(()) when out of memory.
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
    ) -> Result<Option<Record>, ()> {
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
        self.old.insert(evicted.addr, evicted.record)
    }

    /// Forgets `addr`, returning what was recorded for it.
    #[inline(always)]
    pub fn remove(&mut self, addr: usize) -> Option<Freed> {
        let slot = &mut self.young[slot_of(addr)];
        if slot.addr == addr {
            slot.addr = 0;
            self.young_len -= 1;
            // SAFETY: set from a &'static Site on insert.
            let site = unsafe { &*slot.site };
            return Some(Freed {
                record: slot.record,
                site,
            });
        }
        let record = self.old.remove(addr)?;
        Some(Freed {
            record,
            site: sites::site(record.site),
        })
    }

    pub fn get(&self, addr: usize) -> Option<Record> {
        let slot = &self.young[slot_of(addr)];
        if slot.addr == addr && addr != 0 {
            return Some(slot.record);
        }
        self.old.get(addr)
    }

    pub fn len(&self) -> usize {
        self.young_len + self.old.len()
    }

    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.old.memory_bytes()
    }

    pub fn clear(&mut self) {
        self.young = [EMPTY; SLOTS];
        self.young_len = 0;
        self.old.clear();
    }

    /// Visits every live allocation (for trace-level reports).
    pub fn for_each(&self, mut visit: impl FnMut(usize, Record)) {
        for young in self.young.iter().filter(|y| y.addr != 0) {
            visit(young.addr, young.record);
        }
        self.old.for_each(visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Domain;

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
        let mut x: u64 = 0x2545F4914F6CDD1D;
        for step in 0..100_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let addr = ((x % 3000) as usize + 1) * 16;
            if model.contains_key(&addr) || x.is_multiple_of(5) {
                let freed = table.remove(addr).map(|f| f.record);
                assert_eq!(freed, model.remove(&addr), "step {step}");
            } else {
                let r = rec((x % 999) as usize, 0);
                assert_eq!(table.insert(addr, r, sites::site(0)).unwrap(), None);
                model.insert(addr, r);
            }
            assert_eq!(table.len(), model.len());
        }
        let mut seen = 0;
        table.for_each(|addr, r| {
            assert_eq!(model.get(&addr), Some(&r));
            seen += 1;
        });
        assert_eq!(seen, model.len());
    }
}
