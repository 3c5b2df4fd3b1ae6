/*
 * codes.c -- learns when a code object named by a call site is freed.
 *
 * Why: a site records its frames as (code object, offset) and resolves them
 * to file and line only when a report asks. Holding a reference to each code
 * object kept that valid, but it also kept alive every code object a program
 * compiles and drops (exec, dataclasses, namedtuple, templates), which is a
 * leak heapsite itself caused in the program it observes. Instead, each code
 * object a site names carries a co_extra entry whose free function (PEP 523)
 * CPython calls first thing in code_dealloc, while the code object's fields
 * are still intact. heapsite then resolves the dying frames for good (see
 * src/engine/codes.rs).
 *
 * Invariants: all functions need the GIL. The extra value is the code
 * object's own address, so the free function knows which one is dying.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX >= 0x030C0000
#define HS_REQUEST_INDEX PyUnstable_Eval_RequestCodeExtraIndex
#define HS_GET_EXTRA PyUnstable_Code_GetExtra
#define HS_SET_EXTRA PyUnstable_Code_SetExtra
#else
#define HS_REQUEST_INDEX _PyEval_RequestCodeExtraIndex
#define HS_GET_EXTRA _PyCode_GetExtra
#define HS_SET_EXTRA _PyCode_SetExtra
#endif

static Py_ssize_t extra_index = -1;

/* Registers `died` as the free function of heapsite's extra slot. Returns 0,
 * or -1 when the interpreter has no slot left (code objects are then pinned). */
int
hs_codes_init(void (*died)(void *))
{
    if (extra_index < 0) {
        extra_index = HS_REQUEST_INDEX(died);
    }
    return extra_index < 0 ? -1 : 0;
}

/* Marks `code` so that its death is reported. Returns 1 when newly marked,
 * 0 when it already was, -1 when it cannot be (the caller pins it instead).
 * Setting the slot allocates the code object's extra array once. */
int
hs_codes_watch(void *code)
{
    void *current = NULL;
    if (extra_index < 0) {
        return -1;
    }
#if PY_VERSION_HEX >= 0x030C0000
    /* Static code objects (some in read-only memory) never die. */
    if (_Py_IsImmortal((PyObject *)code)) {
        return 0;
    }
#endif
    if (HS_GET_EXTRA((PyObject *)code, extra_index, &current) < 0) {
        PyErr_Clear();
        return -1;
    }
    if (current != NULL) {
        return 0;
    }
    if (HS_SET_EXTRA((PyObject *)code, extra_index, code) < 0) {
        PyErr_Clear();
        return -1;
    }
    return 1;
}

/* Whether the interpreter is finalising: code objects then die by the
 * thousand, and no report follows (captures are written at exit, before). */
int
hs_codes_finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}
