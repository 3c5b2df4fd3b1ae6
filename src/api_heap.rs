//! The heap-walk functions of the native module (`heapsite.heap()` and
//! `setrelheap()` stand on them).

use crate::api::{int, none, tuple};
use crate::kinds::{self, AddressSet, Heap, Kind};
use pyo3_ffi::*;
use std::ptr;

unsafe fn object(addr: usize) -> *mut PyObject {
    let obj = addr as *mut PyObject;
    Py_INCREF(obj);
    obj
}

/// The walk's rows: (tag, type, count, size, sites), tag 0 = objects of
/// `type`, 1 = dicts owned by instances of `type`, 2 = dicts with no owner
/// (`type` None); sites = [(site_id or -1, count, size), ...].
unsafe fn rows(heap: &Heap) -> *mut PyObject {
    let list = PyList_New(0);
    if list.is_null() {
        return list;
    }
    for (kind, tally) in &heap.kinds {
        let (tag, ty) = match *kind {
            Kind::Type(ty) => (0, object(ty)),
            Kind::DictOf(owner) => (1, object(owner)),
            Kind::DictNoOwner => (2, none()),
        };
        let sites = PyList_New(0);
        for (site, &(count, size)) in &tally.sites {
            let id = site.map_or(-1, |id| id as i64);
            let item = tuple(&[int(id), int(count as i64), int(size as i64)]);
            if sites.is_null() || item.is_null() || PyList_Append(sites, item) < 0 {
                Py_XDECREF(item);
                Py_XDECREF(sites);
                Py_DECREF(list);
                Py_DECREF(ty);
                return ptr::null_mut();
            }
            Py_DECREF(item);
        }
        let row = tuple(&[
            int(tag),
            ty,
            int(tally.count as i64),
            int(tally.size as i64),
            sites,
        ]);
        if row.is_null() || PyList_Append(list, row) < 0 {
            Py_XDECREF(row);
            Py_DECREF(list);
            return ptr::null_mut();
        }
        Py_DECREF(row);
    }
    list
}

/// heap_walk(roots: list, join_sites: bool) -> (count, size, rows)
pub unsafe extern "C" fn heap_walk(_: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    let Some((roots, join)) = roots_and_flag(args) else {
        return ptr::null_mut();
    };
    kinds::walk(roots, true, None, join, |heap| {
        let rows = rows(heap);
        tuple(&[int(heap.count as i64), int(heap.size as i64), rows])
    })
}

/// set_relheap(roots: list | None): later walks leave out what is reachable
/// now (None: forget, count everything again).
pub unsafe extern "C" fn set_relheap(_: *mut PyObject, roots: *mut PyObject) -> *mut PyObject {
    if roots == Py_None() {
        kinds::set_relheap(None);
        return none();
    }
    if PyList_Check(roots) == 0 {
        return crate::api::raise(
            PyExc_TypeError,
            "set_relheap expects a list of roots or None",
        );
    }
    let mut seen = AddressSet::default();
    kinds::walk(roots, false, Some(&mut seen), false, |_| ());
    kinds::set_relheap(Some(seen));
    none()
}

unsafe fn roots_and_flag(args: *mut PyObject) -> Option<(*mut PyObject, bool)> {
    if PyTuple_Check(args) == 0 || PyTuple_Size(args) != 2 {
        crate::api::raise(PyExc_TypeError, "heap_walk(roots, join_sites)");
        return None;
    }
    let roots = PyTuple_GetItem(args, 0);
    if PyList_Check(roots) == 0 {
        crate::api::raise(PyExc_TypeError, "heap_walk: roots must be a list");
        return None;
    }
    let flag = PyObject_IsTrue(PyTuple_GetItem(args, 1));
    if flag < 0 {
        return None;
    }
    Some((roots, flag == 1))
}
