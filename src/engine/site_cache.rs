//! The hooks' cache of recent stacks: a stack's key (two hashes and its
//! shape, `frames::StackKey`) to its site, so that a loop's allocations find
//! their site without reading their frames or asking the interner.
//!
//! Two-way set-associative. Direct-mapped, two stacks of one loop that fell
//! in one slot evicted each other at every allocation, and which pairs fell
//! together depended on where code objects were allocated: about one
//! 16-frame loop of `__init__`s in 700 missed at every allocation (a CI run
//! on 3.9: 39,496 misses in 20,000 rounds of tests/test_site_cache.py), and
//! a program whose hot loop drew such a pair paid a miss, a frame read and an
//! interner lookup, at each of them for its whole run. With two ways, that
//! needs three stacks of a loop in one set.
//!
//! Only the first way is looked at inline; the second is looked at on the
//! way to a miss (`second_way`), so a hit costs what it did. A stack put in
//! moves the first way's entry to the second, whose entry goes.

use crate::engine::frames::StackKey;

/// Sets of two entries: 4,096 entries (160 KiB), as the direct-mapped cache
/// had, for which bench/workloads/churn's ~100 stacks at 1 frame rarely
/// collide (512 slots missed 7 times a step).
const SETS: usize = 2048;

/// A recently seen stack, known by its two hashes and its shape.
struct Entry<T> {
    hash: u64,
    check: u64,
    site: *const T,
    /// The stack's frames and whole depth, one compare (`shape_of`).
    shape: u64,
    id: u32,
}

/// A key's frames and whole depth as one word. Never 0 for a key looked
/// up (the hooks look up only keys of one frame or more), which is why an
/// empty entry, shape 0, never holds one without a test of its site.
#[inline(always)]
fn shape_of(key: &StackKey) -> u64 {
    u64::from(key.nframes as u32) | (u64::from(key.total as u32) << 32)
}

// Copied whatever `T` is: an entry holds only an address of one.
impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Entry<T> {}

impl<T> Entry<T> {
    const EMPTY: Self = Entry {
        hash: 0,
        check: 0,
        site: std::ptr::null(),
        shape: 0,
        id: u32::MAX,
    };

    #[inline(always)]
    fn holds(&self, key: &StackKey) -> bool {
        debug_assert!(key.nframes > 0, "an empty entry would hold it");
        self.hash == key.hash && self.check == key.check && self.shape == shape_of(key)
    }

    #[inline(always)]
    fn found(&self) -> (u32, *const T) {
        (self.id, self.site)
    }
}

/// Keys of stacks to the ids and addresses of their sites (`T`: sites live
/// forever, so an address handed in stays good).
pub struct SiteCache<T> {
    sets: [[Entry<T>; 2]; SETS],
}

impl<T> SiteCache<T> {
    pub const fn new() -> Self {
        SiteCache {
            sets: [[Entry::EMPTY; 2]; SETS],
        }
    }

    /// The set of a stack of hash `hash`: its top bits, where a sum of
    /// products by odd multipliers is best mixed (frames.c, hs_key_of_stack).
    #[inline(always)]
    fn set_of(&self, hash: u64) -> usize {
        (hash >> (64 - SETS.trailing_zeros())) as usize
    }

    /// The site cached under `key` in its set's first way: the hot path.
    #[inline(always)]
    pub fn first_way(&self, key: &StackKey) -> Option<(u32, *const T)> {
        let entry = &self.sets[self.set_of(key.hash)][0];
        entry.holds(key).then(|| entry.found())
    }

    /// The site cached under `key` in its set's second way, looked at once
    /// the first has failed.
    #[inline(always)]
    pub fn second_way(&self, key: &StackKey) -> Option<(u32, *const T)> {
        let entry = &self.sets[self.set_of(key.hash)][1];
        entry.holds(key).then(|| entry.found())
    }

    /// Either way's site for `key`.
    #[inline(always)]
    pub fn get(&self, key: &StackKey) -> Option<(u32, *const T)> {
        self.first_way(key).or_else(|| self.second_way(key))
    }

    /// Caches `site` (id `id`) under `key` in its set's first way; the entry
    /// there moves to the second.
    pub fn put(&mut self, key: &StackKey, id: u32, site: *const T) {
        let set = self.set_of(key.hash);
        let ways = &mut self.sets[set];
        ways[1] = ways[0];
        ways[0] = Entry {
            hash: key.hash,
            check: key.check,
            site,
            shape: shape_of(key),
            id,
        };
    }

    /// Drops the entries of the sites `retired` says.
    pub fn forget(&mut self, retired: impl Fn(u32) -> bool) {
        for entry in self.sets.iter_mut().flatten() {
            if retired(entry.id) {
                *entry = Entry::EMPTY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static SITES: [u8; 4] = [0; 4];

    fn key(set: u64, check: u64) -> StackKey {
        StackKey {
            hash: (set << (64 - SETS.trailing_zeros())) | check,
            check,
            nframes: 3,
            total: 3,
        }
    }

    fn site(n: usize) -> *const u8 {
        &SITES[n]
    }

    /// A cache holding `keys` put in order, the i-th as site i + 1.
    fn filled(keys: &[&StackKey]) -> Box<SiteCache<u8>> {
        let mut cache = Box::new(SiteCache::<u8>::new());
        for (i, key) in keys.iter().enumerate() {
            cache.put(key, i as u32 + 1, site(i + 1));
        }
        cache
    }

    #[test]
    fn two_stacks_of_one_set_are_both_kept() {
        let (a, b) = (key(7, 1), key(7, 2));
        let cache = filled(&[&a, &b]);
        assert_eq!(cache.first_way(&b), Some((2, site(2))));
        assert_eq!(cache.first_way(&a), None);
        assert_eq!(cache.second_way(&a), Some((1, site(1))));
        assert_eq!(cache.get(&a), Some((1, site(1))));
        assert_eq!(cache.get(&b), Some((2, site(2))));
    }

    #[test]
    fn a_third_stack_of_the_set_drops_the_oldest() {
        let (a, b, c) = (key(9, 1), key(9, 2), key(9, 3));
        let cache = filled(&[&a, &b, &c]);
        assert_eq!(cache.get(&a), None);
        assert_eq!(cache.get(&b), Some((2, site(2))));
        assert_eq!(cache.get(&c), Some((3, site(3))));
    }

    #[test]
    fn a_key_matches_only_with_its_check_and_shape() {
        let a = key(5, 1);
        let cache = filled(&[&a]);
        let other_check = StackKey {
            check: 9,
            ..key(5, 1)
        };
        let deeper = StackKey {
            total: 4,
            ..key(5, 1)
        };
        let fewer = StackKey {
            nframes: 2,
            ..key(5, 1)
        };
        assert_eq!(cache.get(&other_check), None);
        assert_eq!(cache.get(&deeper), None);
        assert_eq!(cache.get(&fewer), None);
        assert_eq!(cache.get(&a), Some((1, site(1))));
    }

    #[test]
    fn an_empty_entry_holds_no_key_even_of_zero_hashes() {
        let cache = Box::new(SiteCache::<u8>::new());
        let zero = StackKey {
            hash: 0,
            check: 0,
            nframes: 1,
            total: 1,
        };
        assert_eq!(cache.get(&zero), None);
    }

    #[test]
    fn forgotten_sites_leave_both_ways() {
        let (a, b, c) = (key(3, 1), key(3, 2), key(4, 3));
        let mut cache = filled(&[&a, &b, &c]);
        cache.forget(|id| id != 3);
        assert_eq!(cache.get(&a), None);
        assert_eq!(cache.get(&b), None);
        assert_eq!(cache.get(&c), Some((3, site(3))));
    }
}
