"""Run one workload under one in-process tracer.

    python bench/harness.py MODE workload.py [args...]

MODE is one of: plain, heapsite1, heapsite16, tracemalloc1, tracemalloc16.
The tracer is started here, then the workload runs as ``__main__`` through
runpy, so every mode (plain included) has the same interpreter start-up.

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
import runpy
import sys

MODES = ("plain", "heapsite1", "heapsite16", "tracemalloc1", "tracemalloc16")
EXIT_TRACER_UNAVAILABLE = 3

_state = {"mode": "plain", "written": False}


def start_tracer(mode):
    if mode == "plain":
        return
    if mode.startswith("heapsite"):
        frames = int(mode[len("heapsite") :])
        try:
            import heapsite
        except ImportError as exc:
            sys.exit(_unavailable(f"heapsite not importable: {exc}"))
        try:
            heapsite.start(frames=frames)
        except Exception as exc:  # any failure means "no row"
            sys.exit(_unavailable(f"heapsite.start failed: {exc!r}"))
        return
    frames = int(mode[len("tracemalloc") :])
    import tracemalloc

    tracemalloc.start(frames)


def _unavailable(reason):
    print(f"harness: {reason}", file=sys.stderr)
    return EXIT_TRACER_UNAVAILABLE


def collect_stats(mode):
    """The tracer's live allocation count and its own memory, or None."""
    if mode.startswith("heapsite"):
        heapsite = sys.modules.get("heapsite")
        if heapsite is None:
            return None
        is_tracing = getattr(heapsite, "is_tracing", None)
        if callable(is_tracing) and not is_tracing():
            return None
        stats = dict(heapsite.stats())
        stats["tool"] = "heapsite"
        return stats
    if mode.startswith("tracemalloc"):
        import tracemalloc

        if not tracemalloc.is_tracing():
            return None
        # Read the tracer's own memory before the snapshot adds to it.
        tracking_bytes = tracemalloc.get_tracemalloc_memory()
        traced_current, traced_peak = tracemalloc.get_traced_memory()
        live = len(tracemalloc.take_snapshot().traces)
        return {
            "tool": "tracemalloc",
            "live_allocations": live,
            "tracking_bytes": tracking_bytes,
            "traced_current_bytes": traced_current,
            "traced_peak_bytes": traced_peak,
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


def main(argv):
    if len(argv) < 2 or argv[0] not in MODES:
        print(
            f"usage: harness.py {{{','.join(MODES)}}} workload.py [args...]",
            file=sys.stderr,
        )
        return 2
    mode, script = argv[0], argv[1]
    _state["mode"] = mode
    sys.argv = [script, *argv[2:]]
    # Like `python script.py`: the script's folder leads sys.path.
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    if os.environ.get("HEAPSITE_BENCH_STATS"):
        atexit.register(bench_stats_hook)
    start_tracer(mode)
    runpy.run_path(
        script,
        init_globals={"bench_stats_hook": bench_stats_hook},
        run_name="__main__",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
