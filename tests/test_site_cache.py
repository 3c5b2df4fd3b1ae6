"""The hooks' cache of recent stacks: a loop's allocations find their site
there, without reading their frames or asking the interner.

`stats()["site_cache_misses"]` counts the lookups that took the slow way.
A miss is still right (the interner finds the site), so only this count
shows a stack that never gets cached: from CPython 3.13 on, a class's
`__init__` called by the specialised call runs above a clean-up shim frame
that the frame reader leaves out, and a key that counted it was never
cached (every allocation in an `__init__` missed).
"""

import heapsite

ROUNDS = 20_000


class Point:
    def __init__(self, x):
        self.coords = [x, x + 1]
        self.tags = {"x": x}


def make_points(count):
    return [Point(i) for i in range(count)]


def make_lists(count):
    return [[i, i + 1] for i in range(count)]


def misses_while(work, frames):
    heapsite.start(frames)
    try:
        work(100)  # warm: sites made, calls specialised
        before = heapsite.stats()["site_cache_misses"]
        kept = work(ROUNDS)
        after = heapsite.stats()["site_cache_misses"]
        recorded = [
            s
            for s in heapsite.snapshot().statistics("lineno")
            if s.traceback[0].filename == __file__
        ]
    finally:
        heapsite.stop()
    assert len(kept) == ROUNDS
    return after - before, recorded


def test_a_loop_of_plain_allocations_hits_the_cache():
    for frames in (1, 16):
        misses, recorded = misses_while(make_lists, frames)
        assert recorded, "the loop's allocations were traced"
        assert misses < ROUNDS // 100, (frames, misses)


def test_allocations_in_init_hit_the_cache():
    for frames in (1, 16):
        misses, recorded = misses_while(make_points, frames)
        lines = {s.traceback[0].lineno for s in recorded}
        assert len(lines) >= 2, f"both of __init__'s allocations were traced: {lines}"
        assert misses < ROUNDS // 100, (frames, misses)
