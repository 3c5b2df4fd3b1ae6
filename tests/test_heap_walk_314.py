"""The heap walk must not free what it has found (a crash seen on 3.14).

Since 3.14 every dict is GC-tracked, so gc.get_objects() lists the
interned-strings dict, and the walk reaches each interned string through it.
That dict's references are not counted. An interned name that only the type
attribute cache still holds (a looked-up attribute name that was dropped) is
freed when a lookup evicts its cache entry. Before the fix, the walk looked
`__sizeof__` up through that cache for each new type while it held only
borrowed pointers. It then increfed and sized freed strings: a segfault, or a
corrupt allocator free list that crashed later. The crash depends on layout,
so each scenario runs several times in its own process, on every version.
"""

import os
import subprocess
import sys
import textwrap

from test_cli import PROGRAM

# Fills the type cache with names nothing else owns, then walks the heap
# while types not yet sized remain to be found.
EVICTION_PROGRAM = textwrap.dedent(
    """
    import gc
    import sys

    import heapsite


    class Probe:
        pass


    def orphan_names(count):
        # Looking a name up leaves it in the type cache, found or not; the
        # name is then dropped, so the cache is its only counted owner.
        probe = Probe()
        for i in range(count):
            name = sys.intern("_hs_orphan_%d_%d" % (id(probe), i))
            getattr(probe, name, None)
            getattr(Probe, name, None)


    orphan_names(8192)
    # Made after the names and collected, so that the walk finds these
    # instances (and sizes each new type) after the interned-strings dict:
    # gc.get_objects() lists collected objects oldest first.
    keep = [type("Fresh%d" % i, (), {})() for i in range(2000)]
    gc.collect()
    for _ in range(3):
        orphan_names(8192)
        heapsite.heap()
    print("ok")
    """
)


def _statuses(command, runs, env=None, stdin=None):
    """(status, stderr tail) of each of `runs` runs of `command`."""
    results = []
    for _ in range(runs):
        result = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=60,
        )
        results.append((result.returncode, result.stdout, result.stderr[-300:]))
    return results


def test_walk_survives_the_type_cache_evicting_names_it_found(tmp_path):
    script = tmp_path / "evict.py"
    script.write_text(EVICTION_PROGRAM)
    command = [sys.executable, str(script)]
    # With the system allocator a freed string's type word is overwritten at
    # once (glibc's tcache key), so a run that frees one crashes every time.
    runs = _statuses(command, 3, env={"PYTHONMALLOC": "malloc"})
    runs += _statuses(command, 5)
    assert [(status, out) for status, out, _ in runs] == [(0, "ok\n")] * len(runs), runs


def test_in_process_run_exits_with_the_programs_status_every_time(tmp_path):
    # The report: `heapsite run` in-process, then the heap walk for the kinds
    # at exit, crashed about one run in four on 3.14.
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    out = tmp_path / "prog.capture"
    command = [sys.executable, "-m", "heapsite", "run", "-o", str(out), str(script), "5"]
    runs = _statuses(command, 12, env={"HEAPSITE_IN_PROCESS": "1"}, stdin="x")
    assert [status for status, _, _ in runs] == [5] * len(runs), runs
