"""Prints workload_lines' per-line statistics as JSON under the standard
tracemalloc or heapsite's drop-in (argv[1]: "stdlib" or "heapsite").

The same program, each tracer in its own fresh interpreter."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

if sys.argv[1] == "heapsite":
    import heapsite.tracemalloc as tracemalloc
else:
    import tracemalloc

import gc

import workload_lines

# A full collection empties the interpreter's free lists, so that neither
# run starts with blocks allocated before tracing waiting to be reused.
gc.collect()
tracemalloc.start(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
kept = workload_lines.run()
gc.collect()
snapshot = tracemalloc.take_snapshot()
tracemalloc.stop()
stats = {
    str(stat.traceback[0].lineno): [stat.size, stat.count]
    for stat in snapshot.statistics("lineno")
    if stat.traceback[0].filename == workload_lines.__file__
}
print(json.dumps(stats))
