//! What a retired frame keeps: its file and function names as text, and its
//! line (see `RawFrame::retire` and src/engine/codes.rs).
//!
//! The names are copied out of the dying code object's strings, not kept as
//! those strings: a kept string's block would stay live at the program's
//! site that made it, so a program compiling code under a new file name each
//! time (boltons' FunctionBuilder, `<string-41>`) would seem to leak one
//! string per call, held by heapsite. A report gets a str made from the text
//! the first time it asks, inside heapsite's guard: heapsite's own object,
//! counted at no site. Names are kept once per distinct text (doctest makes a
//! new file-name string for every example it runs), and records once per
//! (file, function, line).
//!
//! Both are counted: each retired entry of the frame table (one per dead
//! code object's line, named by every site that named that line) holds its
//! record, each record its two names. When the last entry naming a record
//! is freed (its last site of freed code giving its id back,
//! src/engine/reuse.rs) the record goes,
//! and a name no record uses goes with it, so a program that execs code
//! under new names all day does not make heapsite grow.

use crate::engine::fallible::{try_leak, try_str};
use crate::engine::frames::{RawFrame, ResolvedFrame};
use crate::engine::sync::GilCell;
use pyo3_ffi::{PyObject, Py_ssize_t};
use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_void;

/// One kept name.
struct KeptName {
    /// None when the name is not UTF-8 encodable (a lone surrogate): then
    /// `object` is the program's string itself, kept with a reference.
    text: Option<&'static str>,
    /// The str for reports, made on first use (GIL held for every access).
    object: Cell<*mut PyObject>,
    /// Records using it.
    users: Cell<usize>,
}

/// A retired frame, as `RawFrame::code` points to it.
struct Record {
    filename: &'static KeptName,
    name: &'static KeptName,
    lineno: i32,
    /// Retired frames naming it, in any site's frames (live or buried).
    users: Cell<usize>,
}

type RecordKey = (usize, usize, i32);

impl Record {
    fn key(&self) -> RecordKey {
        (address(self.filename), address(self.name), self.lineno)
    }
}

fn address<T>(value: &T) -> usize {
    value as *const T as usize
}

/// The kept names by text.
static KEPT: GilCell<Option<HashMap<&'static str, &'static KeptName>>> = GilCell::new(None);
/// The records by names and line.
static RECORDS: GilCell<Option<HashMap<RecordKey, &'static Record>>> = GilCell::new(None);

/// Keeps a frame resolved from a dying code object; the record's address,
/// or None when memory for it cannot be had. The caller's frame holds it.
///
/// # Safety
/// GIL held; `frame`'s names are live strs.
pub unsafe fn keep(frame: ResolvedFrame) -> Option<*mut c_void> {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; `frame`'s names are live strs.
    unsafe {
        let filename = kept_name(frame.filename)?;
        let Some(name) = kept_name(frame.name) else {
            release_name(filename);
            return None;
        };
        let key = (address(filename), address(name), frame.lineno);
        let records = RECORDS.get().get_or_insert_with(HashMap::new);
        if let Some(&found) = records.get(&key) {
            // Its names are held for it already.
            release_name(filename);
            release_name(name);
            hold(found);
            return Some(address(found) as *mut c_void);
        }
        let made = match records.try_reserve(1) {
            Ok(()) => try_leak(Record {
                filename,
                name,
                lineno: frame.lineno,
                users: Cell::new(1),
            }),
            Err(_) => None,
        };
        let Some(record) = made else {
            release_name(filename);
            release_name(name);
            return None;
        };
        records.insert(key, record);
        Some(address(record) as *mut c_void)
    }
}

fn hold(record: &Record) {
    record.users.set(record.users.get() + 1);
}

/// These frames are being freed: their records lose a user, and go with
/// their last.
///
/// # Safety
/// GIL held, outside any allocator hook, no report reading these records.
pub unsafe fn release_all(frames: &[RawFrame]) {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held, outside any allocator hook, no report reading these records.
    unsafe {
        for frame in frames.iter().filter(|f| f.is_retired()) {
            release(frame.code as *mut Record);
        }
    }
}

unsafe fn release(record: *mut Record) {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let users = (*record).users.get() - 1;
        (*record).users.set(users);
        if users > 0 {
            return;
        }
        if let Some(records) = RECORDS.get() {
            records.remove(&(*record).key());
        }
        release_name((*record).filename);
        release_name((*record).name);
        // A report cache may hold this frame's tuple under this address.
        crate::engine::codes::note_freed(record as usize);
        // SAFETY: made by `try_leak` (one element: the layout of a Box<Record>),
        // and no frame names it any more.
        drop(Box::from_raw(record));
    }
}

unsafe fn release_name(name: &'static KeptName) {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let users = name.users.get() - 1;
        name.users.set(users);
        if users > 0 {
            return;
        }
        if let (Some(text), Some(kept)) = (name.text, KEPT.get().as_mut()) {
            kept.remove(text);
            // SAFETY: leaked by `try_str`, and its map entry is gone.
            drop(Box::from_raw(text as *const str as *mut str));
        }
        pyo3_ffi::Py_XDECREF(name.object.get());
        // SAFETY: made by `try_leak`, and no record uses it any more.
        drop(Box::from_raw(name as *const KeptName as *mut KeptName));
    }
}

/// A retired frame's names and line: borrowed strs, heapsite's own.
///
/// # Safety
/// GIL held; `record` from `keep`.
pub unsafe fn resolve(record: *mut c_void) -> ResolvedFrame {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; `record` from `keep`.
    unsafe {
        let record = &*(record as *const Record);
        ResolvedFrame {
            filename: object_of(record.filename),
            name: object_of(record.name),
            lineno: record.lineno,
        }
    }
}

/// The kept name with the text of `name` (a str), kept now if none is,
/// held for a record; None out of memory.
///
/// # Safety
/// GIL held; `name` a live str.
unsafe fn kept_name(name: *mut PyObject) -> Option<&'static KeptName> {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; `name` a live str.
    unsafe {
        let Some(text) = text_of(name) else {
            let kept = try_leak(KeptName {
                text: None,
                object: Cell::new(name),
                users: Cell::new(1),
            })?;
            pyo3_ffi::Py_IncRef(name);
            return Some(kept);
        };
        let kept = KEPT.get().get_or_insert_with(HashMap::new);
        if let Some(&found) = kept.get(text) {
            found.users.set(found.users.get() + 1);
            return Some(found);
        }
        kept.try_reserve(1).ok()?;
        let text = try_str(text)?;
        let name = try_leak(KeptName {
            text: Some(text),
            object: Cell::new(std::ptr::null_mut()),
            users: Cell::new(1),
        })?;
        kept.insert(text, name);
        Some(name)
    }
}

/// The UTF-8 text of a str, read inside heapsite's guard (a str that is not
/// ASCII caches its UTF-8 form on first ask, and that block is not the
/// program's); None if it cannot be encoded. Borrowed from the str: valid
/// while it lives.
unsafe fn text_of<'a>(name: *mut PyObject) -> Option<&'a str> {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
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
        crate::engine::sites::untraced(read)
    }
}

/// The str of a kept name, made inside heapsite's guard on first use.
unsafe fn object_of(name: &KeptName) -> *mut PyObject {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        if name.object.get().is_null() {
            let text = name.text.unwrap_or_default();
            let object = crate::engine::sites::untraced(|| {
                pyo3_ffi::PyUnicode_FromStringAndSize(
                    text.as_ptr().cast(),
                    text.len() as Py_ssize_t,
                )
            });
            if object.is_null() {
                pyo3_ffi::PyErr_Clear();
                return pyo3_ffi::Py_None();
            }
            name.object.set(object);
        }
        name.object.get()
    }
}
