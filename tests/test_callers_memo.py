"""The memo of callers (src/engine/frames.c): at more than one frame, an
allocation checks its running frame's callers against what the memo kept of
them, instead of walking and hashing them again.

Two things are held here. The memo serves a loop: its callers are walked
once, not at every allocation (`stats()["caller_walks"]`). And it never
serves a stack whose callers changed under a running frame at the same
address: every allocation's traceback is the one tracemalloc gives it, on
programs made to reuse frames under new callers (a function called from two
lines, a change two levels down, a generator resumed from two places,
recursion to varying depths, two threads).
"""

import sys
import threading
import tracemalloc

import heapsite
import pytest

ROUNDS = 20_000
FRAMES = 16
KEPT: list[object] = []

needs_memo = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="no memo before 3.11: frames are objects, walked each time"
)


def leaf():
    KEPT.append(bytes(64))


def called_from_two_lines(rounds):
    for i in range(rounds):
        if i % 2:
            leaf()
        else:
            leaf()


def middle():
    leaf()


def changed_two_levels_down(rounds):
    for i in range(rounds):
        if i % 3 == 0:
            middle()
        elif i % 3 == 1:
            middle()
        else:
            leaf()


def generator():
    while True:
        KEPT.append(bytes(64))
        yield


def resume_here(g):
    next(g)


def resume_there(g):
    next(g)


def generator_resumed_from_two_places(rounds):
    g = generator()
    for i in range(rounds):
        (resume_here if i % 2 else resume_there)(g)


def down(depth):
    if depth == 0:
        leaf()
    else:
        down(depth - 1)


def varying_depths(rounds):
    for i in range(rounds):
        down(i % 20)


def two_threads(rounds):
    threads = [threading.Thread(target=called_from_two_lines, args=(rounds,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class Point:
    def __init__(self, x):
        self.coords = [x, x + 1]


def make_points(rounds):
    KEPT.extend(Point(i) for i in range(rounds))


def deep(depth, work, rounds):
    return work(rounds) if depth == 0 else deep(depth - 1, work, rounds)


def blocks_by_traceback(snapshot, oldest_first=False):
    """Live blocks per traceback, the frames in this file only, most recent
    first, for the blocks allocated in this file. tracemalloc's tracebacks
    list the oldest frame first; heapsite's, the most recent."""
    counts: dict[tuple[int, ...], int] = {}
    for stat in snapshot.statistics("traceback"):
        frames = list(stat.traceback)[:: -1 if oldest_first else 1]
        if frames[0].filename == __file__:
            lines = tuple(frame.lineno for frame in frames if frame.filename == __file__)
            counts[lines] = counts.get(lines, 0) + stat.count
    return counts


# Each tool as (start, snapshot, stop, lists its oldest frame first).
TOOLS = {
    "heapsite": (heapsite.start, heapsite.snapshot, heapsite.stop, False),
    "tracemalloc": (tracemalloc.start, tracemalloc.take_snapshot, tracemalloc.stop, True),
}


@pytest.mark.parametrize(
    "work",
    [
        called_from_two_lines,
        changed_two_levels_down,
        generator_resumed_from_two_places,
        varying_depths,
        two_threads,
    ],
)
def test_each_allocation_has_the_traceback_tracemalloc_gives_it(work):
    found = {}
    for name, (start, snapshot, stop, oldest_first) in TOOLS.items():
        KEPT.clear()
        start(FRAMES)
        try:
            work(3_000)
            found[name] = blocks_by_traceback(snapshot(), oldest_first)
        finally:
            stop()
            KEPT.clear()
    # Every call path was taken: the programs do reuse frames under new callers.
    assert len(found["tracemalloc"]) >= 2, found
    assert found["heapsite"] == found["tracemalloc"]


def walks_while(work):
    heapsite.start(FRAMES)
    try:
        deep(20, work, 100)  # warm: sites made, calls specialised
        before = heapsite.stats()["caller_walks"]
        deep(20, work, ROUNDS)
        return heapsite.stats()["caller_walks"] - before
    finally:
        heapsite.stop()
        KEPT.clear()


def called_from_one_line(rounds):
    for _ in range(rounds):
        leaf()


@needs_memo
def test_a_deep_loop_walks_its_callers_once():
    # A comprehension's allocations, all in one frame.
    walks = walks_while(lambda rounds: [[i] for i in range(rounds)])
    assert walks < ROUNDS // 100, walks
    # A new frame for each call, at the same address under the same callers.
    walks = walks_while(called_from_one_line)
    assert walks < ROUNDS // 100, walks
    # The same, under one of two callers' lines by turns: a walk each call.
    walks = walks_while(called_from_two_lines)
    assert ROUNDS <= walks < ROUNDS + ROUNDS // 100, walks


@needs_memo
def test_allocations_in_init_walk_their_callers_rarely():
    # From 3.13 on, __init__ runs above a clean-up shim, left out of the
    # key; the memo keeps such a caller only because its code is immortal.
    walks = walks_while(make_points)
    assert walks < ROUNDS // 100, walks
