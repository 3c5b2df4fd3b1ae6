//! Subinterpreters: heapsite traces the main interpreter only.
//!
//! Design (issue 19, "never harm the host"). heapsite's hooks are process
//! wide, but most of its state assumes the *main* interpreter's GIL: the
//! MEM/OBJ table and its nursery, the hook's re-entrancy flag and site
//! cache, the per-site counters updated without atomics, and the code
//! objects that sites name (watched through a co_extra slot and a pending
//! call, both registered with the main interpreter only). A subinterpreter
//! breaks each of these: with its own GIL (3.12+) its threads run the hooks
//! at the same time as the main interpreter's (heap corruption), and its
//! code objects die with it without heapsite hearing of it (a report then
//! reads freed memory). So:
//!
//! - Allocations made in a subinterpreter (any domain, and native memory
//!   under LD_PRELOAD) pass straight through, untraced; heapsite says so
//!   once on stderr. Tracing them would need per-interpreter tables, sites
//!   and code-object watches: not worth the hot path's cost.
//! - Frees and reallocs stay correct whoever makes them. A block in the RAW
//!   table is forgotten by any thread (its shards are locked). A block in
//!   the MEM/OBJ table is forgotten by a subinterpreter only if it shares
//!   the main GIL (the legacy kind, and every one before 3.12), which then
//!   serialises it with the main interpreter. One with its own GIL must not
//!   touch that table, and need not: such an interpreter has its own
//!   obmalloc (CPython requires it), so the MEM/OBJ blocks it frees are its
//!   own, which were never traced. Counters are updated the GIL way only by
//!   a holder of the main GIL, else atomically.
//! - The API refuses to run in a subinterpreter (`main_interpreter_only!`
//!   in py/mod.rs): its reports would build objects of one interpreter from
//!   another's, and it would start or stop the main interpreter's tracing.
//!
//! Cost: the hooks first compare the head of the runtime's list of
//! interpreters with the main interpreter, inline (two loads; the head's
//! address comes from frames.c once, at module init). Only when other
//! interpreters exist do they call frames.c to learn the caller's. Calling
//! it always measured 2% of a churning program's instructions. (An audit
//! hook on "cpython.PyInterpreterState_New" was tried as the gate: 3.13's
//! `_interpreters` creates interpreters with no thread state attached, so
//! the event is never raised.)

use std::ffi::{c_int, c_void};
use std::ptr::{self, addr_of};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering::Relaxed};

extern "C" {
    fn hs_subinterpreter_of_caller(head: *mut *const AtomicPtr<c_void>) -> c_int;
}

/// Stands for the runtime's list head until `init`: equal to `MAIN`'s
/// null, so that the hooks answer `Main` before the module is initialised
/// (the preloaded native hooks run that early; they trace nothing then).
static NO_RUNTIME_YET: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
/// Where the runtime keeps the head of its list of interpreters.
static HEAD: AtomicPtr<AtomicPtr<c_void>> =
    AtomicPtr::new(addr_of!(NO_RUNTIME_YET) as *mut AtomicPtr<c_void>);
/// The main interpreter.
static MAIN: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());

/// Learns where the runtime keeps its list of interpreters; once, at module
/// init, with the GIL held.
pub fn init() {
    let mut head: *const AtomicPtr<c_void> = ptr::null();
    // SAFETY: only writes `head` (the address of a field of the runtime's
    // static state, which outlives every hook) and reads the runtime's list.
    unsafe {
        hs_subinterpreter_of_caller(&mut head);
        MAIN.store(pyo3_ffi::PyInterpreterState_Main().cast(), Relaxed);
    }
    HEAD.store(head.cast_mut(), Relaxed);
}

/// Where the calling thread runs Python, as far as the hooks care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interp {
    /// The main interpreter, or no Python thread state at all.
    Main,
    /// A subinterpreter that shares the main interpreter's GIL.
    SharedGil,
    /// A subinterpreter with its own GIL (3.12+).
    OwnGil,
}

impl Interp {
    /// The calling thread's. Safe from any thread, GIL or not.
    #[inline(always)]
    pub fn of_caller() -> Interp {
        if Self::only_main() {
            return Interp::Main;
        }
        Self::asked()
    }

    /// Whether the main interpreter is the only one (then every caller is
    /// in it): the first, inline test of `of_caller`.
    #[inline(always)]
    pub fn only_main() -> bool {
        // SAFETY: HEAD points at the runtime's list head (or at
        // NO_RUNTIME_YET), both alive as long as the process; a relaxed load
        // of an aligned pointer that the runtime writes under its lock.
        let head = unsafe { (*HEAD.load(Relaxed)).load(Relaxed) };
        head == MAIN.load(Relaxed)
    }

    #[inline(never)]
    fn asked() -> Interp {
        // SAFETY: reads the runtime's interpreter list head and the calling
        // thread's own state; allocates nothing, takes no lock.
        match unsafe { hs_subinterpreter_of_caller(ptr::null_mut()) } {
            0 => Interp::Main,
            1 => Interp::SharedGil,
            _ => Interp::OwnGil,
        }
    }

    pub fn is_main(self) -> bool {
        self == Interp::Main
    }

    /// Whether the calling thread, found in this interpreter, holds the main
    /// interpreter's GIL: then it may update heapsite's counters the GIL way
    /// (a subinterpreter's own GIL does not count).
    pub fn holds_main_gil(self) -> bool {
        match self {
            Interp::Main => crate::engine::frames::gil_held(),
            Interp::SharedGil => true,
            Interp::OwnGil => false,
        }
    }
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// Says once per process, on stderr, that subinterpreters are not traced.
/// Called from allocator hooks: writes with one system call, allocates
/// nothing.
#[cold]
pub fn warn_untraced() {
    // A load first: every untraced allocation comes here, from every
    // subinterpreter's threads, and a swap would make them fight over the line.
    if WARNED.load(Relaxed) || WARNED.swap(true, Relaxed) {
        return;
    }
    const MESSAGE: &[u8] = b"heapsite: allocations in subinterpreters are not traced\n";
    // SAFETY: writes a static buffer to fd 2; a failed write is ignored.
    unsafe { libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len()) };
}

/// The message of the error the API raises in a subinterpreter.
pub const API_REFUSED: &str = "heapsite: snapshots are taken from the main interpreter \
     (allocations in subinterpreters are not traced)";

/// The interpreter's version as `sys.version_info`'s first three numbers
/// (`3.13.0rc1 (main, ...)` -> `3.13.0`).
pub fn python_version() -> String {
    // SAFETY: Py_GetVersion returns a static NUL-terminated string.
    let full = unsafe { std::ffi::CStr::from_ptr(pyo3_ffi::Py_GetVersion()) };
    let full = full.to_string_lossy();
    let numbers: Vec<&str> = full
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()
        .unwrap_or("")
        .split('.')
        .filter(|part| !part.is_empty())
        .take(3)
        .collect();
    numbers.join(".")
}
