//! The thin, unsafe edge to `frames.c`: reading the calling thread's Python
//! frames and resolving them to file, line and function when a report asks.

use pyo3_ffi::PyObject;
use std::ffi::{c_int, c_void};

/// Deepest stack heapsite records; `start(frames=N)` accepts 1..=MAX_FRAMES.
pub const MAX_FRAMES: usize = 128;

/// One recorded frame: a code object (pinned by the site registry) and the
/// byte offset of its current instruction. Layout mirrors `hs_frame` in C.
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
            offset: crate::native_frames::NATIVE,
            pad: 0,
        }
    }

    pub fn is_native(&self) -> bool {
        self.offset == crate::native_frames::NATIVE
    }
}

impl PartialEq for RawFrame {
    fn eq(&self, other: &Self) -> bool {
        // `pad` is never written by C; compare only what identifies the frame.
        self.code == other.code && self.offset == other.offset
    }
}

extern "C" {
    fn hs_read_frames(out: *mut RawFrame, max: c_int, total: *mut c_int) -> c_int;
    fn hs_gil_held() -> c_int;
    fn hs_resolve_frame(
        code: *mut c_void,
        offset: c_int,
        filename: *mut *mut PyObject,
        name: *mut *mut PyObject,
    ) -> c_int;
}

/// Reads up to `buf.len()` frames of the calling thread, most recent first.
/// Returns how many were written and the stack's whole depth, which is only
/// walked to the end when `count_total` asks (tracemalloc's `total_nframe`);
/// otherwise the depth reported is the number written.
///
/// # Safety
/// The calling thread must hold the GIL (frames are only stable for it).
#[inline(always)]
pub unsafe fn read_frames(
    buf: &mut [std::mem::MaybeUninit<RawFrame>],
    count_total: bool,
) -> (usize, u32) {
    let mut total: c_int = 0;
    let total_ptr = if count_total {
        &mut total as *mut c_int
    } else {
        std::ptr::null_mut()
    };
    let n = hs_read_frames(buf.as_mut_ptr().cast(), buf.len() as c_int, total_ptr).max(0);
    (
        n as usize,
        if count_total { total.max(n) } else { n } as u32,
    )
}

/// Whether the calling thread holds the GIL. Safe from any thread.
#[inline]
pub fn gil_held() -> bool {
    // SAFETY: hs_gil_held only compares thread-state pointers.
    unsafe { hs_gil_held() != 0 }
}

/// A frame resolved for a report: borrowed file and function names.
pub struct ResolvedFrame {
    pub filename: *mut PyObject,
    pub name: *mut PyObject,
    pub lineno: i32,
}

/// # Safety
/// GIL held; `frame.code` pinned (a strong reference held by the registry).
pub unsafe fn resolve(frame: &RawFrame) -> ResolvedFrame {
    if frame.is_native() {
        let (filename, name, lineno) = crate::native_frames::resolve(frame.code as usize);
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
