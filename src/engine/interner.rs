//! Stack hash -> site id, for the sites whose code objects are all alive.
//!
//! Keyed by 32 bits of the stack's 64-bit hash (see `sites::hash_stack`);
//! distinct stacks with equal keys take the next free key (linear probing
//! over keys). 32 bits, not 64: a (u32, u32) entry is 8 bytes where a
//! (u64, u32) one is padded to 16, and a program of 100,000 sites meets
//! about one clash of keys, which probing already handles.
//!
//! A site whose code object dies leaves the index at once (`remove`): a
//! new code object at the freed one's address makes the same
//! raw frames, so an index that kept retired sites would have every new
//! stack there walk past all of them (programs that exec and drop functions
//! got quadratic). Removal shifts back the keys displaced past the removed
//! one, so no probe chain breaks and none grows with the dead.
//!
//! Only the GIL holder touches it. Growth is fallible: out of memory, a new
//! site is not made and its allocation not recorded.

use crate::engine::sites::SiteId;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The keys are bits of a hash already: one multiply spreads them over the
/// 64 bits the map reads (its top bits tag a slot, its low bits place it).
#[derive(Default)]
struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u32 keys are interned")
    }
    fn write_u32(&mut self, value: u32) {
        self.0 = u64::from(value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub struct Interner {
    map: HashMap<Key, SiteId, BuildHasherDefault<PrehashedKey>>,
}

/// An index key: the high half of a stack's hash, or a later key probed to.
pub type Key = u32;

fn home_key(hash: u64) -> Key {
    (hash >> 32) as Key
}

/// Where a lookup ended.
pub enum Found {
    Site(SiteId),
    /// Not interned: the key a new site for this stack takes.
    FreeKey(Key),
}

impl Interner {
    pub const fn new() -> Self {
        Self {
            map: HashMap::with_hasher(BuildHasherDefault::new()),
        }
    }

    /// The site under `hash` for which `matches` holds, else the free key.
    pub fn find(&self, hash: u64, matches: impl Fn(SiteId) -> bool) -> Found {
        let mut key = home_key(hash);
        while let Some(&id) = self.map.get(&key) {
            if matches(id) {
                return Found::Site(id);
            }
            key = key.wrapping_add(1);
        }
        Found::FreeKey(key)
    }

    /// Room for one more site; false when memory cannot be had.
    pub fn reserve_one(&mut self) -> bool {
        self.map.try_reserve(1).is_ok()
    }

    /// Interns `id` under a key from `find` (after `reserve_one`).
    pub fn insert(&mut self, key: Key, id: SiteId) {
        self.map.insert(key, id);
    }

    /// Takes `id`, interned from `hash`, out of the index. `home` gives an
    /// interned site's hash, to tell which later keys were displaced.
    pub fn remove(&mut self, hash: u64, id: SiteId, home: impl Fn(SiteId) -> u64) {
        let mut hole = home_key(hash);
        loop {
            match self.map.get(&hole) {
                Some(&found) if found == id => break,
                Some(_) => hole = hole.wrapping_add(1),
                None => return,
            }
        }
        // Backward shift: a later key whose home is not between the hole
        // and itself was displaced past the hole and moves into it.
        // Overwriting a present key allocates nothing.
        let mut next = hole.wrapping_add(1);
        while let Some(&later) = self.map.get(&next) {
            if next.wrapping_sub(home_key(home(later))) >= next.wrapping_sub(hole) {
                self.map.insert(hole, later);
                hole = next;
            }
            next = next.wrapping_add(1);
        }
        self.map.remove(&hole);
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
            assert!(index.reserve_one());
            match index.find(hash(id), |found| found == id) {
                Found::FreeKey(key) => index.insert(key, id),
                Found::Site(_) => unreachable!(),
            }
        }
        let mut alive: Vec<SiteId> = (0..n).collect();
        let mut x = 7u32;
        while !alive.is_empty() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let gone = alive.swap_remove((x >> 8) as usize % alive.len());
            index.remove(hash(gone), gone, hash);
            assert!(matches!(
                index.find(hash(gone), |f| f == gone),
                Found::FreeKey(_)
            ));
            for &id in &alive {
                assert!(matches!(index.find(hash(id), |f| f == id), Found::Site(f) if f == id));
            }
        }
        assert!(index.map.is_empty());
    }
}
