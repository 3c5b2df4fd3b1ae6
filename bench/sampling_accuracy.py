"""How close sampled tracing's estimates are to the exact figures.

    python bench/sampling_accuracy.py [--rate 512KiB] [--runs 5] [--markdown FILE]

Each workload (bench/workloads/churn.py and the README's Julia set) runs once
under exact tracing and `--runs` times sampled at `--rate`, each run in its
own process, with heapsite at 1 frame. For every line holding at least 1%
of the traced bytes live at the peak (exact run), the table gives the exact
bytes at the peak, the median of the sampled estimates and the error; and
the same for what each line allocated in total.

What to expect: a sampled estimate of B bytes made of blocks much smaller
than the rate has a relative standard deviation of about sqrt(rate / B),
since each sample stands for `rate` bytes. At 512 KiB that is 10% for a line
of 50 MB, 32% for 5 MB; the column `sd` gives it per row, so a miss can be
told from a bias.

Internally, ``sampling_accuracy.py --child RATE OUT workload.py args...``
runs the workload under heapsite and writes its per-line figures to OUT.
"""

import json
import os
import sys


def child(argv):
    rate, out, script = int(argv[0]), argv[1], os.path.abspath(argv[2])
    import runpy

    import heapsite

    heapsite.start(1, sample_every=rate)
    sys.argv = [script, *argv[3:]]
    runpy.run_path(script, run_name="__main__")
    snap = heapsite.snapshot()
    lines = {}
    for view, figures in (("peak", snap.peak()), ("total", snap.total())):
        for stat in figures.statistics("lineno"):
            frame = stat.traceback[0]
            key = f"{os.path.basename(frame.filename)}:{frame.lineno}"
            lines.setdefault(key, {})[view] = stat.size
    with open(out, "w", encoding="utf-8") as fh:
        json.dump({"lines": lines, "peak": heapsite.traced_memory()[1]}, fh)


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    child(sys.argv[2:])
    sys.exit(0)

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
WORKLOADS = {
    "churn": [str(HERE / "workloads" / "churn.py")],
    "julia": [str(HERE.parent / "examples" / "julia_set.py")],
}


def run_once(workload, rate, scratch, tag):
    out = scratch / f"{workload}-{tag}.json"
    cmd = [sys.executable, __file__, "--child", str(rate), str(out), *WORKLOADS[workload]]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{workload} ({tag}) failed: {done.stderr.strip()[-500:]}")
    return json.loads(out.read_text())


def rows_for(workload, rate, runs, scratch):
    print(f"{workload}: exact run", file=sys.stderr)
    exact = run_once(workload, 0, scratch, "exact")
    sampled = []
    for i in range(runs):
        print(f"{workload}: sampled run {i + 1}/{runs}", file=sys.stderr)
        sampled.append(run_once(workload, rate, scratch, f"sampled{i}"))
    rows = []
    for view in ("peak", "total"):
        whole = sum(line.get(view, 0) for line in exact["lines"].values())
        for key, figures in sorted(exact["lines"].items(), key=lambda kv: -kv[1].get(view, 0)):
            bytes_exact = figures.get(view, 0)
            if bytes_exact < 0.01 * whole or bytes_exact <= 0:
                continue
            estimates = [run["lines"].get(key, {}).get(view, 0) for run in sampled]
            median = statistics.median(estimates)
            rows.append(
                {
                    "workload": workload,
                    "view": view,
                    "line": key,
                    "share": bytes_exact / whole,
                    "exact": bytes_exact,
                    "median": median,
                    "error": (median - bytes_exact) / bytes_exact,
                    "sd": math.sqrt(rate / bytes_exact),
                }
            )
    return rows


def markdown(rows, rate, runs):
    out = [
        f"Sampled at {rate} bytes, median of {runs} runs against one exact run "
        f"(CPython {sys.version.split()[0]}); lines holding at least 1% of the view's bytes.",
        "",
        "| workload | view | line | share | exact MB | sampled MB (median) | error | expected sd |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['workload']} | {r['view']} | {r['line']} | {r['share']:.1%} "
            f"| {r['exact'] / 1e6:.2f} | {r['median'] / 1e6:.2f} | {r['error']:+.1%} "
            f"| {r['sd']:.1%} |"
        )
    within = sum(abs(r["error"]) <= 0.10 for r in rows)
    out += ["", f"{within} of {len(rows)} rows within 10%."]
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", default="512KiB", help="sampling rate (default 512KiB)")
    parser.add_argument("--runs", type=int, default=5, help="sampled runs (default 5)")
    parser.add_argument("--workloads", default="churn,julia", help="comma-separated")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()
    from heapsite._format import sample_rate

    try:
        rate = sample_rate(args.rate)
    except ValueError as e:
        parser.error(str(e))
    if rate == 0 or args.runs < 1:
        parser.error("--rate must be a size above 0 and --runs at least 1")
    names = args.workloads.split(",")
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {','.join(WORKLOADS)}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for name in names for row in rows_for(name, rate, args.runs, Path(tmp))]
    table = markdown(rows, rate, args.runs)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
