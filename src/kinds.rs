//! The heap walk behind `heapsite.heap()`: every object reachable from the
//! gc-tracked ones (so floats, complex, str, int inside containers count too),
//! once each, with its kind and its size as `sys.getsizeof` gives it, joined
//! with the call site that allocated it where heapsite has the record.
//!
//! Kinds as heapy has them: an object's type, except that an exact dict is
//! "dict of T" when it is the `__dict__` of an instance of T (a module's dict:
//! "dict of module"; a class's: "dict of type") and "dict (no owner)" else.
//! Dicts are only found, never created: on 3.11+ most instances keep their
//! attributes without a dict until asked, and the walk does not ask.
//!
//! The walk runs no Python code while it holds raw pointers: referents come
//! from `tp_traverse`, sizes of types that keep `object.__sizeof__` are
//! computed directly, and before any other `__sizeof__` runs every object
//! found is held by a strong reference.

use crate::hook;
use crate::objects;
use crate::sites::SiteId;
use crate::sync::GilCell;
use pyo3_ffi::*;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
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

type AddressMap<V> = HashMap<usize, V, BuildHasherDefault<AddressHasher>>;

/// A set of object addresses as bits, one per 16 bytes of address space in
/// 64 KiB pages: objects are at least 16 bytes, so `addr >> 4` tells them
/// apart, and objects made together sit together, so most tests hit the page
/// tested last and cost a shift and a mask.
#[derive(Default)]
pub struct AddressSet {
    pages: AddressMap<Box<[u64; 64]>>,
    last: usize,
    last_bits: Option<*mut [u64; 64]>,
}

impl AddressSet {
    #[inline(always)]
    fn bits(&mut self, page: usize) -> &mut [u64; 64] {
        if let (true, Some(bits)) = (page == self.last, self.last_bits) {
            // SAFETY: points into a box owned by `pages`, which never frees one.
            return unsafe { &mut *bits };
        }
        let bits: *mut [u64; 64] =
            &mut **self.pages.entry(page).or_insert_with(|| Box::new([0; 64]));
        self.last = page;
        self.last_bits = Some(bits);
        // SAFETY: as above.
        unsafe { &mut *bits }
    }

    /// Adds `addr`; false if it was there already.
    #[inline(always)]
    pub fn insert(&mut self, addr: usize) -> bool {
        let (page, bit) = (addr >> 16, (addr >> 4) & 4095);
        let word = &mut self.bits(page)[bit >> 6];
        let mask = 1u64 << (bit & 63);
        let fresh = *word & mask == 0;
        *word |= mask;
        fresh
    }

    /// Removes `addr` (its block was freed).
    #[inline(always)]
    pub fn remove(&mut self, addr: usize) {
        let (page, bit) = (addr >> 16, (addr >> 4) & 4095);
        if let Some(bits) = self.pages.get_mut(&page) {
            bits[bit >> 6] &= !(1u64 << (bit & 63));
        }
    }

    #[inline(always)]
    pub fn contains(&self, addr: usize) -> bool {
        let (page, bit) = (addr >> 16, (addr >> 4) & 4095);
        self.pages
            .get(&page)
            .is_some_and(|bits| bits[bit >> 6] & (1u64 << (bit & 63)) != 0)
    }
}

/// The blocks of the objects `setrelheap()` saw (allocation addresses, so
/// that the free hook can tell): later walks leave them out. While heapsite
/// traces, a block freed since is taken out of the set, so an object created
/// later at the same address counts as new.
static RELHEAP: GilCell<Option<AddressSet>> = GilCell::new(None);
static RELHEAP_SET: AtomicBool = AtomicBool::new(false);

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

/// Sets (or with None, clears) the blocks later walks leave out. GIL held.
pub fn set_relheap(blocks: Option<AddressSet>) {
    RELHEAP_SET.store(blocks.is_some(), Ordering::Relaxed);
    // SAFETY: GIL held by the API caller.
    unsafe { *RELHEAP.get() = blocks };
}

/// What a kind is: a type, or a dict by its owner.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Type(usize),
    DictOf(usize),
    DictNoOwner,
}

impl std::hash::Hash for Kind {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Type objects are word-aligned: the low bits say which variant.
        state.write_usize(match *self {
            Kind::Type(ty) => ty,
            Kind::DictOf(owner) => owner | 1,
            Kind::DictNoOwner => 2,
        });
    }
}

#[derive(Default)]
pub struct Tally {
    pub count: u64,
    pub size: u64,
    /// Per allocating site, when the walk joined sites: (count, size).
    pub sites: HashMap<Option<SiteId>, (u64, u64)>,
}

pub struct Heap {
    pub kinds: HashMap<Kind, Tally, BuildHasherDefault<AddressHasher>>,
    pub count: u64,
    pub size: u64,
}

struct Search {
    visited: AddressSet,
    stack: Vec<*mut PyObject>,
}

unsafe extern "C" fn push_referent(obj: *mut PyObject, arg: *mut c_void) -> c_int {
    let search = &mut *(arg as *mut Search);
    if !obj.is_null() {
        search.stack.push(obj);
    }
    0
}

/// Walks the heap from `roots` (a list, itself left out). With `relative`,
/// objects whose block setrelheap saw are walked through but not counted.
/// With `blocks`, the block of every object found is added to it.
/// `finish` sees the result while the objects sized by their own
/// `__sizeof__` are still held (types of the others are held by the roots).
///
/// # Safety
/// GIL held; `roots` a list.
pub unsafe fn walk<R>(
    roots: *mut PyObject,
    relative: bool,
    mut blocks: Option<&mut AddressSet>,
    join_sites: bool,
    finish: impl FnOnce(&Heap) -> R,
) -> R {
    let exclude = if relative {
        RELHEAP.get().as_ref()
    } else {
        None
    };
    let n_roots = PyList_Size(roots).max(0) as usize;
    let mut search = Search {
        visited: AddressSet::default(),
        stack: Vec::with_capacity(n_roots),
    };
    search.visited.insert(roots as usize);
    for i in (0..n_roots).rev() {
        search.stack.push(PyList_GET_ITEM(roots, i as Py_ssize_t));
    }
    let dict_type = std::ptr::addr_of_mut!(PyDict_Type) as usize;
    let mut heap = Heap {
        kinds: HashMap::default(),
        count: 0,
        size: 0,
    };
    // Per type: whether its objects are sized and counted at once (they keep
    // object.__sizeof__ and are not dicts, whose kind waits for owners).
    let mut direct_by_type: AddressMap<bool> = AddressMap::default();
    let mut last_type = 0usize;
    let mut last_direct = false;
    let mut later: Vec<*mut PyObject> = Vec::new();
    let mut owners: AddressMap<usize> = AddressMap::default();
    while let Some(obj) = search.stack.pop() {
        let addr = obj as usize;
        if !search.visited.insert(addr) {
            continue;
        }
        let block = objects::allocation_of(obj);
        if let Some(all) = blocks.as_deref_mut() {
            all.insert(block);
        }
        let ty = Py_TYPE(obj);
        let dict = if PyType_Check(obj) != 0 {
            (*(obj as *mut PyTypeObject)).tp_dict
        } else if PyModule_Check(obj) != 0 {
            PyModule_GetDict(obj)
        } else {
            objects::instance_dict(obj)
        };
        if !dict.is_null() {
            owners.insert(dict as usize, ty as usize);
            // A managed __dict__ may be reachable only from its instance's
            // pre-header, which tp_traverse does not report on every version.
            search.stack.push(dict);
        }
        objects::traverse(
            obj,
            push_referent,
            &mut search as *mut Search as *mut c_void,
        );
        if exclude.is_some_and(|set| set.contains(block)) {
            continue;
        }
        if ty as usize != last_type {
            last_type = ty as usize;
            last_direct = *direct_by_type
                .entry(last_type)
                .or_insert_with(|| last_type != dict_type && objects::keeps_default_sizeof(ty));
        }
        if last_direct {
            let size = objects::size_of(obj, true) as u64;
            count(
                &mut heap,
                Kind::Type(last_type),
                obj,
                block,
                size,
                join_sites,
            );
        } else {
            later.push(obj);
        }
    }
    drop(search);
    // Other __sizeof__ methods may run Python code: hold those objects first.
    for &obj in &later {
        Py_INCREF(obj);
    }
    for &obj in &later {
        let ty = Py_TYPE(obj) as usize;
        let size = objects::size_of(obj, false) as u64;
        let kind = if ty == dict_type {
            owners
                .get(&(obj as usize))
                .map_or(Kind::DictNoOwner, |&owner| Kind::DictOf(owner))
        } else {
            Kind::Type(ty)
        };
        count(
            &mut heap,
            kind,
            obj,
            objects::allocation_of(obj),
            size,
            join_sites,
        );
    }
    let result = finish(&heap);
    for &obj in &later {
        Py_DECREF(obj);
    }
    result
}

#[inline(always)]
unsafe fn count(
    heap: &mut Heap,
    kind: Kind,
    obj: *mut PyObject,
    block: usize,
    size: u64,
    join_sites: bool,
) {
    let tally = heap.kinds.entry(kind).or_default();
    tally.count += 1;
    tally.size += size;
    if join_sites {
        // A block heapsite did not see (taken from a free list, or allocated
        // before tracing) is named by its storage, if that was seen.
        let site = hook::lookup(block)
            .or_else(|| objects::storage_of(obj).and_then(hook::lookup))
            .map(|r| r.site);
        let entry = tally.sites.entry(site).or_default();
        entry.0 += 1;
        entry.1 += size;
    }
    heap.count += 1;
    heap.size += size;
}
