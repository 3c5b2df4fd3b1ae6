//! The capture and report functions of the native module: the Python side
//! gathers the model (it already knows sites, frames and kinds), Rust writes,
//! reads and renders it. Errors are one-line `ValueError`s (bad input) or
//! `OSError`s (files), which the CLI prints and exits 2 on.

use crate::py::api::raise;
use crate::report::capture;
use crate::report::{self, model::Capture, model::View};
use pyo3_ffi::*;
use std::ffi::c_char;
use std::path::PathBuf;

/// A str argument as a Rust string; None (with an exception set) otherwise.
unsafe fn text_arg(arg: *mut PyObject, what: &str) -> Option<String> {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        if PyUnicode_Check(arg) == 0 {
            raise(PyExc_TypeError, &format!("{what} must be a str"));
            return None;
        }
        let mut len: Py_ssize_t = 0;
        let data = PyUnicode_AsUTF8AndSize(arg, &mut len);
        if data.is_null() {
            return None;
        }
        let bytes = std::slice::from_raw_parts(data as *const u8, len as usize);
        Some(String::from_utf8_lossy(bytes).into_owned())
    }
}

unsafe fn args<const N: usize>(tuple: *mut PyObject, name: &str) -> Option<[*mut PyObject; N]> {
    // SAFETY: the caller keeps this unsafe fn's contract: the GIL held
    // (every caller is an API function).
    unsafe {
        if PyTuple_Check(tuple) == 0 || PyTuple_Size(tuple) != N as Py_ssize_t {
            raise(
                PyExc_TypeError,
                &format!("{name}() takes exactly {N} arguments"),
            );
            return None;
        }
        Some(std::array::from_fn(|i| {
            PyTuple_GetItem(tuple, i as Py_ssize_t)
        }))
    }
}

unsafe fn limit_arg(arg: *mut PyObject) -> Option<usize> {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let value = PyLong_AsLong(arg);
        if value == -1 && !PyErr_Occurred().is_null() {
            return None;
        }
        if value < 1 {
            raise(PyExc_ValueError, "the row limit must be at least 1");
            return None;
        }
        Some(value as usize)
    }
}

unsafe fn read_capture(path: &str) -> Option<Capture> {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        match capture::read(&PathBuf::from(path)) {
            Ok(capture) => Some(capture),
            Err(e) => {
                raise(PyExc_ValueError, &e.0);
                None
            }
        }
    }
}

unsafe fn bytes(data: &[u8]) -> *mut PyObject {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe { PyBytes_FromStringAndSize(data.as_ptr() as *const c_char, data.len() as Py_ssize_t) }
}

/// write_capture(path, model_json): validates the model and writes the file.
pub unsafe extern "C" fn write_capture(_: *mut PyObject, tuple: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let Some([path, json]) = args::<2>(tuple, "write_capture") else {
            return std::ptr::null_mut();
        };
        let (Some(path), Some(json)) = (text_arg(path, "path"), text_arg(json, "model")) else {
            return std::ptr::null_mut();
        };
        let model: Capture = match serde_json::from_str(&json) {
            Ok(model) => model,
            Err(e) => return raise(PyExc_ValueError, &format!("bad capture model: {e}")),
        };
        if let Err(e) = model.validate() {
            return raise(PyExc_ValueError, &format!("bad capture model: {e}"));
        }
        match capture::write(&PathBuf::from(path), &model) {
            Ok(()) => crate::py::api::none(),
            Err(e) => raise(PyExc_OSError, &e.0),
        }
    }
}

/// write_file(path, data): writes bytes where the user asked (see output.rs).
pub unsafe extern "C" fn write_file(_: *mut PyObject, tuple: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let Some([path, data]) = args::<2>(tuple, "write_file") else {
            return std::ptr::null_mut();
        };
        let Some(path) = text_arg(path, "path") else {
            return std::ptr::null_mut();
        };
        if PyBytes_Check(data) == 0 {
            return raise(PyExc_TypeError, "data must be bytes");
        }
        // SAFETY: a bytes object's buffer, alive as long as the tuple holds it.
        let data = std::slice::from_raw_parts(
            PyBytes_AsString(data) as *const u8,
            PyBytes_Size(data) as usize,
        );
        match crate::report::output::write(&PathBuf::from(path), data) {
            Ok(()) => crate::py::api::none(),
            Err(e) => raise(PyExc_OSError, &e),
        }
    }
}

/// render_report(path, format, limit) -> bytes
pub unsafe extern "C" fn render_report(_: *mut PyObject, tuple: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let Some([path, format, limit]) = args::<3>(tuple, "render_report") else {
            return std::ptr::null_mut();
        };
        let (Some(path), Some(format), Some(limit)) = (
            text_arg(path, "path"),
            text_arg(format, "format"),
            limit_arg(limit),
        ) else {
            return std::ptr::null_mut();
        };
        if !report::FORMATS.contains(&format.as_str()) {
            return raise(
                PyExc_ValueError,
                &format!(
                    "unknown report format {format:?}: choose one of {}",
                    report::FORMATS.join(", ")
                ),
            );
        }
        let Some(capture) = read_capture(&path) else {
            return std::ptr::null_mut();
        };
        match report::render(&capture, &format, limit) {
            Ok(data) => bytes(&data),
            Err(e) => raise(PyExc_ValueError, &e),
        }
    }
}

/// render_diff(old_path, new_path, view, limit) -> str
pub unsafe extern "C" fn render_diff(_: *mut PyObject, tuple: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let Some([old, new, view, limit]) = args::<4>(tuple, "render_diff") else {
            return std::ptr::null_mut();
        };
        let (Some(old), Some(new), Some(view), Some(limit)) = (
            text_arg(old, "old"),
            text_arg(new, "new"),
            text_arg(view, "view"),
            limit_arg(limit),
        ) else {
            return std::ptr::null_mut();
        };
        let Some(view) = View::ALL.into_iter().find(|v| v.name() == view) else {
            return raise(
                PyExc_ValueError,
                &format!("unknown view {view:?}: choose peak, total or live"),
            );
        };
        let (Some(old), Some(new)) = (read_capture(&old), read_capture(&new)) else {
            return std::ptr::null_mut();
        };
        let text = report::diff::render(&old, &new, view, limit);
        PyUnicode_FromStringAndSize(text.as_ptr() as *const c_char, text.len() as Py_ssize_t)
    }
}

/// is_capture(path) -> bool: whether the file starts with the capture magic
/// (so `heapsite report` can tell captures from snapshot files).
pub unsafe extern "C" fn capture_magic(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe { bytes(capture::MAGIC) }
}
