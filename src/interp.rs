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
//!   in lib.rs): its reports would build objects of one interpreter from
//!   another's, and it would start or stop the main interpreter's tracing.
//!
//! Cost: until a subinterpreter is created the hooks test one static flag,
//! set by an audit hook on CPython's "cpython.PyInterpreterState_New" event
//! (raised by the creating thread before the new interpreter runs anything,
//! so its threads all see the flag). Only then do they ask frames.c which
//! interpreter the caller runs in: a call per allocation and per free, which
//! measured 2% of a churning program's instructions when made always.
//! The hook is added at the first `start()`, not at import: while any C
//! audit hook exists CPython builds the arguments of every audited event
//! (`id()`, `sys._getframe()`, `open()`...), a cost not worth imposing on a
//! program that imports heapsite without tracing. Audit hooks cannot be
//! removed; this one only compares a name.

use pyo3_ffi::PyObject;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

extern "C" {
    fn hs_subinterpreter_of_caller() -> c_int;
    fn PySys_AddAuditHook(
        hook: unsafe extern "C" fn(*const c_char, *mut PyObject, *mut c_void) -> c_int,
        data: *mut c_void,
    ) -> c_int;
    fn PySys_Audit(event: *const c_char, format: *const c_char, ...) -> c_int;
}

/// Whether a subinterpreter may exist (sticky: set once one was created).
static SUBINTERPRETERS: AtomicBool = AtomicBool::new(false);
/// Whether the audit hook heard heapsite's own probe event (it was added).
static HOOKED: AtomicBool = AtomicBool::new(false);
/// Whether `watch` tried to add the audit hook already.
static WATCHING: AtomicBool = AtomicBool::new(false);

const INTERPRETER_CREATED: &CStr = c"cpython.PyInterpreterState_New";
const PROBE: &CStr = c"heapsite.watch_interpreters";

/// The audit hook: notes the creation of an interpreter. Called for every
/// audited event of the process, so it only compares the name.
unsafe extern "C" fn audit(event: *const c_char, _: *mut PyObject, _: *mut c_void) -> c_int {
    if event.is_null() {
        return 0;
    }
    // SAFETY: CPython passes the event name as a NUL-terminated string.
    let event = CStr::from_ptr(event);
    if event == INTERPRETER_CREATED {
        SUBINTERPRETERS.store(true, Relaxed);
    } else if event == PROBE {
        HOOKED.store(true, Relaxed);
    }
    0
}

/// Watches for subinterpreters from now on; called by `start()`, before the
/// hooks are installed, in the main interpreter with its GIL held. A
/// subinterpreter that exists already, or a hook that did not take (a
/// Python audit hook may veto "sys.addaudithook" silently: the probe event
/// then goes unheard), turns the check on for good.
pub fn watch() {
    // SAFETY: GIL held by the API caller; the hook is a plain function; the
    // probe event has no arguments (NULL format).
    unsafe {
        if pyo3_ffi::PyInterpreterState_Head() != pyo3_ffi::PyInterpreterState_Main() {
            SUBINTERPRETERS.store(true, Relaxed);
        }
        if WATCHING.swap(true, Relaxed) {
            return;
        }
        let added = PySys_AddAuditHook(audit, std::ptr::null_mut()) == 0
            && PySys_Audit(PROBE.as_ptr(), std::ptr::null()) == 0
            && HOOKED.load(Relaxed);
        if !added {
            pyo3_ffi::PyErr_Clear();
            SUBINTERPRETERS.store(true, Relaxed);
        }
    }
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
    /// The calling thread's, for the hooks while tracing: `Main` without
    /// asking until a subinterpreter was seen (`watch`). Safe from any
    /// thread, GIL or not.
    #[inline(always)]
    pub fn of_caller() -> Interp {
        if !SUBINTERPRETERS.load(Relaxed) {
            return Interp::Main;
        }
        Self::of_caller_exactly()
    }

    /// The calling thread's, asked whether or not heapsite watches for
    /// subinterpreters (the API, which may be called before `start()`).
    #[inline(never)]
    pub fn of_caller_exactly() -> Interp {
        // SAFETY: reads the runtime's interpreter list head and the calling
        // thread's own state; allocates nothing, takes no lock.
        match unsafe { hs_subinterpreter_of_caller() } {
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
            Interp::Main => crate::frames::gil_held(),
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
