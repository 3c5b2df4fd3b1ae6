"""glibc malloc's bytes in use, the same measure for every tracer.

A tracer's own memory as it reports it is not comparable across tools:
``tracemalloc.get_tracemalloc_memory()`` adds up its hash tables' buckets
and entries (CPython's ``_Py_hashtable_size``) but not the tracebacks and
trace records those entries point to, which it allocates apart (about 200
bytes per distinct traceback at 16 frames).  Both tracers take their
memory from malloc (tracemalloc through PyMem_RawMalloc, heapsite's core
through its Rust allocator), so the bytes malloc has handed out at exit,
less those of the same program run plain, are each tracer's real cost.

``in_use()`` is ``mallinfo2()``'s ``uordblks`` (chunks in use in every
arena) plus ``hblkhd`` (chunks mmapped on their own); None off glibc.
"""

import ctypes
import ctypes.util


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
        )
    ]


def _mallinfo2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = libc.mallinfo2  # glibc 2.33 and later
    except (OSError, AttributeError):
        return None
    function.restype = _MallInfo2
    function.argtypes = []
    return function


_MALLINFO2 = _mallinfo2()


def in_use():
    """Bytes malloc has handed out and not had back, or None off glibc."""
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return int(info.uordblks + info.hblkhd)
