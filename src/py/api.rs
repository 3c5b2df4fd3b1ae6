//! The native module's functions (`heapsite._heapsite`), called by the Python
//! package. Arguments are checked here and again, friendlier, in Python.
//! Every function runs with the GIL held (CPython calls them so).

use crate::engine::frames::{self, RawFrame, MAX_FRAMES};
use crate::engine::hook;
use crate::engine::sites::{self, FREED_CODE_SITE, NO_FRAME_SITE, NO_GIL_SITE, OVERFLOW_SITE};
use crate::engine::sync::GilCell;
use crate::engine::{self, codes};
use crate::native::tracked;
use pyo3_ffi::*;
use std::collections::HashMap;
use std::ffi::{c_long, CStr};
use std::ptr;

pub(crate) unsafe fn raise(kind: *mut PyObject, message: &str) -> *mut PyObject {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let text = std::ffi::CString::new(message).unwrap_or_default();
        PyErr_SetString(kind, text.as_ptr());
        ptr::null_mut()
    }
}

pub(crate) unsafe fn none() -> *mut PyObject {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        Py_INCREF(Py_None());
        Py_None()
    }
}

pub(crate) unsafe fn int(value: i64) -> *mut PyObject {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe { PyLong_FromLongLong(value) }
}

/// A tuple from new references (stolen); NULL if any is NULL.
pub(crate) unsafe fn tuple(items: &[*mut PyObject]) -> *mut PyObject {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        if items.iter().any(|item| item.is_null()) {
            items.iter().for_each(|&item| Py_XDECREF(item));
            return ptr::null_mut();
        }
        let result = PyTuple_New(items.len() as Py_ssize_t);
        if result.is_null() {
            items.iter().for_each(|&item| Py_DECREF(item));
            return result;
        }
        for (i, &item) in items.iter().enumerate() {
            PyTuple_SetItem(result, i as Py_ssize_t, item);
        }
        result
    }
}

/// A list from new references (stolen), made one by one; NULL, with the
/// items made so far released, at the first NULL item or failed append.
pub(crate) unsafe fn list_of(items: impl Iterator<Item = *mut PyObject>) -> *mut PyObject {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let list = PyList_New(0);
        if list.is_null() {
            return list;
        }
        for item in items {
            if item.is_null() || PyList_Append(list, item) < 0 {
                Py_XDECREF(item);
                Py_DECREF(list);
                return ptr::null_mut();
            }
            Py_DECREF(item);
        }
        list
    }
}

/// start(frames: int, sample_every: int): trace every allocation
/// (`sample_every` 0) or one per `sample_every` bytes on average
/// (src/engine/sampling.rs), `frames` deep. While tracing, changes the depth;
/// the sampling rate cannot change then (the tables hold what the old one
/// chose): ValueError.
pub unsafe fn start(
    _: *mut PyObject,
    args: *mut *mut PyObject,
    nargs: Py_ssize_t,
) -> *mut PyObject {
    // SAFETY: called by the module's METH_FASTCALL entry with the GIL held
    // and `nargs` arguments at `args`.
    unsafe {
        if nargs != 2 {
            return raise(PyExc_TypeError, "start() takes frames and sample_every");
        }
        let arg = *args;
        let every = *args.add(1);
        let Some(rate) = sample_rate_arg(every) else {
            return ptr::null_mut();
        };
        if PyLong_Check(arg) == 0 {
            return raise(PyExc_TypeError, "frames must be an int");
        }
        let depth: c_long = PyLong_AsLong(arg);
        if depth == -1 && !PyErr_Occurred().is_null() {
            PyErr_Clear();
            return raise(
                PyExc_ValueError,
                &format!("frames must be between 1 and {MAX_FRAMES}"),
            );
        }
        if !(1..=MAX_FRAMES as c_long).contains(&depth) {
            return raise(
                PyExc_ValueError,
                &format!("frames must be between 1 and {MAX_FRAMES}, got {depth}"),
            );
        }
        let current = crate::engine::sampling::rate();
        if hook::is_tracing() && rate != current {
            let mode = |rate: u64| match rate {
                0 => "every allocation".to_string(),
                bytes => format!("one sample per {bytes} bytes"),
            };
            return raise(
                PyExc_ValueError,
                &format!(
                    "heapsite is tracing {}; stop() before tracing {}",
                    mode(current),
                    mode(rate)
                ),
            );
        }
        hook::start(depth as usize, rate, &tracked::COMPANION);
        none()
    }
}

/// `sample_every` as a rate: 0 (every allocation) or a positive number of
/// bytes; None with the exception set otherwise.
///
/// # Safety
/// GIL held; `arg` a valid object.
unsafe fn sample_rate_arg(arg: *mut PyObject) -> Option<u64> {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        if PyLong_Check(arg) == 0 {
            raise(PyExc_TypeError, "sample_every must be an int");
            return None;
        }
        let rate = PyLong_AsLongLong(arg);
        if rate == -1 && !PyErr_Occurred().is_null() {
            PyErr_Clear();
        } else if (0..=1 << 40).contains(&rate) {
            return Some(rate as u64);
        }
        raise(
            PyExc_ValueError,
            "sample_every must be 0 (every allocation) or bytes between 1 and 1 TiB",
        );
        None
    }
}

/// sample_rate() -> int: the mean bytes between samples, 0 when every
/// allocation is recorded.
pub unsafe extern "C" fn sample_rate(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe { int(crate::engine::sampling::rate() as i64) }
}

pub unsafe extern "C" fn stop(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        hook::stop(&tracked::COMPANION);
        // The tracemalloc drop-in's modes end with the tracing they were
        // for, however it is stopped: a later heapsite.start() after
        // heapsite.stop() keyed every stack by a walk to its bottom.
        sites::set_count_total_depth(false);
        crate::heap::objects::follow_reuse(false);
        none()
    }
}

/// own_work_enter() -> bool: the calling thread's allocations are heapsite's
/// own until own_work_leave() (see src/engine/own_work.rs); False if another
/// thread is inside (then do not leave).
pub unsafe extern "C" fn own_work_enter(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe { PyBool_FromLong(crate::engine::own_work::enter() as c_long) }
}

pub unsafe extern "C" fn own_work_leave(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        crate::engine::own_work::leave();
        none()
    }
}

pub unsafe extern "C" fn is_tracing(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe { PyBool_FromLong(hook::is_tracing() as c_long) }
}

pub unsafe extern "C" fn clear(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        hook::clear(&tracked::COMPANION);
        none()
    }
}

pub unsafe extern "C" fn traced_memory(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let (current, peak) = engine::settled().traced_memory();
        tuple(&[int(current.max(0)), int(peak.max(0))])
    }
}

pub unsafe extern "C" fn reset_peak(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        engine::reset_peak();
        none()
    }
}

pub unsafe extern "C" fn traceback_limit(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe { int(hook::depth() as i64) }
}

/// site_count() -> int: how many sites were made so far (what peak_sites
/// takes as `first_new_site`; ids of sites of freed code are reused, so
/// this counts births, not ids), without stats()'s sums over every site and
/// table (the pytest plugin asks before every test).
pub unsafe extern "C" fn site_count(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe { int(sites::births() as i64) }
}

/// stats() -> dict of heapsite's own figures.
pub unsafe extern "C" fn stats(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let own = engine::own_figures();
        let dict = PyDict_New();
        if dict.is_null() {
            return dict;
        }
        let entries: [(&CStr, i64); 7] = [
            (c"live_allocations", own.live_allocations as i64),
            (c"tracking_bytes", own.tracking_bytes as i64),
            (c"sites", own.sites as i64),
            (c"dropped", own.dropped as i64),
            (c"site_cache_misses", own.site_cache_misses as i64),
            (c"caller_walks", own.caller_walks as i64),
            (c"free_hook", i64::from(own.free_hook)),
        ];
        for (key, value) in entries {
            let value = int(value);
            if value.is_null() || PyDict_SetItemString(dict, key.as_ptr(), value) < 0 {
                Py_XDECREF(value);
                Py_DECREF(dict);
                return ptr::null_mut();
            }
            Py_DECREF(value);
        }
        dict
    }
}

/// Resolved `(filename, lineno, name)` tuples, cached per frame: many sites
/// share frames. Keyed by code object address, so what is cached for a code
/// object that was freed is dropped before each use (its address may be a
/// new code object's by then).
static RESOLVED: GilCell<Option<HashMap<(usize, i32), usize>>> = GilCell::new(None);

/// One `(filename, lineno, name)` tuple per frame, most recent first.
unsafe fn frame_tuples(frames: &[RawFrame]) -> Vec<*mut PyObject> {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let cache = RESOLVED.get().get_or_insert_with(HashMap::new);
        let died = codes::take_died();
        if !died.is_empty() {
            let mut dropped = Vec::new();
            cache.retain(|&(code, _), &mut item| {
                let keep = !died.includes(code);
                if !keep {
                    dropped.push(item as *mut PyObject);
                }
                keep
            });
            dropped.into_iter().for_each(|item| Py_DECREF(item));
        }
        let key = |f: &RawFrame| (f.code as usize, f.offset);
        let mut items: Vec<*mut PyObject> = frames
            .iter()
            .map(|f| match cache.get(&key(f)) {
                Some(&cached) => {
                    let cached = cached as *mut PyObject;
                    Py_INCREF(cached);
                    cached
                }
                None => ptr::null_mut(),
            })
            .collect();
        let missing: Vec<RawFrame> = frames
            .iter()
            .zip(&items)
            .filter(|(_, item)| item.is_null())
            .map(|(f, _)| *f)
            .collect();
        // Resolved before any tuple is made: making one may run a collection.
        let mut resolved = frames::resolve_all(&missing).into_iter().zip(missing);
        for item in items.iter_mut().filter(|item| item.is_null()) {
            let (names, frame) = resolved.next().expect("one resolution per missing frame");
            Py_INCREF(names.filename);
            Py_INCREF(names.name);
            *item = tuple(&[names.filename, int(names.lineno as i64), names.name]);
            if !item.is_null() {
                Py_INCREF(*item);
                cache.insert(key(&frame), *item as usize);
            }
        }
        items
    }
}

unsafe fn pseudo_frame(label: &CStr) -> *mut PyObject {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let name = PyUnicode_FromString(label.as_ptr());
        Py_XINCREF(name);
        tuple(&[tuple(&[name, int(0), name])])
    }
}

/// A site's frames as a tuple of `(filename, lineno, name)` tuples, most
/// recent first (pseudo-frames for the special sites).
pub(crate) unsafe fn site_frames(id: u32) -> *mut PyObject {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        match sites::reserved_name(id) {
            Some(name) => pseudo_frame(name),
            None => tuple(&frame_tuples(&sites::site(id).frames())),
        }
    }
}

/// peak_sites(limit: int) -> ((site, bytes), ...): the sites that grew the
/// most from the last reset_peak() to the peak since, largest first, at most
/// `limit` (counters.rs: what each held at the peak less what it held at the
/// reset; over every site these add up to the peak less the traced memory at
/// the reset). Worked out here, not from site_figures() in Python: the
/// pytest plugin asks after many tests.
pub unsafe extern "C" fn peak_sites(_: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let limit = PyLong_AsLongLong(arg);
        if !PyErr_Occurred().is_null() {
            return ptr::null_mut();
        }
        let engine = engine::settled();
        let Some(mut held) = engine.grown_at_peak() else {
            PyErr_SetString(
                PyExc_MemoryError,
                c"heapsite: no memory was left to note what sites held at the last reset_peak()"
                    .as_ptr(),
            );
            return ptr::null_mut();
        };
        held.sort_unstable_by(|a, b| b.cmp(a));
        held.truncate(limit.max(0) as usize);
        let items: Vec<*mut PyObject> = held
            .into_iter()
            .map(|(size, id)| tuple(&[int(id as i64), int(size)]))
            .collect();
        // A tuple of pairs: `tuple` takes care of a pair that failed.
        tuple(&items)
    }
}

/// site_names(site_id: int) -> ((filename, name), ...), most recent first:
/// a site's frames without their lines, as the names the code objects hold.
/// Unlike frames_of() nothing is cached, so asking leaves no new object
/// behind (the pytest plugin asks while a leak check counts objects).
pub unsafe extern "C" fn site_names(_: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let engine = engine::settled();
        let id = match site_id(arg) {
            Ok(id) => id,
            Err(error) => return error,
        };
        if matches!(
            id,
            NO_FRAME_SITE | NO_GIL_SITE | OVERFLOW_SITE | FREED_CODE_SITE
        ) {
            return tuple(&[]);
        }
        let pairs: Vec<*mut PyObject> = frames::resolve_all(&engine.site(id).frames())
            .into_iter()
            .map(|names| {
                Py_INCREF(names.filename);
                Py_INCREF(names.name);
                tuple(&[names.filename, names.name])
            })
            .collect();
        tuple(&pairs)
    }
}

/// sites() -> list of (site_id, frames, live_count, live_bytes, total_count,
/// total_bytes, peak_count, peak_bytes) for every site that allocated since
/// start() or clear(). frames: ((filename, lineno, name), ...), most recent
/// first.
pub unsafe extern "C" fn sites_list(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let engine = engine::settled();
        let allocated = (0..engine.site_count())
            .map(|id| (id, engine.totals(id)))
            .filter(|(_, t)| t.total_count != 0 || t.live_count != 0 || t.peak_count != 0);
        list_of(allocated.map(|(id, t)| {
            tuple(&[
                int(id as i64),
                site_frames(id),
                int(t.live_count),
                int(t.live_bytes),
                int(t.total_count),
                int(t.total_bytes),
                int(t.peak_count),
                int(t.peak_bytes),
            ])
        }))
    }
}

/// site_figures() -> (live_bytes, live_counts, peak_bytes): three `bytes` of
/// native-endian int64, one per site id (`array.array("q")` reads them).
/// For the pytest plugin, which asks after every test: no frames, and no
/// Python object per site.
pub unsafe extern "C" fn site_figures(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let engine = engine::settled();
        let count = engine.site_count() as usize;
        let mut columns = [Vec::new(), Vec::new(), Vec::new()];
        for column in columns.iter_mut() {
            column.reserve(count * 8);
        }
        for id in 0..count {
            let t = engine.totals(id as u32);
            for (column, value) in
                columns
                    .iter_mut()
                    .zip([t.live_bytes, t.live_count, t.peak_bytes])
            {
                column.extend_from_slice(&value.to_ne_bytes());
            }
        }
        let items: Vec<*mut PyObject> = columns
            .iter()
            .map(|data| PyBytes_FromStringAndSize(data.as_ptr().cast(), data.len() as Py_ssize_t))
            .collect();
        tuple(&items)
    }
}

/// sites_grown(live_bytes_before: bytes, live_counts_before: bytes) ->
/// [(site_id, live_bytes, growth, live_count, count_growth), ...]: the sites
/// holding more bytes now than in the columns of an earlier site_figures()
/// (a site newer than them held 0), most growth first.
///
/// For the pytest plugin's leak check, which asks it of every test that
/// leaks through a cause already found: a comparison over every site in
/// Python (100,000 sites in a click session) cost more than the test.
pub unsafe extern "C" fn sites_grown(_: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let usage = "sites_grown(live_bytes_before: bytes, live_counts_before: bytes)";
        if PyTuple_Check(args) == 0 || PyTuple_Size(args) != 2 {
            return raise(PyExc_TypeError, usage);
        }
        let (Some(before_bytes), Some(before_counts)) = (
            int64_column(PyTuple_GetItem(args, 0)),
            int64_column(PyTuple_GetItem(args, 1)),
        ) else {
            return raise(PyExc_TypeError, usage);
        };
        grown_list(
            engine::settled()
                .grown_since(&before_bytes, &before_counts)
                .into_iter(),
        )
    }
}

/// The list sites_grown and sites_grown_since_mark answer.
///
/// # Safety
/// GIL held.
pub(crate) unsafe fn grown_list(rows: impl Iterator<Item = engine::Growth>) -> *mut PyObject {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above).
    unsafe {
        list_of(rows.map(|row| {
            tuple(&[
                int(row.site as i64),
                int(row.live_bytes),
                int(row.growth),
                int(row.live_count),
                int(row.count_growth),
            ])
        }))
    }
}

/// The native-endian int64s of a `bytes` (site_figures' columns), copied
/// out; None if `column` is not bytes.
///
/// # Safety
/// GIL held.
unsafe fn int64_column(column: *mut PyObject) -> Option<Vec<i64>> {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above): GIL
    // held; the bytes' buffer is read while the argument tuple holds it.
    unsafe {
        if column.is_null() || PyBytes_Check(column) == 0 {
            return None;
        }
        let data = std::slice::from_raw_parts(
            PyBytes_AsString(column) as *const u8,
            PyBytes_Size(column) as usize,
        );
        Some(
            data.chunks_exact(8)
                .map(|word| i64::from_ne_bytes(word.try_into().expect("chunks of 8")))
                .collect(),
        )
    }
}

/// sites_mark() -> bool: reset_peak(), and from now on note which sites
/// are touched, for sites_grown_since_mark(); False if the note cannot be
/// kept.
pub unsafe extern "C" fn sites_mark(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let kept = engine::mark_sites();
        PyBool_FromLong(kept as c_long)
    }
}

/// sites_grown_since_mark() -> [(site_id, live_bytes, growth, live_count,
/// count_growth), ...] | None: as sites_grown, from the last sites_mark(),
/// reading only the sites touched since (None when there was no mark since
/// the last reset_peak(), or its note missed some).
pub unsafe extern "C" fn sites_grown_since_mark(
    _: *mut PyObject,
    _: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let Some(grown) = engine::settled().grown_since_mark() else {
            return none();
        };
        grown_list(grown.into_iter())
    }
}

/// site_of(address: int) -> (site_id, size, domain) or None.
pub unsafe extern "C" fn site_of(_: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        let addr = PyLong_AsSize_t(arg);
        if addr == usize::MAX && !PyErr_Occurred().is_null() {
            return ptr::null_mut();
        }
        match hook::lookup(addr) {
            Some(record) => tuple(&[
                int(record.site as i64),
                int(record.size as i64),
                int(record.domain as i64),
            ]),
            None => none(),
        }
    }
}

/// A site id argument, checked: Err(NULL) with the exception set if it is
/// not an int or names no site.
pub(crate) unsafe fn site_id(arg: *mut PyObject) -> Result<u32, *mut PyObject> {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let id = PyLong_AsLong(arg);
        if id == -1 && !PyErr_Occurred().is_null() {
            return Err(ptr::null_mut());
        }
        if id < 0 || id as u64 >= sites::count() as u64 {
            return Err(raise(PyExc_ValueError, &format!("no call site {id}")));
        }
        Ok(id as u32)
    }
}

/// frames_of(site_id: int) -> frames tuple.
pub unsafe extern "C" fn frames_of(_: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython calls this through the module's method table, with
    // the GIL held and the arguments its METH_ flag declares.
    unsafe {
        engine::settled();
        match site_id(arg) {
            Ok(id) => site_frames(id),
            Err(error) => error,
        }
    }
}
