//! Compiles heapsite's C files (`src/*.c`) against the target interpreter's own headers.
//!
//! The interpreter is the one maturin / PyO3 builds for (`PYO3_PYTHON`), else
//! `python3` on PATH. Internal headers come from the same include directory
//! (`internal/pycore_frame.h`), which is why frames.c defines Py_BUILD_CORE.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/engine/frames.c");
    println!("cargo:rerun-if-changed=src/engine/lines.c");
    println!("cargo:rerun-if-changed=src/heap/objects.c");
    println!("cargo:rerun-if-changed=src/native/preload.c");
    println!("cargo:rerun-if-changed=src/engine/codes.c");
    println!("cargo:rerun-if-changed=src/engine/sampling.c");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    let python = std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let out = Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['include'])",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} to find the Python headers: {e}"));
    assert!(
        out.status.success(),
        "{python} failed to report its include directory"
    );
    let include = String::from_utf8(out.stdout).expect("utf-8 include path");
    refuse_free_threaded(&python);
    let include = include.trim();
    // Debian's pyconfig.h includes <x86_64-linux-gnu/python3.X/pyconfig.h>,
    // which lives beside the include directory, not in it: for an interpreter
    // installed outside /usr (scripts/get-python) that directory must be named.
    let multiarch_root = std::path::Path::new(include)
        .parent()
        .expect("include directory has a parent");
    cc::Build::new()
        .file("src/engine/frames.c")
        .file("src/engine/lines.c")
        .file("src/heap/objects.c")
        .file("src/native/preload.c")
        .file("src/engine/codes.c")
        .file("src/engine/sampling.c")
        // As system headers: their own unused parameters are not our warnings.
        .flag("-isystem")
        .flag(include)
        .flag("-isystem")
        .flag(multiarch_root.to_str().expect("utf-8 include path"))
        .opt_level(3)
        // As CPython's release builds: the headers' asserts would read every
        // frame's code object (PyCode_Check) on the hot path.
        .define("NDEBUG", None)
        .flag_if_supported("-fno-semantic-interposition")
        .warnings(true)
        .compile("heapsite_frames");
}

/// The engine relies on the GIL (docs/free-threading.md): a free-threaded
/// interpreter gets one clear line instead of a build that would crash.
fn refuse_free_threaded(python: &str) {
    let out = Command::new(python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_config_var('Py_GIL_DISABLED') or 0)",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    if String::from_utf8_lossy(&out.stdout).trim() == "1" {
        eprintln!("heapsite does not support the free-threaded build yet: build it for a GIL build of CPython (see docs/free-threading.md)");
        std::process::exit(1);
    }
}
