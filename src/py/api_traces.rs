//! Trace-level functions of the native module, in the shapes the standard
//! library's `tracemalloc.py` expects from `_tracemalloc`, so that
//! `heapsite.tracemalloc` can run that very module on heapsite's engine.

use crate::engine::frames;
use crate::engine::hook;
use crate::engine::sites::{self, SiteId};
use crate::heap::objects;
use pyo3_ffi::*;
use std::collections::HashMap;
use std::ptr;

use crate::py::api::{int, none, tuple};

/// tracemalloc reports every PyMem allocation in domain 0.
const DEFAULT_DOMAIN: i64 = 0;

/// A site's frames as tracemalloc has them, most recent first; a site with
/// no Python frame gets tracemalloc's `('<unknown>', 0)`.
unsafe fn frame_pairs(id: SiteId) -> *mut PyObject {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let frames = sites::site(id).frames();
        if frames.is_empty() {
            let unknown = PyUnicode_FromString(c"<unknown>".as_ptr());
            return tuple(&[tuple(&[unknown, int(0)])]);
        }
        // As tracemalloc has them: (filename, lineno).
        let items: Vec<*mut PyObject> = frames::resolve_all(&frames)
            .into_iter()
            .map(|resolved| {
                Py_INCREF(resolved.filename);
                tuple(&[resolved.filename, int(resolved.lineno as i64)])
            })
            .collect();
        tuple(&items)
    }
}

fn total_depth(id: SiteId) -> i64 {
    (sites::site(id).total_depth() as i64).max(1)
}

/// set_count_total(flag): whether sites record the whole stack depth.
pub unsafe extern "C" fn set_count_total(_: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let on = PyObject_IsTrue(arg);
        if on < 0 {
            return ptr::null_mut();
        }
        sites::set_count_total_depth(on == 1);
        none()
    }
}

/// traces() -> [(domain, size, frames, total_nframe), ...] for every live
/// allocation (every sampled one, under sampled tracing):
/// `_tracemalloc._get_traces()`.
pub unsafe extern "C" fn traces(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let engine = crate::engine::settled();
        let mut live: Vec<(i64, usize, SiteId)> = Vec::new();
        // Under sampled tracing a trace is one sampled block, its size the
        // bytes it stands for (src/engine/sampling.rs), so that sums of
        // traces are estimates like every other figure.
        engine.for_each_live(|addr, record| {
            let size = crate::engine::sampling::weight(record.size, addr).0 as usize;
            live.push((DEFAULT_DOMAIN, size, record.site))
        });
        crate::native::tracked::for_each(|domain, size, site| {
            live.push((domain as i64, size, site))
        });
        let list = PyList_New(live.len() as Py_ssize_t);
        if list.is_null() {
            return list;
        }
        // One frames tuple and one depth per site, shared by its traces.
        let mut per_site: HashMap<SiteId, (*mut PyObject, *mut PyObject)> = HashMap::new();
        let mut failed = false;
        for (i, &(domain, size, id)) in live.iter().enumerate() {
            let &mut (frames, depth) = per_site
                .entry(id)
                .or_insert_with(|| (frame_pairs(id), int(total_depth(id))));
            if frames.is_null() || depth.is_null() {
                failed = true;
                break;
            }
            Py_INCREF(frames);
            Py_INCREF(depth);
            let item = tuple(&[int(domain), int(size as i64), frames, depth]);
            if item.is_null() {
                failed = true;
                break;
            }
            PyList_SET_ITEM(list, i as Py_ssize_t, item);
        }
        for (_, (frames, depth)) in per_site {
            Py_XDECREF(frames);
            Py_XDECREF(depth);
        }
        if failed {
            Py_DECREF(list);
            return ptr::null_mut();
        }
        list
    }
}

/// object_traceback(obj) -> frames or None: `_get_object_traceback(obj)`.
pub unsafe extern "C" fn object_traceback(_: *mut PyObject, obj: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        match hook::lookup(objects::allocation_of(obj)) {
            Some(record) => frame_pairs(record.site),
            None => none(),
        }
    }
}

/// object_site(obj) -> (site_id, size) or None.
pub unsafe extern "C" fn object_site(_: *mut PyObject, obj: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        match hook::lookup(objects::allocation_of(obj)) {
            Some(record) => tuple(&[int(record.site as i64), int(record.size as i64)]),
            None => none(),
        }
    }
}

/// site_depth(site_id) -> the whole stack depth recorded for it.
pub unsafe extern "C" fn site_depth(_: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        match crate::py::api::site_id(arg) {
            Ok(id) => int(total_depth(id)),
            Err(error) => error,
        }
    }
}

/// follow_reuse(on) -> bool: move blocks of objects reused from free lists
/// to the reusing line (3.13+; False where the version cannot).
pub unsafe extern "C" fn follow_reuse(_: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let on = PyObject_IsTrue(arg);
        if on < 0 {
            return std::ptr::null_mut();
        }
        PyBool_FromLong(crate::heap::objects::follow_reuse(on == 1) as std::ffi::c_long)
    }
}
