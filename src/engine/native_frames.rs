//! Native frames (`heapsite run --native`, `HEAPSITE_NATIVE=1`): the C
//! functions between the Python line and the malloc, so that a report says
//! which extension function asked (`PyArray_NewFromDescr` in numpy's .so)
//! under which Python line.
//!
//! On the hot path only instruction pointers are taken (the `backtrace`
//! crate's unwinder, no symbols): the frames of heapsite's own library are
//! skipped and the walk stops at the first frame inside the interpreter
//! (libpython or the python executable), below which the Python frames
//! take over. Each IP is stored as a `RawFrame` with `offset == NATIVE`,
//! which the site registry does not pin and `resolve` symbolises when a
//! report asks (`backtrace::resolve`, then the dynamic linker's view).

use crate::engine::frames::RawFrame;
use crate::engine::sync::GilCell;
use pyo3_ffi::*;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

/// The `offset` that marks a native frame (a real byte offset is >= -1).
pub const NATIVE: i32 = i32::MIN;
/// Native frames kept per allocation, at most.
pub const MAX_NATIVE: usize = 32;

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Text ranges [start, end) of heapsite's library and of the interpreter
/// (libpython, or the executable when it has libpython linked in).
static OURS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
static INTERPRETER: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// The [start, end) span of the loaded object containing `addr`, from its
/// PT_LOAD segments.
fn object_span(addr: usize) -> (usize, usize) {
    struct Search {
        addr: usize,
        span: (usize, usize),
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _: usize,
        data: *mut c_void,
    ) -> libc::c_int {
        // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
        unsafe {
            let search = &mut *(data as *mut Search);
            let info = &*info;
            let (mut lo, mut hi) = (usize::MAX, 0usize);
            for i in 0..info.dlpi_phnum as usize {
                let header = &*info.dlpi_phdr.add(i);
                if header.p_type == libc::PT_LOAD {
                    let start = info.dlpi_addr as usize + header.p_vaddr as usize;
                    lo = lo.min(start);
                    hi = hi.max(start + header.p_memsz as usize);
                }
            }
            if lo <= search.addr && search.addr < hi {
                search.span = (lo, hi);
                return 1;
            }
            0
        }
    }
    let mut search = Search { addr, span: (0, 0) };
    // SAFETY: the callback only reads the loader's headers.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut search as *mut Search as *mut c_void) };
    search.span
}

/// Switches native frames on or off; the first call finds the spans.
pub fn set_enabled(on: bool) {
    if on && OURS[1].load(Relaxed) == 0 {
        let ours = object_span(set_enabled as *const () as usize);
        let interpreter = object_span(PyObject_Malloc as *const () as usize);
        OURS[0].store(ours.0, Relaxed);
        OURS[1].store(ours.1, Relaxed);
        INTERPRETER[0].store(interpreter.0, Relaxed);
        INTERPRETER[1].store(interpreter.1, Relaxed);
    }
    ENABLED.store(on, Relaxed);
}

fn within(span: &[AtomicUsize; 2], ip: usize) -> bool {
    span[0].load(Relaxed) <= ip && ip < span[1].load(Relaxed)
}

/// The native frames of the calling thread above the interpreter, most
/// recent first; returns how many were written to `out`.
pub fn capture(out: &mut [RawFrame]) -> usize {
    let mut n = 0;
    // SAFETY: the unsynchronised walk is safe while no other thread uses
    // the backtrace crate's global state: its resolve runs only under the
    // GIL in reports, and this under the native hook's guard.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as usize;
            if ip == 0 || within(&INTERPRETER, ip) || n == out.len() {
                return false;
            }
            if !within(&OURS, ip) {
                out[n] = RawFrame::native(ip);
                n += 1;
            }
            true
        });
    }
    n
}

/// A native frame resolved once: (filename, function) as Python strings
/// kept alive here, and the line (0 without debug information).
struct Symbol {
    filename: *mut PyObject,
    name: *mut PyObject,
    lineno: i32,
}

static SYMBOLS: GilCell<Option<HashMap<usize, Symbol>>> = GilCell::new(None);

unsafe fn py_str(text: &str) -> *mut PyObject {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let object =
            PyUnicode_FromStringAndSize(text.as_ptr() as *const c_char, text.len() as Py_ssize_t);
        if object.is_null() {
            PyErr_Clear();
        }
        object
    }
}

/// The object file holding `ip` and the nearest exported symbol, from the
/// dynamic linker (for libraries without debug information).
fn dladdr(ip: usize) -> (Option<String>, Option<String>) {
    // SAFETY: dladdr only reads the loader's tables.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(ip as *const c_void, &mut info) == 0 {
            return (None, None);
        }
        let text = |p: *const c_char| {
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        (text(info.dli_fname), text(info.dli_sname))
    }
}

/// (filename, function, line) of a native frame: borrowed references, valid
/// for the process's life.
///
/// # Safety
/// GIL held.
pub unsafe fn resolve(ip: usize) -> (*mut PyObject, *mut PyObject, i32) {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held.
    unsafe {
        let symbols = SYMBOLS.get().get_or_insert_with(HashMap::new);
        if let Some(symbol) = symbols.get(&ip) {
            return (symbol.filename, symbol.name, symbol.lineno);
        }
        // A return address points after the call: look up the call itself.
        let lookup = ip.saturating_sub(1);
        let (mut filename, mut name, mut lineno) = (None, None, 0u32);
        backtrace::resolve(lookup as *mut c_void, |symbol| {
            if name.is_none() {
                name = symbol.name().map(|n| format!("{n:#}"));
            }
            if filename.is_none() {
                if let Some(file) = symbol.filename() {
                    filename = Some(file.display().to_string());
                    lineno = symbol.lineno().unwrap_or(0);
                }
            }
        });
        let (object, exported) = dladdr(lookup);
        let filename = filename
            .or(object)
            .unwrap_or_else(|| String::from("<native>"));
        let name = name.or(exported).unwrap_or_else(|| format!("0x{ip:x}"));
        let symbol = Symbol {
            filename: py_str(&filename),
            name: py_str(&name),
            lineno: lineno.min(i32::MAX as u32) as i32,
        };
        let found = (symbol.filename, symbol.name, symbol.lineno);
        symbols.insert(ip, symbol);
        found
    }
}
