//! Native memory under LD_PRELOAD: heapsite's own definitions of malloc,
//! calloc, realloc, free, posix_memalign, aligned_alloc, memalign, valloc,
//! pvalloc, mmap and munmap. Preloaded, they come first in the process's
//! symbol lookup, so every library's calls (numpy's data buffers, zlib's
//! windows) land here; imported normally they are never looked up by anyone
//! else, and only forward.
//!
//! Each forwards to glibc's allocator through its exported `__libc_*` entry
//! points (no dlsym, which may itself allocate, on the path), then reports
//! the block to `hook::native_*`, which records it in the RAW table while
//! tracing with native memory switched on.
//!
//! Invariants:
//! - The thread-local guard (`hs_native_enter`, initial-exec TLS in
//!   preload.c) is held while heapsite records: heapsite's own allocations
//!   (a table growing) pass straight through, and a RAW shard lock is never
//!   wanted twice by one thread.
//! - Nothing here panics or unwinds: these run inside every allocation of
//!   the process.

use crate::engine::hook;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_free(ptr: *mut c_void);
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    fn __libc_valloc(size: usize) -> *mut c_void;
    fn __libc_pvalloc(size: usize) -> *mut c_void;
    fn hs_native_enter() -> c_int;
    fn hs_native_leave();
}

/// Runs `record` unless this thread is already inside heapsite's native
/// bookkeeping.
#[inline(always)]
fn guarded(record: impl FnOnce()) {
    // SAFETY: plain thread-local flag accessors.
    unsafe {
        if hs_native_enter() != 0 {
            record();
            hs_native_leave();
        }
    }
}

#[inline(always)]
fn allocated(ptr: *mut c_void, size: usize) -> *mut c_void {
    if !ptr.is_null() {
        guarded(|| hook::native_allocated(ptr, size));
    }
    ptr
}

/// # Safety
/// The C malloc contract.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // The C malloc contract.
    unsafe { allocated(__libc_malloc(size), size) }
}

/// # Safety
/// The C calloc contract.
#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // The C calloc contract.
    unsafe { allocated(__libc_calloc(n, size), n.saturating_mul(size)) }
}

/// # Safety
/// The C realloc contract.
#[no_mangle]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // The C realloc contract.
    unsafe {
        // SAFETY: the enter/leave pair brackets the bookkeeping.
        if hs_native_enter() == 0 {
            return __libc_realloc(ptr, size);
        }
        let result = hook::native_realloc(ptr, size, || __libc_realloc(ptr, size));
        hs_native_leave();
        result
    }
}

/// # Safety
/// The C free contract.
#[no_mangle]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // The C free contract.
    unsafe {
        if !ptr.is_null() {
            guarded(|| hook::native_freed(ptr));
        }
        __libc_free(ptr)
    }
}

fn valid_alignment(align: usize) -> bool {
    align.is_power_of_two() && align.is_multiple_of(std::mem::size_of::<*mut c_void>())
}

/// # Safety
/// The POSIX posix_memalign contract.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // The POSIX posix_memalign contract.
    unsafe {
        if !valid_alignment(align) {
            return libc::EINVAL;
        }
        let ptr = allocated(__libc_memalign(align, size), size);
        if ptr.is_null() {
            return libc::ENOMEM;
        }
        *out = ptr;
        0
    }
}

/// # Safety
/// The C11 aligned_alloc contract.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // The C11 aligned_alloc contract.
    unsafe {
        if !align.is_power_of_two() {
            *libc::__errno_location() = libc::EINVAL;
            return std::ptr::null_mut();
        }
        allocated(__libc_memalign(align, size), size)
    }
}

/// # Safety
/// glibc's memalign contract.
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // glibc's memalign contract.
    unsafe { allocated(__libc_memalign(align, size), size) }
}

/// # Safety
/// glibc's valloc contract.
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // glibc's valloc contract.
    unsafe { allocated(__libc_valloc(size), size) }
}

/// # Safety
/// glibc's pvalloc contract.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // glibc's pvalloc contract.
    unsafe { allocated(__libc_pvalloc(size), size) }
}

// ---- mmap / munmap: glibc's are found with dlsym(RTLD_NEXT) once ------------

type MmapFn = unsafe extern "C" fn(*mut c_void, usize, c_int, c_int, c_int, i64) -> *mut c_void;
type MunmapFn = unsafe extern "C" fn(*mut c_void, usize) -> c_int;

static REAL_MMAP: AtomicUsize = AtomicUsize::new(0);
static REAL_MUNMAP: AtomicUsize = AtomicUsize::new(0);

/// The next definition of `name` after ours (glibc's or libpython's),
/// looked up once and kept in `cache`.
///
/// # Safety
/// `dlsym` may allocate: not from inside heapsite's own bookkeeping.
pub(crate) unsafe fn next_symbol(cache: &AtomicUsize, name: &std::ffi::CStr) -> usize {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // `dlsym` may allocate: not from inside heapsite's own bookkeeping.
    unsafe {
        let mut found = cache.load(Relaxed);
        if found == 0 {
            found = libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) as usize;
            cache.store(found, Relaxed);
        }
        found
    }
}

/// # Safety
/// The POSIX mmap contract.
#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    offset: i64,
) -> *mut c_void {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // The POSIX mmap contract.
    unsafe {
        let real = next_symbol(&REAL_MMAP, c"mmap");
        let ptr = if real == 0 {
            libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, offset) as *mut c_void
        } else {
            // SAFETY: glibc's mmap, with the same signature.
            std::mem::transmute::<usize, MmapFn>(real)(addr, len, prot, flags, fd, offset)
        };
        if ptr != libc::MAP_FAILED {
            allocated(ptr, len);
        }
        ptr
    }
}

/// # Safety
/// mmap64 is mmap on 64-bit Linux.
#[no_mangle]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    offset: i64,
) -> *mut c_void {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // mmap64 is mmap on 64-bit Linux.
    unsafe { mmap(addr, len, prot, flags, fd, offset) }
}

/// # Safety
/// The POSIX munmap contract. A mapping unmapped at its start is forgotten
/// whole; a partial unmap elsewhere leaves the record as it was.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: usize) -> c_int {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // The POSIX munmap contract. A mapping unmapped at its start is forgotten whole; a partial
    // unmap elsewhere leaves the record as it was.
    unsafe {
        guarded(|| hook::native_freed(addr));
        let real = next_symbol(&REAL_MUNMAP, c"munmap");
        if real == 0 {
            return libc::syscall(libc::SYS_munmap, addr, len) as c_int;
        }
        // SAFETY: glibc's munmap, with the same signature.
        std::mem::transmute::<usize, MunmapFn>(real)(addr, len)
    }
}
