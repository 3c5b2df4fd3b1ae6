"""heap() and .byrcs against guppy3's, on the heap of the Julia example.

    python bench/heap_walk.py [--runs 5] [--byrcs]

Each run is a fresh interpreter that builds two lists of 1,000,000 complex
numbers each (as "High Performance Python"'s heapy chapter does) and times
one tool's heap() and the printing of its table. With --byrcs the lists hold
2,000,000 each (4,000,000 objects) and the time is that of `.byrcs` (the
partition by the kinds of the referrers) and its printing. Tools alternate
run by run; the medians are printed, with heapsite's time as a fraction of
guppy3's.
"""

import argparse
import json
import statistics
import subprocess
import sys

RUN = r"""
import json, sys, time
n = 2_000_000 if sys.argv[2] == "byrcs" else 1_000_000
zs = [complex(i, -i) for i in range(n)]
cs = [complex(-0.62772, -0.42193) for _ in range(n)]
if sys.argv[1] == "heapsite":
    import heapsite
    walk = heapsite.heap
else:
    import guppy
    walk = guppy.hpy().heap
if sys.argv[2] == "byrcs":
    h0 = walk()
    walk = lambda: h0.byrcs  # noqa: E731
start = time.perf_counter()
h = walk()
walked = time.perf_counter()
text = str(h)
printed = time.perf_counter()
first = text.splitlines()[0]
print(json.dumps({"heap": walked - start, "print": printed - walked, "first": first}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--byrcs", action="store_true", help="time .byrcs on 4,000,000 objects")
    args = parser.parse_args()
    what = "byrcs" if args.byrcs else "heap"
    times = {"heapsite": [], "guppy3": []}
    for round_ in range(args.runs):
        order = ["heapsite", "guppy3"] if round_ % 2 == 0 else ["guppy3", "heapsite"]
        for tool in order:
            out = subprocess.run(
                [sys.executable, "-c", RUN, tool, what], capture_output=True, text=True, check=True
            )
            result = json.loads(out.stdout)
            times[tool].append(result)
            print(f"[{round_ + 1}/{args.runs}] {tool}: {result}", file=sys.stderr)
    print(f"Python {sys.version.split()[0]}, medians of {args.runs} alternating runs (seconds)\n")
    print(f"| tool | {'.byrcs' if args.byrcs else 'heap()'} | print | total |")
    print("|---|---:|---:|---:|")
    totals = {}
    for tool, runs in times.items():
        heap = statistics.median(r["heap"] for r in runs)
        shown = statistics.median(r["print"] for r in runs)
        totals[tool] = statistics.median(r["heap"] + r["print"] for r in runs)
        print(f"| {tool} | {heap:.3f} | {shown:.3f} | {totals[tool]:.3f} |")
    ratio = totals["heapsite"] / totals["guppy3"]
    print(f"\nheapsite / guppy3 ({what} + print): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
