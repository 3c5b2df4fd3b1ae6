//! The capture and report functions of the native module: Rust builds the
//! capture from its own tables and what only the Python side knows (a
//! `model::Run`: times, flags, the kinds and joined tables), writes, reads
//! and renders it. Errors are one-line `ValueError`s (bad input) or
//! `OSError`s (files), which the CLI prints and exits 2 on.

use crate::engine;
use crate::py::api::raise;
use crate::py::api::site_frames;
use crate::report::capture;
use crate::report::model::{Capture, RawSite, Run, View};
use crate::report::{self};
use pyo3_ffi::*;
use std::cell::Cell;
use std::ffi::c_char;
use std::path::PathBuf;

/// A str argument as a Rust string; None (with an exception set) otherwise.
pub(crate) unsafe fn text_arg(arg: *mut PyObject, what: &str) -> Option<String> {
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

pub(crate) unsafe fn args<const N: usize>(
    tuple: *mut PyObject,
    name: &str,
) -> Option<[*mut PyObject; N]> {
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

/// The engine's sites with their resolved frames, as `sites()` lists them
/// (every site that allocated since start() or clear()), one at a time:
/// `Capture::assemble` keeps each distinct frame once, where a whole list
/// of sites, each frame's strings its own, held 54 MB for 21,000 sites at
/// 16 frames (a `heapsite run` of pyperf at exit). Stops at a site whose
/// frames cannot be read, with a Python exception set and `failed` true.
///
/// # Safety
/// The GIL held while the iterator is used.
unsafe fn raw_sites(failed: &Cell<bool>) -> impl Iterator<Item = RawSite> + '_ {
    let engine = engine::settled();
    (0..engine.site_count())
        .map_while(move |id| {
            let t = engine.totals(id);
            if t.total_count == 0 && t.live_count == 0 && t.peak_count == 0 {
                return Some(None);
            }
            // SAFETY: the GIL held (this fn's contract).
            let frames = unsafe {
                let tuple = site_frames(id);
                if tuple.is_null() {
                    None
                } else {
                    let frames = frames_of_tuple(tuple);
                    Py_DECREF(tuple);
                    frames
                }
            };
            let Some(frames) = frames else {
                failed.set(true);
                return None;
            };
            Some(Some(crate::serve::live::raw_site(frames, &t)))
        })
        .flatten()
}

/// `((filename, lineno, name), ...)` as Rust values; None with an
/// exception set if a frame is not of that shape.
unsafe fn frames_of_tuple(tuple: *mut PyObject) -> Option<Vec<(String, i64, String)>> {
    // SAFETY: the caller keeps this unsafe fn's contract: the GIL held and
    // `tuple` a tuple it holds a reference to.
    unsafe {
        let mut frames = Vec::new();
        for i in 0..PyTuple_Size(tuple) {
            let frame = PyTuple_GetItem(tuple, i);
            if frame.is_null() || PyTuple_Check(frame) == 0 || PyTuple_Size(frame) != 3 {
                raise(
                    PyExc_TypeError,
                    "a site's frame is not (filename, lineno, name)",
                );
                return None;
            }
            let filename = text_arg(PyTuple_GetItem(frame, 0), "a frame's filename")?;
            let lineno = PyLong_AsLongLong(PyTuple_GetItem(frame, 1));
            if lineno == -1 && !PyErr_Occurred().is_null() {
                return None;
            }
            let name = text_arg(PyTuple_GetItem(frame, 2), "a frame's name")?;
            frames.push((filename, lineno, name));
        }
        Some(frames)
    }
}

/// The arguments of `write_capture` and `http_serve`: a text named
/// `first`, a `model::Run` from its JSON (what only Python knows of the
/// run), and heapsite's package directory; None with an exception set.
///
/// # Safety
/// The GIL held; `tuple` the call's argument tuple.
pub(crate) unsafe fn run_arguments(
    tuple: *mut PyObject,
    function: &str,
    first: &str,
) -> Option<(String, Run, String)> {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above).
    unsafe {
        let [text, json, own_prefix] = args::<3>(tuple, function)?;
        let (Some(text), Some(json), Some(own_prefix)) = (
            text_arg(text, first),
            text_arg(json, "run"),
            text_arg(own_prefix, "own_prefix"),
        ) else {
            return None;
        };
        match serde_json::from_str(&json) {
            Ok(run) => Some((text, run, own_prefix)),
            Err(e) => {
                raise(PyExc_ValueError, &format!("bad capture run: {e}"));
                None
            }
        }
    }
}

/// write_capture(path, run_json, own_prefix): the capture of the traced
/// program, now: `run_json` (a `model::Run`: what only Python knows) with
/// the engine's sites and frames and the process's own facts, leaving out
/// the sites allocated in files under `own_prefix` (heapsite's package).
pub unsafe extern "C" fn write_capture(_: *mut PyObject, tuple: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let Some((path, run, own_prefix)) = run_arguments(tuple, "write_capture", "path") else {
            return std::ptr::null_mut();
        };
        let failed = Cell::new(false);
        let process = crate::serve::live::process();
        let model = Capture::assemble(run, process, raw_sites(&failed), &own_prefix);
        if failed.get() {
            return std::ptr::null_mut();
        }
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

/// A capture path, or a list or tuple of them (several processes of one
/// program, reported as one: see `report::merge`).
unsafe fn read_captures(arg: *mut PyObject) -> Option<Capture> {
    // SAFETY: the caller keeps this unsafe fn's contract: the GIL held and
    // `arg` a live object.
    unsafe {
        if PyUnicode_Check(arg) != 0 {
            return read_capture(&text_arg(arg, "path")?);
        }
        if PyList_Check(arg) == 0 && PyTuple_Check(arg) == 0 {
            raise(PyExc_TypeError, "path must be a str or a list of str");
            return None;
        }
        let items = PySequence_Fast(arg, c"path".as_ptr());
        if items.is_null() {
            return None;
        }
        let mut captures = Vec::new();
        for i in 0..PySequence_Size(items).max(0) {
            let item = PySequence_GetItem(items, i);
            let capture = if item.is_null() {
                None
            } else {
                let path = text_arg(item, "path");
                Py_DECREF(item);
                path.and_then(|path| read_capture(&path))
            };
            match capture {
                Some(capture) => captures.push(capture),
                None => {
                    Py_DECREF(items);
                    return None;
                }
            }
        }
        Py_DECREF(items);
        if captures.is_empty() {
            raise(PyExc_ValueError, "no capture file given");
            return None;
        }
        Some(report::merge::merge(&captures))
    }
}

/// A trailing optional bool: whether to show the import system's frames
/// (they are folded into the importing line unless it is true).
unsafe fn show_import_system(tuple: *mut PyObject, at: usize) -> Option<bool> {
    // SAFETY: the caller keeps this unsafe fn's contract: the GIL held and
    // `tuple` a live object.
    unsafe {
        if PyTuple_Check(tuple) == 0 || PyTuple_Size(tuple) <= at as Py_ssize_t {
            return Some(false);
        }
        match PyObject_IsTrue(PyTuple_GetItem(tuple, at as Py_ssize_t)) {
            -1 => None,
            flag => Some(flag == 1),
        }
    }
}

/// The first N arguments of a call taking N and an optional flag.
unsafe fn args_and_flag<const N: usize>(
    tuple: *mut PyObject,
    name: &str,
) -> Option<([*mut PyObject; N], bool)> {
    // SAFETY: the caller keeps this unsafe fn's contract: the GIL held and
    // `tuple` a live object.
    unsafe {
        if PyTuple_Check(tuple) == 0
            || !(N as Py_ssize_t..=N as Py_ssize_t + 1).contains(&PyTuple_Size(tuple))
        {
            raise(
                PyExc_TypeError,
                &format!("{name}() takes {N} arguments and an optional show_import_system"),
            );
            return None;
        }
        let flag = show_import_system(tuple, N)?;
        Some((
            std::array::from_fn(|i| PyTuple_GetItem(tuple, i as Py_ssize_t)),
            flag,
        ))
    }
}

/// render_report(path or [paths], format, limit[, show_import_system]) -> bytes
pub unsafe extern "C" fn render_report(_: *mut PyObject, tuple: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let Some(([path, format, limit], show_imports)) =
            args_and_flag::<3>(tuple, "render_report")
        else {
            return std::ptr::null_mut();
        };
        let (Some(format), Some(limit)) = (text_arg(format, "format"), limit_arg(limit)) else {
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
        let Some(capture) = read_captures(path) else {
            return std::ptr::null_mut();
        };
        match report::render(&capture, &format, limit, show_imports) {
            Ok(data) => bytes(&data),
            Err(e) => raise(PyExc_ValueError, &e),
        }
    }
}

/// render_diff(old, new, view, limit[, show_import_system]) -> str; old and
/// new each a path or a list of paths.
pub unsafe extern "C" fn render_diff(_: *mut PyObject, tuple: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let Some(([old, new, view, limit], show_imports)) =
            args_and_flag::<4>(tuple, "render_diff")
        else {
            return std::ptr::null_mut();
        };
        let (Some(view), Some(limit)) = (text_arg(view, "view"), limit_arg(limit)) else {
            return std::ptr::null_mut();
        };
        let Some(view) = View::ALL.into_iter().find(|v| v.name() == view) else {
            return raise(
                PyExc_ValueError,
                &format!("unknown view {view:?}: choose peak, total or live"),
            );
        };
        let Some(old) = read_captures(old) else {
            return std::ptr::null_mut();
        };
        let Some(new) = read_captures(new) else {
            return std::ptr::null_mut();
        };
        let (old, new) = (
            report::as_shown(&old, show_imports),
            report::as_shown(&new, show_imports),
        );
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
