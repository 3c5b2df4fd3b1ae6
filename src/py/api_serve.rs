//! The pprof endpoint's functions (src/serve/): start it, stop it, and
//! check an address before anything runs (`heapsite run --http`).

use crate::py::api::raise;
use crate::py::api_report::{run_arguments, text_arg};
use crate::serve::{self, live::Program, StartError};
use pyo3_ffi::*;
use std::ffi::c_char;

unsafe fn str_object(text: &str) -> *mut PyObject {
    // SAFETY: the caller keeps this unsafe fn's contract: the GIL held.
    unsafe { PyUnicode_FromStringAndSize(text.as_ptr() as *const c_char, text.len() as Py_ssize_t) }
}

/// http_serve(address, run_json, own_prefix) -> str: serves
/// /debug/pprof/heap at `address` and returns the address listened on.
/// `run_json` is a `model::Run` (argv, start, native flags; the figures are
/// read at each scrape), `own_prefix` heapsite's package directory.
pub unsafe extern "C" fn http_serve(_: *mut PyObject, tuple: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let Some((address, run, own_prefix)) = run_arguments(tuple, "http_serve", "address") else {
            return std::ptr::null_mut();
        };
        if crate::engine::codes::interpreter_finalizing() {
            // Its resolver would take the GIL while the interpreter ends.
            return raise(
                PyExc_RuntimeError,
                "the interpreter is finalising: no pprof endpoint",
            );
        }
        match serve::start(&address, Program::new(run, own_prefix)) {
            Ok(bound) => str_object(&bound.to_string()),
            Err(StartError::Address(e)) => raise(PyExc_ValueError, &e),
            Err(StartError::Listen(e)) => raise(PyExc_OSError, &e),
            Err(StartError::Running(at)) => raise(
                PyExc_RuntimeError,
                &format!("heapsite already serves its pprof endpoint at {at}"),
            ),
        }
    }
}

/// http_stop() -> bool: stops the endpoint; False if it was not serving.
pub unsafe extern "C" fn http_stop(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held, on a thread with a thread state.
    unsafe { PyBool_FromLong(serve::stop() as _) }
}

/// http_address(text) -> str: the first address `text` names (see
/// serve/address.rs); ValueError, one line, if it names none.
pub unsafe extern "C" fn http_address(_: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let Some(text) = text_arg(arg, "address") else {
            return std::ptr::null_mut();
        };
        match serve::address::parse(&text) {
            Ok(found) => str_object(&found[0].to_string()),
            Err(e) => raise(PyExc_ValueError, &e),
        }
    }
}
