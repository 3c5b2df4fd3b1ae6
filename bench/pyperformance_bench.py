"""pyperformance's pure-Python benchmarks under heapsite and its peers.

Setup (CPython 3.11; this script installs nothing itself)::

    python3.11 -m venv /tmp/pyperf-venv
    /tmp/pyperf-venv/bin/pip install -r bench/pyperformance-requirements.txt
    VIRTUAL_ENV=/tmp/pyperf-venv PATH=/tmp/pyperf-venv/bin:$PATH maturin develop --release
    /tmp/pyperf-venv/bin/python bench/pyperformance_bench.py \
        --markdown bench/RESULTS-pyperformance.md

Each benchmark is pyperformance's own ``run_benchmark.py`` (found in the
installed package's ``data-files/benchmarks``) run in pyperf's worker mode
(``--worker --worker-task K -l LOOPS -n VALUES -w WARMUPS -o FILE``): one
process runs the benchmark in-process, with no pyperf manager and no child
processes.  A script with several pyperf benchmarks (scimark, logging,
deepcopy...) gives one row per benchmark (one worker task each).  LOOPS is
calibrated once per row under plain CPython (``--calibrate-loops``) and reused
for every tool, so every tool does the same work.

Tools take turns: each round runs every tool once per row, and the order
rotates from round to round.  A row's time for a tool is the MINIMUM of all
the values pyperf reported over all rounds; its peak RSS is the smallest
ru_maxrss (os.wait4) over the rounds.  See bench/README.md.

Internally, ``pyperformance_bench.py --wrap MODE STATS script.py args...``
is the in-process wrapper (plain, heapsite1, heapsite16, sampled16 (sampled
at 512 KiB), tracemalloc): it
starts the tracer, runs the script as ``__main__`` from its own module level
(one extra frame, not runpy's four) and writes the tracer's own bookkeeping
bytes to STATS at exit.
"""

import os
import sys


def _wrap_stats(mode, path, malloc_in_use):
    stats = {"mode": mode}
    try:
        if mode.startswith(("heapsite", "sampled")):
            import heapsite

            stats.update({k: v for k, v in dict(heapsite.stats()).items() if isinstance(v, int)})
        import tracemalloc

        if tracemalloc.is_tracing():
            stats["tracking_bytes"] = tracemalloc.get_tracemalloc_memory()
            stats["frames"] = tracemalloc.get_traceback_limit()
    except Exception as exc:  # the numbers are optional, the run is not
        stats["error"] = repr(exc)
    # After the tracer's figures: reading heapsite's gives back its live
    # table's memory past the peak (src/engine/table.rs), which the count
    # then says; malloc's figure must be of the same moment.
    stats["malloc_in_use"] = malloc_in_use()
    import json

    with open(path, "w", encoding="utf-8") as fh:
        json.dump(stats, fh)


def _wrap_prepare(argv):
    """Start the tracer named by argv[0]; return (code, globals) of the script."""
    import atexit
    import types

    mode, stats_path, script = argv[0], argv[1], os.path.abspath(argv[2])
    # Imported while sys.path[0] is still bench/ (it becomes the script's).
    from malloc_in_use import in_use

    with open(script, "rb") as fh:
        code = compile(fh.read(), script, "exec")
    module = types.ModuleType("__main__")
    module.__dict__.update(__file__=script, __cached__=None, __builtins__=__builtins__)
    sys.argv = [script, *argv[3:]]
    sys.path[0] = os.path.dirname(script)
    sys.modules["__main__"] = module
    if mode.startswith(("heapsite", "sampled")):
        try:
            import heapsite

            # sampled16: 16 frames, one allocation per 512 KiB on average.
            sampled = mode.startswith("sampled")
            frames = int(mode[len("sampled" if sampled else "heapsite") :])
            heapsite.start(frames, sample_every="512 KiB" if sampled else None)
        except Exception as exc:
            print(f"wrapper: heapsite unavailable: {exc!r}", file=sys.stderr)
            sys.exit(3)
    # Registered after the tracer started, so it runs before the tracer's own
    # exit handlers (atexit is last in, first out).
    atexit.register(_wrap_stats, mode, stats_path, in_use)
    return code, module.__dict__


if __name__ == "__main__" and sys.argv[1:2] == ["--wrap"]:
    _self = sys.modules["__main__"]  # kept alive while replaced
    _code, _globals = _wrap_prepare(sys.argv[2:])
    exec(_code, _globals)  # noqa: S102 - running the benchmark is the point
    sys.exit(0)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

# Pure-Python pyperformance benchmarks that need nothing but pyperf.
DEFAULT_BENCHMARKS = (
    "chaos,comprehensions,coroutines,deepcopy,deltablue,fannkuch,float,generators,go,"
    "hexiom,json_dumps,json_loads,logging,nbody,nqueens,pickle_pure_python,pidigits,"
    "pyflate,raytrace,regex_effbot,regex_v8,richards,scimark,spectral_norm,"
    "unpack_sequence,unpickle_pure_python"
)
TOOLS = (
    "plain",
    "heapsite1",
    "heapsite16",
    "sampled16",
    "heapsite-run",
    "tracemalloc1",
    "tracemalloc16",
    "memray",
)
PACKAGES = ("heapsite", "pyperformance", "pyperf", "memray")
THIS = os.path.abspath(__file__)


def log(message):
    print(f"[pyperformance_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr)


def find_benchmarks(names):
    """{name: (run_benchmark.py, extra_opts)} for the names asked for."""
    from pyperformance import _manifest  # private, but the one list of its benchmarks

    known = {
        b.name: (b.runscript, list(b.extra_opts or ()))
        for b in _manifest.load_manifest(None).benchmarks
    }
    found, missing = {}, []
    for name in names:
        if name in known:
            found[name] = known[name]
        else:
            missing.append(name)
    return found, missing


def tool_command(tool, script, args, scratch):
    py = sys.executable
    stats = str(scratch / "stats.json")
    if tool == "plain":
        return [py, THIS, "--wrap", "plain", stats, script, *args]
    if tool.startswith(("heapsite", "sampled")) and tool != "heapsite-run":
        return [py, THIS, "--wrap", tool, stats, script, *args]
    if tool.startswith("tracemalloc"):
        frames = tool[len("tracemalloc") :]
        return [py, "-X", f"tracemalloc={frames}", THIS, "--wrap", tool, stats, script, *args]
    if tool == "heapsite-run":
        out = str(scratch / "run.%p.capture")
        return [py, "-m", "heapsite", "run", "-q", "-o", out, script, *args]
    if tool == "memray":
        out = str(scratch / "memray.bin")
        cmd = [py, "-m", "memray", "run", "--trace-python-allocators", "-q", "-o", out, "--force"]
        return [*cmd, script, *args]
    raise ValueError(f"unknown tool {tool!r}")


def tool_env():
    env = dict(os.environ)
    for name in ("PYTHONTRACEMALLOC", "PYTHONHASHSEED"):
        env.pop(name, None)
    env["BROWSER"] = "true"
    return env


def run_process(argv, timeout, scratch):
    """Run argv; return (returncode or None on timeout, maxrss bytes, stderr tail)."""
    err_path = scratch / "stderr.txt"
    with open(scratch / "stdout.txt", "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            argv, cwd=scratch, env=tool_env(), stdout=out, stderr=err, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                return None, 0, "timeout"
            time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [ln.strip() for ln in err_path.read_text(errors="replace").splitlines() if ln.strip()]
    tail = (lines[-1] if lines else "").replace("|", "/")[:120]
    return proc.returncode, usage.ru_maxrss * 1024, tail


def read_suite(path):
    """[(name, metadata, [(loops, value) warmups], [values])] from pyperf's JSON."""
    import pyperf  # the driver runs in the venv that has pyperformance and pyperf

    suite = pyperf.BenchmarkSuite.load(str(path))
    return [
        (
            bench.get_name(),
            bench.get_metadata(),
            [w for run in bench.get_runs() for w in run.warmups],
            [v for run in bench.get_runs() for v in run.values],
        )
        for bench in suite.get_benchmarks()
    ]


def clear(scratch):
    for path in scratch.iterdir():
        if path.is_file():
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)


def calibrate(name, script, opts, args, scratch):
    """[(row name, worker task, loops)] for one pyperformance benchmark, under plain."""
    clear(scratch)
    out = scratch / "calibrate.json"
    argv = [*opts, "--worker", "--calibrate-loops", "-w", "0", "-n", "1", "-q", "-o", str(out)]
    rc, _rss, tail = run_process(
        tool_command("plain", script, argv, scratch), args.timeout, scratch
    )
    if rc != 0:
        raise RuntimeError(f"calibration failed ({'timeout' if rc is None else rc}): {tail}")
    rows = []
    for task, (row, meta, warmups, _values) in enumerate(read_suite(out)):
        loops = meta.get("calibrate_loops") or max(loops for loops, _value in warmups)
        rows.append((row or f"{name}#{task}", task, int(loops)))
    return rows


def run_row(tool, script, opts, task, loops, args, scratch):
    """One timed process: dict(values, rss, tracking) or dict(error)."""
    clear(scratch)
    out = scratch / "result.json"
    argv = [*opts, "--worker", "--worker-task", str(task), "-l", str(loops)]
    argv += ["-n", str(args.values), "-w", str(args.warmups), "-q", "-o", str(out)]
    start = time.perf_counter()
    rc, rss, tail = run_process(tool_command(tool, script, argv, scratch), args.timeout, scratch)
    wall = time.perf_counter() - start
    if rc is None:
        return {"error": f"timeout after {args.timeout:.0f} s"}
    if rc != 0:
        return {"error": f"exit {rc}: {tail}"}
    try:
        ((_row, _meta, _warmups, values),) = read_suite(out)
    except (OSError, ValueError, KeyError) as exc:
        return {"error": f"no pyperf result: {exc!r}"}
    result = {"values": values, "rss": rss, "wall": wall}
    stats_path = scratch / "stats.json"
    if stats_path.exists():
        stats = json.loads(stats_path.read_text())
        if "tracking_bytes" in stats:
            result["tracking"] = stats["tracking_bytes"]
        if stats.get("malloc_in_use") is not None:
            result["malloc"] = stats["malloc_in_use"]
    return result


def join_earlier(results, tools, paths):
    """Adds to `results` the rows of tools an earlier run measured and this
    one did not; returns every tool now in the tables, in TOOLS' order."""
    tools = list(tools)
    for path in paths:
        try:
            earlier = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"pyperformance_bench: cannot read {path}: {exc}") from None
        for row, per_tool in earlier.items():
            for tool, runs in per_tool.items():
                if tool in TOOLS and tool not in tools:
                    results.setdefault(row, {}).setdefault(tool, runs)
        tools += {t for per_tool in earlier.values() for t in per_tool if t in TOOLS} - set(tools)
    return sorted(tools, key=TOOLS.index)


def geomean(values):
    values = [v for v in values if v and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def fmt_time(seconds):
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def summarize(results, tools):
    """{row: {tool: dict(time, rss, tracking) or dict(error)}} over all rounds."""
    table = {}
    for row, per_tool in results.items():
        table[row] = {}
        for tool in tools:
            runs = per_tool.get(tool, [])
            good = [r for r in runs if "values" in r and r["values"]]
            if not good:
                errors = [r["error"] for r in runs if "error" in r]
                reason = errors[0] if errors else "not run"
                table[row][tool] = {"error": reason if len(reason) <= 80 else reason[:77] + "..."}
                continue
            tracking = [r["tracking"] for r in good if "tracking" in r]
            in_use = [r["malloc"] for r in good if "malloc" in r]
            table[row][tool] = {
                "time": min(v for r in good for v in r["values"]),
                "rss": min(r["rss"] for r in good),
                "tracking": max(tracking) if tracking else None,
                "malloc": min(in_use) if in_use else None,
                "runs": len(good),
            }
            if len(good) < len(runs):
                table[row][tool]["failed"] = len(runs) - len(good)
    return table


def markdown(table, tools, args, missing):
    lines = ["## Time (minimum pyperf value) as a multiple of plain", ""]
    others = [t for t in tools if t != "plain"]
    lines.append("| benchmark | plain | " + " | ".join(others) + " |")
    lines.append("|---" * (len(others) + 2) + "|")
    ratios = {t: [] for t in others}
    rss_ratios = {t: [] for t in others}
    for row, cells in table.items():
        base = cells.get("plain", {})
        cols = [fmt_time(base["time"]) if "time" in base else f"n/a ({base.get('error')})"]
        for tool in others:
            cell = cells[tool]
            if "time" in cell and "time" in base:
                ratio = cell["time"] / base["time"]
                ratios[tool].append(ratio)
                runs = f" ({cell['runs']})" if cell["runs"] < args.rounds else ""
                cols.append(f"{ratio:.2f}x{runs}")
            else:
                cols.append(f"n/a ({cell.get('error', 'no plain')})")
        lines.append(f"| {row} | " + " | ".join(cols) + " |")
    gm = [
        f"**{g:.3f}x** ({len(ratios[t])})" if (g := geomean(ratios[t])) else "n/a" for t in others
    ]
    lines.append("| **geometric mean** (rows) | | " + " | ".join(gm) + " |")
    lines += ["", "## Peak RSS (ru_maxrss) as a multiple of plain", ""]
    lines.append("| benchmark | plain | " + " | ".join(others) + " |")
    lines.append("|---" * (len(others) + 2) + "|")
    for row, cells in table.items():
        base = cells.get("plain", {})
        cols = [fmt_bytes(base["rss"]) if "rss" in base else "n/a"]
        for tool in others:
            cell = cells[tool]
            if "rss" in cell and "rss" in base:
                ratio = cell["rss"] / base["rss"]
                rss_ratios[tool].append(ratio)
                cols.append(f"{ratio:.2f}x")
            else:
                cols.append("n/a")
        lines.append(f"| {row} | " + " | ".join(cols) + " |")
    gm = [f"**{g:.3f}x**" if (g := geomean(rss_ratios[t])) else "n/a" for t in others]
    lines.append("| **geometric mean** | | " + " | ".join(gm) + " |")
    if "heapsite16" in tools and "tracemalloc16" in tools:
        lines += ["", *tracking_lines(table, "plain" in tools)]
    lines += ["", "## Machine", "", *machine_lines(args)]
    if missing:
        lines.append(f"- not in this pyperformance: {', '.join(missing)}")
    return "\n".join(lines) + "\n"


def tracking_lines(table, have_plain):
    """The trackers' own memory at exit, 16 frames, in two measures each.

    As reported: heapsite's tracking_bytes (what its allocator counts) and
    tracemalloc.get_tracemalloc_memory() (its tables' buckets and entries,
    not the tracebacks and traces they point to).  Over plain: malloc's
    bytes in use at exit less plain's on the same row (malloc_in_use.py),
    the one measure applied to both from outside.
    """
    lines = ["## Tracking memory at exit, 16 frames", ""]
    lines.append(
        "| benchmark | heapsite16 counted | heapsite16 over plain | tracemalloc16 reported"
        " | tracemalloc16 over plain | heapsite counted / tracemalloc over plain"
        " | heapsite counted / tracemalloc reported |"
    )
    lines.append("|---" * 7 + "|")
    worse_real = worse_reported = 0
    for row, cells in table.items():
        h = cells["heapsite16"].get("tracking")
        t = cells["tracemalloc16"].get("tracking")
        plain = cells.get("plain", {}).get("malloc") if have_plain else None
        h_over = minus(cells["heapsite16"].get("malloc"), plain)
        t_over = minus(cells["tracemalloc16"].get("malloc"), plain)
        worse_real += bool(h and t_over and h > t_over)
        worse_reported += bool(h and t and h > t)
        lines.append(
            f"| {row} | {fmt_bytes(h) if h else 'n/a'} | {fmt_opt(h_over)}"
            f" | {fmt_bytes(t) if t else 'n/a'} | {fmt_opt(t_over)}"
            f" | {ratio_text(h, t_over)} | {ratio_text(h, t)} |"
        )
    lines.append(
        f"\nRows where heapsite16 holds more than tracemalloc16: {worse_real} against"
        f" tracemalloc's memory over plain, {worse_reported} against what it reports"
    )
    return lines


def minus(used, plain):
    return used - plain if used is not None and plain is not None else None


def fmt_opt(n):
    return fmt_bytes(n) if n is not None and n > 0 else "n/a"


def ratio_text(a, b):
    return f"{a / b:.2f}" if a and b and b > 0 else "n/a"


def machine_lines(args):
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    return [
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- python: {platform.python_implementation()} {sys.version.split()[0]} ({sys.executable})",
        f"- machine: {platform.platform()}, {cpu}, nproc {len(os.sched_getaffinity(0))}",
        f"- load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- tools: {', '.join(versions)}",
        (
            f"- runs: {args.rounds} rounds (tools rotate each round), pyperf worker mode,"
            f" {args.values} values after {args.warmups} warmups per process; time = minimum"
            " value over all rounds, RSS = minimum ru_maxrss over rounds; tracking = max;"
            f" a tool stops repeating on a row once its processes there add up to"
            f" {args.tool_budget:.0f} s (a '(N)' after a ratio: N processes)"
        ),
        f"- command: `python {' '.join(sys.argv)}`",
    ]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmarks", default=DEFAULT_BENCHMARKS, help="comma-separated")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="processes per tool and row (0: run nothing, tables from --with-results alone)",
    )
    parser.add_argument("--values", type=int, default=5, help="pyperf values per process")
    parser.add_argument("--warmups", type=int, default=1, help="pyperf warmups per process")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per process")
    parser.add_argument(
        "--tool-budget",
        type=float,
        default=60,
        help="a tool's processes on a row stop repeating once they add up to this many seconds",
    )
    parser.add_argument("--markdown", help="also write the tables here")
    parser.add_argument("--save-results", help="also write every process's figures here (JSON)")
    parser.add_argument(
        "--with-results",
        action="append",
        default=[],
        help="a --save-results file of an earlier run: its tools not run now join the tables"
        " (tracemalloc at 16 frames takes 20 minutes and does not change with heapsite)",
    )
    args = parser.parse_args(argv)
    args.tools = [t for t in args.tools.split(",") if t]
    unknown = [t for t in args.tools if t not in TOOLS]
    if unknown:
        parser.error(f"unknown tools {unknown}; choose from {','.join(TOOLS)}")
    if "plain" not in args.tools and args.rounds:
        args.tools.insert(0, "plain")
    return args


def main(argv=None):
    args = parse_args(argv)
    names = [n for n in args.benchmarks.split(",") if n]
    benchmarks, missing = find_benchmarks(names)
    if args.rounds == 0:  # tables from --with-results files alone
        benchmarks, args.tools = {}, []
    scratch = Path(tempfile.mkdtemp(prefix="pyperformance-bench-"))
    results = {}
    try:
        units = []
        for name, (script, opts) in benchmarks.items():
            try:
                rows = calibrate(name, script, opts, args, scratch)
            except (RuntimeError, OSError, ValueError, KeyError) as exc:
                log(f"{name}: {exc!r}")
                results[name] = {t: [{"error": f"calibration: {exc!r}"}] for t in args.tools}
                continue
            log(f"{name}: " + ", ".join(f"{r} loops={lp}" for r, _t, lp in rows))
            units += [(row, script, opts, task, loops) for row, task, loops in rows]
        for rnd in range(args.rounds):
            for index, (row, script, opts, task, loops) in enumerate(units):
                shift = (rnd + index) % len(args.tools)
                order = args.tools[shift:] + args.tools[:shift]
                per_tool = results.setdefault(row, {})
                for tool in order:
                    spent = sum(r.get("wall", 0) for r in per_tool.get(tool, []))
                    if rnd and (spent >= args.tool_budget or "error" in per_tool[tool][-1]):
                        continue
                    res = run_row(tool, script, opts, task, loops, args, scratch)
                    per_tool.setdefault(tool, []).append(res)
                    if "error" in res:
                        log(f"round {rnd + 1} {row} {tool}: {res['error']}")
                    else:
                        log(
                            f"round {rnd + 1} {row} {tool}: min {fmt_time(min(res['values']))}"
                            f" rss {fmt_bytes(res['rss'])} wall {res['wall']:.1f} s"
                        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.save_results:
        Path(args.save_results).write_text(json.dumps(results))
    tools = join_earlier(results, args.tools, args.with_results)
    text = markdown(summarize(results, tools), tools, args, missing)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text("# pyperformance under memory profilers\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
