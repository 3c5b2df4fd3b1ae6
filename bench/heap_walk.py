"""heap() against guppy3's hpy().heap(), on the heap of the Julia example.

    python bench/heap_walk.py [--runs 5]

Each run is a fresh interpreter that builds two lists of 1,000,000 complex
numbers each (as "High Performance Python"'s heapy chapter does) and times
one tool's heap() and the printing of its table. Tools alternate run by run;
the medians are printed, with heapsite's time as a fraction of guppy3's.
"""

import argparse
import json
import statistics
import subprocess
import sys

RUN = r"""
import json, sys, time
zs = [complex(i, -i) for i in range(1_000_000)]
cs = [complex(-0.62772, -0.42193) for _ in range(1_000_000)]
if sys.argv[1] == "heapsite":
    import heapsite
    walk = heapsite.heap
else:
    import guppy
    walk = guppy.hpy().heap
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
    args = parser.parse_args()
    times = {"heapsite": [], "guppy3": []}
    for round_ in range(args.runs):
        order = ["heapsite", "guppy3"] if round_ % 2 == 0 else ["guppy3", "heapsite"]
        for tool in order:
            out = subprocess.run(
                [sys.executable, "-c", RUN, tool], capture_output=True, text=True, check=True
            )
            result = json.loads(out.stdout)
            times[tool].append(result)
            print(f"[{round_ + 1}/{args.runs}] {tool}: {result}", file=sys.stderr)
    print(f"Python {sys.version.split()[0]}, medians of {args.runs} alternating runs (seconds)\n")
    print("| tool | heap() | print | total |")
    print("|---|---:|---:|---:|")
    totals = {}
    for tool, runs in times.items():
        heap = statistics.median(r["heap"] for r in runs)
        shown = statistics.median(r["print"] for r in runs)
        totals[tool] = statistics.median(r["heap"] + r["print"] for r in runs)
        print(f"| {tool} | {heap:.3f} | {shown:.3f} | {totals[tool]:.3f} |")
    print(f"\nheapsite / guppy3 (heap() + print): {totals['heapsite'] / totals['guppy3']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
