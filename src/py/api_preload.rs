//! Native-module functions for LD_PRELOAD mode and capture writing: native
//! memory on/off, the memory-over-time sampler, and the preload state.

use crate::engine::hook;
use crate::native::{preload, sigterm, timeline};
use crate::py::api::{int, none, raise, tuple};
use pyo3_ffi::*;
use std::ffi::c_long;

/// set_native(on: bool): record malloc/mmap & co. (preloaded only).
pub unsafe extern "C" fn set_native(_: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let on = PyObject_IsTrue(arg);
        if on < 0 {
            return std::ptr::null_mut();
        }
        if on == 1 && !preload::is_preloaded() {
            return raise(
                PyExc_RuntimeError,
                "native memory is tracked only when heapsite is preloaded: \
             LD_PRELOAD=$(heapsite preload-path) or `heapsite run --native`",
            );
        }
        hook::set_native(on == 1);
        none()
    }
}

/// set_native_frames(on: bool): native frames above the Python ones in
/// the sites of native blocks.
pub unsafe extern "C" fn set_native_frames(_: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let on = PyObject_IsTrue(arg);
        if on < 0 {
            return std::ptr::null_mut();
        }
        crate::engine::native_frames::set_enabled(on == 1);
        none()
    }
}

pub unsafe extern "C" fn native(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe { PyBool_FromLong(hook::native() as c_long) }
}

pub unsafe extern "C" fn preloaded(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe { PyBool_FromLong(preload::is_preloaded() as c_long) }
}

/// preload_finished(): the capture at exit is written (or not wanted), so
/// `os._exit` need not write it.
pub unsafe extern "C" fn preload_finished(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        preload::mark_finished();
        none()
    }
}

/// timeline_start(interval_seconds: float)
pub unsafe extern "C" fn timeline_start(_: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let seconds = PyFloat_AsDouble(arg);
        if seconds == -1.0 && !PyErr_Occurred().is_null() {
            return std::ptr::null_mut();
        }
        if !(0.001..=3600.0).contains(&seconds) {
            return raise(
                PyExc_ValueError,
                "the sampling interval must be between 0.001 and 3600 seconds",
            );
        }
        timeline::start(std::time::Duration::from_secs_f64(seconds));
        none()
    }
}

/// timeline_stop() -> [(seconds, bytes), ...]
pub unsafe extern "C" fn timeline_stop(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe { samples_list(timeline::stop()) }
}

/// timeline_samples() -> [(seconds, bytes)]: the series so far, sampling
/// going on (a capture on demand).
pub unsafe extern "C" fn timeline_samples(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe { samples_list(timeline::samples()) }
}

/// The samples as a list of (seconds, bytes) tuples; NULL with an exception
/// set if Python runs out of memory.
///
/// # Safety
/// GIL held.
unsafe fn samples_list(samples: Vec<(f64, u64)>) -> *mut PyObject {
    // SAFETY: the caller holds the GIL (this fn's contract).
    unsafe {
        let list = PyList_New(0);
        if list.is_null() {
            return list;
        }
        for (t, bytes) in samples {
            let item = tuple(&[PyFloat_FromDouble(t), int(bytes as i64)]);
            if item.is_null() || PyList_Append(list, item) < 0 {
                Py_XDECREF(item);
                Py_DECREF(list);
                return std::ptr::null_mut();
            }
            Py_DECREF(item);
        }
        list
    }
}

pub unsafe extern "C" fn timeline_after_fork(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        timeline::after_fork_in_child();
        none()
    }
}

/// sigterm_deadline(seconds, in_children): once SIGTERM arrives, Python's
/// handler for it (just installed) must start within `seconds`, or the
/// signal's default action ends the process (see sigterm.rs). Forked
/// children keep the handler, with a deadline of their own, if
/// `in_children`; otherwise SIGTERM gets its default action back in them.
pub unsafe extern "C" fn sigterm_deadline(_: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        if PyTuple_Check(args) == 0 || PyTuple_Size(args) != 2 {
            return raise(
                PyExc_TypeError,
                "sigterm_deadline() takes exactly 2 arguments (seconds, in_children)",
            );
        }
        let seconds = PyFloat_AsDouble(PyTuple_GetItem(args, 0));
        if seconds == -1.0 && !PyErr_Occurred().is_null() {
            return std::ptr::null_mut();
        }
        if !(seconds > 0.0 && seconds < 3600.0) {
            return raise(
                PyExc_ValueError,
                "the grace period must be 0 to 3600 seconds",
            );
        }
        let in_children = match PyObject_IsTrue(PyTuple_GetItem(args, 1)) {
            -1 => return std::ptr::null_mut(),
            truth => truth == 1,
        };
        match sigterm::arm(std::time::Duration::from_secs_f64(seconds), in_children) {
            Ok(()) => none(),
            Err(e) => raise(
                PyExc_OSError,
                &format!("cannot arm the SIGTERM deadline: {e}"),
            ),
        }
    }
}

/// sigterm_after_fork(): in a forked child that keeps heapsite's SIGTERM
/// handler, the deadline of its own (see sigterm.rs).
pub unsafe extern "C" fn sigterm_after_fork(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        match sigterm::after_fork_in_child() {
            Ok(()) => none(),
            Err(e) => raise(
                PyExc_OSError,
                &format!("cannot arm the SIGTERM deadline in the child: {e}"),
            ),
        }
    }
}

/// sigterm_handling(): Python's SIGTERM handler has started (no deadline).
pub unsafe extern "C" fn sigterm_handling(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        sigterm::handling();
        none()
    }
}
