/* The C half of LD_PRELOAD mode (see src/native/preload.rs).
 *
 * hs_preload_main does what CPython's Py_BytesMain does -- pre-initialise
 * from the command line, initialise, run -- with one step added between
 * initialising and running: hs_preload_begin() starts heapsite while the
 * interpreter is ready and the program has not run a line. It uses only the
 * public initialisation API (PEP 587), compiled against the interpreter's own
 * headers because PyConfig's layout differs per version.
 *
 * The native hooks' re-entrancy flag lives here too, as an initial-exec
 * thread-local: reading it is one instruction, and, unlike a Rust
 * thread_local in a shared library, it never calls __tls_get_addr, which may
 * allocate -- from inside malloc that would recurse. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

extern void hs_preload_begin(void);

int
hs_preload_main(int argc, char **argv)
{
    PyStatus status;
    PyPreConfig preconfig;
    PyPreConfig_InitPythonConfig(&preconfig);
    status = Py_PreInitializeFromBytesArgs(&preconfig, argc, argv);
    if (PyStatus_Exception(status)) {
        goto failed;
    }
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    status = PyConfig_SetBytesArgv(&config, argc, argv);
    if (!PyStatus_Exception(status)) {
        status = Py_InitializeFromConfig(&config);
    }
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
        goto failed;
    }
    hs_preload_begin();
    return Py_RunMain();

failed:
    /* As Py_BytesMain: "python -h" and bad options end with an exit code,
     * anything else is fatal with CPython's own message. */
    if (PyStatus_IsExit(status)) {
        return status.exitcode;
    }
    Py_ExitStatusException(status);
}

/* The interpreter version these headers describe, to refuse a mismatched
 * preload (a 3.11 build preloaded into 3.12) before touching PyConfig. */
const char *
hs_built_version(void)
{
    return PY_VERSION;
}

static __thread int hs_in_native_hook __attribute__((tls_model("initial-exec")));

/* 1 if the calling thread may enter a native hook (and now has), 0 if it
 * is already inside one. */
int
hs_native_enter(void)
{
    if (hs_in_native_hook) {
        return 0;
    }
    hs_in_native_hook = 1;
    return 1;
}

void
hs_native_leave(void)
{
    hs_in_native_hook = 0;
}
