//! The names of the sites the endpoint serves, kept by the server: what a
//! site's frames say (file, line, function) can only be read with the GIL,
//! since frames name code objects and are swapped as those die, so the
//! server never reads them. It asks the *resolver* thread for the sites it
//! has no names for; the resolver takes the GIL for that alone, never
//! while the counters are read, and only for sites not named yet, so a
//! program scraped every few seconds pays for its new sites only.
//!
//! Why a thread that takes the GIL, not a pending call
//! (`Py_AddPendingCall`): pending calls run on the main thread between
//! bytecodes, and a server's main thread spends its life blocked in
//! `accept()` or `select()` with the GIL released, where it would never run
//! one. Taking the GIL works whenever the program lets any thread run.
//!
//! The server waits for the resolver a bounded time (`lookup`'s `wait`):
//! a program holding the GIL in one long C call gets its sites served
//! under a placeholder name instead of a stalled scrape.
//!
//! A thread that takes the GIL while the interpreter finalises is ended
//! (or hangs, 3.14+) inside `PyGILState_Ensure`. So `close` runs before
//! finalisation (an `atexit` callback of the Python side: those run before
//! the interpreter marks itself finalising), and after it the resolver
//! never asks for the GIL again: `close` sets `CLOSING` and, if the
//! resolver is between deciding to take the GIL and giving it back,
//! releases the GIL and waits for it to be given back. The resolver never
//! locks `state` while it holds the GIL, so neither waits on the other.

use crate::engine::{self, codes, frames, own_work, sites::SiteId};
use pyo3_ffi::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A site's frames as a capture takes them: (filename, lineno, function),
/// the allocating frame first.
pub type Frames = Arc<Vec<(String, i64, String)>>;

/// A site id and which site holds it (`Site::generation`).
pub type SiteKey = (SiteId, u32);

/// Sites resolved per hold of the GIL: the program runs between chunks.
const CHUNK: usize = 256;

#[derive(Default)]
struct State {
    /// Names by site id, with the generation they are of.
    known: HashMap<SiteId, (u32, Frames)>,
    /// Sites the server asked for, not yet taken by the resolver.
    wanted: Vec<SiteId>,
    /// Requests made and requests answered, to wait for one's answer.
    asked: u64,
    answered: u64,
    closing: bool,
    /// The resolver has decided to take the GIL and not given it back yet.
    in_gil: bool,
}

#[derive(Default)]
pub struct Names {
    state: Mutex<State>,
    changed: Condvar,
    /// `State::closing`, readable by the resolver while it holds the GIL.
    closing: AtomicBool,
}

impl Names {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere (impossible: panic = abort) leaves usable data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The names of `sites` that are known or can be had within `wait`;
    /// sites left out have no name yet.
    pub fn lookup(&self, sites: &[SiteKey], wait: Duration) -> HashMap<SiteId, Frames> {
        let mut state = self.lock();
        let missing: Vec<SiteId> = sites
            .iter()
            .filter(
                |(id, generation)| !matches!(state.known.get(id), Some((g, _)) if g == generation),
            )
            .map(|&(id, _)| id)
            .collect();
        if !missing.is_empty() && !state.closing {
            state.wanted = missing;
            state.asked += 1;
            let request = state.asked;
            self.changed.notify_all();
            let deadline = Instant::now() + wait;
            while state.answered < request && !state.closing {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = self
                    .changed
                    .wait_timeout(state, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        sites
            .iter()
            .filter_map(|(id, generation)| match state.known.get(id) {
                Some((g, frames)) if g == generation => Some((*id, frames.clone())),
                _ => None,
            })
            .collect()
    }

    /// The resolver thread's body: names the sites asked for, a chunk per
    /// hold of the GIL, until `close`.
    pub fn run_resolver(&self) {
        loop {
            let (wanted, request) = {
                let mut state = self.lock();
                while state.wanted.is_empty() && !state.closing {
                    state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                if state.closing {
                    return;
                }
                (std::mem::take(&mut state.wanted), state.asked)
            };
            for chunk in wanted.chunks(CHUNK) {
                let resolved = {
                    let mut state = self.lock();
                    if state.closing {
                        return;
                    }
                    state.in_gil = true;
                    drop(state);
                    // SAFETY: `in_gil` is set, so `close` (which runs before
                    // finalisation) waits for this to give the GIL back.
                    unsafe { self.resolve(chunk) }
                };
                let mut state = self.lock();
                state.in_gil = false;
                for (id, generation, frames) in resolved.into_iter().flatten() {
                    state.known.insert(id, (generation, frames));
                }
                self.changed.notify_all();
            }
            let mut state = self.lock();
            state.answered = state.answered.max(request);
            self.changed.notify_all();
        }
    }

    /// Takes the GIL, names `chunk` and gives it back; None if `close`
    /// came first.
    ///
    /// # Safety
    /// Called by the resolver thread (not holding the GIL) with `in_gil`
    /// set, so that the interpreter is not finalising.
    unsafe fn resolve(&self, chunk: &[SiteId]) -> Option<Vec<(SiteId, u32, Frames)>> {
        // SAFETY: the caller keeps this fn's contract (`# Safety` above):
        // not finalising, so PyGILState_Ensure returns holding the GIL.
        unsafe {
            // A second guard: `close` runs from an atexit callback, which
            // a server started after the callbacks ran never gets.
            if codes::interpreter_finalizing() {
                return None;
            }
            let gil = PyGILState_Ensure();
            if self.closing.load(Ordering::Acquire) {
                PyGILState_Release(gil);
                return None;
            }
            // What naming allocates (UTF-8 copies of names) is heapsite's.
            let own = own_work::enter();
            let engine = engine::settled();
            let named = chunk
                .iter()
                .map(|&id| {
                    let site = engine.site(id);
                    let frames = frames::resolve_all(&site.frames())
                        .iter()
                        .map(|f| (text(f.filename), i64::from(f.lineno), text(f.name)))
                        .collect();
                    (id, site.generation(), Arc::new(frames))
                })
                .collect();
            if own {
                own_work::leave();
            }
            PyGILState_Release(gil);
            Some(named)
        }
    }

    /// Stops the resolver for good before the interpreter finalises: after
    /// this it never takes the GIL again, and `lookup` no longer waits.
    ///
    /// # Safety
    /// The GIL held by the caller, on a thread with a thread state; it is
    /// released while the resolver gives it back.
    pub unsafe fn close(&self) {
        let mut state = self.lock();
        state.closing = true;
        self.closing.store(true, Ordering::Release);
        self.changed.notify_all();
        if !state.in_gil {
            return;
        }
        // SAFETY: the caller holds the GIL (this fn's contract); it is given
        // back below, after `state` is unlocked (the resolver locks it only
        // without the GIL, so waiting for it with the GIL could deadlock).
        let saved = unsafe { PyEval_SaveThread() };
        while state.in_gil {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        drop(state);
        // SAFETY: `saved` is this thread's state, from PyEval_SaveThread.
        unsafe { PyEval_RestoreThread(saved) };
    }
}

/// A name as Rust text; "?" for what is not a str (a frame of code freed
/// at exit is named None).
///
/// # Safety
/// GIL held; `object` null or a live object.
unsafe fn text(object: *mut PyObject) -> String {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above).
    unsafe {
        if object.is_null() || PyUnicode_Check(object) == 0 {
            return "?".into();
        }
        let mut len: Py_ssize_t = 0;
        let data = PyUnicode_AsUTF8AndSize(object, &mut len);
        if data.is_null() {
            PyErr_Clear();
            return "?".into();
        }
        let bytes = std::slice::from_raw_parts(data as *const u8, len as usize);
        String::from_utf8_lossy(bytes).into_owned()
    }
}
