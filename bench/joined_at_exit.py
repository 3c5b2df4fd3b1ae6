"""What the joined table ("what, where, who") adds to a program's exit.

    python bench/joined_at_exit.py [--runs 5]

Two heaps, each in a fresh interpreter traced by heapsite (16 frames):
the Julia example's at its exit (examples/julia_set.py, whose lists are
freed by then: the heap is mostly the interpreter's own),
and the heapy chapter's 2,000,000 complex numbers kept alive. For each, the
median time of what a capture cost before the table (heap(): the kinds
walk) and of the table as written now (_joined.compute(): one walk split
by site, the top sites, one path search), and whether the paths were
searched within the budget.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUN = r"""
import json, runpy, sys, time
import heapsite
from heapsite import _joined
heapsite.start(16)
if sys.argv[1] == "julia":
    sys.argv = [sys.argv[2]]
    runpy.run_path(sys.argv[0], run_name="__main__")
else:
    zs = [complex(i, -i) for i in range(1_000_000)]
    cs = [complex(-0.62772, -0.42193) for _ in range(1_000_000)]
start = time.perf_counter()
heapsite.heap()
walked = time.perf_counter() - start
kinds, joined = _joined.compute()
print(json.dumps({"kinds_walk": walked, "joined": joined["seconds"],
                  "objects": sum(k["count"] for k in kinds),
                  "paths": sum("path" in k for k in joined["kinds"]),
                  "note": joined.get("note")}))
"""


def one(heap: str) -> dict:
    julia = os.path.join(ROOT, "examples", "julia_set.py")
    out = subprocess.run(
        [sys.executable, "-c", RUN, heap, julia],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for heap in ("julia", "complex"):
        runs = [one(heap) for _ in range(args.runs)]
        walk = statistics.median(r["kinds_walk"] for r in runs)
        joined = statistics.median(r["joined"] for r in runs)
        last = runs[-1]
        print(
            f"{heap}: {last['objects']} objects; kinds walk {walk * 1000:.0f} ms, "
            f"joined table {joined * 1000:.0f} ms (+{(joined - walk) * 1000:.0f} ms); "
            f"{last['paths']} paths; {last['note'] or 'paths within the budget'}"
        )


if __name__ == "__main__":
    main()
