//! Stack hash -> site id, for the sites whose code objects are all alive.
//!
//! A hash table of site ids alone (4 bytes a site, and a control byte):
//! a site's hash is worked out again from its frame ids when the table
//! grows (`home`), not stored beside it. The key-to-id map it replaces took
//! 9 bytes a bucket, 1.2 of the 15 MB heapsite held for pyperformance's
//! generators at 16 frames (CPython 3.11).
//!
//! A site whose code object dies leaves the index at once (`remove`): a
//! new code object at the freed one's address makes the same
//! raw frames, so an index that kept retired sites would have every new
//! stack there walk past all of them (programs that exec and drop functions
//! got quadratic).
//!
//! Only the GIL holder touches it. Growth is fallible: out of memory, a new
//! site is not made and its allocation not recorded.

use crate::engine::sites::SiteId;
use hashbrown::HashTable;

pub struct Interner {
    table: HashTable<SiteId>,
}

impl Interner {
    pub const fn new() -> Self {
        Self {
            table: HashTable::new(),
        }
    }

    /// The site under `hash` for which `matches` holds.
    pub fn find(&self, hash: u64, matches: impl Fn(SiteId) -> bool) -> Option<SiteId> {
        self.table.find(hash, |&id| matches(id)).copied()
    }

    /// Room for one more site; false when memory cannot be had. `home`
    /// gives an interned site's hash (the table may move every site).
    pub fn reserve_one(&mut self, home: impl Fn(SiteId) -> u64) -> bool {
        self.table.try_reserve(1, |&id| home(id)).is_ok()
    }

    /// Interns `id` under `hash` (after `reserve_one`, and a `find` that
    /// found no site for its stack).
    pub fn insert(&mut self, hash: u64, id: SiteId, home: impl Fn(SiteId) -> u64) {
        self.table.insert_unique(hash, id, |&other| home(other));
    }

    /// Takes `id`, interned under `hash`, out of the index.
    pub fn remove(&mut self, hash: u64, id: SiteId) {
        if let Ok(entry) = self.table.find_entry(hash, |&found| found == id) {
            entry.remove();
        }
    }

    /// How many sites are interned.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sites 0..n whose hashes collide in small clusters, removed in a
    /// scrambled order: every remaining one is still found, and a free key
    /// is found for the removed ones.
    #[test]
    fn removal_keeps_every_chain_whole() {
        let n = 400u32;
        // Clusters that overlap, in the key's bits (the hash's high half).
        let hash = |id: SiteId| (u64::from(id / 5) * 3) << 32;
        let mut index = Interner::new();
        for id in 0..n {
            assert!(index.reserve_one(hash));
            assert_eq!(index.find(hash(id), |found| found == id), None);
            index.insert(hash(id), id, hash);
        }
        let mut alive: Vec<SiteId> = (0..n).collect();
        let mut x = 7u32;
        while !alive.is_empty() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let gone = alive.swap_remove((x >> 8) as usize % alive.len());
            index.remove(hash(gone), gone);
            assert_eq!(index.find(hash(gone), |f| f == gone), None);
            for &id in &alive {
                assert_eq!(index.find(hash(id), |f| f == id), Some(id));
            }
        }
        assert_eq!(index.len(), 0);
    }
}
