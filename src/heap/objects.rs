//! The thin, unsafe edge to `objects.c`: object internals for the heap walk.
//! Every function needs the GIL and a live object.

use pyo3_ffi::{PyObject, PyTypeObject, Py_ssize_t};
use std::ffi::{c_int, c_void};

pub type Visit = unsafe extern "C" fn(*mut PyObject, *mut c_void) -> c_int;

extern "C" {
    fn hs_allocation_of(obj: *mut PyObject) -> *mut c_void;
    fn hs_instance_dict(obj: *mut PyObject) -> *mut PyObject;
    fn hs_default_sizeof(obj: *mut PyObject) -> Py_ssize_t;
    fn hs_sizeof(obj: *mut PyObject) -> Py_ssize_t;
    fn hs_traverse(obj: *mut PyObject, visit: Visit, arg: *mut c_void) -> c_int;
    fn hs_keeps_default_sizeof(ty: *mut PyTypeObject) -> c_int;
    fn hs_storage_of(obj: *mut PyObject) -> *mut c_void;
    fn hs_follow_reuse(on: c_int) -> c_int;
    fn hs_interned_strings() -> *mut PyObject;
}

/// The interpreter's interned-strings dict where the collector tracks it
/// (3.14+), else null: walks leave it out (see objects.c).
///
/// # Safety
/// GIL held.
pub unsafe fn interned_strings() -> *mut PyObject {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held.
    unsafe { hs_interned_strings() }
}

/// Follows objects the interpreter hands out from free lists (see
/// objects.c); returns whether this version can.
///
/// # Safety
/// GIL held.
pub unsafe fn follow_reuse(on: bool) -> bool {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held.
    unsafe { hs_follow_reuse(on as c_int) != 0 }
}

/// Called by the reference tracer for each object created.
///
/// # Safety
/// GIL held; `op` a new, live object.
#[no_mangle]
pub unsafe extern "C" fn hs_object_created(op: *mut PyObject) {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; `op` a new, live object.
    unsafe {
        crate::engine::hook::object_created(allocation_of(op));
    }
}

/// A container's separately allocated storage (a list's item array), if any.
///
/// # Safety
/// GIL held; `obj` live.
pub unsafe fn storage_of(obj: *mut PyObject) -> Option<usize> {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; `obj` live.
    unsafe {
        let storage = hs_storage_of(obj);
        (!storage.is_null()).then_some(storage as usize)
    }
}

/// Whether objects of `ty` get their size from `object.__sizeof__` (then
/// `size_of(obj, true)` computes it without calling into Python). Releases
/// no reference, so the heap walk may call it while it holds borrowed
/// pointers (it bypasses the type attribute cache: see objects.c).
///
/// # Safety
/// GIL held; `ty` a live type.
pub unsafe fn keeps_default_sizeof(ty: *mut PyTypeObject) -> bool {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; `ty` a live type.
    unsafe { hs_keeps_default_sizeof(ty) == 1 }
}

/// The address the allocator returned for the object (before its pre-header).
///
/// # Safety
/// GIL held; `obj` live.
pub unsafe fn allocation_of(obj: *mut PyObject) -> usize {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; `obj` live.
    unsafe { hs_allocation_of(obj) as usize }
}

/// The instance's `__dict__` if it exists (borrowed); never creates one.
///
/// # Safety
/// GIL held; `obj` live.
pub unsafe fn instance_dict(obj: *mut PyObject) -> *mut PyObject {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; `obj` live.
    unsafe { hs_instance_dict(obj) }
}

/// `sys.getsizeof(obj)`, computed directly when its type keeps
/// `object.__sizeof__` (`default` true), else by asking the object.
///
/// # Safety
/// GIL held; `obj` live.
pub unsafe fn size_of(obj: *mut PyObject, default: bool) -> usize {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; `obj` live.
    unsafe {
        let size = if default {
            hs_default_sizeof(obj)
        } else {
            hs_sizeof(obj)
        };
        size.max(0) as usize
    }
}

/// Calls `visit(referent, arg)` for each object `obj` refers to.
///
/// # Safety
/// GIL held; `obj` live; `visit` must not run Python code.
pub unsafe fn traverse(obj: *mut PyObject, visit: Visit, arg: *mut c_void) {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; `obj` live; `visit` must not run Python code.
    unsafe {
        hs_traverse(obj, visit, arg);
    }
}
