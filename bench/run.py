"""Overhead benchmark: heapsite against plain CPython and its peers.

    python bench/run.py [--runs 5] [--workloads churn,julia,retained,imports]
                        [--tools plain,heapsite1,...] [--markdown bench/RESULTS.md]

For each workload every tool runs as its own subprocess, round-robin (one
run of each tool per round, the order rotated from round to round), and the
median wall time per tool is compared with plain CPython and tracemalloc.
All tools use the interpreter that runs this script (sys.executable).  A
tool that is missing or fails gets an "n/a (reason)" row; the rest go on.

For the retained workload, extra untimed runs ask heapsite and tracemalloc
for their live allocation count and their own memory, and the table shows
tracking bytes per live allocation.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import harness  # bench/harness.py, beside this script (sys.path[0])

BENCH = Path(__file__).resolve().parent
HARNESS = BENCH / "harness.py"
WORKLOADS = {
    "churn": BENCH / "workloads" / "churn.py",
    # The README's example itself: one Julia set for users and for the benchmark.
    "julia": BENCH.parent / "examples" / "julia_set.py",
    "retained": BENCH / "workloads" / "retained.py",
    "imports": BENCH / "workloads" / "imports.py",
}
# The harness's in-process modes (plain, heapsite1, ..., dropin25).
HARNESS_TOOLS = harness.MODES
TOOLS = (
    *HARNESS_TOOLS,
    "heapsite-run",
    "heapsite-run-native",
    "heapsite-run-sampled",
    "memray",
    "scalene",
)
# tracemalloc at 25 frames takes minutes per Julia run: the drop-in's
# comparison is asked for explicitly.
DEFAULT_TOOLS = tuple(t for t in TOOLS if t not in ("tracemalloc25", "dropin25"))
STATS_WORKLOAD = "retained"
# plain for malloc's bytes in use without a tracer (the "over plain" column).
STATS_TOOLS = ("plain", "heapsite1", "heapsite16", "sampled16", "tracemalloc1", "tracemalloc16")
PACKAGES = ("heapsite", "memray", "scalene")
EXIT_TRACER_UNAVAILABLE = harness.EXIT_TRACER_UNAVAILABLE


class ToolRuns:
    """Timed runs of one tool on one workload, or why there are none."""

    def __init__(self, tool):
        self.tool = tool
        self.times = []
        self.error = None

    @property
    def ok(self):
        return self.error is None and bool(self.times)

    @property
    def median(self):
        return statistics.median(self.times)


def log(message):
    print(message, file=sys.stderr, flush=True)


def command(tool, script, scratch):
    """The argv that runs `script` under `tool`."""
    py = sys.executable
    if tool in HARNESS_TOOLS:
        return [py, str(HARNESS), tool, str(script)]
    if tool.startswith("heapsite-run"):
        # The whole front door: LD_PRELOAD, capture and kinds at exit.
        out = scratch / "heapsite.capture"
        extra = {
            "heapsite-run": [],
            "heapsite-run-native": ["--native"],
            "heapsite-run-sampled": ["--sample", "512KiB"],
        }[tool]
        return [py, "-m", "heapsite", "run", "-q", *extra, "-o", str(out), str(script)]
    if tool == "memray":
        out = scratch / "memray.bin"
        return [
            *(py, "-m", "memray", "run", "--trace-python-allocators", "-q"),
            *("-o", str(out), "--force", str(script)),
        ]
    if tool == "scalene":
        # `scalene run` profiles and saves JSON; it never opens a browser
        # (only `scalene view` does).  Memory profiling is on by default in
        # Scalene 2; --memory says so explicitly.
        out = scratch / "scalene.json"
        return [py, "-m", "scalene", "run", "--memory", "-o", str(out), str(script)]
    raise ValueError(f"unknown tool {tool!r}")


def tool_env():
    env = dict(os.environ)
    env.pop("HEAPSITE_BENCH_STATS", None)
    env.pop("PYTHONTRACEMALLOC", None)
    env["BROWSER"] = "true"  # belt and braces: no profiler may open a browser
    return env


def last_line(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1].removeprefix("harness: ").replace("|", "/")  # table-safe
    return line if len(line) <= 120 else line[:117] + "..."


def probe(tool):
    """Why `tool` cannot run at all here, or None if it can be tried."""
    module = {"memray": "memray", "scalene": "scalene"}.get(tool)
    if tool.startswith("heapsite"):
        module = "heapsite"
    if module is None:
        return None
    proc = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        env=tool_env(),
        check=False,
    )
    if proc.returncode == 0:
        return None
    reason = last_line(proc.stderr) or f"import {module} exited {proc.returncode}"
    if module in ("memray", "scalene"):
        reason += "; pip install -r bench/requirements.txt"
    return reason


def run_once(argv, env, timeout, scratch):
    """Run argv once; return (wall seconds, CompletedProcess or None on timeout)."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            argv,
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, None
    return time.perf_counter() - start, proc


def checksum_lines(stdout):
    return [line for line in stdout.splitlines() if line.startswith("checksum:")]


def clear(scratch):
    for path in scratch.iterdir():
        if path.is_file():
            path.unlink()


def bench_workload(name, tools, args, probes, scratch):
    script = WORKLOADS[name]
    results = {tool: ToolRuns(tool) for tool in tools}
    for tool in tools:
        results[tool].error = probes[tool]
    first_output = {}  # tool -> checksum lines of its first run
    env = tool_env()
    for rnd in range(args.runs):
        shift = rnd % len(tools)
        order = tools[shift:] + tools[:shift]
        for tool in order:
            res = results[tool]
            if res.error is not None:
                continue
            if res.times and sum(res.times) >= args.tool_budget:
                continue  # slow tool: enough seconds spent on it already
            argv = command(tool, script, scratch)
            seconds, proc = run_once(argv, env, args.timeout, scratch)
            clear(scratch)
            if proc is None:
                res.error = f"timed out after {args.timeout:.0f} s"
            elif proc.returncode != 0:
                why = last_line(proc.stderr) or "no message"
                if proc.returncode == EXIT_TRACER_UNAVAILABLE and tool in HARNESS_TOOLS:
                    res.error = why
                else:
                    res.error = f"exit {proc.returncode}: {why}"
            else:
                first_output.setdefault(tool, checksum_lines(proc.stdout))
            if res.error is None:
                res.times.append(seconds)
                log(f"[{name} round {rnd + 1}/{args.runs}] {tool}: {seconds:.2f} s")
            else:
                log(f"[{name} round {rnd + 1}/{args.runs}] {tool}: n/a ({res.error})")
    # Every tool must have run the same program to the same result.
    reference = first_output.get("plain")
    for tool, lines in first_output.items():
        if reference is not None and lines != reference and results[tool].ok:
            results[tool].error = f"output differs from plain: {lines[:1]}"
    return results


def collect_stats(tools, results, args, scratch):
    """Untimed runs of the retained workload that write the tracers' stats."""
    stats = {}
    for tool in tools:
        if tool not in STATS_TOOLS:
            continue
        res = results.get(tool)
        if res is None or not res.ok:
            stats[tool] = {"error": res.error if res else "not run"}
            continue
        out = scratch / f"stats-{tool}.json"
        env = tool_env()
        env["HEAPSITE_BENCH_STATS"] = str(out)
        argv = command(tool, WORKLOADS[STATS_WORKLOAD], scratch)
        _, proc = run_once(argv, env, args.timeout, scratch)
        if proc is None or proc.returncode != 0:
            why = "timed out" if proc is None else last_line(proc.stderr)
            stats[tool] = {"error": f"stats run failed: {why}"}
        elif not out.exists():
            stats[tool] = {"error": "no stats written (tracer not tracing?)"}
        else:
            stats[tool] = json.loads(out.read_text(encoding="utf-8"))
        clear(scratch)
        log(f"[{STATS_WORKLOAD} stats] {tool}: {stats[tool]}")
    return stats


def ratio(value, base):
    return f"{value / base:.2f}x" if base else ""


def workload_table(results):
    def median_of(tool):
        res = results.get(tool)
        return res.median if res is not None and res.ok else None

    plain, tm1, tm16 = (
        median_of("plain"),
        median_of("tracemalloc1"),
        median_of("tracemalloc16"),
    )
    rows = [
        "| tool | runs | median s | min-max s | x plain | / tracemalloc1 | / tracemalloc16 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for tool, res in results.items():
        if not res.ok:
            rows.append(f"| {tool} | 0 | n/a ({res.error or 'no runs'}) | | | | |")
            continue
        med = res.median
        spread = f"{min(res.times):.2f}-{max(res.times):.2f}"
        rows.append(
            f"| {tool} | {len(res.times)} | {med:.2f} | {spread} "
            f"| {ratio(med, plain)} | {ratio(med, tm1)} | {ratio(med, tm16)} |"
        )
    return rows


def stats_table(stats):
    """Each tracer's own memory as it reports it, and as glibc's bytes in
    use over plain's (the one measure for both: tracemalloc's own figure
    leaves out its tracebacks and traces, see bench/malloc_in_use.py)."""
    rows = [
        "| tool | live allocations | tracking bytes (reported) | per live allocation"
        " | malloc over plain | per live allocation |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    plain = stats.get("plain", {}).get("malloc_in_use")
    for tool, st in stats.items():
        if tool == "plain":
            continue
        live, tracking = st.get("live_allocations"), st.get("tracking_bytes")
        if "error" in st or not live or tracking is None:
            why = st.get("error") or f"missing keys; got {sorted(st)}"
            rows.append(f"| {tool} | n/a ({why}) | | | | |")
            continue
        used = st.get("malloc_in_use")
        over = used - plain if used is not None and plain is not None else None
        over_cells = f"{over:,} | {over / live:.1f}" if over is not None else "n/a | "
        rows.append(f"| {tool} | {live:,} | {tracking:,} | {tracking / live:.1f} | {over_cells} |")
    return rows


def machine_lines(args):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        nproc = os.cpu_count()
    return [
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- python: {platform.python_implementation()} {sys.version.split()[0]} ({sys.executable})",
        f"- machine: {platform.platform()}, {cpu}, nproc {nproc}",
        f"- tools: {', '.join(versions)}",
        (
            f"- runs: {args.runs} rounds, round-robin; a tool stops repeating once"
            f" its runs on a workload add up to {args.tool_budget:.0f} s (runs column)"
        ),
        f"- command: `python {' '.join(sys.argv)}`",
    ]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs",
        type=int,
        default=5,
        help="rounds per workload (default 5)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated, from {','.join(WORKLOADS)} (default all)",
    )
    parser.add_argument(
        "--tools",
        default=",".join(DEFAULT_TOOLS),
        help=f"comma-separated, from {','.join(TOOLS)} (default {','.join(DEFAULT_TOOLS)}; "
        "the drop-in's comparison is --tools plain,dropin25,tracemalloc25)",
    )
    parser.add_argument(
        "--markdown",
        metavar="PATH",
        help="also write the results here",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds per run (default 900)",
    )
    parser.add_argument(
        "--tool-budget",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="stop repeating a tool on a workload once its runs add up to this (default 60)",
    )
    args = parser.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.tools = [t for t in args.tools.split(",") if t]
    for value, known, what in (
        (args.workloads, WORKLOADS, "workload"),
        (args.tools, TOOLS, "tool"),
    ):
        unknown = [v for v in value if v not in known]
        if unknown:
            parser.error(f"unknown {what}(s): {', '.join(unknown)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    probes = {tool: probe(tool) for tool in args.tools}
    for tool, why in probes.items():
        if why:
            log(f"{tool}: n/a ({why})")
    out = ["# heapsite overhead benchmark", "", *machine_lines(args)]
    with tempfile.TemporaryDirectory(prefix="heapsite-bench-") as tmp:
        scratch = Path(tmp)
        for name in args.workloads:
            results = bench_workload(name, args.tools, args, probes, scratch)
            out += ["", f"## {name}", "", *workload_table(results)]
            if name == STATS_WORKLOAD:
                stats = collect_stats(args.tools, results, args, scratch)
                if stats:
                    out += [
                        "",
                        f"Tracking memory on {name} (live objects held at the end):",
                        "",
                    ]
                    out += stats_table(stats)
    out += ["", f"Total benchmark time: {time.perf_counter() - started:.0f} s"]
    print("\n".join(out), flush=True)
    if args.markdown:
        Path(args.markdown).write_text("\n".join(out) + "\n", encoding="utf-8")
        log(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
