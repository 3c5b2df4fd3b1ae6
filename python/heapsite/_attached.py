"""The traced process's half of `heapsite attach` (the attacher's is
_attach.py): `begin()` starts tracing in a program that was started without
heapsite, `end()` writes the capture and restores the allocators.

Both run in the program's main thread, with the GIL, called by the boot
script that the attacher has the interpreter run at a safe point (PEP 768's
sys.remote_exec on 3.14+, a pending call scheduled by gdb before). They never
raise into the program: the boot script reports their answer in a status file.

What attaching leaves in the program: heapsite's modules in sys.modules, one
atexit function (writes the capture if the program ends while attached) and
one fork handler (a forked child stops tracing and writes nothing); both do
nothing once detached. No signal handler, no change to sys.path, and no
thread: the memory-over-time sampler of `heapsite run` is a thread, which
would make a program that forks get CPython's "process is multi-threaded"
DeprecationWarning; an attached capture has no timeline.
"""

from __future__ import annotations

import atexit
import os
import sys
import time

from . import _capture, _core
from . import _own as own_work

# The attached session: output, frames, kinds, pid, started (empty: detached).
_session: dict = {}
_hooks = {"fork": False}


class Refused(Exception):
    """What the attacher is told, in one line."""


def begin(output: str, frames: int = 16, kinds: bool = True, sample: int = 0) -> str:
    """Starts tracing; returns a line for the attacher."""
    if _session:
        raise Refused(f"heapsite is already attached to process {os.getpid()}")
    if _core.is_tracing():
        raise Refused(
            f"process {os.getpid()} already runs heapsite itself "
            "(heapsite run, or heapsite.start() in the program): not attaching"
        )
    # What end() needs is imported now, not counted as the program's.
    import json  # noqa: F401

    from . import _heap, _joined  # noqa: F401

    _capture.started_at = time.time()
    _session.update(output=output, kinds=kinds, pid=os.getpid(), started=_capture.started_at)
    _core.start(frames, sample)
    atexit.register(_at_exit)
    if not _hooks["fork"]:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _hooks["fork"] = True
    sampled = f", one sample per {sample} bytes" if sample else ""
    return f"tracing process {os.getpid()} ({frames} frames per call site{sampled})"


def end() -> str:
    """Writes the capture, stops tracing, restores the allocators; returns
    the capture's path. Tracing stops even when the capture fails."""
    if not _session:
        raise Refused(f"heapsite is not attached to process {os.getpid()}")
    output = _session["output"]
    entered = own_work.enter()
    try:
        if not _core.is_tracing():
            raise Refused("the program stopped heapsite itself: no capture")
        _capture.write(output, kinds=_session["kinds"], argv=getattr(sys, "argv", []))
    except Refused:
        raise
    except Exception as e:
        raise Refused(f"could not write the capture {output}: {e}") from None
    finally:
        own_work.leave(entered)
        _core.stop()
        _session.clear()
        atexit.unregister(_at_exit)
    return output


def attached() -> bool:
    return bool(_session)


def _at_exit() -> None:
    """The program ends while attached: the capture is written as on detach."""
    if not _session or _session["pid"] != os.getpid():
        return
    try:
        end()
    except Exception as e:  # the program's exit must not fail because of us
        sys.stderr.write(f"heapsite: {e}\n")


def _after_fork_in_child() -> None:
    """A forked child of an attached program is not traced (and writes no
    capture over its parent's)."""
    if _session:
        _session.clear()
        _core.stop()
