"""Run one workload under one in-process tracer.

    python bench/harness.py MODE workload.py [args...]

MODE is one of: plain, heapsite1, heapsite16, sampled16 (heapsite at 16
frames recording a sample, one allocation per 512 KiB on average: its
production mode), tracemalloc1, tracemalloc16, tracemalloc25, dropin25
(heapsite.tracemalloc.start(25): the drop-in).
The tracer is started here, then the workload runs as ``__main__``, so every
mode (plain included) pays the same interpreter start-up.

The workload is run the way ``runpy.run_path(path, run_name="__main__")``
runs it (a fresh ``__main__`` module, sys.argv and sys.path[0] set as for
``python workload.py``), but its code is executed straight from this file's
module level.  runpy would put four frames of its own (and ours) under every
workload frame; tracers that record up to 16 frames then walk, hash and
store those on each allocation, which inflates the 16-frame rows well past
what ``python -X tracemalloc=16 workload.py`` costs.  Here the workload sees
exactly one extra frame: this module.

If HEAPSITE_BENCH_STATS names a file, the tracer's own numbers
(live_allocations, tracking_bytes) are written there as JSON: when the
workload calls the injected ``bench_stats_hook()`` (retained.py does, while
its objects are still alive), or else at exit.  Collecting them is not cheap
(tracemalloc needs a snapshot), so bench/run.py asks for them only in runs
it does not time.

Exit status 3 means the tracer could not be started (e.g. heapsite is not
importable); the reason is the last line on stderr.
"""

import atexit
import json
import os
import sys
import types

from malloc_in_use import in_use  # bench/, beside this file

if __name__ == "__main__":
    # The workload runs right here, near the top of this module's code, so
    # that its one extra frame (this one) is cheap for tracers to resolve:
    # tracemalloc computes each frame's line number by scanning the code's
    # line table up to the current instruction.  The functions below are
    # reached by importing this file again as the module `harness` (its
    # folder is still sys.path[0] here).
    import harness

    _harness_module = sys.modules["__main__"]  # kept alive while replaced
    _code, _globals = harness.prepare(sys.argv[1:])
    exec(_code, _globals)  # noqa: S102 - running the workload is the point
    sys.exit(0)

MODES = (
    "plain",
    "heapsite1",
    "heapsite16",
    "sampled16",
    "tracemalloc1",
    "tracemalloc16",
    "tracemalloc25",
    "dropin25",
)
EXIT_USAGE = 2
EXIT_TRACER_UNAVAILABLE = 3

_state = {"mode": "plain", "written": False}


class TracerUnavailable(Exception):
    pass


def start_tracer(mode):
    if mode == "plain":
        return
    if mode.startswith("dropin"):
        try:
            import heapsite.tracemalloc as drop_in
        except ImportError as exc:
            raise TracerUnavailable(f"heapsite not importable: {exc}") from exc
        drop_in.start(int(mode[len("dropin") :]))
        return
    if mode.startswith(("heapsite", "sampled")):
        sampled = mode.startswith("sampled")
        frames = int(mode[len("sampled" if sampled else "heapsite") :])
        try:
            import heapsite
        except ImportError as exc:
            raise TracerUnavailable(f"heapsite not importable: {exc}") from exc
        try:
            heapsite.start(frames=frames, sample_every="512 KiB" if sampled else None)
        except Exception as exc:  # any failure means "no row", not a crash
            raise TracerUnavailable(f"heapsite.start failed: {exc!r}") from exc
        return
    import tracemalloc

    tracemalloc.start(int(mode[len("tracemalloc") :]))


def collect_stats(mode):
    """The tracer's live allocation count and its own memory, or None; and
    malloc's bytes in use (bench/malloc_in_use.py), plain included."""
    if mode == "plain":
        return {"tool": "plain", "malloc_in_use": in_use()}
    if mode.startswith(("heapsite", "sampled")):
        heapsite = sys.modules.get("heapsite")
        if heapsite is None:
            return None
        is_tracing = getattr(heapsite, "is_tracing", None)
        if callable(is_tracing) and not is_tracing():
            return None
        stats = dict(heapsite.stats())
        stats["tool"] = "heapsite"
        # After stats(), which may give back the live table's memory past
        # its peak (src/engine/table.rs): the same moment as its count.
        stats["malloc_in_use"] = in_use()
        return stats
    if mode.startswith("tracemalloc"):
        import tracemalloc

        if not tracemalloc.is_tracing():
            return None
        # Read the tracer's own memory before the snapshot adds to it.
        tracking_bytes = tracemalloc.get_tracemalloc_memory()
        traced_current, traced_peak = tracemalloc.get_traced_memory()
        malloc_in_use = in_use()
        live = len(tracemalloc.take_snapshot().traces)
        return {
            "tool": "tracemalloc",
            "live_allocations": live,
            "tracking_bytes": tracking_bytes,
            "traced_current_bytes": traced_current,
            "traced_peak_bytes": traced_peak,
            "malloc_in_use": malloc_in_use,
        }
    return None


def bench_stats_hook():
    """Write the stats file named by HEAPSITE_BENCH_STATS (once)."""
    path = os.environ.get("HEAPSITE_BENCH_STATS")
    if not path or _state["written"]:
        return
    stats = collect_stats(_state["mode"])
    if stats is None:
        return
    stats["mode"] = _state["mode"]
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(stats, fh, indent=2, sort_keys=True, default=str)
    _state["written"] = True


def prepare(argv):
    """Parse argv, start the tracer; return (code, globals) to execute."""
    if len(argv) < 2 or argv[0] not in MODES:
        print(
            f"usage: harness.py {{{','.join(MODES)}}} workload.py [args...]",
            file=sys.stderr,
        )
        sys.exit(EXIT_USAGE)
    mode, script = argv[0], os.path.abspath(argv[1])
    _state["mode"] = mode
    with open(script, "rb") as fh:
        code = compile(fh.read(), script, "exec")
    module = types.ModuleType("__main__")
    module.__dict__.update(
        __file__=script,
        __cached__=None,
        __builtins__=__builtins__,
        bench_stats_hook=bench_stats_hook,
    )
    # As `python workload.py` would have them.
    sys.argv = [argv[1], *argv[2:]]
    sys.path[0] = os.path.dirname(script)
    sys.modules["__main__"] = module
    if os.environ.get("HEAPSITE_BENCH_STATS"):
        atexit.register(bench_stats_hook)
    try:
        start_tracer(mode)
    except TracerUnavailable as exc:
        print(f"harness: {exc}", file=sys.stderr)
        sys.exit(EXIT_TRACER_UNAVAILABLE)
    return code, module.__dict__
