//! The heap-walk functions of the native module (`heapsite.heap()` and
//! `setrelheap()` stand on them).

use crate::engine::relheap::{self, AddressSet};
use crate::heap::kinds::{self, Goal, Heap, Kind, Reach, Split, NO_SITE};
use crate::heap::objects;
use crate::py::api::{int, list_of, none, tuple};
use pyo3_ffi::*;
use std::ptr;

unsafe fn object(addr: usize) -> *mut PyObject {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let obj = addr as *mut PyObject;
        Py_INCREF(obj);
        obj
    }
}

/// A kind as Python gets it: (tag, type), tag 0 = objects of `type`, 1 =
/// dicts owned by instances of `type`, 2 = dicts with no owner (None).
unsafe fn kind_tuple(kind: &Kind) -> *mut PyObject {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let (tag, ty) = match *kind {
            Kind::Type(ty) => (0, object(ty)),
            Kind::DictOf(owner) => (1, object(owner)),
            Kind::DictNoOwner => (2, none()),
        };
        tuple(&[int(tag), ty])
    }
}

/// The walk's rows: (tag, type, count, size, split), split =
/// [(key, count, size), ...]: a site id (-1: none known) or a referrer
/// signature's index, by the walk's split (a sampled site split's figures
/// are estimates: each small object looked up stands for `stride`).
unsafe fn rows(heap: &Heap) -> *mut PyObject {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        list_of(heap.kinds.iter().map(|(kind, tally)| {
            let (tag, ty) = match *kind {
                Kind::Type(ty) => (0, object(ty)),
                Kind::DictOf(owner) => (1, object(owner)),
                Kind::DictNoOwner => (2, none()),
            };
            let sites = list_of(tally.split.iter().map(|(&key, &(count, size))| {
                let key = if key == NO_SITE { -1 } else { key as i64 };
                tuple(&[int(key), int(count as i64), int(size as i64)])
            }));
            // A NULL `sites` makes the row NULL (tuple releases the rest),
            // which ends the list.
            tuple(&[
                int(tag),
                ty,
                int(tally.count as i64),
                int(tally.size as i64),
                sites,
            ])
        }))
    }
}

/// The referrer signatures: [[kind, ...], ...] (see `kind_tuple`).
unsafe fn signatures(heap: &Heap) -> *mut PyObject {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let items: Vec<*mut PyObject> = heap
            .signatures
            .iter()
            .map(|kinds| {
                let members: Vec<*mut PyObject> = kinds.iter().map(|k| kind_tuple(k)).collect();
                tuple(&members)
            })
            .collect();
        tuple(&items)
    }
}

/// heap_walk(roots: list, own: list, split: 0 | 1 | 2, relative: bool[,
/// stride: int[, through_tracked: bool]]) -> (count, size, rows,
/// signatures): split 0 nothing, 1 by allocating site (with a stride above
/// 1, looking up one small object in `stride`), 2 by the kinds of the
/// referrers; `own` lists heapsite's modules, dicts and classes; `relative`
/// leaves out what setrelheap saw; without `through_tracked`, only the
/// roots and what they reach without passing a gc-tracked object.
pub unsafe extern "C" fn heap_walk(_: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        crate::engine::settled();
        let Some((roots, own, split, reach)) = walk_arguments(args) else {
            return ptr::null_mut();
        };
        kinds::walk(roots, own, reach, None, split, |heap| {
            let rows = rows(heap);
            let signatures = signatures(heap);
            tuple(&[
                int(heap.count as i64),
                int(heap.size as i64),
                rows,
                signatures,
            ])
        })
    }
}

/// set_relheap(roots: list | None, own: list[, only: bool]): later walks
/// leave out what is reachable now (None: forget, count everything again);
/// with `only`, they count only the objects of `roots` themselves (from
/// `gc.get_objects()` with older objects frozen: the tracked objects made
/// since the freeze; not what they refer to, which may be older).
pub unsafe extern "C" fn set_relheap(_: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let usage = "set_relheap(roots | None, own[, only])";
        if PyTuple_Check(args) == 0 || !(2..=3).contains(&PyTuple_Size(args)) {
            return crate::py::api::raise(PyExc_TypeError, usage);
        }
        let only = match PyTuple_Size(args) {
            3 => match PyObject_IsTrue(PyTuple_GetItem(args, 2)) {
                -1 => return ptr::null_mut(),
                truth => truth == 1,
            },
            _ => false,
        };
        let roots = PyTuple_GetItem(args, 0);
        let own = PyTuple_GetItem(args, 1);
        if roots == Py_None() {
            relheap::set_relheap(None, false);
            return none();
        }
        if PyList_Check(roots) == 0 || PyList_Check(own) == 0 {
            return crate::py::api::raise(PyExc_TypeError, "set_relheap expects lists (or None)");
        }
        let mut seen = AddressSet::default();
        if only {
            for i in 0..PyList_Size(roots).max(0) {
                seen.insert(objects::allocation_of(PyList_GET_ITEM(roots, i)));
            }
        } else {
            let reach = Reach {
                relative: false,
                through_tracked: true,
            };
            kinds::walk(roots, own, reach, Some(&mut seen), Split::Nothing, |_| ());
        }
        if !crate::engine::hook::keep_every_free() {
            // Wrapped by another tool's hooks since sampling started: the
            // free hook cannot be put back under them.
            const MESSAGE: &[u8] = b"heapsite: setrelheap() while another tool wraps sampled \
tracing: blocks freed since may stay left out\n";
            // SAFETY: writes a static buffer to fd 2; a failed write is ignored.
            libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
        }
        relheap::set_relheap(Some(seen), only);
        none()
    }
}

unsafe fn walk_arguments(
    args: *mut PyObject,
) -> Option<(*mut PyObject, *mut PyObject, Split, Reach)> {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let usage = "heap_walk(roots, own, split, relative[, stride[, through_tracked]])";
        if PyTuple_Check(args) == 0 || !(4..=6).contains(&PyTuple_Size(args)) {
            crate::py::api::raise(PyExc_TypeError, usage);
            return None;
        }
        let roots = PyTuple_GetItem(args, 0);
        let own = PyTuple_GetItem(args, 1);
        if PyList_Check(roots) == 0 || PyList_Check(own) == 0 {
            crate::py::api::raise(PyExc_TypeError, "heap_walk: roots and own must be lists");
            return None;
        }
        let relative = match PyObject_IsTrue(PyTuple_GetItem(args, 3)) {
            -1 => return None,
            truth => truth == 1,
        };
        let stride = match PyTuple_Size(args) {
            4 => 1,
            _ => PyLong_AsLongLong(PyTuple_GetItem(args, 4)),
        };
        let through_tracked = match PyTuple_Size(args) {
            6 => match PyObject_IsTrue(PyTuple_GetItem(args, 5)) {
                -1 => return None,
                truth => truth == 1,
            },
            _ => true,
        };
        if stride < 1 {
            PyErr_Clear();
            crate::py::api::raise(PyExc_ValueError, "heap_walk: stride must be at least 1");
            return None;
        }
        let split = match PyLong_AsLong(PyTuple_GetItem(args, 2)) {
            0 => Split::Nothing,
            1 if stride == 1 => Split::Sites,
            1 => Split::SampledSites {
                stride: stride as u64,
            },
            2 => Split::Referrers,
            _ => {
                PyErr_Clear();
                crate::py::api::raise(PyExc_ValueError, "heap_walk: split must be 0, 1 or 2");
                return None;
            }
        };
        let reach = Reach {
            relative,
            through_tracked,
        };
        Some((roots, own, split, reach))
    }
}

/// path_to(roots, own, target | None, kind_tag, kind_type) -> [root, ...,
/// object]: the shortest chain of references from a root, never through
/// `own` (heapsite's modules, as the walks leave them out).
pub unsafe extern "C" fn path_to(_: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        if PyTuple_Check(args) == 0 || PyTuple_Size(args) != 5 {
            return crate::py::api::raise(
                PyExc_TypeError,
                "path_to(roots, own, target, kind_tag, kind_type)",
            );
        }
        let roots = PyTuple_GetItem(args, 0);
        let own = PyTuple_GetItem(args, 1);
        if PyList_Check(roots) == 0 || PyList_Check(own) == 0 {
            return crate::py::api::raise(PyExc_TypeError, "path_to: roots and own must be lists");
        }
        let target = PyTuple_GetItem(args, 2);
        let target = (target != Py_None()).then_some(target as usize);
        let tag = PyLong_AsLong(PyTuple_GetItem(args, 3));
        let ty = PyTuple_GetItem(args, 4) as usize;
        let kind = kind_from(tag, ty);
        if PyErr_Occurred().is_null() {
            let chain = kinds::path_to(roots, own, target, kind);
            let items: Vec<*mut PyObject> = chain.into_iter().map(|addr| object(addr)).collect();
            tuple(&items)
        } else {
            ptr::null_mut()
        }
    }
}

/// The kind a (tag, type) pair names (see `kind_tuple`), or None for a
/// tag that names none.
fn kind_from(tag: std::ffi::c_long, ty: usize) -> Option<Kind> {
    match tag {
        0 => Some(Kind::Type(ty)),
        1 => Some(Kind::DictOf(ty)),
        2 => Some(Kind::DictNoOwner),
        _ => None,
    }
}

/// One goal of `paths_to` from its (tag, type, site) tuple, site -1 = any.
unsafe fn goal_from(item: *mut PyObject) -> Option<Goal> {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        if PyTuple_Check(item) == 0 || PyTuple_Size(item) != 3 {
            return None;
        }
        let tag = PyLong_AsLong(PyTuple_GetItem(item, 0));
        let ty = PyTuple_GetItem(item, 1) as usize;
        let site = PyLong_AsLongLong(PyTuple_GetItem(item, 2));
        if !PyErr_Occurred().is_null() {
            return None;
        }
        let site = u64::try_from(site).ok();
        Some(Goal::Kind(kind_from(tag, ty)?, site))
    }
}

/// paths_to(roots, own, goals) -> [(root, ..., object) | (), ...]: for each
/// goal (kind_tag, kind_type, site), site -1 for any, the shortest chain of
/// references from a root to an object of that kind allocated at that site;
/// one search for all goals.
pub unsafe extern "C" fn paths_to(_: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let usage = "paths_to(roots: list, own: list, goals: list of (kind_tag, kind_type, site))";
        if PyTuple_Check(args) == 0 || PyTuple_Size(args) != 3 {
            return crate::py::api::raise(PyExc_TypeError, usage);
        }
        let (roots, own, items) = (
            PyTuple_GetItem(args, 0),
            PyTuple_GetItem(args, 1),
            PyTuple_GetItem(args, 2),
        );
        if PyList_Check(roots) == 0 || PyList_Check(own) == 0 || PyList_Check(items) == 0 {
            return crate::py::api::raise(PyExc_TypeError, usage);
        }
        let mut goals = Vec::new();
        for i in 0..PyList_Size(items) {
            match goal_from(PyList_GET_ITEM(items, i)) {
                Some(goal) => goals.push(goal),
                None => {
                    PyErr_Clear();
                    return crate::py::api::raise(PyExc_TypeError, usage);
                }
            }
        }
        let chains: Vec<*mut PyObject> = kinds::paths_to(roots, own, &goals)
            .into_iter()
            .map(|chain| {
                let items: Vec<*mut PyObject> =
                    chain.into_iter().map(|addr| object(addr)).collect();
                tuple(&items)
            })
            .collect();
        tuple(&chains)
    }
}

/// instance_dict(obj) -> the instance's __dict__ if it exists, else None;
/// never creates one (unlike `obj.__dict__` on 3.11+).
pub unsafe extern "C" fn instance_dict(_: *mut PyObject, obj: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let dict = crate::heap::objects::instance_dict(obj);
        if dict.is_null() {
            return none();
        }
        Py_INCREF(dict);
        dict
    }
}
