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

import itertools
import sys
import threading
import tracemalloc

import heapsite
import heapsite.tracemalloc as hs_tracemalloc
import pytest

ROUNDS = 20_000
FRAMES = 16
# What the programs allocate is kept in place in a list made beforehand, so
# that the only live blocks at their allocating lines (marked "# counted")
# are the ones they made: no list growing under whichever call came first.
KEPT: list[object] = [None] * 65536
SLOTS = itertools.count()


def forget_kept():
    global SLOTS
    KEPT[:] = [None] * len(KEPT)
    SLOTS = itertools.count()


needs_memo = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="no memo before 3.11: frames are objects, walked each time"
)


def leaf():
    KEPT[next(SLOTS)] = bytes(64)  # counted


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
        KEPT[next(SLOTS)] = bytes(64)  # counted
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


def level(n, diff_at, turn):
    if n == 0:
        leaf()
    elif n != diff_at:
        level(n - 1, diff_at, turn)
    elif turn % 2:
        level(n - 1, diff_at, turn)
    else:
        level(n - 1, diff_at, turn)


def differing_at(diff_at):
    """15 frames over the allocation, one of which calls from either of two
    lines by turns: the caller at position `diff_at` + 1 (the allocation's
    frame is 0), to try the check's every turn and its last caller."""

    def work(rounds):
        for turn in range(rounds):
            level(14, diff_at, turn)

    work.__name__ = f"differing_at_position_{diff_at + 1}"
    return work


def keep_one(_):
    KEPT[next(SLOTS)] = bytes(64)  # counted
    return 0


def through_map(rounds):
    for i in range(rounds):
        if i % 2:
            for _ in map(keep_one, (1,)):
                pass
        else:
            for _ in map(keep_one, (1,)):
                pass


def through_min(rounds):
    for i in range(rounds):
        if i % 2:
            min((1, 2), key=keep_one)
        else:
            min((1, 2), key=keep_one)


class Kept:
    def __init__(self):
        KEPT[next(SLOTS)] = bytes(64)  # counted


def through_a_class_call(rounds):
    for i in range(rounds):
        if i % 2:
            Kept()
        else:
            Kept()


SOURCE = "def keep(kept, slots):\n    kept[next(slots)] = bytes(64)\n"


def code_made_and_dropped(rounds):
    # Each round's function dies with its namespace; a new one may be made
    # at its address, with the same instruction pointers.
    for _ in range(rounds // 10):
        namespace: dict[str, object] = {}
        exec(compile(SOURCE, __file__, "exec"), namespace)
        keep = namespace["keep"]
        for i in range(10):
            if i % 2:
                keep(KEPT, SLOTS)  # type: ignore[operator]
            else:
                keep(KEPT, SLOTS)  # type: ignore[operator]


class Point:
    def __init__(self, x):
        self.coords = [x, x + 1]


def make_points(rounds):
    for i in range(rounds):
        KEPT[i % len(KEPT)] = Point(i)


def deep(depth, work, rounds):
    return work(rounds) if depth == 0 else deep(depth - 1, work, rounds)


def counted_lines():
    """This file's lines marked "# counted", and SOURCE's line 2."""
    with open(__file__, encoding="utf-8") as source:
        marked = {n for n, line in enumerate(source, 1) if line.rstrip().endswith("# counted")}
    return marked | {2}


def blocks_by_traceback(snapshot, oldest_first=False):
    """Live blocks per traceback, the frames in this file only, most recent
    first, for the blocks allocated at the counted lines. tracemalloc's
    tracebacks list the oldest frame first; heapsite's, the most recent."""
    allocating = counted_lines()
    counts: dict[tuple[int, ...], int] = {}
    for stat in snapshot.statistics("traceback"):
        frames = list(stat.traceback)[:: -1 if oldest_first else 1]
        if frames[0].filename == __file__ and frames[0].lineno in allocating:
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
        differing_at(2),
        differing_at(5),
        differing_at(14),
        through_map,
        through_min,
        through_a_class_call,
        code_made_and_dropped,
    ],
    ids=lambda work: work.__name__,
)
def test_each_allocation_has_the_traceback_tracemalloc_gives_it(work):
    assert_tracebacks_match(work, FRAMES)


@pytest.mark.parametrize("frames", [1, 2, 3])
def test_few_frames_too(frames):
    assert_tracebacks_match(changed_two_levels_down, frames)


def assert_tracebacks_match(work, frames):
    found = {}
    for name, (start, snapshot, stop, oldest_first) in TOOLS.items():
        forget_kept()
        start(frames)
        try:
            work(3_000)
            found[name] = blocks_by_traceback(snapshot(), oldest_first)
        finally:
            stop()
            forget_kept()
    # Every call path was taken: the programs do reuse frames under new
    # callers (or, at one frame, allocate at their own lines).
    assert len(found["tracemalloc"]) >= (2 if frames > 1 else 1), found
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
        forget_kept()


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
def test_a_drop_in_session_stopped_by_heapsite_leaves_no_mode_behind():
    # The drop-in keys stacks by a walk to their bottom (tracemalloc's
    # total_nframe), never by the memo; heapsite.stop() ends that mode too,
    # or the next heapsite.start() would walk nothing through the memo.
    hs_tracemalloc.start(FRAMES)
    heapsite.stop()
    walks = walks_while(called_from_two_lines)
    assert ROUNDS <= walks < ROUNDS + ROUNDS // 100, walks


@needs_memo
def test_allocations_in_init_walk_their_callers_rarely():
    # From 3.13 on, __init__ runs above a clean-up shim, left out of the
    # key; the memo keeps such a caller only because its code is immortal.
    walks = walks_while(make_points)
    assert walks < ROUNDS // 100, walks
