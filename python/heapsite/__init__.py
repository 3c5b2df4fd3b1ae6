"""heapsite: what uses memory in a Python program, and where it was allocated.

    import heapsite
    heapsite.start(frames=1)      # trace every allocation and its call site
    ...
    heapsite.top(10)              # the ten lines holding the most memory
    snap = heapsite.snapshot()    # statistics(), compare_to(), filter(), dump()

The engine is a Rust extension installed with PyMem_SetAllocator on the RAW,
MEM and OBJ domains; see docs/design.md in the source tree.
"""

from __future__ import annotations

import sysconfig as _sysconfig

if _sysconfig.get_config_var("Py_GIL_DISABLED"):
    # The engine relies on the GIL (docs/free-threading.md says what a
    # free-threaded engine needs); refuse before loading it.
    raise ImportError("heapsite does not support the free-threaded build yet (use a GIL build)")

from . import (
    _capture,  # noqa: E402
    _core,
    _format,
    _own,
    _serve,
)
from ._format import format_size, parse_size
from ._heap import Partition, clearrelheap, heap, hpy, path_to_root, setrelheap
from ._own import own_work
from ._snapshot import (
    Frame,
    Site,
    Snapshot,
    SnapshotFileError,
    Statistic,
    StatisticDiff,
    Traceback,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    import os
    from typing import IO

__all__ = [
    "MAX_FRAMES",
    "Partition",
    "clearrelheap",
    "heap",
    "hpy",
    "path_to_root",
    "setrelheap",
    "Frame",
    "Site",
    "Snapshot",
    "SnapshotFileError",
    "Statistic",
    "StatisticDiff",
    "Traceback",
    "clear",
    "dump",
    "format_size",
    "is_tracing",
    "parse_size",
    "peak",
    "reset_peak",
    "serve",
    "snapshot",
    "start",
    "stats",
    "stop",
    "stop_serving",
    "top",
    "traceback_limit",
    "traced_memory",
]

__version__: str = _core.__version__

MAX_FRAMES: int = _core.MAX_FRAMES


def start(frames: int = 1, sample_every: int | str | None = None) -> None:
    """Starts tracing every allocation, recording `frames` frames (1..128) of
    its call site. Calling it while tracing changes the depth for new
    allocations.

    `sample_every` ("512 KiB", or bytes) records a sample instead: an
    allocation of `size` bytes with probability 1 - exp(-size / rate), each
    counted with the weight that makes every figure an unbiased estimate
    (as tcmalloc and Go's runtime sample), for services that leave heapsite
    on. None keeps the current mode while tracing, else traces everything;
    the rate cannot change while tracing (stop() first)."""
    if isinstance(frames, bool) or not isinstance(frames, int):
        raise TypeError(f"frames must be an int, got {type(frames).__name__}")
    if not 1 <= frames <= MAX_FRAMES:
        raise ValueError(f"frames must be between 1 and {MAX_FRAMES}, got {frames}")
    if sample_every is None:
        rate = _core.sample_rate() if _core.is_tracing() else 0
    else:
        rate = _format.sample_rate(sample_every)
    _core.start(frames, rate)


def sample_rate() -> int:
    """Mean bytes between samples; 0 when every allocation is traced."""
    return _core.sample_rate()


def stop() -> None:
    """Stops tracing, restores the previous allocators, forgets the records."""
    _core.stop()


def is_tracing() -> bool:
    return _core.is_tracing()


def clear() -> None:
    """Forgets every recorded allocation; tracing goes on."""
    _core.clear()


def traced_memory() -> tuple[int, int]:
    """(current, peak) bytes of the traced allocations."""
    memory = _core.traced_memory()
    return (memory.current, memory.peak)


def reset_peak() -> None:
    """Sets the peak to the current size (and "live at peak" to what is live now)."""
    _core.reset_peak()


def traceback_limit() -> int:
    """How many frames each call site records."""
    return _core.traceback_limit()


def stats() -> dict[str, int]:
    """heapsite's own figures: live_allocations, tracking_bytes, sites, dropped,
    site_cache_misses, caller_walks, free_hook.

    tracking_bytes is every byte heapsite's core holds from malloc (its
    tables, sites, frames and caches), counted as it allocates.
    site_cache_misses counts, since the process started, the allocations
    whose stack was not in the hooks' cache of recent stacks: each costs a
    read of the frames and a lookup among all sites (a deep recursion makes
    many; a loop, almost none).
    caller_walks counts, since the process started, the allocations at
    more than one frame whose callers were walked and hashed anew because
    the memo of the running frame's callers no longer held (a new call
    path, a generator resumed elsewhere); the others only checked them
    (CPython 3.11 on; 0 before, where there is no memo). Not counted: the
    walks the memo never serves, for a running frame still setting up and
    for the whole depth (the tracemalloc drop-in's total_nframe).
    free_hook is 1 while the frees of Python's object allocator pass through
    heapsite's hook; sampled tracing over pymalloc leaves them to pymalloc
    (0), as its sampled blocks are freed through the raw allocator.
    """
    return _core.stats()


def _require_tracing(what: str) -> None:
    if not _core.is_tracing():
        raise RuntimeError(f"heapsite must be tracing to take {what}: call heapsite.start() first")


def snapshot() -> Snapshot:
    """The call sites with their live, total and at-peak memory, now."""
    _require_tracing("a snapshot")
    entered = _own.enter()
    try:
        memory = _core.traced_memory()
        sites = [
            Site(
                Traceback(Frame(*f) for f in s.frames),
                s.live_count,
                s.live_bytes,
                s.total_count,
                s.total_bytes,
                s.peak_count,
                s.peak_bytes,
            )
            for s in _core.sites()
        ]
        return Snapshot(sites, _core.traceback_limit(), (memory.current, memory.peak))
    finally:
        _own.leave(entered)


def dump(path: str | os.PathLike[str] | None = None) -> str:
    """Writes a capture of the program as it is now, without stopping it or
    tracing: what is live, the peak so far, totals, the kinds alive with
    their lines and holders, memory over time so far (under `heapsite run`).
    `%p` in `path` is the pid, `%n` the dump's number in this process
    (default `heapsite-%p.dump%n.capture`); returns the path written.
    `heapsite report` renders it like any capture."""
    _require_tracing("a capture")
    return _capture.dump(path)


def serve(address: str = "127.0.0.1:6060") -> str:
    """Serves the running program's heap profile at
    `http://ADDRESS/debug/pprof/heap`, in Go's convention (a gzipped
    profile.proto with alloc_objects, alloc_space, inuse_objects and
    inuse_space), so `go tool pprof http://127.0.0.1:6060/debug/pprof/heap`
    and Parca or Pyroscope scrape configurations work unchanged.

    `address` is HOST:PORT, or a port alone for loopback; only an explicit
    host such as 0.0.0.0 listens beyond this machine. Port 0 lets the system
    choose. Returns the address listened on. Tracing must be on
    (`start()`). Serving costs the program nothing between scrapes: the
    server reads heapsite's counters without the GIL, taking it only
    briefly to name call sites it has not seen before, and stops itself at
    exit. Raises ValueError for a bad address, OSError when it cannot
    listen (the port is taken), RuntimeError when already serving."""
    return _serve.serve(address)


def stop_serving() -> bool:
    """Stops the endpoint `serve()` started; False if none was serving."""
    return _serve.stop()


def peak() -> Snapshot:
    """A snapshot measured by what each site had live at the peak."""
    return snapshot().peak()


@own_work
def top(limit: int = 10, key: str = "lineno", file: IO[str] | None = None) -> None:
    """Prints the `limit` call sites (or files) holding the most live memory."""
    snapshot().top(limit, key, file)
