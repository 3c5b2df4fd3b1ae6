"""heapsite's own Python code (snapshot(), top(), heap(), the Snapshot
methods) runs on the program's thread: what it allocates is left untraced,
so that heapsite never shows in its own figures (src/own_work.rs).
HEAPSITE_TRACE_SELF=1 traces it like the program's, to measure heapsite."""

from __future__ import annotations

import functools
import os

from . import _core

_TRACE_SELF = os.environ.get("HEAPSITE_TRACE_SELF", "") not in ("", "0")


def enter() -> bool:
    """The calling thread's allocations are heapsite's own from now; pass
    the answer to `leave`. Allocates nothing (a wrapper's *args, **kwargs
    would: objects of the program's, alive during a heap walk)."""
    return False if _TRACE_SELF else _core.own_work_enter()


def leave(entered: bool) -> None:
    if entered:
        _core.own_work_leave()


def own_work(function):
    """`function`'s allocations (and its callees') are heapsite's own. For
    functions with arguments, whose call makes them anyway; the wrapper's
    own argument tuple and dict live only during the call."""
    if _TRACE_SELF:
        return function

    @functools.wraps(function)
    def untraced(*args, **kwargs):
        entered = _core.own_work_enter()
        try:
            return function(*args, **kwargs)
        finally:
            if entered:
                _core.own_work_leave()

    return untraced
