//! LD_PRELOAD mode: `LD_PRELOAD=$(heapsite preload-path) python app.py`.
//!
//! The extension module is itself the preload library. Its constructor runs
//! before `main`; if the interpreter is not initialised yet (so this is a
//! preload, not an import) and was built for this interpreter's version, it
//! arms three entry points defined here:
//! - `Py_BytesMain`, which python's `main` calls through libpython's PLT:
//!   ours initialises the interpreter as CPython does, starts heapsite
//!   (`heapsite._preload.begin()`, which reads the `HEAPSITE_*` settings and
//!   registers the capture at exit) and runs the program;
//! - `__libc_start_main`, for an interpreter linked statically with libpython
//!   (Debian's): its `main` calls its own `Py_BytesMain` directly, which no
//!   preload can interpose, so the C library is asked to run ours instead of
//!   that `main` (CPython's `main` is nothing but a call to `Py_BytesMain`);
//! - `_exit`, so `os._exit()` (multiprocessing's fork children end so) still
//!   writes the capture when it should;
//! - the native allocators in `interpose.rs`.
//!
//! The constructor also takes heapsite out of `LD_PRELOAD` for child
//! processes: the library needs libpython's symbols, and preloaded into a
//! program without them (`sh`, `git`) the dynamic linker would refuse to
//! start that program.

use crate::engine::frames;
use crate::native::interpose::next_symbol;
use pyo3_ffi::*;
use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

extern "C" {
    fn hs_preload_main(argc: c_int, argv: *mut *mut c_char) -> c_int;
    fn hs_built_version() -> *const c_char;
}

/// Loaded by LD_PRELOAD into the interpreter it was built for.
static PRELOADED: AtomicBool = AtomicBool::new(false);
/// The capture at exit is written or not wanted any more.
static FINISHED: AtomicBool = AtomicBool::new(false);
static REAL_BYTES_MAIN: AtomicUsize = AtomicUsize::new(0);
static REAL_EXIT: AtomicUsize = AtomicUsize::new(0);
static REAL_LIBC_START_MAIN: AtomicUsize = AtomicUsize::new(0);

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;

/// "3.11" of "3.11.7 (main, ...)".
fn minor_version(full: &str) -> &str {
    let mut dots = full.match_indices('.').map(|(i, _)| i);
    let _ = dots.next();
    match dots.next() {
        Some(end) => &full[..end],
        None => full.split(' ').next().unwrap_or(full),
    }
}

/// The path of this shared library, from the dynamic linker.
fn library_path() -> Option<String> {
    // SAFETY: dladdr only reads the loader's tables for an address of ours.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(on_load as *const libc::c_void, &mut info) == 0 || info.dli_fname.is_null()
        {
            return None;
        }
        Some(
            CStr::from_ptr(info.dli_fname)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// Removes this library from LD_PRELOAD (separators: space or colon).
fn strip_from_ld_preload(ours: &str) {
    let Ok(value) = std::env::var("LD_PRELOAD") else {
        return;
    };
    let ours_real = std::fs::canonicalize(ours).ok();
    let kept: Vec<&str> = value
        .split([' ', ':'])
        .filter(|entry| !entry.is_empty())
        .filter(|entry| *entry != ours && std::fs::canonicalize(entry).ok() != ours_real)
        .collect();
    // SAFETY: constructors run before main, with one thread.
    unsafe {
        if kept.is_empty() {
            libc::unsetenv(c"LD_PRELOAD".as_ptr());
        } else if let Ok(kept) = CString::new(kept.join(":")) {
            libc::setenv(c"LD_PRELOAD".as_ptr(), kept.as_ptr(), 1);
        }
    }
}

extern "C" fn on_load() {
    // SAFETY: Py_IsInitialized and Py_GetVersion read static data and are
    // documented as callable before initialisation.
    unsafe {
        if Py_IsInitialized() != 0 {
            return; // imported as an extension module: nothing to arm
        }
        let Some(path) = library_path() else { return };
        strip_from_ld_preload(&path);
        let running = CStr::from_ptr(Py_GetVersion()).to_string_lossy();
        let built = CStr::from_ptr(hs_built_version()).to_string_lossy();
        if minor_version(&running) != minor_version(&built) {
            eprintln!(
                "heapsite: {path} was built for CPython {}, this is {}: not profiling",
                minor_version(&built),
                minor_version(&running)
            );
            return;
        }
    }
    PRELOADED.store(true, Relaxed);
}

/// python's `main` comes here first when heapsite is preloaded.
///
/// # Safety
/// Called by the interpreter's `main` with its own argc/argv.
#[no_mangle]
pub unsafe extern "C" fn Py_BytesMain(argc: c_int, argv: *mut *mut c_char) -> c_int {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // Called by the interpreter's `main` with its own argc/argv.
    unsafe {
        if PRELOADED.load(Relaxed) {
            return hs_preload_main(argc, argv);
        }
        let real = next_symbol(&REAL_BYTES_MAIN, c"Py_BytesMain");
        assert!(real != 0, "heapsite: libpython's Py_BytesMain not found");
        // SAFETY: libpython's Py_BytesMain, same signature.
        let real: unsafe extern "C" fn(c_int, *mut *mut c_char) -> c_int =
            std::mem::transmute(real);
        real(argc, argv)
    }
}

type Main = unsafe extern "C" fn(c_int, *mut *mut c_char, *mut *mut c_char) -> c_int;
type LibcStartMain = unsafe extern "C" fn(
    Main,
    c_int,
    *mut *mut c_char,
    usize,
    usize,
    usize,
    *mut libc::c_void,
) -> c_int;

/// The base address of the object that holds `address`, or 0.
unsafe fn object_base(address: *const libc::c_void) -> usize {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(address, &mut info) == 0 {
            return 0;
        }
        info.dli_fbase as usize
    }
}

/// Whether the executable itself defines `Py_BytesMain` (libpython linked
/// statically). The executable comes first in the lookup order, before this
/// library; with a shared libpython the first definition found is ours. (Told
/// by the defining object, not by comparing with `Py_BytesMain as usize`: an
/// exported symbol's address, even taken here, is the one the lookup found.)
unsafe fn interpreter_in_executable() -> bool {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let found = libc::dlsym(libc::RTLD_DEFAULT, c"Py_BytesMain".as_ptr());
        !found.is_null() && object_base(found) != object_base(on_load as *const libc::c_void)
    }
}

/// The `main` run instead of a static interpreter's own.
unsafe extern "C" fn static_interpreter_main(
    argc: c_int,
    argv: *mut *mut c_char,
    _envp: *mut *mut c_char,
) -> c_int {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe { hs_preload_main(argc, argv) }
}

/// The program's `_start` calls this through its GOT, so a preload comes
/// first. Only a preloaded static interpreter gets another `main`.
///
/// # Safety
/// glibc's `__libc_start_main` contract; called once, by `_start`.
#[no_mangle]
pub unsafe extern "C" fn __libc_start_main(
    main: Main,
    argc: c_int,
    argv: *mut *mut c_char,
    init: usize,
    fini: usize,
    rtld_fini: usize,
    stack_end: *mut libc::c_void,
) -> c_int {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // glibc's `__libc_start_main` contract; called once, by `_start`.
    unsafe {
        let real = next_symbol(&REAL_LIBC_START_MAIN, c"__libc_start_main");
        assert!(
            real != 0,
            "heapsite: the C library's __libc_start_main not found"
        );
        // SAFETY: glibc's __libc_start_main, same signature.
        let real: LibcStartMain = std::mem::transmute(real);
        let main = if PRELOADED.load(Relaxed) && interpreter_in_executable() {
            static_interpreter_main
        } else {
            main
        };
        real(main, argc, argv, init, fini, rtld_fini, stack_end)
    }
}

/// Runs `heapsite._preload.<function>()` in a scratch namespace; failures
/// print one line and leave the program running untraced.
unsafe fn run_preload(function: &str) {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        let Some(path) = library_path() else { return };
        // .../site-packages/heapsite/_heapsite.so -> .../site-packages
        let package_root = std::path::Path::new(&path)
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let code = format!(
        "import sys\n\
         sys.path.insert(0, root)\n\
         try:\n\
         \x20   import heapsite._preload as preload\n\
         except BaseException as e:\n\
         \x20   preload = None\n\
         \x20   sys.stderr.write('heapsite: not profiling: cannot import heapsite from %s: %s\\n' % (root, e))\n\
         finally:\n\
         \x20   sys.path.remove(root)\n\
         if preload is not None:\n\
         \x20   preload.{function}()\n"
    );
        let Ok(code) = CString::new(code) else { return };
        let globals = PyDict_New();
        let root = PyUnicode_DecodeFSDefaultAndSize(
            package_root.as_ptr() as *const c_char,
            package_root.len() as Py_ssize_t,
        );
        if globals.is_null() || root.is_null() {
            Py_XDECREF(globals);
            Py_XDECREF(root);
            PyErr_Clear();
            return;
        }
        PyDict_SetItemString(globals, c"__builtins__".as_ptr(), PyEval_GetBuiltins());
        PyDict_SetItemString(globals, c"root".as_ptr(), root);
        Py_DECREF(root);
        let result = PyRun_String(code.as_ptr(), Py_file_input, globals, globals);
        if result.is_null() {
            // SystemExit (a bad HEAPSITE_* setting) exits with its status here.
            PyErr_Print();
        } else {
            Py_DECREF(result);
        }
        Py_DECREF(globals);
    }
}

/// Called by hs_preload_main between initialisation and the program's first
/// line, with the GIL held.
#[no_mangle]
pub unsafe extern "C" fn hs_preload_begin() {
    // SAFETY: the caller keeps this unsafe fn's contract (its doc above).
    unsafe {
        run_preload("begin");
    }
}

/// `heapsite._preload.finish()` says the capture is done (or not wanted).
pub fn mark_finished() {
    FINISHED.store(true, Relaxed);
}

/// `os._exit()` skips atexit: write the capture first when this process
/// should, then exit as asked.
///
/// # Safety
/// The POSIX _exit contract.
#[no_mangle]
pub unsafe extern "C" fn _exit(status: c_int) -> ! {
    // SAFETY: the caller keeps this fn's contract (`# Safety` above):
    // The POSIX _exit contract.
    unsafe {
        if PRELOADED.load(Relaxed)
        && !FINISHED.load(Relaxed)
        && Py_IsInitialized() != 0
        // The capture runs Python code: only in the main interpreter's.
        && crate::engine::interp::Interp::of_caller().is_main()
        && frames::gil_held()
        {
            FINISHED.store(true, Relaxed);
            run_preload("finish");
        }
        let real = next_symbol(&REAL_EXIT, c"_exit");
        if real != 0 {
            // SAFETY: glibc's _exit, same signature.
            let real: unsafe extern "C" fn(c_int) -> ! = std::mem::transmute(real);
            real(status);
        }
        libc::syscall(libc::SYS_exit_group, status);
        unreachable!("exit_group returned")
    }
}

pub fn is_preloaded() -> bool {
    PRELOADED.load(Relaxed)
}
