/*
 * lines.c -- the line of a (code object, offset), for new sites and reports.
 *
 * PyCode_Addr2Line reads the code object's line table from its start up to
 * the offset asked: a cost in the size of the code, paid for each new
 * (code, offset) a site names. A module's body is one code object of
 * thousands of entries under every allocation of its import, so importing
 * it paid that for each of its statements (callgrind, pyperformance's
 * regex_effbot at 16 frames, CPython 3.11: 9% of all instructions, 7,000 a
 * line). A cursor remembers where the last read of a code object's table
 * stopped, and the next read moves from there, forward or back
 * (_PyCode_CheckLineNumber does both), which is a step or two for the next
 * statement of a body being run.
 *
 * Invariants: the GIL is held (one table for the process: heapsite does not
 * trace interpreters with a GIL of their own). A cursor is only used for
 * the code object it was made for: codes.rs forgets it when that code
 * object dies (hs_lines_forget), every code object a site names being
 * watched or pinned; and a cursor whose code object's line table or first
 * line is not the one it was made on is made afresh, never followed. */
#define PY_SSIZE_T_CLEAN
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stdint.h>
#if PY_VERSION_HEX >= 0x030D0000
/* 3.13 moved the line table's cursor (PyCodeAddressRange) inside. */
#include "internal/pycore_code.h"
#endif

#if PY_VERSION_HEX >= 0x030A0000
#define HS_LINE_CURSORS 256
typedef struct {
    PyCodeObject *code;
    PyObject *table; /* the code object's co_linetable the cursor walks */
    int firstlineno; /* the lines it counts from */
    PyCodeAddressRange bounds;
} hs_line_cursor;
static hs_line_cursor hs_line_cursors[HS_LINE_CURSORS];

static inline hs_line_cursor *
hs_line_cursor_of(PyCodeObject *code)
{
    /* The top bits of a multiplicative hash of the address. */
    uint64_t h = (uint64_t)(uintptr_t)code * 0x9E3779B97F4A7C15ull;
    return &hs_line_cursors[h >> 56];
}

/* What _PyLineTable_InitAddressRange does (not exported before 3.15): the
 * cursor before the table's first entry. */
static void
hs_line_cursor_start(hs_line_cursor *c, PyCodeObject *code)
{
    c->code = code;
    c->table = code->co_linetable;
    c->firstlineno = code->co_firstlineno;
    c->bounds.opaque.lo_next = (const void *)PyBytes_AS_STRING(c->table);
    c->bounds.opaque.limit = c->bounds.opaque.lo_next + PyBytes_GET_SIZE(c->table);
    c->bounds.ar_start = -1;
    c->bounds.ar_end = 0;
    c->bounds.opaque.computed_line = code->co_firstlineno;
    c->bounds.ar_line = -1;
}
#endif

/* The line of byte offset `offset` in `code`, as PyCode_Addr2Line gives it.
 * GIL held; `code` alive. */
int
hs_line_of(PyCodeObject *code, int offset)
{
#if PY_VERSION_HEX >= 0x030A0000
    if (offset < 0) {
        return code->co_firstlineno;
    }
    hs_line_cursor *c = hs_line_cursor_of(code);
    if (c->code != code || c->table != code->co_linetable
        || c->firstlineno != code->co_firstlineno
        || (const void *)c->bounds.opaque.limit
               != (const void *)(PyBytes_AS_STRING(code->co_linetable)
                                 + PyBytes_GET_SIZE(code->co_linetable))) {
        hs_line_cursor_start(c, code);
    }
    return _PyCode_CheckLineNumber(offset, &c->bounds);
#else
    /* 3.9's table (co_lnotab) is read by offset pairs from the start. */
    return PyCode_Addr2Line(code, offset);
#endif
}

/* Forgets the cursor of `code`, which is dying: a new code object at its
 * address must not follow it. GIL held. */
void
hs_lines_forget(void *code)
{
#if PY_VERSION_HEX >= 0x030A0000
    hs_line_cursor *c = hs_line_cursor_of((PyCodeObject *)code);
    if (c->code == (PyCodeObject *)code) {
        c->code = NULL;
        c->table = NULL;
    }
#else
    (void)code;
#endif
}

