//! The leak check's readings of every site, round after round (see
//! `engine::rounds`), and the program's live bytes: for the pytest plugin,
//! which asks them in each round of a test it checks closely. Nothing here
//! makes a Python object per site.

use super::api::{grown_list, int, list_of, none, raise, tuple};
use crate::engine::rounds::Rounds;
use crate::engine::sync::GilCell;
use crate::engine::{self, sites::SiteId};
use pyo3_ffi::*;

/// The rounds under way: one piece of work at a time, as the plugin checks
/// one test at a time. (Two readings of every site: 11 MB in a click
/// session, freed by rounds_end().)
static ROUNDS: GilCell<Option<Rounds>> = GilCell::new(None);

const NOT_BEGUN: &str = "no rounds begun (rounds_begin())";

/// rounds_begin() -> None: the figures of every site now are the base
/// (rounds begun before are forgotten).
pub unsafe extern "C" fn rounds_begin(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held; no other reference from ROUNDS.get() is live.
    unsafe {
        *ROUNDS.get() = Some(Rounds::begin(&engine::settled()));
        none()
    }
}

/// rounds_add() -> None: a round ended; which sites grew in it is noted.
pub unsafe extern "C" fn rounds_add(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: as rounds_begin.
    unsafe {
        match ROUNDS.get() {
            Some(rounds) => {
                rounds.add(&engine::settled());
                none()
            }
            None => raise(PyExc_RuntimeError, NOT_BEGUN),
        }
    }
}

/// rounds_grew(by_count: bool) -> [site_id, ...]: the sites whose live
/// bytes (by_count: live blocks) grew in every round added so far.
pub unsafe extern "C" fn rounds_grew(_: *mut PyObject, by_count: *mut PyObject) -> *mut PyObject {
    // SAFETY: as rounds_begin; `by_count` is the one argument (METH_O).
    unsafe {
        let by_count = match PyObject_IsTrue(by_count) {
            -1 => return std::ptr::null_mut(),
            flag => flag == 1,
        };
        match ROUNDS.get() {
            Some(rounds) => list_of(rounds.grew(by_count).into_iter().map(|id| int(id as i64))),
            None => raise(PyExc_RuntimeError, NOT_BEGUN),
        }
    }
}

/// rounds_grown() -> [(site_id, live_bytes, growth, live_count,
/// count_growth), ...]: the sites holding more bytes than at the base, most
/// growth first (as sites_grown).
pub unsafe extern "C" fn rounds_grown(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: as rounds_begin.
    unsafe {
        match ROUNDS.get() {
            Some(rounds) => grown_list(rounds.grown(&engine::settled()).into_iter()),
            None => raise(PyExc_RuntimeError, NOT_BEGUN),
        }
    }
}

/// rounds_end() -> None: the rounds' readings freed.
pub unsafe extern "C" fn rounds_end(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: as rounds_begin.
    unsafe {
        *ROUNDS.get() = None;
        none()
    }
}

/// What `program_live_bytes` sorts a site as, by its byte in `kinds` (the
/// plugin's ProgramSites.kinds).
const UNKNOWN: u8 = 0;
const PROGRAM: u8 = 1;

/// program_live_bytes(kinds: bytearray) -> (bytes, [(site_id, bytes), ...]):
/// the live bytes of the sites whose byte in `kinds` says they are the
/// program's, and the sites holding memory that `kinds` does not sort yet
/// (0, or past its end) with their live bytes, for the caller to sort.
pub unsafe extern "C" fn program_live_bytes(
    _: *mut PyObject,
    kinds: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: CPython calls this with the GIL held and the one argument
    // (METH_O); the bytearray's buffer is read while nothing runs that
    // could resize it (no Python code, no callback).
    unsafe {
        if PyByteArray_Check(kinds) == 0 {
            return raise(PyExc_TypeError, "program_live_bytes(kinds: bytearray)");
        }
        let kinds = std::slice::from_raw_parts(
            PyByteArray_AsString(kinds) as *const u8,
            PyByteArray_Size(kinds) as usize,
        );
        let engine = engine::settled();
        let mut total = 0i64;
        let mut unsorted = Vec::new();
        for id in 0..engine.site_count() {
            let bytes = engine.totals(id).live_bytes;
            match kinds.get(id as usize).copied().unwrap_or(UNKNOWN) {
                PROGRAM => total += bytes,
                UNKNOWN if bytes != 0 => unsorted.push((id, bytes)),
                _ => {}
            }
        }
        tuple(&[
            int(total),
            list_of(
                unsorted
                    .into_iter()
                    .map(|(id, bytes): (SiteId, i64)| tuple(&[int(id as i64), int(bytes)])),
            ),
        ])
    }
}
