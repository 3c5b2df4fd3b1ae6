//! Sets and maps keyed by object address, and the `setrelheap()` set: the
//! blocks later heap walks leave out. The set lives in the engine because the
//! free hook keeps it right (a block freed since is taken out) on every
//! traced free; the walk (heap/kinds.rs) reads it.

use crate::engine::sync::GilCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};

/// Hashes addresses: a multiply is enough for pointers.
#[derive(Default)]
pub struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01B3);
        }
    }
    fn write_usize(&mut self, value: usize) {
        self.0 = ((value as u64) >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub type AddressMap<V> = HashMap<usize, V, BuildHasherDefault<AddressHasher>>;

/// Per-address data in 64 KiB pages of address space, one slot per 16
/// bytes: objects are at least 16 bytes, so `addr >> 4` tells them apart,
/// and objects made together sit together, so most accesses hit the page
/// used last, which is remembered.
pub struct Paged<T: Copy + Default, const N: usize> {
    pages: AddressMap<Box<[T; N]>>,
    last: usize,
    last_page: Option<*mut [T; N]>,
}

impl<T: Copy + Default, const N: usize> Default for Paged<T, N> {
    fn default() -> Self {
        Self {
            pages: AddressMap::default(),
            last: 0,
            last_page: None,
        }
    }
}

impl<T: Copy + Default, const N: usize> Paged<T, N> {
    #[inline(always)]
    pub fn page_mut(&mut self, page: usize) -> &mut [T; N] {
        if let (true, Some(slots)) = (page == self.last, self.last_page) {
            // SAFETY: points into a box owned by `pages`, which never frees one.
            return unsafe { &mut *slots };
        }
        let slots: *mut [T; N] = &mut **self
            .pages
            .entry(page)
            .or_insert_with(|| Box::new([T::default(); N]));
        self.last = page;
        self.last_page = Some(slots);
        // SAFETY: as above.
        unsafe { &mut *slots }
    }

    #[inline(always)]
    pub fn page(&self, page: usize) -> Option<&[T; N]> {
        self.pages.get(&page).map(|slots| &**slots)
    }
}

/// A set of object addresses, a bit each (see `Paged`).
#[derive(Default)]
pub struct AddressSet {
    bits: Paged<u64, 64>,
}

impl AddressSet {
    /// Adds `addr`; false if it was there already.
    #[inline(always)]
    pub fn insert(&mut self, addr: usize) -> bool {
        let (page, bit) = (addr >> 16, (addr >> 4) & 4095);
        let word = &mut self.bits.page_mut(page)[bit >> 6];
        let mask = 1u64 << (bit & 63);
        let fresh = *word & mask == 0;
        *word |= mask;
        fresh
    }

    /// Removes `addr` (its block was freed).
    #[inline(always)]
    pub fn remove(&mut self, addr: usize) {
        let (page, bit) = (addr >> 16, (addr >> 4) & 4095);
        if self.bits.page(page).is_some() {
            self.bits.page_mut(page)[bit >> 6] &= !(1u64 << (bit & 63));
        }
    }

    #[inline(always)]
    pub fn contains(&self, addr: usize) -> bool {
        let (page, bit) = (addr >> 16, (addr >> 4) & 4095);
        self.bits
            .page(page)
            .is_some_and(|bits| bits[bit >> 6] & (1u64 << (bit & 63)) != 0)
    }
}

/// The blocks of the objects `setrelheap()` saw (allocation addresses, so
/// that the free hook can tell): later walks leave them out. While heapsite
/// traces, a block freed since is taken out of the set, so an object created
/// later at the same address counts as new.
static RELHEAP: GilCell<Option<AddressSet>> = GilCell::new(None);
static RELHEAP_SET: AtomicBool = AtomicBool::new(false);
/// Whether the set holds the only blocks counted, not those left out: the
/// leak check's "made since the freeze" (see `set_relheap`).
static RELHEAP_ONLY: AtomicBool = AtomicBool::new(false);

/// The setrelheap() set as the walks read it.
#[derive(Clone, Copy)]
pub struct Relheap<'a> {
    set: &'a AddressSet,
    only: bool,
}

impl Relheap<'_> {
    /// Whether an object allocated at `block` is left out (not new).
    #[inline(always)]
    pub fn leaves_out(&self, block: usize) -> bool {
        self.set.contains(block) != self.only
    }
}

/// The set, if one is kept. GIL held, and no `set_relheap` while the answer
/// is used.
pub unsafe fn relheap() -> Option<Relheap<'static>> {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above).
    unsafe {
        RELHEAP.get().as_ref().map(|set| Relheap {
            set,
            only: RELHEAP_ONLY.load(Ordering::Relaxed),
        })
    }
}

/// Whether a setrelheap() set is kept (every free must then be told).
#[inline(always)]
pub fn is_kept() -> bool {
    RELHEAP_SET.load(Ordering::Relaxed)
}

/// Called by the free hook for every traced free. GIL held.
#[inline(always)]
pub fn forget_freed(addr: usize) {
    if RELHEAP_SET.load(Ordering::Relaxed) {
        // SAFETY: GIL held by the hook's caller.
        if let Some(set) = unsafe { RELHEAP.get() } {
            set.remove(addr);
        }
    }
}

/// Sets (or with None, clears) the blocks later walks leave out; with
/// `only`, the only blocks they count (a block freed since is then never
/// counted again, whatever is made there later). GIL held.
pub fn set_relheap(blocks: Option<AddressSet>, only: bool) {
    RELHEAP_SET.store(blocks.is_some(), Ordering::Relaxed);
    RELHEAP_ONLY.store(only, Ordering::Relaxed);
    // SAFETY: GIL held by the API caller.
    unsafe { *RELHEAP.get() = blocks };
    crate::engine::exact_path::refresh();
}
