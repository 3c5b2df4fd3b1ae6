//! The module's face to Python: `heapsite._heapsite`'s method table and its
//! init; the functions themselves are in `api*.rs`. The top layer: it may use
//! every other one, and none uses it.

mod api;
mod api_heap;
mod api_preload;
mod api_report;
mod api_rounds;
mod api_serve;
mod api_traces;

use crate::engine::{codes, frames, hook, interp, sites};
use pyo3_ffi::*;
use std::ffi::CStr;
use std::ptr;

const fn method(
    name: &'static CStr,
    f: PyCFunction,
    flags: i32,
    doc: &'static CStr,
) -> PyMethodDef {
    PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: PyMethodDefPointer { PyCFunction: f },
        ml_flags: flags,
        ml_doc: doc.as_ptr(),
    }
}

/// A module function that raises in a subinterpreter before it touches any
/// of heapsite's state, which belongs to the main interpreter (see
/// src/engine/interp.rs). Rendering captures (files in, bytes out) works anywhere.
macro_rules! main_interpreter_only {
    ($function:path) => {{
        unsafe extern "C" fn checked(module: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
            // SAFETY: CPython calls this through the module's method table, with
            // the GIL held and the arguments its METH_ flag declares.
            unsafe {
                if !interp::Interp::of_caller().is_main() {
                    return api::raise(PyExc_RuntimeError, interp::API_REFUSED);
                }
                $function(module, args)
            }
        }
        checked
    }};
}

/// `api::start` for the main interpreter only (as `main_interpreter_only!`,
/// for METH_FASTCALL's arguments).
unsafe extern "C" fn start_in_main_interpreter(
    module: *mut PyObject,
    args: *mut *mut PyObject,
    nargs: Py_ssize_t,
) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and `nargs` arguments at `args` (METH_FASTCALL).
    unsafe {
        if !interp::Interp::of_caller().is_main() {
            return api::raise(PyExc_RuntimeError, interp::API_REFUSED);
        }
        api::start(module, args, nargs)
    }
}

static mut METHODS: [PyMethodDef; 59] = [
    // METH_FASTCALL: a call with arguments in a tuple makes the tuple just
    // before tracing starts and frees it just after, onto the interpreter's
    // free list, where the program's next pair picks it up untraced (3.13+
    // follows reuse: one block short of tracemalloc's line figures).
    PyMethodDef {
        ml_name: c"start".as_ptr(),
        ml_meth: PyMethodDefPointer {
            PyCFunctionFast: start_in_main_interpreter,
        },
        ml_flags: METH_FASTCALL,
        ml_doc: c"start(frames, sample_every): trace every allocation (sample_every 0) or a sample, frames deep.".as_ptr(),
    },
    method(
        c"sample_rate",
        main_interpreter_only!(api::sample_rate),
        METH_NOARGS,
        c"sample_rate(): mean bytes between samples, 0 when every allocation is traced.",
    ),
    method(
        c"stop",
        main_interpreter_only!(api::stop),
        METH_NOARGS,
        c"stop(): stop tracing, forget the records.",
    ),
    method(
        c"own_work_enter",
        main_interpreter_only!(api::own_work_enter),
        METH_NOARGS,
        c"own_work_enter() -> bool: this thread's allocations are heapsite's own until own_work_leave()",
    ),
    method(
        c"own_work_leave",
        main_interpreter_only!(api::own_work_leave),
        METH_NOARGS,
        c"own_work_leave(): ends what own_work_enter() began",
    ),
    method(
        c"is_tracing",
        main_interpreter_only!(api::is_tracing),
        METH_NOARGS,
        c"is_tracing() -> bool",
    ),
    method(
        c"clear",
        main_interpreter_only!(api::clear),
        METH_NOARGS,
        c"clear(): forget the records, keep tracing.",
    ),
    method(
        c"traced_memory",
        main_interpreter_only!(api::traced_memory),
        METH_NOARGS,
        c"traced_memory() -> (current, peak)",
    ),
    method(
        c"reset_peak",
        main_interpreter_only!(api::reset_peak),
        METH_NOARGS,
        c"reset_peak(): peak := current.",
    ),
    method(
        c"traceback_limit",
        main_interpreter_only!(api::traceback_limit),
        METH_NOARGS,
        c"traceback_limit() -> int",
    ),
    method(
        c"stats",
        main_interpreter_only!(api::stats),
        METH_NOARGS,
        c"stats() -> dict of heapsite's own figures.",
    ),
    method(
        c"peak_sites",
        main_interpreter_only!(api::peak_sites),
        METH_O,
        c"peak_sites(limit) -> ((site, bytes), ...): growth from reset_peak() to the peak, most first",
    ),
    method(
        c"site_count",
        main_interpreter_only!(api::site_count),
        METH_NOARGS,
        c"site_count() -> how many call sites were made so far",
    ),
    method(
        c"sites",
        main_interpreter_only!(api::sites_list),
        METH_NOARGS,
        c"sites() -> list of per-site figures.",
    ),
    method(
        c"site_figures",
        main_interpreter_only!(api::site_figures),
        METH_NOARGS,
        c"site_figures() -> (live_bytes, live_counts, peak_bytes): int64 per site id.",
    ),
    method(
        c"sites_grown",
        main_interpreter_only!(api::sites_grown),
        METH_VARARGS,
        c"sites_grown(live_bytes_before, live_counts_before) -> [(site, live_bytes, growth, live_count, count_growth)]",
    ),
    method(
        c"rounds_begin",
        main_interpreter_only!(api_rounds::rounds_begin),
        METH_NOARGS,
        c"rounds_begin() -> None: every site's live figures now are the base of rounds",
    ),
    method(
        c"rounds_add",
        main_interpreter_only!(api_rounds::rounds_add),
        METH_NOARGS,
        c"rounds_add() -> None: a round ended; note which sites grew in it",
    ),
    method(
        c"rounds_grew",
        main_interpreter_only!(api_rounds::rounds_grew),
        METH_O,
        c"rounds_grew(by_count) -> [site, ...]: sites whose live bytes (or blocks) grew in every round",
    ),
    method(
        c"rounds_grown",
        main_interpreter_only!(api_rounds::rounds_grown),
        METH_NOARGS,
        c"rounds_grown() -> [(site, live_bytes, growth, live_count, count_growth)] since the base",
    ),
    method(
        c"rounds_end",
        main_interpreter_only!(api_rounds::rounds_end),
        METH_NOARGS,
        c"rounds_end() -> None: the rounds' readings freed",
    ),
    method(
        c"program_live_bytes",
        main_interpreter_only!(api_rounds::program_live_bytes),
        METH_O,
        c"program_live_bytes(kinds) -> (bytes, [(site, bytes), ...] of sites kinds does not sort)",
    ),
    method(
        c"sites_mark",
        main_interpreter_only!(api::sites_mark),
        METH_NOARGS,
        c"sites_mark() -> whether the sites touched from now on are noted (a reset_peak() too)",
    ),
    method(
        c"sites_grown_since_mark",
        main_interpreter_only!(api::sites_grown_since_mark),
        METH_NOARGS,
        c"sites_grown_since_mark() -> [(site, live_bytes, growth, live_count, count_growth)] | None",
    ),
    method(
        c"site_of",
        main_interpreter_only!(api::site_of),
        METH_O,
        c"site_of(address) -> (site, size, domain) | None",
    ),
    method(
        c"frames_of",
        main_interpreter_only!(api::frames_of),
        METH_O,
        c"frames_of(site) -> ((file, line, name), ...)",
    ),
    method(
        c"site_names",
        main_interpreter_only!(api::site_names),
        METH_O,
        c"site_names(site) -> ((file, name), ...): frames without lines, nothing cached",
    ),
    method(
        c"set_count_total",
        main_interpreter_only!(api_traces::set_count_total),
        METH_O,
        c"set_count_total(flag): record whole stack depths.",
    ),
    method(
        c"traces",
        main_interpreter_only!(api_traces::traces),
        METH_NOARGS,
        c"traces() -> [(domain, size, frames, total_nframe)]",
    ),
    method(
        c"object_traceback",
        main_interpreter_only!(api_traces::object_traceback),
        METH_O,
        c"object_traceback(obj) -> frames | None",
    ),
    method(
        c"object_site",
        main_interpreter_only!(api_traces::object_site),
        METH_O,
        c"object_site(obj) -> (site, size) | None",
    ),
    method(
        c"site_depth",
        main_interpreter_only!(api_traces::site_depth),
        METH_O,
        c"site_depth(site) -> whole stack depth",
    ),
    method(
        c"heap_walk",
        main_interpreter_only!(api_heap::heap_walk),
        METH_VARARGS,
        c"heap_walk(roots, own, split, relative[, stride][, through_tracked]) -> (count, size, rows, signatures)",
    ),
    method(
        c"set_relheap",
        main_interpreter_only!(api_heap::set_relheap),
        METH_VARARGS,
        c"set_relheap(roots | None, own[, only]): leave what is reachable now out of later walks (only: count only that)",
    ),
    method(
        c"path_to",
        main_interpreter_only!(api_heap::path_to),
        METH_VARARGS,
        c"path_to(roots, own, target, kind_tag, kind_type) -> (root, ..., object)",
    ),
    method(
        c"paths_to",
        main_interpreter_only!(api_heap::paths_to),
        METH_VARARGS,
        c"paths_to(roots, own, [(kind_tag, kind_type, site), ...]) -> ((root, ..., object) | (), ...)",
    ),
    method(
        c"instance_dict",
        main_interpreter_only!(api_heap::instance_dict),
        METH_O,
        c"instance_dict(obj) -> its __dict__ if it exists, else None (never creates one)",
    ),
    method(
        c"write_capture",
        main_interpreter_only!(api_report::write_capture),
        METH_VARARGS,
        c"write_capture(path, run_json, own_prefix): write a capture of the traced program from the engine's sites and the run Python knows",
    ),
    method(
        c"render_report",
        api_report::render_report,
        METH_VARARGS,
        c"render_report(path | [paths], format, limit[, show_import_system]) -> bytes: a capture as text, json, html or pprof",
    ),
    method(
        c"render_diff",
        api_report::render_diff,
        METH_VARARGS,
        c"render_diff(old, new, view, limit[, show_import_system]) -> str: per-line change between two captures",
    ),
    method(
        c"sigterm_deadline",
        main_interpreter_only!(api_preload::sigterm_deadline),
        METH_VARARGS,
        c"sigterm_deadline(seconds, in_children): Python's SIGTERM handler must start this soon after the signal; forked children keep it only if in_children",
    ),
    method(
        c"sigterm_after_fork",
        main_interpreter_only!(api_preload::sigterm_after_fork),
        METH_NOARGS,
        c"sigterm_after_fork(): in a forked child keeping heapsite's SIGTERM handler, a deadline of its own",
    ),
    method(
        c"sigterm_handling",
        main_interpreter_only!(api_preload::sigterm_handling),
        METH_NOARGS,
        c"sigterm_handling(): Python's SIGTERM handler has started",
    ),
    method(
        c"write_file",
        api_report::write_file,
        METH_VARARGS,
        c"write_file(path, data): write bytes to a user's output path (into devices and FIFOs, atomically over regular files)",
    ),
    method(
        c"capture_magic",
        api_report::capture_magic,
        METH_NOARGS,
        c"capture_magic() -> bytes: how a capture file starts",
    ),
    method(
        c"set_native",
        main_interpreter_only!(api_preload::set_native),
        METH_O,
        c"set_native(on): also record malloc, mmap and the like (preloaded only)",
    ),
    method(
        c"follow_reuse",
        main_interpreter_only!(api_traces::follow_reuse),
        METH_O,
        c"follow_reuse(on) -> bool: blocks of objects reused from free lists move to the reusing line (3.13+)",
    ),
    method(
        c"set_native_frames",
        main_interpreter_only!(api_preload::set_native_frames),
        METH_O,
        c"set_native_frames(on): native frames above the Python ones for native blocks",
    ),
    method(
        c"native",
        main_interpreter_only!(api_preload::native),
        METH_NOARGS,
        c"native() -> bool: whether native memory is recorded",
    ),
    method(
        c"preloaded",
        main_interpreter_only!(api_preload::preloaded),
        METH_NOARGS,
        c"preloaded() -> bool: whether heapsite was loaded by LD_PRELOAD",
    ),
    method(
        c"preload_finished",
        main_interpreter_only!(api_preload::preload_finished),
        METH_NOARGS,
        c"preload_finished(): the capture at exit is done",
    ),
    method(
        c"timeline_start",
        main_interpreter_only!(api_preload::timeline_start),
        METH_O,
        c"timeline_start(interval): sample traced memory every interval seconds",
    ),
    method(
        c"timeline_stop",
        main_interpreter_only!(api_preload::timeline_stop),
        METH_NOARGS,
        c"timeline_stop() -> [(seconds, bytes)]",
    ),
    method(
        c"timeline_samples",
        main_interpreter_only!(api_preload::timeline_samples),
        METH_NOARGS,
        c"timeline_samples() -> [(seconds, bytes)]: the series so far, sampling going on",
    ),
    method(
        c"timeline_after_fork",
        main_interpreter_only!(api_preload::timeline_after_fork),
        METH_NOARGS,
        c"timeline_after_fork(): restart sampling in a forked child",
    ),
    method(
        c"http_serve",
        main_interpreter_only!(api_serve::http_serve),
        METH_VARARGS,
        c"http_serve(address, run_json, own_prefix) -> str: serve /debug/pprof/heap, return the address",
    ),
    method(
        c"http_stop",
        main_interpreter_only!(api_serve::http_stop),
        METH_NOARGS,
        c"http_stop() -> bool: stop the pprof endpoint; False if it was not serving",
    ),
    method(
        c"http_address",
        api_serve::http_address,
        METH_O,
        c"http_address(address) -> str: the address it names; ValueError if none",
    ),
    PyMethodDef::zeroed(),
];

static mut MODULE: PyModuleDef = PyModuleDef {
    m_base: PyModuleDef_HEAD_INIT,
    m_name: c"heapsite._heapsite".as_ptr(),
    m_doc: c"heapsite's native core.".as_ptr(),
    m_size: -1,
    m_methods: ptr::null_mut(),
    m_slots: ptr::null_mut(),
    m_traverse: None,
    m_clear: None,
    m_free: None,
};

/// # Safety
/// Called once by the import system, with the GIL held.
#[allow(non_snake_case)]
#[no_mangle]
pub unsafe extern "C" fn PyInit__heapsite() -> *mut PyObject {
    // SAFETY: the import system calls this once, with the GIL held (above);
    // METHODS and MODULE are touched by nothing else.
    unsafe {
        sites::init();
        codes::init();
        hook::init();
        interp::init();
        let def = &raw mut MODULE;
        (*def).m_methods = (&raw mut METHODS).cast();
        let module = PyModule_Create(def);
        if module.is_null() {
            return module;
        }
        let constants: [(&CStr, i64); 5] = [
            (c"MAX_FRAMES", frames::MAX_FRAMES as i64),
            (c"NO_FRAME_SITE", sites::NO_FRAME_SITE as i64),
            (c"NO_GIL_SITE", sites::NO_GIL_SITE as i64),
            (c"OVERFLOW_SITE", sites::OVERFLOW_SITE as i64),
            (c"FREED_CODE_SITE", sites::FREED_CODE_SITE as i64),
        ];
        for (name, value) in constants {
            if PyModule_AddIntConstant(module, name.as_ptr(), value as std::ffi::c_long) < 0 {
                Py_DECREF(module);
                return ptr::null_mut();
            }
        }
        // The one source of the version: Cargo.toml (pyproject.toml's is dynamic).
        let version = concat!(env!("CARGO_PKG_VERSION"), "\0");
        if PyModule_AddStringConstant(module, c"__version__".as_ptr(), version.as_ptr().cast()) < 0
        {
            Py_DECREF(module);
            return ptr::null_mut();
        }
        module
    }
}
