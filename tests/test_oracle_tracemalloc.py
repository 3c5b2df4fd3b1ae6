"""tracemalloc as the oracle: both trace the same run; per-line figures agree.

One difference is by design: CPython reuses some objects from free lists
(lists, tuples, floats...) without calling the allocator. While tracemalloc
itself traces, _Py_NewReference tells it of each reuse and it moves the block
to the reusing line; heapsite, seeing no allocation, keeps the line that
allocated the block. That moves a few dozen bytes per line, hence the
tolerance: 1% of the line's figure, and never less than SLACK_BYTES/SLACK_COUNT.
"""

import gc
import sys
import tracemalloc

import heapsite
import pytest
import workload_lines

SLACK_BYTES = 512
SLACK_COUNT = 8


def close(mine, theirs, slack):
    return abs(mine - theirs) <= max(0.01 * theirs, slack)


def per_line(stats, filename):
    return {
        s.traceback[0].lineno: (s.size, s.count)
        for s in stats
        if s.traceback[0].filename == filename
    }


def both_snapshots(frames):
    # tracemalloc first, so heapsite wraps it: tracemalloc's own bookkeeping
    # goes to the allocator it saved, past heapsite, and neither sees the other.
    tracemalloc.start(frames)
    heapsite.start(frames)
    try:
        kept = workload_lines.run()
        # Taking a snapshot allocates, which may trigger a collection that frees
        # cyclic garbage between the two snapshots: collect first, then hold.
        gc.collect()
        gc.disable()
        ours = heapsite.snapshot()
        theirs = tracemalloc.take_snapshot()
    finally:
        gc.enable()
        heapsite.stop()
        tracemalloc.stop()
    del kept
    return ours, theirs


@pytest.mark.parametrize("frames", [1, 16])
def test_bytes_and_counts_per_line_agree_with_tracemalloc(frames):
    gc.collect()
    ours, theirs = both_snapshots(frames)
    filename = workload_lines.__file__
    mine = per_line(ours.statistics("lineno"), filename)
    oracle = per_line(theirs.statistics("lineno"), filename)
    assert sum(size for size, _ in oracle.values()) > 5_000_000, "the workload ran"
    for line in set(mine) | set(oracle):
        my_size, my_count = mine.get(line, (0, 0))
        size, count = oracle.get(line, (0, 0))
        assert close(my_size, size, SLACK_BYTES), (line, mine.get(line), oracle.get(line))
        assert close(my_count, count, SLACK_COUNT), (line, mine.get(line), oracle.get(line))
    big = {line for line, (size, _) in oracle.items() if size > 100_000}
    assert len(big) >= 7, "every allocating function shows up"


def test_tracebacks_agree_with_tracemalloc():
    ours, theirs = both_snapshots(16)
    filename = workload_lines.__file__

    def by_traceback(stats, to_key):
        keyed = {to_key(s.traceback): s.size for s in stats}
        return {k: v for k, v in keyed.items() if k[0][0] == filename and v > 100_000}

    mine = by_traceback(
        ours.statistics("traceback"), lambda tb: tuple((f.filename, f.lineno) for f in tb)
    )
    # tracemalloc orders a traceback oldest first since 3.7.
    oracle = by_traceback(
        theirs.statistics("traceback"),
        lambda tb: tuple((f.filename, f.lineno) for f in reversed(tb)),
    )
    assert len(oracle) >= 6
    assert set(mine) == set(oracle)
    for key, size in oracle.items():
        assert close(mine[key], size, SLACK_BYTES)


def test_traced_memory_moves_like_tracemalloc():
    tracemalloc.start(1)
    heapsite.start(1)
    try:
        ours_before, theirs_before = heapsite.traced_memory()[0], tracemalloc.get_traced_memory()[0]
        kept = workload_lines.run(5000)
        ours_after, theirs_after = heapsite.traced_memory()[0], tracemalloc.get_traced_memory()[0]
        del kept
    finally:
        heapsite.stop()
        tracemalloc.stop()
    ours, theirs = ours_after - ours_before, theirs_after - theirs_before
    assert theirs > 1_000_000
    assert abs(ours - theirs) <= 0.01 * theirs


# A finaliser run by a collection that a function's prologue set off (3.11:
# MAKE_CELL allocates a cell before the function's first line): the
# function's frame is incomplete and left out, so two callers of it are told
# apart only by the frame below. The hooks' cache key does not check callers
# for completeness; a site whose frames left one out must not be cached under
# it, or the second caller's finaliser allocations would go to the first's.
_FINALISED: list = []


class _Finalised:
    def __del__(self):
        _FINALISED.append(bytearray(1000 + len(_FINALISED)))


def _cyclic_garbage():
    made = _Finalised()
    made.cycle = made


def _with_a_cell():
    kept = 1

    def inner():
        return kept

    return inner


def _first_caller():
    _cyclic_garbage()
    return _with_a_cell()


def _second_caller():
    _cyclic_garbage()
    return _with_a_cell()


def test_finalisers_run_from_a_prologue_keep_their_callers_as_tracemalloc_does():
    import heapsite.tracemalloc as hs_tracemalloc

    _FINALISED.clear()
    gc.collect()
    threshold = gc.get_threshold()
    tracemalloc.start(2)
    hs_tracemalloc.start(2)
    try:
        gc.set_threshold(1)
        for _ in range(4):
            _first_caller()
            _second_caller()
        gc.set_threshold(*threshold)
        made = list(_FINALISED)
        mine = [[f.lineno for f in hs_tracemalloc.get_object_traceback(b)] for b in made]
        oracle = [[f.lineno for f in tracemalloc.get_object_traceback(b)] for b in made]
    finally:
        gc.set_threshold(*threshold)
        hs_tracemalloc.stop()
        tracemalloc.stop()
        _FINALISED.clear()
    assert len(made) >= 4, "the finalisers ran"
    assert mine == oracle
    if sys.version_info < (3, 12):
        # Collections run where they are set off: the callers are told apart.
        assert len({tuple(lines) for lines in oracle}) >= 3, oracle


REUSE = """
import sys
if sys.argv[1] == "tracemalloc":
    import tracemalloc
    tracemalloc.start(1)
else:
    import heapsite.tracemalloc
    heapsite.tracemalloc.start(1)
# The free lists hold objects made before tracing, which neither tracer
# holds, as many as each tool's import left there: taken out, kept alive.
drained = [(i * 1000003, i / 3) for i in range(3000)]
products = []
for i in range(5000):
    products.append(i * 1000)  # PRODUCTS: ints, from the int free list (3.14+)
k = 0
counted = []
while k < 5000:
    k += 1
    counted.append(k * 1000)  # COUNTED: the previous k's block, reused
halves = []
for i in range(5000):
    halves.append(i / 2)  # HALVES: floats, from the float free list
if sys.argv[1] == "tracemalloc":
    stats = tracemalloc.take_snapshot().statistics("lineno")
else:
    stats = heapsite.tracemalloc.take_snapshot().statistics("lineno")
for s in stats:
    if s.traceback[0].filename == __file__:
        print(s.traceback[0].lineno, s.size, s.count)
"""


@pytest.mark.skipif(sys.version_info < (3, 13), reason="no reference tracer before 3.13")
def test_the_drop_in_counts_objects_reused_from_free_lists_at_the_reusing_line(tmp_path):
    """From 3.13 the drop-in follows objects the interpreter hands out from
    free lists, as tracemalloc does; on 3.14 ints have a free list too, and
    each product of a loop would otherwise count at the line that made the
    previous int (the loop's `for`, or `k += 1`: what heapsite.start(),
    which does not follow, shows; README, differences)."""
    import subprocess

    script = tmp_path / "reuse.py"
    script.write_text(REUSE)

    def lines(tracer):
        done = subprocess.run(
            [sys.executable, str(script), tracer], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return {
            int(n): (int(size), int(count))
            for n, size, count in map(str.split, done.stdout.splitlines())
        }

    mine, theirs = lines("heapsite"), lines("tracemalloc")
    for marker in ("PRODUCTS", "COUNTED", "HALVES"):
        line = next(n for n, text in enumerate(REUSE.splitlines(), 1) if f"# {marker}" in text)
        assert theirs[line][1] >= 4900, theirs  # the oracle counted the loop's objects
        # Within the file's slack: a few blocks of the free lists may still
        # be ones made before tracing (3.15: 3 of 5,000). Not following
        # reuse puts about 250 of them on another line.
        size, count = mine.get(line, (0, 0))
        assert close(size, theirs[line][0], SLACK_BYTES), (marker, mine, theirs)
        assert close(count, theirs[line][1], SLACK_COUNT), (marker, mine, theirs)
