/*
 * objects.c -- reads object internals for the heap walk (src/heap/kinds.rs) and
 * for joining objects with their allocations: where an object's block
 * starts, an instance's __dict__ if it exists, and sys.getsizeof's answer
 * for the common case, all without creating or changing any object.
 *
 * Compiled against the target interpreter's own headers (internal ones too);
 * every function needs the GIL.
 */
#define PY_SSIZE_T_CLEAN
#define Py_BUILD_CORE 1
#include <Python.h>

#if PY_VERSION_HEX >= 0x030D0000
#include "internal/pycore_sysmodule.h"
#endif
#if PY_VERSION_HEX >= 0x030B0000
#include "internal/pycore_object.h"
#else
#include "internal/pycore_gc.h"
#endif

/* Bytes in front of the PyObject: the GC links, and on 3.11+ the managed
 * dict/weakref pointers. */
static size_t
pre_header_size(PyTypeObject *type)
{
#if PY_VERSION_HEX >= 0x030B0000
    return _PyType_PreHeaderSize(type);
#else
    return PyType_IS_GC(type) ? sizeof(PyGC_Head) : 0;
#endif
}

/* The address the allocator returned for `obj`. */
void *
hs_allocation_of(PyObject *obj)
{
    return (char *)obj - pre_header_size(Py_TYPE(obj));
}

/* The instance's __dict__ if it has been created (a borrowed reference), or
 * NULL. Never creates one: on 3.11+ most instances keep their attributes in
 * inline values until something asks for __dict__. */
PyObject *
hs_instance_dict(PyObject *obj)
{
    PyTypeObject *type = Py_TYPE(obj);
#if PY_VERSION_HEX >= 0x030D0000
    if (type->tp_flags & Py_TPFLAGS_MANAGED_DICT)
        return (PyObject *)_PyObject_GetManagedDict(obj);
#elif PY_VERSION_HEX >= 0x030C0000
    if (type->tp_flags & Py_TPFLAGS_MANAGED_DICT) {
        PyDictOrValues dorv = *_PyObject_DictOrValuesPointer(obj);
        return _PyDictOrValues_IsValues(dorv) ? NULL : dorv.dict;
    }
#elif PY_VERSION_HEX >= 0x030B0000
    if (type->tp_flags & Py_TPFLAGS_MANAGED_DICT)
        return *_PyObject_ManagedDictPointer(obj);
#endif
    Py_ssize_t offset = type->tp_dictoffset;
    if (offset == 0)
        return NULL;
    if (offset < 0) {
        /* Variable-size objects keep it after their items. */
        Py_ssize_t size = Py_SIZE(obj);
        if (size < 0)
            size = -size;
        offset += type->tp_basicsize + size * type->tp_itemsize;
        offset = (offset + SIZEOF_VOID_P - 1) & ~(SIZEOF_VOID_P - 1);
    }
    return *(PyObject **)((char *)obj + offset);
}

/* sys.getsizeof(obj) for an object whose type keeps object.__sizeof__
 * (the caller checks that once per type): the basic and item sizes plus
 * what getsizeof adds for the pre-header. */
Py_ssize_t
hs_default_sizeof(PyObject *obj)
{
    PyTypeObject *type = Py_TYPE(obj);
    Py_ssize_t size = type->tp_basicsize;
    if (type->tp_itemsize > 0) {
        Py_ssize_t n = Py_SIZE(obj);
        size += (n < 0 ? -n : n) * type->tp_itemsize;
    }
#if PY_VERSION_HEX >= 0x030C0000
    if (!PyType_Check(obj) || (((PyTypeObject *)obj)->tp_flags & Py_TPFLAGS_HEAPTYPE))
        size += pre_header_size(type);
#elif PY_VERSION_HEX >= 0x030B0000
    size += pre_header_size(type);
#else
    if (PyObject_IS_GC(obj))
        size += sizeof(PyGC_Head);
#endif
    return size;
}

/* sys.getsizeof(obj), any object; -1 with the error cleared on failure. */
Py_ssize_t
hs_sizeof(PyObject *obj)
{
    size_t size = _PySys_GetSizeOf(obj);
    if (size == (size_t)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    return (Py_ssize_t)size;
}

/* A code object's references. Code objects are not GC objects, so they
 * have no tp_traverse, but their constants, names and tables are objects of
 * the heap too (heapy counts them). */
static int
traverse_code(PyCodeObject *co, visitproc visit, void *arg)
{
    Py_VISIT(co->co_consts);
    Py_VISIT(co->co_names);
    Py_VISIT(co->co_filename);
    Py_VISIT(co->co_name);
#if PY_VERSION_HEX >= 0x030B0000
    Py_VISIT(co->co_qualname);
    Py_VISIT(co->co_localsplusnames);
    Py_VISIT(co->co_localspluskinds);
    Py_VISIT(co->co_linetable);
    Py_VISIT(co->co_exceptiontable);
#else
    Py_VISIT(co->co_code);
    Py_VISIT(co->co_varnames);
    Py_VISIT(co->co_freevars);
    Py_VISIT(co->co_cellvars);
#if PY_VERSION_HEX >= 0x030A0000
    Py_VISIT(co->co_linetable);
#else
    Py_VISIT(co->co_lnotab);
#endif
#endif
    return 0;
}

/* Calls `visit` for each object `obj` refers to (its tp_traverse). */
int
hs_traverse(PyObject *obj, visitproc visit, void *arg)
{
    if (PyCode_Check(obj))
        return traverse_code((PyCodeObject *)obj, visit, arg);
    traverseproc traverse = Py_TYPE(obj)->tp_traverse;
    /* As gc.get_referents: only objects the GC handles (a static type is
     * not one, though its type's flags say GC). */
    if (traverse == NULL || !PyObject_IS_GC(obj))
        return 0;
    return traverse(obj, visit, arg);
}

/* The value `name` has in the first class of `type`'s MRO whose own dict
 * holds it (a borrowed reference), or NULL. Reads the dicts only: unlike
 * _PyType_Lookup it leaves the type attribute cache alone (see below). */
static PyObject *
lookup_in_mro(PyTypeObject *type, PyObject *name)
{
    PyObject *mro = type->tp_mro;
    if (mro == NULL || !PyTuple_Check(mro))
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *base = PyTuple_GET_ITEM(mro, i);
        if (!PyType_Check(base))
            continue;
#if PY_VERSION_HEX >= 0x030C0000
        /* Static builtin types keep tp_dict NULL since 3.12. A new reference,
         * dropped at once: the class holds its dict, so nothing is freed. */
        PyObject *dict = PyType_GetDict((PyTypeObject *)base);
        Py_XDECREF(dict);
#else
        PyObject *dict = ((PyTypeObject *)base)->tp_dict;
#endif
        if (dict == NULL)
            continue;
        /* Borrowed. Against str keys, the compare runs no code; another
         * key's __eq__ runs only on an equal hash, as in _PyType_Lookup. */
        PyObject *found = PyDict_GetItemWithError(dict, name);
        if (found != NULL)
            return found;
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return NULL;
        }
    }
    return NULL;
}

/* Whether objects of `type` get their size from object.__sizeof__, so that
 * hs_default_sizeof gives sys.getsizeof's answer. Reads the MRO's dicts
 * only: runs no Python code and releases no reference. -1 on error
 * (treated as "no").
 *
 * Why not _PyType_Lookup: it fills the type attribute cache, and filling an
 * entry releases the name the entry held before. That name may be a mortal
 * interned string that nothing else owns (an attribute deleted since, such as
 * enum's "_Color__in_progress"): releasing it frees it. The heap walk calls
 * this while it holds only borrowed pointers, and on 3.14, where every dict is
 * GC-tracked, gc.get_objects() lists the interned-strings dict, whose two
 * references to each string are not counted. The walk then may already have
 * found that string, and would later incref and size freed memory. */
int
hs_keeps_default_sizeof(PyTypeObject *type)
{
    static PyObject *name = NULL;
    if (name == NULL) {
        name = PyUnicode_InternFromString("__sizeof__");
        if (name == NULL) {
            PyErr_Clear();
            return -1;
        }
    }
    PyObject *mine = lookup_in_mro(type, name);
    PyObject *objects = lookup_in_mro(&PyBaseObject_Type, name);
    return mine != NULL && mine == objects;
}

/* The interpreter's dict of interned strings where the collector tracks it
 * (3.14+ tracks every dict), so that it is among gc.get_objects(); NULL
 * elsewhere. The heap walk leaves it out, as heapy and earlier versions do:
 * it is the interpreter's table, not an object of the program. */
PyObject *
hs_interned_strings(void)
{
#if PY_VERSION_HEX >= 0x030E0000
    return _Py_INTERP_CACHED_OBJECT(PyInterpreterState_Get(), interned_strings);
#else
    return NULL;
#endif
}

/* A container's separately allocated storage, if it has one heapsite can
 * name: a list's item array. Objects reused from a free list were allocated
 * before tracing started, but their storage usually was not. */
void *
hs_storage_of(PyObject *obj)
{
    if (PyList_CheckExact(obj))
        return ((PyListObject *)obj)->ob_item;
    return NULL;
}

/* Following objects reused from free lists (3.13+): the interpreter tells a
 * reference tracer of every object it creates, free-list ones included, as
 * it tells tracemalloc; heapsite then moves the object's block to the line
 * that reused it, as tracemalloc does. Earlier versions have no such hook
 * outside tracemalloc itself. The previous tracer, if any, is chained. */
#if PY_VERSION_HEX >= 0x030D0000
extern void hs_object_created(PyObject *op);

static PyRefTracer hs_previous_tracer = NULL;
static void *hs_previous_data = NULL;
static int hs_following = 0;

static int
hs_ref_tracer(PyObject *op, PyRefTracerEvent event, void *data)
{
    (void)data;
    if (event == PyRefTracer_CREATE) {
        hs_object_created(op);
    }
    if (hs_previous_tracer != NULL) {
        return hs_previous_tracer(op, event, hs_previous_data);
    }
    return 0;
}

/* 1 if reuse is followed after the call, 0 if this version cannot. GIL held. */
int
hs_follow_reuse(int on)
{
    if (on && !hs_following) {
        hs_previous_tracer = PyRefTracer_GetTracer(&hs_previous_data);
        if (hs_previous_tracer == hs_ref_tracer) {
            hs_previous_tracer = NULL;
        }
        PyRefTracer_SetTracer(hs_ref_tracer, NULL);
        hs_following = 1;
    }
    else if (!on && hs_following) {
        void *data = NULL;
        if (PyRefTracer_GetTracer(&data) == hs_ref_tracer) {
            PyRefTracer_SetTracer(hs_previous_tracer, hs_previous_data);
        }
        hs_previous_tracer = NULL;
        hs_previous_data = NULL;
        hs_following = 0;
    }
    return on;
}
#else
int
hs_follow_reuse(int on)
{
    (void)on;
    return 0;
}
#endif
