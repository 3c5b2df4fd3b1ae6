/*
 * frames.c -- reads the calling thread's Python frames straight from the
 * interpreter's thread state, for the allocation hooks.
 *
 * Why C: the frame structures are private and change with every CPython minor
 * version. Compiling this file against the target interpreter's own headers
 * (internal ones included, via Py_BUILD_CORE) lets the compiler check every
 * field we touch, instead of Rust mirroring struct layouts by hand.
 *
 * Invariants the caller (src/engine/frames.rs) must uphold:
 *   - hs_read_frames() is only called by a thread that holds the GIL. It
 *     creates no frame objects, takes no references and allocates nothing.
 *   - The code pointers returned are borrowed: the caller pins (INCREFs) each
 *     new one while still holding the GIL.
 */
#define PY_SSIZE_T_CLEAN
#define Py_BUILD_CORE 1
#include <Python.h>
#include <frameobject.h>
#include <stdint.h>

#if PY_VERSION_HEX >= 0x030E0000
/* 3.14 split the frame header: the struct and its inline readers. */
#include "internal/pycore_interpframe.h"
#elif PY_VERSION_HEX >= 0x030B0000
#include "internal/pycore_frame.h"
#endif
#if PY_VERSION_HEX < 0x030C0000
#include "internal/pycore_pystate.h"
#endif

/* One frame: the code object and the byte offset of the current instruction
 * (what PyCode_Addr2Line takes). Mirrored by `RawFrame` in src/engine/frames.rs. */
typedef struct {
    void *code;
    int32_t offset;
    int32_t _pad;
} hs_frame;

/* The thread state of the GIL holder: the caller, since it holds the GIL. */
static inline PyThreadState *
current_tstate(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked();
#elif PY_VERSION_HEX >= 0x030C0000
    /* The thread-local behind it is not exported: one call. */
    return _PyThreadState_UncheckedGet();
#else
    /* 3.9-3.11: an atomic load of _PyRuntime.gilstate.tstate_current. */
    return _PyThreadState_GET();
#endif
}

/* Frames this few code units into their code get the full completeness
 * check: longer than any prologue but for functions with a dozen cells. */
#define HS_PROLOGUE_UNITS 16

/* Whether hs_key_of_stack checks callers for completeness as hs_read_frames
 * does. From 3.13 on, a class's __init__ called by the specialised call runs
 * above a clean-up shim that is an incomplete caller: unchecked, every
 * allocation in an __init__ would miss the hooks' cache (callgrind, 3.14:
 * 100,000 misses in 100,000 instances made). Up to 3.12 an incomplete
 * caller is a prologue's collection running a finaliser, rare enough for
 * the cheaper walk (one load fewer per frame) and the hooks' rule. */
#define HS_KEY_CHECKS_CALLERS (PY_VERSION_HEX >= 0x030D0000)

/* What a stack's depth adds to its key's hash, per frame: the walk, the
 * memo and the one-frame key (Rust's `one_frame_key`, with a copy of this
 * constant that a test compares with `hs_depth_mult()`) all add it, so
 * that they give equal keys. */
#define HS_DEPTH_MULT 0xD6E8FEB86659FD93ull

/* A stack's key for the hooks' cache of sites: two 64-bit hashes of the
 * frames hs_read_frames would give, and their number. Mirrored by `StackKey`
 * in src/engine/frames.rs. */
typedef struct {
    uint64_t hash;
    uint64_t check;
    int32_t nframes;
    int32_t total;
} hs_stack_key;

/* One frame as a hash word: where it is in which code. On 3.11+ the
 * instruction pointer alone says both while the code object lives (its
 * bytecode is inside it): one load, where the code and the offset are three
 * loads and a subtraction. */
#if PY_VERSION_HEX < 0x030B0000
#define HS_FRAME_WORD(f) \
    ((uint64_t)(uintptr_t)(f)->f_code + (uint64_t)(uint32_t)(f)->f_lasti * 0xE7037ED1A0B428DBull)
#elif PY_VERSION_HEX < 0x030D0000
#define HS_FRAME_WORD(f) ((uint64_t)(uintptr_t)(f)->prev_instr)
#else
#define HS_FRAME_WORD(f) ((uint64_t)(uintptr_t)(f)->instr_ptr)
#endif

#if PY_VERSION_HEX >= 0x030B0000
/* 3.11+: _PyInterpreterFrame records on the thread's data stack; the
 * running one. */
static inline _PyInterpreterFrame *
hs_running_frame(PyThreadState *ts)
{
#if PY_VERSION_HEX >= 0x030D0000
    return ts->current_frame;
#else
    return ts->cframe->current_frame;
#endif
}

/* Whether a frame is an entry shim, told by its owner: no line. 3.14 adds
 * interpreter-owned entry frames (owner 3) below the C stack shims (owner
 * 4, gone in 3.15). */
static inline int
hs_entry_shim(_PyInterpreterFrame *f)
{
#if PY_VERSION_HEX >= 0x030E0000
    return f->owner >= FRAME_OWNED_BY_INTERPRETER;
#elif PY_VERSION_HEX >= 0x030C0000
    return f->owner == FRAME_OWNED_BY_CSTACK;
#else
    (void)f;
    return 0;
#endif
}

/* Whether a frame is still setting up and has no line yet. The full check
 * (_PyFrame_IsIncomplete) reads the code object, one more cache line per
 * frame of a deep stack, so it is made only where it can say yes: for the
 * running frame, whose prologue (MAKE_CELL, COPY_FREE_VARS) allocates, and
 * for frames still within their first instructions: the __init__ clean-up
 * shim (3.13+) and a frame whose prologue set off a collection that runs
 * finalisers. A caller's frame further on is past its prologue. */
static inline int
hs_incomplete(_PyInterpreterFrame *f, int running)
{
    return (running || _PyInterpreterFrame_LASTI(f) < HS_PROLOGUE_UNITS)
        && _PyFrame_IsIncomplete(f);
}
#endif

/* Where `f` is in which code, as hs_read_frames gives it: the code object
 * and the byte offset of its current instruction. */
#if PY_VERSION_HEX < 0x030B0000
static inline void
hs_frame_of(PyFrameObject *f, hs_frame *out)
{
    out->code = (void *)f->f_code;
#if PY_VERSION_HEX >= 0x030A0000
    /* 3.10 counts f_lasti in code units. */
    out->offset = f->f_lasti < 0 ? -1 : f->f_lasti * (int)sizeof(_Py_CODEUNIT);
#else
    out->offset = f->f_lasti;
#endif
}
#else
static inline void
hs_frame_of(_PyInterpreterFrame *f, hs_frame *out)
{
#if PY_VERSION_HEX >= 0x030D0000
    out->code = (void *)_PyFrame_GetCode(f);
#else
    out->code = (void *)f->f_code;
#endif
    out->offset = _PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT);
}
#endif

/* The walk of hs_read_frames and hs_read_words, which differ only in what
 * they write of a frame: `frames` (hs_frame_of) or `words` (HS_FRAME_WORD),
 * whichever is not NULL. Inlined into each with the other NULL, so neither
 * tests it per frame. */
static inline int
hs_walk_frames(hs_frame *frames, uint64_t *words, int max, int *total, int *skipped_caller)
{
    PyThreadState *ts = current_tstate();
    int n = 0, depth = 0;
    *skipped_caller = 0;
    if (ts == NULL) {
        if (total) *total = 0;
        return 0;
    }
#if PY_VERSION_HEX < 0x030B0000
    /* 3.9 and 3.10: a linked list of frame objects. */
    for (PyFrameObject *f = ts->frame; f != NULL; f = f->f_back) {
#else
    /* Entry shims and frames still setting up have no line. */
    _PyInterpreterFrame *f = hs_running_frame(ts);
    for (int running = 1; f != NULL; f = f->previous, running = 0) {
        if (hs_entry_shim(f)) continue;
        if (n == max && !total) {
            break;
        }
        if (hs_incomplete(f, running)) {
            *skipped_caller |= !running && !HS_KEY_CHECKS_CALLERS;
            continue;
        }
#endif
        if (n < max) {
            if (words) {
                words[n] = HS_FRAME_WORD(f);
            } else {
                hs_frame_of(f, &frames[n]);
            }
            n++;
        } else if (!total) {
            break;
        }
        depth++;
    }
    if (total) *total = depth;
    return n;
}

/* Fills at most `max` frames, most recent first. Returns how many were
 * written; `*total` receives the full depth when `total` is not NULL (walking
 * past `max` costs extra, so the hot path passes NULL). `*skipped_caller`
 * is set when a caller's frame (not the running one) was left out for being
 * incomplete, which hs_key_of_stack's walk does not check (see there). */
int
hs_read_frames(hs_frame *out, int max, int *total, int *skipped_caller)
{
    return hs_walk_frames(out, NULL, max, total, skipped_caller);
}

/* The frames hs_read_frames gives (its `total` NULL), each as its word of
 * the stack key: its instruction pointer, which names code and offset while
 * the code lives. A miss of the hooks' cache looks these up in the frame
 * table's memo of instruction pointers (src/engine/frame_table.rs) without
 * reading code objects. Returns -1 before 3.11, whose words are hashes of
 * code and offset, not addresses (two frames could share one). */
int
hs_read_words(uint64_t *out, int max, int *skipped_caller)
{
    if (PY_VERSION_HEX < 0x030B0000) {
        *skipped_caller = 0;
        return -1;
    }
    return hs_walk_frames(NULL, out, max, NULL, skipped_caller);
}

#if PY_VERSION_HEX >= 0x030B0000
/* The memo of callers: the part of a stack's key that the running frame's
 * callers make, kept per running frame, so that the next allocation in that
 * frame checks its callers instead of hashing them again.
 *
 * Why: the key's walk is a chain of dependent loads (each frame's `previous`
 * is known only once the frame before it is read) and 11 instructions a
 * frame; at 16 frames it was most of what a deep stack cost over one frame
 * (callgrind, pyperformance's spectral_norm on 3.11: 176 more instructions
 * an allocation). An entry keeps the callers' addresses, so checking them
 * loads from addresses known in advance, in parallel.
 *
 * Why checking suffices: the key is a function of the frames' words and of
 * which frames the walk leaves out. An entry holds every frame the walk
 * went through below the running one (entry shims and left-out callers
 * included): its address, its word, and that the next one is its
 * `previous`. When all of them still hold, the walk would go through the
 * same frames in the same places and give the same key. Which frames it
 * leaves out follows from their words: an entry shim's word is in the
 * shim's static code; from 3.13 on, a caller left out as incomplete is
 * memoised only when its code is immortal (the __init__ clean-up shim), as
 * a mortal code object could die and another be made at its address with
 * a different prologue. The words name code objects that are alive while
 * their frames run, and a code object named by a site reports its death
 * (codes.c), which voids every entry (`hs_callers_memo_forget`), as it
 * voids the hooks' cache: a new code object at the same address could
 * give the same words for other code.
 *
 * Safety: an entry's addresses may be stale (a data stack chunk popped and
 * unmapped, a generator freed), so a caller's address is dereferenced only
 * once it has been read as the `previous` of a frame known to be live: the
 * running frame's, then each checked caller's in turn. The loads of the
 * next frame are still issued early (their addresses come from the entry,
 * and the branches are predicted), which is where the time is won.
 *
 * GIL held: only the holder, in the main interpreter, walks its stack
 * (src/engine/hook.rs); an entry checks frames by address, so one left by
 * another thread simply does not hold. */
#define HS_MEMO_SLOTS 128
/* Frames below the running one an entry can hold: 15 counted callers at
 * the deepest (MAX_FRAMES 16) and a shim between any two of them (an entry
 * shim where C called Python, the 3.13+ __init__ clean-up shim). */
#define HS_MEMO_CALLERS 31

/* A caller as an entry keeps it: where it is, and its word. */
typedef struct {
    _PyInterpreterFrame *frame;
    uint64_t word;
} hs_memo_caller;

typedef struct {
    _PyInterpreterFrame *running; /* the frame it is for; NULL: holds nothing */
    const uint64_t (*mult)[2];    /* the multipliers it was hashed with */
    uint64_t epoch;               /* hs_memo_epoch when made */
    uint64_t hash, check;         /* the key's parts but for the running frame's words */
    int32_t max;                  /* frames asked for */
    int32_t nframes;              /* frames counted, the running one included */
    int32_t ncallers;             /* callers walked through */
    /* The callers in walk order, then the last one's `previous` (its frame
     * only), so that every caller is checked alike: its word, and that the
     * next entry is its previous. */
    hs_memo_caller callers[HS_MEMO_CALLERS + 1];
} hs_callers_memo;

static hs_callers_memo hs_memo[HS_MEMO_SLOTS];
static uint64_t hs_memo_epoch;
/* Entries made: allocations whose callers were walked (stats()). */
static uint64_t hs_memo_made;

uint64_t
hs_caller_walks(void)
{
    return hs_memo_made;
}

/* Voids every entry: a code object named by a site died (codes.rs). */
void
hs_callers_memo_forget(void)
{
    hs_memo_epoch++;
}

/* A frame's entry by its address's bits above the fourth (frames are far
 * longer than 16 bytes, so no two share those): a frame and its callers lie
 * next to each other on the data stack, and within 2 KiB of each other
 * never share an entry, where with a hash of the address about one caller
 * and callee in a hundred would evict each other at every allocation. */
static inline hs_callers_memo *
hs_memo_of(_PyInterpreterFrame *running)
{
    return &hs_memo[((uintptr_t)running >> 4) & (HS_MEMO_SLOTS - 1)];
}

/* Whether `m` still holds for `running`'s callers. A caller is read only
 * once the frame above it has been found to name it as its previous (see
 * above); both of its fields are then compared in one test. */
static inline int
hs_memo_holds(const hs_callers_memo *m, _PyInterpreterFrame *running,
              const uint64_t (*mult)[2], int max)
{
    if (m->running != running || m->max != max || m->mult != mult
        || m->epoch != hs_memo_epoch) {
        return 0;
    }
    const hs_memo_caller *c = m->callers;
    if (running->previous != c->frame) {
        return 0;
    }
    /* Two callers a turn: the loop's own count is a third of its work. */
    int left = m->ncallers;
    for (; left >= 2; left -= 2, c += 2) {
        _PyInterpreterFrame *f = c[0].frame, *g = c[1].frame;
        if ((HS_FRAME_WORD(f) ^ c[0].word) | ((uintptr_t)f->previous ^ (uintptr_t)g)) {
            return 0;
        }
        if ((HS_FRAME_WORD(g) ^ c[1].word) | ((uintptr_t)g->previous ^ (uintptr_t)c[2].frame)) {
            return 0;
        }
    }
    if (left) {
        _PyInterpreterFrame *f = c[0].frame;
        return !((HS_FRAME_WORD(f) ^ c[0].word) | ((uintptr_t)f->previous ^ (uintptr_t)c[1].frame));
    }
    return 1;
}

/* Whether a caller left out as incomplete may be memoised: its code is
 * immortal, so no other code can take its address (see above). */
static inline int
hs_left_out_memoisable(_PyInterpreterFrame *f)
{
#if HS_KEY_CHECKS_CALLERS
    return _Py_IsImmortal((PyObject *)_PyFrame_GetCode(f));
#else
    (void)f;
    return 0;
#endif
}

/* The key of `running`'s stack from `m`, made or checked for it. */
static inline void
hs_key_from_memo(const hs_callers_memo *m, _PyInterpreterFrame *running,
                 const uint64_t (*mult)[2], hs_stack_key *key)
{
    uint64_t word = HS_FRAME_WORD(running);
    key->hash = word * mult[0][0] + m->hash;
    key->check = word * mult[0][1] + m->check;
    key->nframes = m->nframes;
    key->total = m->nframes;
}

/* Walks `running`'s callers as hs_key_of_stack does, hashing them from the
 * second position on, into `m`, and gives the key. `m` holds for the next
 * allocation unless a left-out caller or too many frames say it must not.
 * Out of line: the check's path then keeps no registers for it. */
__attribute__((noinline)) static void
hs_memo_make(hs_callers_memo *m, _PyInterpreterFrame *running,
             const uint64_t (*mult)[2], int max, hs_stack_key *key)
{
    hs_memo_made++;
    uint64_t h = 0, check = 0;
    const uint64_t (*row)[2] = mult + 1;
    const uint64_t (*const end)[2] = mult + max;
    int ncallers = 0, memoisable = 1;
    _PyInterpreterFrame *f = running->previous;
    for (; f != NULL; f = f->previous) {
        if (row == end) {
            break; /* further frames change nothing without count_total */
        }
        uint64_t word = HS_FRAME_WORD(f);
        if (ncallers < HS_MEMO_CALLERS) {
            m->callers[ncallers].frame = f;
            m->callers[ncallers].word = word;
        }
        ncallers++;
        if (hs_entry_shim(f)) continue;
        if (HS_KEY_CHECKS_CALLERS && hs_incomplete(f, 0)) {
            memoisable &= hs_left_out_memoisable(f);
            continue;
        }
        h += word * (*row)[0];
        check += word * (*row)[1];
        row++;
    }
    int n = (int)(row - mult);
    m->hash = h + (uint64_t)n * HS_DEPTH_MULT;
    m->check = check;
    m->nframes = n;
    m->max = max;
    m->mult = mult;
    m->epoch = hs_memo_epoch;
    if (memoisable && ncallers <= HS_MEMO_CALLERS) {
        /* Where the walk stopped: the last caller's previous. */
        m->callers[ncallers].frame = f;
        m->ncallers = ncallers;
        m->running = running;
    } else {
        m->running = NULL;
    }
    hs_key_from_memo(m, running, mult, key);
}

#else
/* 3.9 and 3.10 have no memo: their frames are objects, walked each time. */
void
hs_callers_memo_forget(void)
{
}

uint64_t
hs_caller_walks(void)
{
    return 0;
}
#endif

/* The key of the calling thread's stack by walking it (hs_key_of_stack's
 * way when the memo cannot serve): the frames are hashed as they are
 * walked, not stored, and up to 3.12 a
 * caller's frame is not checked for completeness (that reads its code
 * object; see HS_KEY_CHECKS_CALLERS). So a key can count a frame that
 * hs_read_frames leaves out: the hooks do not cache a site whose read
 * skipped a caller the key counted (`*skipped_caller` there), so a key
 * always names the frames of the site cached under it. `mult` holds two odd
 * multipliers per position (src/engine/sites.rs, MULTIPLIERS): each frame's
 * products are independent of the others', so they are made in parallel.
 * With `count_total` the walk goes on to the end for the whole depth. */
static inline void
hs_key_by_walk(PyThreadState *ts, const uint64_t (*mult)[2], int max, int count_total,
               hs_stack_key *key)
{
    uint64_t h = 0, check = 0;
    /* The next frame's multipliers: `row - mult` frames hashed so far. */
    const uint64_t (*row)[2] = mult;
    const uint64_t (*const end)[2] = mult + max;
    int past_max = 0; /* frames beyond `max`, counted with count_total */
    if (ts != NULL) {
#if PY_VERSION_HEX < 0x030B0000
        for (PyFrameObject *f = ts->frame; f != NULL; f = f->f_back) {
#else
        _PyInterpreterFrame *f = hs_running_frame(ts);
        for (int running = 1; f != NULL; f = f->previous, running = 0) {
            if (hs_entry_shim(f)) continue;
            if (HS_KEY_CHECKS_CALLERS ? hs_incomplete(f, running)
                                      : running && _PyFrame_IsIncomplete(f)) continue;
#endif
            if (row == end) {
                if (!count_total) break;
                past_max++;
                continue;
            }
            uint64_t word = HS_FRAME_WORD(f);
            h += word * (*row)[0];
            check += word * (*row)[1];
            row++;
        }
    }
    int n = (int)(row - mult);
    /* No finishing mix: the cache's index is the top bits of `hash`, and a
     * sum of products by odd multipliers has its best-mixed bits at the top
     * (multiplicative hashing); `check` is only compared. The whole depth
     * spreads stacks that differ only below the frames kept. */
    key->hash = h + (uint64_t)(n + past_max) * HS_DEPTH_MULT;
    key->check = check;
    key->nframes = n;
    key->total = n + past_max;
}

/* The key of the calling thread's stack, `max` frames deep, for the hot
 * path: the running frame's word with its callers' part from the memo
 * (checked, or made by walking them), or, for a running frame without a
 * line or with `count_total` (the whole depth), by walking them all. */
void
hs_key_of_stack(const uint64_t (*mult)[2], int max, int count_total, hs_stack_key *key)
{
    PyThreadState *ts = current_tstate();
#if PY_VERSION_HEX >= 0x030B0000
    /* The common case first: a running frame with a line (an entry shim or
     * a frame still setting up is left to the walk, which leaves it out),
     * its callers from the memo. (A key of one such frame is made in Rust
     * from hs_running_word's word, `one_frame_key`; one asked here takes
     * the walk, which gives the same.) */
    _PyInterpreterFrame *running = ts != NULL ? hs_running_frame(ts) : NULL;
    if (running != NULL && max >= 2 && !count_total && !hs_entry_shim(running)
        && !_PyFrame_IsIncomplete(running)) {
        hs_callers_memo *m = hs_memo_of(running);
        if (!hs_memo_holds(m, running, mult, max)) {
            hs_memo_make(m, running, mult, max, key);
            return;
        }
        hs_key_from_memo(m, running, mult, key);
        return;
    }
#endif
    hs_key_by_walk(ts, mult, max, count_total, key);
}

/* The running frame's word, for the hooks' key at one frame: the key
 * hs_key_of_stack gives at one frame is this word times the first row of
 * multipliers, plus HS_DEPTH_MULT once (src/engine/frames.rs, `one_frame_key`).
 * 0 where the key is not that simple: no frame, or an entry shim or a frame
 * still setting up on top, which the walk leaves out. One register back,
 * where hs_key_of_stack writes a key to memory for the caller to read back:
 * 13 instructions fewer an allocation at one frame (callgrind, 3.11). A
 * word of 0 by chance (3.9/3.10's words are sums) takes hs_key_of_stack's
 * way, to the same key. */
uint64_t
hs_running_word(void)
{
    PyThreadState *ts = current_tstate();
    if (ts == NULL) {
        return 0;
    }
#if PY_VERSION_HEX >= 0x030B0000
    _PyInterpreterFrame *running = hs_running_frame(ts);
    if (running == NULL || hs_entry_shim(running) || _PyFrame_IsIncomplete(running)) {
        return 0;
    }
    return HS_FRAME_WORD(running);
#else
    PyFrameObject *f = ts->frame;
    return f != NULL ? HS_FRAME_WORD(f) : 0;
#endif
}

/* HS_DEPTH_MULT, for the test that the Rust side's copy agrees. */
uint64_t
hs_depth_mult(void)
{
    return HS_DEPTH_MULT;
}

/* Whether the calling thread holds the GIL. The RAW domain is called without
 * it; only a holder may read its frames or touch reference counts. Unlike
 * PyGILState_Check(), never answers "yes" by default (it does when
 * subinterpreters disabled its check). */
int
hs_gil_held(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    /* 3.12+: a thread's own state is attached only while it holds the GIL. */
    return current_tstate() != NULL;
#else
    /* 3.9-3.11: the holder's state is global; compare with this thread's. */
    PyThreadState *holder = current_tstate();
    return holder != NULL && holder == PyGILState_GetThisThreadState();
#endif
}

/* The calling thread's state while it holds the GIL (on 3.9-3.11, the
 * holder's: call only from a thread that holds it). */
void *
hs_current_thread(void)
{
    return (void *)current_tstate();
}

/* The line of a byte offset in a code object (src/engine/lines.c). */
int hs_line_of(PyCodeObject *code, int offset);

/* Resolves one recorded frame for a report: borrowed references to the code
 * object's file name and function name, and the line number. Needs the GIL;
 * the code object is alive (src/engine/codes.rs). */
int
hs_resolve_frame(void *code_ptr, int offset, PyObject **filename, PyObject **name)
{
    PyCodeObject *code = (PyCodeObject *)code_ptr;
    *filename = code->co_filename;
#if PY_VERSION_HEX >= 0x030B0000
    *name = code->co_qualname;
#else
    *name = code->co_name;
#endif
    return hs_line_of(code, offset);
}

/* Whether the calling thread runs Python in a subinterpreter, for the
 * allocator hooks (src/engine/interp.rs): 0 in the main interpreter (or with no
 * thread state: a C thread, or one that released its GIL), 1 in a
 * subinterpreter that shares the main GIL, 2 in one with its own GIL (3.12+).
 * The first test reads the runtime's list of interpreters without its lock:
 * while only the main interpreter exists its head is the main one. A thread
 * of a subinterpreter always sees it otherwise, since the interpreter was
 * linked in before that thread could run in it; a thread of the main
 * interpreter that reads a stale head merely takes the longer test. When
 * `head` is not NULL it receives where the runtime keeps that head, so that
 * the hooks can make the first test inline, without calling here. */
#if PY_VERSION_HEX >= 0x030C0000
#include "internal/pycore_runtime.h"
#include "internal/pycore_interp.h"
#endif
int
hs_subinterpreter_of_caller(PyInterpreterState ***head)
{
    PyInterpreterState *main_interp = _PyRuntime.interpreters.main;
    if (head != NULL) {
        *head = &_PyRuntime.interpreters.head;
    }
    if (__atomic_load_n(&_PyRuntime.interpreters.head, __ATOMIC_RELAXED) == main_interp) {
        return 0;
    }
    PyThreadState *ts = current_tstate();
#if PY_VERSION_HEX < 0x030C0000
    /* current_tstate() is the GIL holder's: the caller's only if it holds it. */
    if (ts != NULL && ts->thread_id != PyThread_get_thread_ident()) {
        ts = NULL;
    }
#endif
    if (ts == NULL || ts->interp == main_interp) {
        return 0;
    }
#if PY_VERSION_HEX >= 0x030C0000
    if (ts->interp->ceval.gil != main_interp->ceval.gil) {
        return 2;
    }
#endif
    return 1;
}
