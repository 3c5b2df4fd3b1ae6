//! The thin, unsafe edge to `frames.c`: reading the calling thread's Python
//! frames and resolving them to file, line and function when a report asks.

use pyo3_ffi::PyObject;
use std::ffi::{c_int, c_void};

/// Deepest stack heapsite records; `start(frames=N)` accepts 1..=MAX_FRAMES.
pub const MAX_FRAMES: usize = 128;

/// One recorded frame: a code object and the byte offset of its current
/// instruction. Layout mirrors `hs_frame` in C. Two markers in `offset` make
/// other kinds: a native frame (`code` is an instruction pointer) and a
/// retired one (`code` is a record of src/engine/retired.rs; its code object was freed).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawFrame {
    pub code: *mut c_void,
    pub offset: i32,
    pad: i32,
}

impl RawFrame {
    pub const NONE: RawFrame = RawFrame {
        code: std::ptr::null_mut(),
        offset: 0,
        pad: 0,
    };

    /// A native frame: an instruction pointer, not a code object.
    pub fn native(ip: usize) -> RawFrame {
        RawFrame {
            code: ip as *mut c_void,
            offset: crate::engine::native_frames::NATIVE,
            pad: 0,
        }
    }

    pub fn is_native(&self) -> bool {
        self.offset == crate::engine::native_frames::NATIVE
    }

    pub fn is_retired(&self) -> bool {
        self.offset == RETIRED
    }

    /// A frame of a code object (alive: see src/engine/codes.rs).
    pub fn is_python(&self) -> bool {
        !self.is_native() && !self.is_retired()
    }

    /// This frame resolved for good, before its code object is freed; None
    /// when memory to keep it cannot be had.
    ///
    /// # Safety
    /// GIL held; a Python frame whose code object is still intact.
    pub unsafe fn retire(&self) -> Option<RawFrame> {
        // SAFETY: the caller keeps this fn's contract (`# Safety` above):
        // GIL held; a Python frame whose code object is still intact.
        unsafe {
            Some(RawFrame {
                code: crate::engine::retired::keep(resolve(self))?,
                offset: RETIRED,
                pad: 0,
            })
        }
    }
}

/// `offset` of a retired frame (no code offset is this negative).
const RETIRED: i32 = i32::MIN + 1;

#[cfg(test)]
impl RawFrame {
    /// A retired frame whose record is at `record` (never read by tests).
    pub fn retired_at(record: usize) -> RawFrame {
        RawFrame {
            code: record as *mut c_void,
            offset: RETIRED,
            pad: 0,
        }
    }
}

impl PartialEq for RawFrame {
    fn eq(&self, other: &Self) -> bool {
        // `pad` is never written by C; compare only what identifies the frame.
        self.code == other.code && self.offset == other.offset
    }
}

extern "C" {
    fn hs_read_frames(
        out: *mut RawFrame,
        max: c_int,
        total: *mut c_int,
        skipped_caller: *mut c_int,
    ) -> c_int;
    fn hs_read_words(out: *mut u64, max: c_int, skipped_caller: *mut c_int) -> c_int;
    fn hs_key_of_stack(mult: *const [u64; 2], max: c_int, count_total: c_int, key: *mut StackKey);
    fn hs_running_word() -> u64;
    #[cfg(test)]
    fn hs_depth_mult() -> u64;
    fn hs_gil_held() -> c_int;
    fn hs_callers_memo_forget();
    fn hs_caller_walks() -> u64;
    fn hs_current_thread() -> *mut c_void;
    fn hs_resolve_frame(
        code: *mut c_void,
        offset: c_int,
        filename: *mut *mut PyObject,
        name: *mut *mut PyObject,
    ) -> c_int;
}

/// Frames read by `read_frames`: how many were written, the stack's whole
/// depth, and whether a caller's frame was left out as incomplete.
pub struct Read {
    pub n: usize,
    pub total: u32,
    pub skipped_caller: bool,
}

/// Reads up to `buf.len()` frames of the calling thread, most recent first.
/// The whole depth is only walked to the end when `count_total` asks
/// (tracemalloc's `total_nframe`); otherwise the depth reported is the
/// number written.
///
/// # Safety
/// The calling thread must hold the GIL (frames are only stable for it).
#[inline(always)]
pub unsafe fn read_frames(buf: &mut [std::mem::MaybeUninit<RawFrame>], count_total: bool) -> Read {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // The calling thread must hold the GIL (frames are only stable for it).
    unsafe {
        let mut total: c_int = 0;
        let mut skipped: c_int = 0;
        let total_ptr = if count_total {
            &mut total as *mut c_int
        } else {
            std::ptr::null_mut()
        };
        let n = hs_read_frames(
            buf.as_mut_ptr().cast(),
            buf.len() as c_int,
            total_ptr,
            &mut skipped,
        )
        .max(0);
        Read {
            n: n as usize,
            total: if count_total { total.max(n) } else { n } as u32,
            skipped_caller: skipped != 0,
        }
    }
}

/// The frames `read_frames` would give (not counting the whole depth), as
/// the words the stack key hashes: their instruction pointers, each naming
/// code and offset while the code lives (`hs_read_words` in frames.c). Some
/// with how many were written and whether a caller's frame was left out as
/// incomplete; None before 3.11, whose words are not addresses.
///
/// # Safety
/// The calling thread must hold the GIL (frames are only stable for it).
#[inline(always)]
pub unsafe fn read_words(buf: &mut [std::mem::MaybeUninit<u64>]) -> Option<(usize, bool)> {
    let mut skipped: c_int = 0;
    // SAFETY: the caller holds the GIL; hs_read_words writes at most
    // `buf.len()` words.
    let n = unsafe { hs_read_words(buf.as_mut_ptr().cast(), buf.len() as c_int, &mut skipped) };
    (n >= 0).then_some((n as usize, skipped != 0))
}

/// Voids the memo of callers behind `stack_key` (frames.c): a code object
/// named by a site is dying, and another made at its address could give the
/// same instruction pointers for other code.
///
/// # Safety
/// GIL held by the calling thread (a code object's free function): the
/// memo's counter is only touched by GIL holders.
pub unsafe fn forget_callers_memo() {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above).
    unsafe { hs_callers_memo_forget() }
}

/// How many allocations walked their callers anew since the process
/// started, the memo of the running frame's callers not holding (walks of
/// a running frame without a line, or for the whole depth, are not counted).
///
/// # Safety
/// GIL held by the calling thread: the counter is only written by GIL
/// holders.
pub unsafe fn caller_walks() -> u64 {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above).
    unsafe { hs_caller_walks() }
}

/// The calling thread's stack as a key for the hooks' cache of sites: two
/// hashes of its frames' positions, its number of frames (at most `max`)
/// and its whole depth (see `hs_key_of_stack` in frames.c). Layout mirrors
/// `hs_stack_key` in C.
#[repr(C)]
pub struct StackKey {
    pub hash: u64,
    pub check: u64,
    pub nframes: i32,
    pub total: i32,
}

/// The key of the calling thread's stack, hashed as it is walked with two
/// multipliers per position from `mult`, which has at least `max` rows.
///
/// # Safety
/// The calling thread must hold the GIL (frames are only stable for it).
#[inline(always)]
pub unsafe fn stack_key(mult: &[[u64; 2]], max: usize, count_total: bool) -> StackKey {
    let mut key = std::mem::MaybeUninit::<StackKey>::uninit();
    // SAFETY: the caller holds the GIL; hs_key_of_stack reads at most `max`
    // rows of `mult` and writes the whole key.
    unsafe {
        hs_key_of_stack(
            mult.as_ptr(),
            max.min(mult.len()) as c_int,
            count_total as c_int,
            key.as_mut_ptr(),
        );
        key.assume_init()
    }
}

/// What a stack's depth adds to its key's hash per frame: frames.c's
/// HS_DEPTH_MULT, which the walk and the memo of callers add there.
const DEPTH_MULT: u64 = 0xD6E8_FEB8_6659_FD93;

/// The running frame's word (its instruction pointer from 3.11 on), when
/// the key of a one-frame stack is that word's alone; 0 when
/// `stack_key` must make it (no frame, or an entry shim or a frame still
/// setting up on top).
///
/// # Safety
/// The calling thread must hold the GIL.
#[inline(always)]
pub unsafe fn running_word() -> u64 {
    // SAFETY: the caller holds the GIL; hs_running_word reads its own
    // thread's running frame.
    unsafe { hs_running_word() }
}

/// The key `stack_key` gives a one-frame stack whose frame's word is
/// `word`, with multipliers `row` (the first row of `stack_key`'s), made
/// here so that the hooks' common case at one frame keeps it in registers.
#[inline(always)]
pub fn one_frame_key(word: u64, row: &[u64; 2]) -> StackKey {
    StackKey {
        hash: word.wrapping_mul(row[0]).wrapping_add(DEPTH_MULT),
        check: word.wrapping_mul(row[1]),
        nframes: 1,
        total: 1,
    }
}

/// Whether the calling thread holds the GIL. Safe from any thread.
#[inline]
pub fn gil_held() -> bool {
    // SAFETY: hs_gil_held only compares thread-state pointers.
    unsafe { hs_gil_held() != 0 }
}

/// The calling thread's state, as an identity; only for a GIL holder.
pub fn current_thread() -> *mut c_void {
    // SAFETY: hs_current_thread only reads the thread-state pointer.
    unsafe { hs_current_thread() }
}

/// A frame resolved for a report: borrowed file and function names.
#[derive(Clone, Copy)]
pub struct ResolvedFrame {
    pub filename: *mut PyObject,
    pub name: *mut PyObject,
    pub lineno: i32,
}

/// File, function and line of one frame, as borrowed references.
///
/// # Safety
/// GIL held; a Python frame's code object alive (see src/engine/codes.rs).
pub unsafe fn resolve(frame: &RawFrame) -> ResolvedFrame {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; a Python frame's code object alive (see src/engine/codes.rs).
    unsafe {
        if frame.is_retired() {
            return crate::engine::retired::resolve(frame.code);
        }
        if crate::engine::codes::ABANDONED.load(std::sync::atomic::Ordering::Acquire)
            && !frame.is_native()
        {
            // At exit, after code objects died unretired: never read them.
            let unknown = pyo3_ffi::Py_None();
            return ResolvedFrame {
                filename: unknown,
                name: unknown,
                lineno: 0,
            };
        }
        if frame.is_native() {
            let (filename, name, lineno) =
                crate::engine::native_frames::resolve(frame.code as usize);
            return ResolvedFrame {
                filename,
                name,
                lineno,
            };
        }
        let mut filename = std::ptr::null_mut();
        let mut name = std::ptr::null_mut();
        let lineno = hs_resolve_frame(frame.code, frame.offset, &mut filename, &mut name);
        ResolvedFrame {
            filename,
            name,
            lineno,
        }
    }
}

/// Resolves a site's frames, in order. The Python frames come first and
/// allocate nothing, so no collection can run and free one of their code
/// objects before it is read; native frames (whose names are made as new
/// strings) after. The references stay valid afterwards: a code object that
/// dies later is retired, which takes its own references to them.
///
/// # Safety
/// GIL held; `frames` read from a site just now.
pub unsafe fn resolve_all(frames: &[RawFrame]) -> Vec<ResolvedFrame> {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // GIL held; `frames` read from a site just now.
    unsafe {
        let mut resolved = vec![
            ResolvedFrame {
                filename: std::ptr::null_mut(),
                name: std::ptr::null_mut(),
                lineno: 0,
            };
            frames.len()
        ];
        for native in [false, true] {
            for (slot, frame) in resolved.iter_mut().zip(frames) {
                if frame.is_native() == native {
                    *slot = resolve(frame);
                }
            }
        }
        resolved
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_one_frame_key_adds_what_frames_c_adds_per_frame() {
        // SAFETY: returns a constant.
        assert_eq!(super::DEPTH_MULT, unsafe { super::hs_depth_mult() });
    }
}
