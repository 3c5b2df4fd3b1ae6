"""The `_tracemalloc` C module's API on heapsite's engine.

`heapsite.tracemalloc` runs the standard library's own `tracemalloc.py` (the
Python half of the module: Snapshot, Statistic, Filter, ...) with this module
standing in for its C half, so classes, arguments, errors and printed text are
the running Python version's own.
"""

from __future__ import annotations

import operator

from . import _core

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any

# tracemalloc accepts up to 65535 frames; heapsite records at most MAX_FRAMES
# of them (deeper stacks still report their whole depth as total_nframe).
_MAX_NFRAME = 65535
_traceback_limit = 1

__all__ = [
    "clear_traces",
    "get_traceback_limit",
    "get_traced_memory",
    "get_tracemalloc_memory",
    "is_tracing",
    "reset_peak",
    "start",
    "stop",
]


def _as_c_int(value: Any) -> int:
    """Converts an argument the way the C module's `int` parameter does, with
    the same errors and messages on every version."""
    try:
        chr(value)  # the same C-int converter as _tracemalloc.start's argument
    except TypeError as e:
        raise TypeError(str(e)) from None
    except (ValueError, OverflowError):
        pass
    value = operator.index(value)
    if not -(2**31) <= value < 2**31:
        raise OverflowError("Python int too large to convert to C int")
    return value


def start(nframe=1, /):
    """Start tracing Python memory allocations."""
    global _traceback_limit
    nframe = _as_c_int(nframe)
    if not 1 <= nframe <= _MAX_NFRAME:
        raise ValueError(f"the number of frames must be in range [1; {_MAX_NFRAME}]")
    _traceback_limit = nframe
    _core.set_count_total(True)
    _core.start(min(nframe, _core.MAX_FRAMES), _core.sample_rate() if _core.is_tracing() else 0)
    # As the built-in tracer: an object reused from a free list counts at
    # the line that reused it (possible from 3.13, see README).
    _core.follow_reuse(True)


def stop():
    """Stop tracing Python memory allocations and clear traces."""
    _core.follow_reuse(False)
    _core.stop()
    _core.set_count_total(False)


def is_tracing():
    """Return True if the tracemalloc module is tracing Python memory allocations."""
    return _core.is_tracing()


def clear_traces():
    """Clear traces of memory blocks allocated by Python."""
    _core.clear()


def get_traceback_limit():
    """Get the maximum number of frames stored in the traceback of a trace."""
    return _traceback_limit


def get_traced_memory():
    """Get the current size and peak size of traced memory blocks, in bytes."""
    if not _core.is_tracing():
        return (0, 0)
    memory = _core.traced_memory()
    return (memory.current, memory.peak)


def reset_peak():
    """Set the peak size of traced memory blocks to the current size."""
    if _core.is_tracing():
        _core.reset_peak()


def get_tracemalloc_memory():
    """Get the memory usage in bytes of the tracemalloc module used internally
    to trace memory allocations (here: heapsite's tables and sites)."""
    return _core.stats()["tracking_bytes"]


def _get_traces():
    """Get traces of all memory blocks allocated by Python: a list of
    (domain, size, traceback, total_nframe) tuples."""
    if not _core.is_tracing():
        return []
    return _core.traces()


def _get_object_traceback(obj):
    """Get the traceback where the Python object was allocated, as a tuple of
    (filename, lineno) frames, most recent first; None if not traced."""
    if not _core.is_tracing():
        return None
    return _core.object_traceback(obj)
