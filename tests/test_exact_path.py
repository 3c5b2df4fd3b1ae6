"""The MEM and OBJ hooks' exact path (src/engine/exact_path.rs) is one load
that stands for every mode being off; each change of a mode must reach it
before the next allocation. One test per way a mode changes mid-run."""

import gc

import heapsite
from heapsite import _core


class Plain:
    pass


def make_blocks(n):
    return [bytearray(1000) for _ in range(n)]  # the blocks' line


def call_make_blocks(n):
    return make_blocks(n)


BLOCKS_LINE = make_blocks.__code__.co_firstlineno + 1


def depths_holding_blocks(snapshot):
    """The bytes live at the blocks' line, by how many frames its sites
    have (a line can make several sites: the list's growth too)."""
    depths = {}
    for site in snapshot.sites:
        top = site.traceback[0]
        if top.filename == __file__ and top.lineno == BLOCKS_LINE:
            depth = len(site.traceback)
            depths[depth] = depths.get(depth, 0) + site.live_size
    return depths


def test_a_new_depth_while_tracing_applies_to_the_next_allocation():
    heapsite.start(1)
    try:
        shallow = call_make_blocks(100)
        heapsite.start(3)
        deep = call_make_blocks(100)
        depths = depths_holding_blocks(heapsite.snapshot())
    finally:
        heapsite.stop()
    assert depths.get(1, 0) >= 100_000, depths
    assert depths.get(3, 0) >= 100_000, depths
    del shallow, deep


def test_heapsites_own_work_stays_untraced():
    # A snapshot's own objects, made inside heapsite's own work, are left
    # out; the exact path must give way while that work runs.
    heapsite.start(1)
    try:
        kept = heapsite.snapshot()
        later = heapsite.snapshot()
    finally:
        heapsite.stop()
    package = heapsite.__file__.rsplit("/", 1)[0]
    ours = [
        s for s in later.sites if s.traceback[0].filename.startswith(package) and s.live_size > 0
    ]
    assert ours == [], ours
    del kept


def test_blocks_freed_after_setrelheap_count_again_when_reused():
    # setrelheap() leaves out what exists now; a block freed since must be
    # forgotten by the free hook, or an object made later at its address
    # would be left out too.
    heapsite.start(1)
    try:
        old = [Plain() for _ in range(2000)]
        heapsite.setrelheap()
        del old
        gc.collect()
        new = [Plain() for _ in range(2000)]
        rows = {r.name: r.count for r in heapsite.heap().rows}
        heapsite.clearrelheap()
    finally:
        heapsite.stop()
    name = next(n for n in rows if n.endswith("Plain"))
    assert rows[name] == 2000, rows[name]
    del new


def test_stopped_under_a_tool_that_wrapped_it_records_nothing():
    # tracemalloc started after heapsite wraps heapsite's hooks, so stop()
    # leaves them installed, passing through; the exact path must know
    # tracing stopped.
    import tracemalloc

    heapsite.start(1)
    tracemalloc.start()
    try:
        heapsite.stop()
        kept = make_blocks(1000)
        live = heapsite.stats()["live_allocations"]
    finally:
        tracemalloc.stop()
    assert live == 0, live
    del kept


def test_whole_depth_keys_set_while_tracing_apply_to_the_next_allocation():
    # The drop-in's whole-depth keys tell the same line apart by how deep
    # its stack is: two sites here, where one frame alone makes one.
    heapsite.start(1)
    try:
        _core.set_count_total(True)
        shallow = make_blocks(100)
        deep = call_make_blocks(100)
        holding = [
            s
            for s in heapsite.snapshot().sites
            if s.traceback[0].filename == __file__
            and s.traceback[0].lineno == BLOCKS_LINE
            and s.live_size >= 100_000
        ]
    finally:
        _core.set_count_total(False)
        heapsite.stop()
    assert len(holding) == 2, holding
    del shallow, deep
