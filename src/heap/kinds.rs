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
//! The walk runs no Python code and releases no reference while it holds raw
//! pointers: referents come from `tp_traverse`, sizes of types that keep
//! `object.__sizeof__` are computed directly (without the type attribute
//! cache, whose updates release names: see `objects::keeps_default_sizeof`),
//! and before any other `__sizeof__` runs every object found is held by a
//! strong reference.

use crate::engine::hook;
use crate::engine::relheap::{self, AddressHasher, AddressMap, AddressSet, Paged, Relheap};
use crate::engine::sampling;
use crate::heap::objects;
use pyo3_ffi::*;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::hash::{BuildHasherDefault, Hasher};

/// A u32 per object address (see `Paged`): 0 where unset.
#[derive(Default)]
struct AddressValues {
    values: Paged<u32, 4096>,
}

impl AddressValues {
    #[inline(always)]
    fn slot(&mut self, addr: usize) -> &mut u32 {
        &mut self.values.page_mut(addr >> 16)[(addr >> 4) & 4095]
    }

    #[inline(always)]
    fn get(&self, addr: usize) -> u32 {
        self.values
            .page(addr >> 16)
            .map_or(0, |slots| slots[(addr >> 4) & 4095])
    }
}

/// What a kind is: a type, or a dict by its owner.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Type(usize),
    DictOf(usize),
    DictNoOwner,
}

impl Kind {
    /// One word per kind: type objects are word-aligned, so the low bits
    /// can say which variant.
    fn key(&self) -> usize {
        match *self {
            Kind::Type(ty) => ty,
            Kind::DictOf(owner) => owner | 1,
            Kind::DictNoOwner => 2,
        }
    }
}

impl std::hash::Hash for Kind {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.key());
    }
}

/// How a walk splits each kind further.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Nothing,
    /// By the site that allocated each object (`NO_SITE` where unknown).
    Sites,
    /// As `Sites`, but of the objects smaller than `ALWAYS_LOOKED_UP` only
    /// one in `stride` (in walk order) is looked up, and stands for
    /// `stride` objects in its site's figures: a site lookup costs more
    /// than the rest of the walk, so on big heaps the split is sampled to
    /// bound its time. The kinds' own figures stay exact.
    SampledSites {
        stride: u64,
    },
    /// By the set of kinds of each object's referrers (a signature id from
    /// `Heap::signatures`; 0 is the empty set).
    Referrers,
}

/// The split key of an object heapsite has no allocation record for.
pub const NO_SITE: u64 = u64::MAX;
/// Objects this big are looked up by a sampled site split whatever its
/// stride: they are few (at most one per KiB of heap) and a sample could
/// miss one that is a kind's whole size.
const ALWAYS_LOOKED_UP: u64 = 1024;

#[derive(Default)]
pub struct Tally {
    pub count: u64,
    pub size: u64,
    /// (count, size) per split key (see `Split`).
    pub split: HashMap<u64, (u64, u64)>,
}

pub struct Heap {
    pub kinds: HashMap<Kind, Tally, BuildHasherDefault<AddressHasher>>,
    pub count: u64,
    pub size: u64,
    /// With `Split::Referrers`: each signature's kinds, sorted.
    pub signatures: Vec<Vec<Kind>>,
}

/// The referrer kinds of every object, as interned sets ("signatures"):
/// most objects have one kind of referrer, so a set is a u32 and adding a
/// kind is one memo lookup.
struct Referrers {
    /// The kind of the object being traversed: every referent it reports
    /// gets this kind among its referrers.
    current: Kind,
    of: AddressValues,
    signatures: Vec<Vec<Kind>>,
    by_kinds: HashMap<Vec<Kind>, u32>,
    added: HashMap<(u32, Kind), u32, BuildHasherDefault<AddressHasher>>,
    /// The last (signature, kind) -> signature step: a list's items all
    /// take the same one.
    last_step: (u32, Kind, u32),
}

impl Referrers {
    fn new() -> Self {
        let mut by_kinds = HashMap::new();
        by_kinds.insert(Vec::new(), 0);
        Self {
            current: Kind::DictNoOwner,
            of: AddressValues::default(),
            signatures: vec![Vec::new()],
            by_kinds,
            added: HashMap::default(),
            last_step: (u32::MAX, Kind::DictNoOwner, 0),
        }
    }

    #[inline(always)]
    fn note(&mut self, referent: usize, referrer: Kind) {
        let slot = self.of.slot(referent) as *mut u32;
        // SAFETY: the slot lives in a page box that `step` does not touch.
        let before = unsafe { *slot };
        let after = self.step(before, referrer);
        // SAFETY: as above.
        unsafe { *slot = after };
    }

    #[inline(always)]
    fn step(&mut self, before: u32, referrer: Kind) -> u32 {
        if self.last_step.0 == before && self.last_step.1 == referrer {
            return self.last_step.2;
        }
        let after = match self.added.get(&(before, referrer)) {
            Some(&after) => after,
            None => {
                let mut kinds = self.signatures[before as usize].clone();
                if !kinds.contains(&referrer) {
                    kinds.push(referrer);
                    kinds.sort_by_key(|k| k.key());
                }
                let next = self.signatures.len() as u32;
                let after = *self.by_kinds.entry(kinds.clone()).or_insert(next);
                if after == next {
                    self.signatures.push(kinds);
                }
                self.added.insert((before, referrer), after);
                after
            }
        };
        self.last_step = (before, referrer, after);
        after
    }
}

struct Search {
    /// Whether gc-tracked referents are walked into (see `Reach`).
    through_tracked: bool,
    visited: AddressSet,
    stack: Vec<*mut PyObject>,
    referrers: Option<Referrers>,
    /// Objects keyed so far by a sampled site split.
    sampled: u64,
}

unsafe extern "C" fn push_referent(obj: *mut PyObject, arg: *mut c_void) -> c_int {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let search = &mut *(arg as *mut Search);
        if !obj.is_null() && (search.through_tracked || PyObject_GC_IsTracked(obj) == 0) {
            search.stack.push(obj);
            if let Some(referrers) = search.referrers.as_mut() {
                let current = referrers.current;
                referrers.note(obj as usize, current);
            }
        }
        0
    }
}

/// Which objects a walk counts, beside its roots.
#[derive(Clone, Copy)]
pub struct Reach {
    /// Objects whose block setrelheap saw are walked through but not counted.
    pub relative: bool,
    /// Everything reachable (heapy's heap). Without: only what the roots
    /// reach without passing a gc-tracked object (their strings, numbers,
    /// untracked tuples), the tracked ones counting only as roots. From
    /// `gc.get_objects()` that is nearly the same set (less what the
    /// interpreter keeps frozen for itself); with objects frozen
    /// (`gc.freeze()`), which that list leaves out, it is what was made
    /// since the freeze, not the whole heap through the new objects'
    /// references to old ones (the leak check's rounds,
    /// python/heapsite/pytest_plugin).
    pub through_tracked: bool,
}

/// Walks the heap from `roots` (a list, itself left out), as far as `reach`
/// says.
/// With `blocks`, the block of every object found is added to it.
/// `finish` sees the result while the objects sized by their own
/// `__sizeof__` are still held (types of the others are held by the roots).
///
/// # Safety
/// GIL held; `roots` a list.
pub unsafe fn walk<R>(
    roots: *mut PyObject,
    own: *mut PyObject,
    reach: Reach,
    mut blocks: Option<&mut AddressSet>,
    split: Split,
    finish: impl FnOnce(&Heap) -> R,
) -> R {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; `roots` a list.
    unsafe {
        let exclude = if reach.relative {
            relheap::relheap()
        } else {
            None
        };
        let n_roots = PyList_Size(roots).max(0) as usize;
        let mut search = Search {
            through_tracked: reach.through_tracked,
            visited: AddressSet::default(),
            stack: Vec::with_capacity(n_roots),
            referrers: (split == Split::Referrers).then(Referrers::new),
            sampled: 0,
        };
        search.visited.insert(roots as usize);
        // heapsite's own modules, their dicts and its classes' instances are
        // neither counted nor walked through (heapy leaves its own out too).
        let mut own_types: AddressMap<()> = AddressMap::default();
        search.visited.insert(own as usize);
        search.visited.insert(objects::interned_strings() as usize);
        for i in 0..PyList_Size(own).max(0) {
            let item = PyList_GET_ITEM(own, i);
            search.visited.insert(item as usize);
            if PyType_Check(item) != 0 {
                own_types.insert(item as usize, ());
            }
        }
        for i in (0..n_roots).rev() {
            search.stack.push(PyList_GET_ITEM(roots, i as Py_ssize_t));
        }
        let dict_type = std::ptr::addr_of_mut!(PyDict_Type) as usize;
        let mut heap = Heap {
            kinds: HashMap::default(),
            count: 0,
            size: 0,
            signatures: Vec::new(),
        };
        // Per type: whether its objects are sized and counted at once (they keep
        // object.__sizeof__ and are not dicts, whose kind waits for owners).
        let mut direct_by_type: AddressMap<bool> = AddressMap::default();
        let mut last_type = 0usize;
        let mut last_direct = false;
        let mut later: Vec<*mut PyObject> = Vec::new();
        let mut sized: Vec<(*mut PyObject, u64)> = Vec::new();
        let mut owners: AddressMap<usize> = AddressMap::default();
        while let Some(obj) = search.stack.pop() {
            let addr = obj as usize;
            if !search.visited.insert(addr) {
                continue;
            }
            if !own_types.is_empty() && own_types.contains_key(&(Py_TYPE(obj) as usize)) {
                continue;
            }
            let block = objects::allocation_of(obj);
            if let Some(all) = blocks.as_deref_mut() {
                all.insert(block);
            }
            let ty = Py_TYPE(obj);
            let dict = owned_dict(obj);
            let kind = kind_of(ty as usize, addr, &owners);
            if let Some(referrers) = search.referrers.as_mut() {
                referrers.current = kind;
            }
            if !dict.is_null() {
                owners.insert(dict as usize, ty as usize);
                // A managed __dict__ may be reachable only from its instance's
                // pre-header, which tp_traverse does not report on every version.
                push_referent(dict, &mut search as *mut Search as *mut c_void);
            }
            objects::traverse(
                obj,
                push_referent,
                &mut search as *mut Search as *mut c_void,
            );
            if exclude.is_some_and(|relheap| relheap.leaves_out(block)) {
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
                if split == Split::Referrers {
                    // Referrers found later would be missed: count at the end.
                    sized.push((obj, size));
                } else {
                    let key = split_key(split, &mut search, obj, block, size);
                    count(&mut heap, Kind::Type(last_type), size, key);
                }
            } else {
                later.push(obj);
            }
        }
        for &(obj, size) in &sized {
            let key = split_key(split, &mut search, obj, 0, size);
            count(&mut heap, Kind::Type(Py_TYPE(obj) as usize), size, key);
        }
        // Other __sizeof__ methods may run Python code: hold those objects first.
        for &obj in &later {
            Py_INCREF(obj);
        }
        for &obj in &later {
            let size = objects::size_of(obj, false) as u64;
            let kind = kind_of(Py_TYPE(obj) as usize, obj as usize, &owners);
            let key = split_key(split, &mut search, obj, objects::allocation_of(obj), size);
            count(&mut heap, kind, size, key);
        }
        if let Some(referrers) = search.referrers.take() {
            heap.signatures = referrers.signatures;
        }
        drop(search);
        let result = finish(&heap);
        for &obj in &later {
            Py_DECREF(obj);
        }
        result
    }
}

/// The dict an object owns, if any: a class's, a module's, or an
/// instance's `__dict__` where it exists (never created here).
unsafe fn owned_dict(obj: *mut PyObject) -> *mut PyObject {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        if PyType_Check(obj) != 0 {
            (*(obj as *mut PyTypeObject)).tp_dict
        } else if PyModule_Check(obj) != 0 {
            PyModule_GetDict(obj)
        } else {
            objects::instance_dict(obj)
        }
    }
}

/// An object's kind: its type, except that an exact dict is named by the
/// type of its owner, as far as `owners` knows it.
fn kind_of(ty: usize, addr: usize, owners: &AddressMap<usize>) -> Kind {
    if ty == std::ptr::addr_of!(PyDict_Type) as usize {
        owners
            .get(&addr)
            .map_or(Kind::DictNoOwner, |&owner| Kind::DictOf(owner))
    } else {
        Kind::Type(ty)
    }
}

/// The key an object is split by within its kind, and how many objects
/// it stands for there (0: none, it was not sampled).
#[inline(always)]
unsafe fn split_key(
    split: Split,
    search: &mut Search,
    obj: *mut PyObject,
    block: usize,
    size: u64,
) -> (u64, u64) {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        match split {
            Split::Nothing => (0, 1),
            Split::Sites => site_of(obj, block),
            Split::SampledSites { .. } if size >= ALWAYS_LOOKED_UP => site_of(obj, block),
            Split::SampledSites { stride } => {
                search.sampled += 1;
                if search.sampled.is_multiple_of(stride) {
                    let (site, weight) = site_of(obj, block);
                    (site, weight * stride)
                } else {
                    (0, 0)
                }
            }
            Split::Referrers => (
                search
                    .referrers
                    .as_ref()
                    .map_or(0, |r| r.of.get(obj as usize)) as u64,
                1,
            ),
        }
    }
}

/// The site that allocated an object whose block starts at `block`
/// (`NO_SITE` where unknown), and how many objects it stands for (1, or
/// under sampled tracing see `sampled_site_of`). A block heapsite did not
/// see (taken from a free list, or allocated before tracing) is named by
/// its storage, if that was seen.
#[inline(always)]
unsafe fn site_of(obj: *mut PyObject, block: usize) -> (u64, u64) {
    if sampling::on() {
        // SAFETY: as this function's caller promises.
        return unsafe { sampled_site_of(obj, block) };
    }
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let found = hook::lookup(block).or_else(|| objects::storage_of(obj).and_then(hook::lookup));
        (found.map_or(NO_SITE, |r| r.site as u64), 1)
    }
}

/// `site_of` under sampled tracing: an object is looked up by ONE block,
/// chosen by what the object is, never by what was sampled (its separate
/// storage when it has one, where most of its bytes are; else its own
/// block). Found, it stands for as many objects as that block's weight
/// (src/engine/sampling.rs), so each site's share of a kind is an unbiased
/// estimate; not found (passed over, or allocated before tracing: the two
/// cannot be told apart), for none. Trying the other block when the first
/// is not found would count an object twice as likely to be found with the
/// weight of one (measured: a 20 KB bytearray's line at 318% of its kind).
///
/// # Safety
/// GIL held; `obj` live.
#[cold]
unsafe fn sampled_site_of(obj: *mut PyObject, block: usize) -> (u64, u64) {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    let chosen = unsafe { objects::storage_of(obj) }.unwrap_or(block);
    match hook::lookup(chosen) {
        Some(record) => (
            record.site as u64,
            sampling::weight(record.size, chosen).1 as u64,
        ),
        None => (NO_SITE, 0),
    }
}

/// Counts an object in its kind, and `weight` times under its split key.
#[inline(always)]
fn count(heap: &mut Heap, kind: Kind, size: u64, (key, weight): (u64, u64)) {
    let tally = heap.kinds.entry(kind).or_default();
    tally.count += 1;
    tally.size += size;
    if weight > 0 {
        let entry = tally.split.entry(key).or_default();
        entry.0 += weight;
        entry.1 += size * weight;
    }
    heap.count += 1;
    heap.size += size;
}

struct Breadth {
    queue: std::collections::VecDeque<usize>,
    parent: AddressMap<usize>,
    from: usize,
}

unsafe extern "C" fn enqueue(obj: *mut PyObject, arg: *mut c_void) -> c_int {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let search = &mut *(arg as *mut Breadth);
        let addr = obj as usize;
        if !obj.is_null() && !search.parent.contains_key(&addr) {
            search.parent.insert(addr, search.from);
            search.queue.push_back(addr);
        }
        0
    }
}

/// What a path search looks for.
#[derive(Clone, Copy)]
pub enum Goal {
    /// This very object.
    Object(usize),
    /// Any object of this kind not left out by setrelheap, allocated at
    /// this site when one is given (a site id as `Split::Sites` keys it).
    Kind(Kind, Option<u64>),
}

impl Goal {
    /// Whether `obj` is what this goal looks for; `owners` names the dicts
    /// whose owners the search has met so far.
    unsafe fn is_met_by(
        &self,
        obj: *mut PyObject,
        owners: &AddressMap<usize>,
        exclude: Option<Relheap>,
    ) -> bool {
        // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
        unsafe {
            let addr = obj as usize;
            match *self {
                Goal::Object(target) => addr == target,
                Goal::Kind(kind, site) => {
                    if kind_of(Py_TYPE(obj) as usize, addr, owners) != kind {
                        return false;
                    }
                    let block = objects::allocation_of(obj);
                    !exclude.is_some_and(|relheap| relheap.leaves_out(block))
                        && site.is_none_or(|site| site_of(obj, block).0 == site)
                }
            }
        }
    }
}

/// The shortest chain of references from one of `roots` (a list, usually
/// the modules) to `target`, or to any object of `kind` not left out by
/// setrelheap when `target` is None: [root, ..., object], or empty if none.
///
/// # Safety
/// GIL held; `roots` a list.
pub unsafe fn path_to(
    roots: *mut PyObject,
    own: *mut PyObject,
    target: Option<usize>,
    kind: Option<Kind>,
) -> Vec<usize> {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; `roots` a list.
    unsafe {
        let goal = match (target, kind) {
            (Some(target), _) => Goal::Object(target),
            (None, Some(kind)) => Goal::Kind(kind, None),
            (None, None) => return Vec::new(),
        };
        paths_to(roots, own, &[goal]).swap_remove(0)
    }
}

/// For each goal, the shortest chain of references from one of `roots` to
/// an object meeting it ([root, ..., object], empty if none is reachable),
/// all found by one breadth-first search: finding the paths of several
/// kinds costs about one heap walk, not one walk each.
///
/// # Safety
/// GIL held; `roots` a list.
pub unsafe fn paths_to(
    roots: *mut PyObject,
    own: *mut PyObject,
    goals: &[Goal],
) -> Vec<Vec<usize>> {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; `roots` a list.
    unsafe {
        let exclude = relheap::relheap();
        let mut found: Vec<Vec<usize>> = vec![Vec::new(); goals.len()];
        let mut pending = goals.len();
        let mut search = Breadth {
            queue: std::collections::VecDeque::new(),
            parent: AddressMap::default(),
            from: 0,
        };
        search.parent.insert(roots as usize, 0);
        // Seen before the search starts, so no chain passes through them.
        search.parent.insert(own as usize, 0);
        search
            .parent
            .insert(objects::interned_strings() as usize, 0);
        for i in 0..PyList_Size(own).max(0) {
            search.parent.insert(PyList_GET_ITEM(own, i) as usize, 0);
        }
        for i in 0..PyList_Size(roots).max(0) {
            let root = PyList_GET_ITEM(roots, i) as usize;
            if search.parent.insert(root, 0).is_none() {
                search.queue.push_back(root);
            }
        }
        let mut owners: AddressMap<usize> = AddressMap::default();
        while pending > 0 {
            let Some(addr) = search.queue.pop_front() else {
                break;
            };
            let obj = addr as *mut PyObject;
            for (goal, chain) in goals.iter().zip(found.iter_mut()) {
                if chain.is_empty() && goal.is_met_by(obj, &owners, exclude) {
                    *chain = chain_to(&search.parent, addr);
                    pending -= 1;
                }
            }
            search.from = addr;
            let dict = owned_dict(obj);
            if !dict.is_null() {
                owners.insert(dict as usize, Py_TYPE(obj) as usize);
                enqueue(dict, &mut search as *mut Breadth as *mut c_void);
            }
            objects::traverse(obj, enqueue, &mut search as *mut Breadth as *mut c_void);
        }
        found
    }
}

/// [root, ..., addr], following the search's parent links up from `addr`.
fn chain_to(parent: &AddressMap<usize>, addr: usize) -> Vec<usize> {
    let mut chain = vec![addr];
    let mut at = addr;
    while let Some(&up) = parent.get(&at) {
        if up == 0 {
            break;
        }
        chain.push(up);
        at = up;
    }
    chain.reverse();
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_set_against_a_model() {
        let mut set = AddressSet::default();
        let mut model = std::collections::HashSet::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Spread over a few pages, 16-byte aligned, as objects are.
            let addr = ((x % (1 << 20)) as usize & !15) + 0x7f00_0000_0000;
            if x.is_multiple_of(3) {
                set.remove(addr);
                model.remove(&addr);
            } else {
                assert_eq!(set.insert(addr), model.insert(addr));
            }
            assert_eq!(set.contains(addr), model.contains(&addr));
        }
        for &addr in &model {
            assert!(set.contains(addr));
        }
    }

    #[test]
    fn address_values_default_to_zero() {
        let mut values = AddressValues::default();
        assert_eq!(values.get(0x1000), 0);
        *values.slot(0x1000) = 7;
        *values.slot(0x1010) = 9;
        assert_eq!(
            (values.get(0x1000), values.get(0x1010), values.get(0x1020)),
            (7, 9, 0)
        );
    }
}
