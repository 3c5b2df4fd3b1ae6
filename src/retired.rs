//! What a retired frame keeps: its file and function names as text, and its
//! line (see `RawFrame::retire` and src/codes.rs).
//!
//! The names are copied out of the dying code object's strings, not kept as
//! those strings: a kept string's block would stay live at the program's
//! site that made it, so a program compiling code under a new file name each
//! time (boltons' FunctionBuilder, `<string-41>`) would seem to leak one
//! string per call, held by heapsite. A report gets a str made from the text
//! the first time it asks, inside heapsite's guard: heapsite's own object,
//! counted at no site. Names are kept once per distinct text (doctest makes a
//! new file-name string for every example it runs).

use crate::fallible::{try_leak, try_str};
use crate::frames::ResolvedFrame;
use crate::sync::GilCell;
use pyo3_ffi::{PyObject, Py_ssize_t};
use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_void;

/// One kept name. Leaked: retired frames live as long as their sites.
struct KeptName {
    /// None when the name is not UTF-8 encodable (a lone surrogate): then
    /// `object` is the program's string itself, kept with a reference.
    text: Option<&'static str>,
    /// The str for reports, made on first use (GIL held for every access).
    object: Cell<*mut PyObject>,
}

/// A retired frame, as `RawFrame::code` points to it.
struct Record {
    filename: &'static KeptName,
    name: &'static KeptName,
    lineno: i32,
}

/// The kept names by text.
static KEPT: GilCell<Option<HashMap<&'static str, &'static KeptName>>> = GilCell::new(None);

/// Keeps a frame resolved from a dying code object; the record's address,
/// or None when memory for it cannot be had.
///
/// # Safety
/// GIL held; `frame`'s names are live strs.
pub unsafe fn keep(frame: ResolvedFrame) -> Option<*mut c_void> {
    let record = try_leak(Record {
        filename: kept_name(frame.filename)?,
        name: kept_name(frame.name)?,
        lineno: frame.lineno,
    })?;
    Some((record as *mut Record).cast())
}

/// A retired frame's names and line: borrowed strs, heapsite's own.
///
/// # Safety
/// GIL held; `record` from `keep`.
pub unsafe fn resolve(record: *mut c_void) -> ResolvedFrame {
    let record = &*(record as *const Record);
    ResolvedFrame {
        filename: object_of(record.filename),
        name: object_of(record.name),
        lineno: record.lineno,
    }
}

/// The kept name with the text of `name` (a str), kept now if none is;
/// None out of memory.
///
/// # Safety
/// GIL held; `name` a live str.
unsafe fn kept_name(name: *mut PyObject) -> Option<&'static KeptName> {
    let Some(text) = text_of(name) else {
        let kept = try_leak(KeptName {
            text: None,
            object: Cell::new(name),
        })?;
        pyo3_ffi::Py_IncRef(name);
        return Some(kept);
    };
    let kept = KEPT.get().get_or_insert_with(HashMap::new);
    if let Some(&found) = kept.get(text) {
        return Some(found);
    }
    kept.try_reserve(1).ok()?;
    let text = try_str(text)?;
    let name = try_leak(KeptName {
        text: Some(text),
        object: Cell::new(std::ptr::null_mut()),
    })?;
    kept.insert(text, name);
    Some(name)
}

/// The UTF-8 text of a str, read inside heapsite's guard (a str that is not
/// ASCII caches its UTF-8 form on first ask, and that block is not the
/// program's); None if it cannot be encoded. Borrowed from the str: valid
/// while it lives.
unsafe fn text_of<'a>(name: *mut PyObject) -> Option<&'a str> {
    let read = || {
        let mut size: Py_ssize_t = 0;
        let utf8 = pyo3_ffi::PyUnicode_AsUTF8AndSize(name, &mut size);
        if utf8.is_null() {
            pyo3_ffi::PyErr_Clear();
            return None;
        }
        let bytes = std::slice::from_raw_parts(utf8.cast::<u8>(), size as usize);
        std::str::from_utf8(bytes).ok()
    };
    crate::sites::untraced(read)
}

/// The str of a kept name, made inside heapsite's guard on first use.
unsafe fn object_of(name: &KeptName) -> *mut PyObject {
    if name.object.get().is_null() {
        let text = name.text.unwrap_or_default();
        let object = crate::sites::untraced(|| {
            pyo3_ffi::PyUnicode_FromStringAndSize(text.as_ptr().cast(), text.len() as Py_ssize_t)
        });
        if object.is_null() {
            pyo3_ffi::PyErr_Clear();
            return pyo3_ffi::Py_None();
        }
        name.object.set(object);
    }
    name.object.get()
}
