"""Capture files: the aggregated model of a run (sites with frames and
figures, kinds at exit joined with their sites and holders, memory over
time, run metadata). The model is Rust's (`src/report/model.rs`): the
native core builds the sites, frames and process facts from its own tables
and writes the file (`src/report/capture.rs`); this module gives it what
only Python knows (`run()`: times, flags, memory over time, and the kinds
and joined tables of the heap walk).

`write(path)` captures the running program now; `heapsite run` and the
LD_PRELOAD path call it when the program ends. `heapsite report FILE` renders
a capture as text, JSON, HTML or pprof (`src/report/`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence

from . import _core, _joined
from . import _own as own_work

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any

# The start of tracing, for durations; set by whoever starts tracing.
started_at = time.time()


def _own_prefix() -> str:
    return os.path.dirname(os.path.abspath(__file__)) + os.sep


def run(
    *,
    native: bool = False,
    native_frames: bool = False,
    timeline: Iterable[tuple[float, int]] = (),
    kinds: bool = True,
    argv: Sequence[str] | None = None,
) -> dict:
    """What only Python knows of a capture of the traced program, now: the
    run part (`model::Run` in src/report/model.rs) that `write_capture`
    joins with the engine's sites, frames and process facts."""
    # Read before the heap walk, which allocates.
    memory = _core.traced_memory()
    # Walked first, before this function's own objects pile up.
    heap_kinds, joined = _joined.at_exit() if kinds else ([], None)
    extra = {} if joined is None else {"joined": joined}
    return {
        "argv": list(sys.argv if argv is None else argv),
        "started": started_at,
        "duration": max(time.time() - started_at, 0.0),
        "native": bool(native),
        "native_frames": bool(native_frames),
        "peak_bytes": max(memory.peak, 0),
        "live_bytes": max(memory.current, 0),
        "kinds": heap_kinds,
        "timeline": [{"t": t, "bytes": b} for t, b in timeline],
        **extra,
    }


# How a capture of this run is taken (set by the preloaded path's begin():
# native memory tracked, native frames, the kinds table).
options: dict = {}
_dumps = {"count": 0}


def dump(path: str | os.PathLike[str] | None = None) -> str:
    """Writes a capture of the traced program as it is now (live memory,
    the peak so far, totals, the kinds alive and the joined table, memory
    over time so far) without stopping it; returns the path written.

    `%p` in `path` stands for the pid and `%n` for the dump's number in this
    process (1, 2, ...); the default is `heapsite-%p.dump%n.capture`."""
    if not _core.is_tracing():
        raise RuntimeError("heapsite must be tracing to write a capture: call heapsite.start()")
    _dumps["count"] += 1
    template = os.fspath(path) if path is not None else "heapsite-%p.dump%n.capture"
    output = template.replace("%p", str(os.getpid())).replace("%n", str(_dumps["count"]))
    entered = own_work.enter()  # the capture's tables are heapsite's own
    try:
        write(output, timeline=_core.timeline_samples(), **options)
    finally:
        own_work.leave(entered)
    return output


def write(path: str | os.PathLike[str], **options: Any) -> None:
    """Writes a capture of the traced program, now, to `path`."""
    if not _core.is_tracing():
        raise RuntimeError("heapsite must be tracing to write a capture: call heapsite.start()")
    gathered = run(**options)
    # The run's JSON is heapsite's own: made before write_capture reads the
    # sites, it must not be one of them (json's encoder is not under the
    # package directory that leaves out the rest of this work).
    entered = own_work.enter()
    try:
        run_json = json.dumps(gathered)
    finally:
        own_work.leave(entered)
    _core.write_capture(os.fspath(path), run_json, _own_prefix())


# Seconds SIGTERM waits for heapsite's Python handler to start (a program in
# one long C call runs none) before it ends the process as without heapsite.
SIGTERM_GRACE = 2.0


def on_sigterm(write_capture: Callable[[], None], in_children: bool = False) -> None:
    """A program ended by SIGTERM (a service stopped, a job cancelled) skips
    atexit; unless it handles SIGTERM itself, heapsite's handler calls
    `write_capture()` and then lets the signal end the process as it would
    have (the same exit status).

    Forked children keep the handler only `in_children` (they write a
    capture of their own: --follow-fork), each with its own deadline; any
    other child gets SIGTERM's default action back as it starts (the core
    does it at the fork, this says so to the signal module too). A Python
    handler misses a SIGTERM that comes just before the main thread blocks
    (multiprocessing's Pool.terminate() ends workers blocked on a lock so),
    and a child without a deadline would then never end (see sigterm.rs)."""
    import signal

    def write_then_die(signum: int, _frame: object) -> None:
        _core.sigterm_handling()
        signal.signal(signum, signal.SIG_IGN)  # the process ends below anyway
        try:
            write_capture()
        except Exception as e:  # the signal must end the process all the same
            sys.stderr.write(f"heapsite: could not write the capture: {e}\n")
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def in_a_forked_child() -> None:
        if signal.getsignal(signal.SIGTERM) is not write_then_die:
            return  # the program's own choice, or given back already
        if in_children:
            try:
                _core.sigterm_after_fork()
                return
            except OSError:
                pass  # no deadline: better no capture than a child that never ends
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except ValueError:  # not the main thread: the default action stands all the same
            pass

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, write_then_die)
        _core.sigterm_deadline(SIGTERM_GRACE, in_children)
        os.register_at_fork(after_in_child=in_a_forked_child)


def is_capture(path: str | os.PathLike[str]) -> bool:
    """Whether the file at `path` starts like a capture file."""
    magic = _core.capture_magic()
    with open(path, "rb") as f:
        return f.read(len(magic)) == magic
