"""Sampled tracing without a free hook on Python's object allocator.

Over pymalloc, sampled tracing installs no MEM/OBJ free hook: a chosen
block is asked of pymalloc at 513 bytes or more, so that it comes from the
raw allocator and its free reaches heapsite's raw hook (src/engine/hook/
direct.rs). Where that routing is not certain (PYTHONMALLOC=malloc, the
debug hooks) the free hook stays.

The oracle is tracemalloc on the same program. At `sample_every=1` every
allocation of a byte or more is chosen, with weight 1, so every block goes
through the chosen path: each line's live bytes and blocks must then equal
tracemalloc's, frees, reallocs, callocs and free lists included. A free the
raw hook missed would leave bytes on a line tracemalloc has empty.
"""

import json
import os
import subprocess
import sys
import textwrap

import heapsite
import pytest
from sampled_programs import START_TRACER

PROGRAM = START_TRACER + textwrap.dedent(
    """
    if "follow" in sys.argv and mode != "tracemalloc":
        # As tracemalloc: an object reused from a free list moves its block
        # to the reusing line (the drop-in's way, 3.13+).
        assert heapsite._core.follow_reuse(True)
    # Free lists (ints from 3.14, tuples, lists...) may hold blocks made
    # before tracing, which neither tracer holds: what they hold differs
    # with what each tool's import left there. Take them out (kept alive),
    # then fill the free lists with traced blocks.
    drained = [(i * 1000003, float(i), (i,), (i, i), [i]) for i in range(3000)]  # DRAIN
    fresh = [(i * 1000003, float(i), (i,), (i, i), [i]) for i in range(3000)]
    del fresh

    class Node:
        def __init__(self, i):
            self.i = i
            self.name = "node-" + str(i)

    kept = [Node(i) for i in range(3000)]  # KEPT
    grown = []
    for i in range(5000):
        grown.append(i * 1000)  # GROWN
    zeroed = [bytes(700 + i) for i in range(200)]  # ZEROED
    resized = bytearray(10)
    for i in range(300):
        resized.extend(b"x" * (i % 50))  # RESIZED
    for i in range(20000):
        gone = ("t", i * 3, str(i))  # GONE
    del gone
    shrunk = [bytearray(1000) for _ in range(50)]  # SHRUNK
    for s in shrunk:
        del s[100:]
    lines = {}
    if mode == "tracemalloc":
        snap = tracemalloc.take_snapshot()
    else:
        snap = heapsite.snapshot()
        lines["stats"] = heapsite.stats()
    for stat in snap.statistics("lineno"):
        if stat.traceback[0].filename == __file__:
            lines[stat.traceback[0].lineno] = [stat.size, stat.count]
    json.dump(lines, open(out, "w"))
    """
)


def line_of(marker):
    return next(n for n, text in enumerate(PROGRAM.splitlines(), 1) if f"# {marker}" in text)


def run_program(tmp_path, mode, env=None, tag="run", follow=False):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    out = tmp_path / f"{tag}.json"
    done = subprocess.run(
        [sys.executable, str(script), mode, str(out), *(["follow"] if follow else [])],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


def env_with(**extra):
    env = dict(os.environ)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    return run_program(tmp_path_factory.mktemp("oracle"), "tracemalloc", tag="oracle")


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    """heapsite's exact tracing, which has the free hook."""
    figures = run_program(tmp_path_factory.mktemp("exact"), "0", tag="exact")
    assert figures.pop("stats")["free_hook"] == 1
    return figures


MARKERS = ["KEPT", "GROWN", "ZEROED", "RESIZED", "GONE", "SHRUNK"]
ALLOCATORS = ["pymalloc", "malloc", "pymalloc_debug"]


def free_hook_expected(allocator):
    # The free hook is left out exactly where pymalloc sends large blocks to
    # the raw allocator with their own address.
    return 0 if allocator == "pymalloc" else 1


@pytest.mark.parametrize("allocator", ALLOCATORS)
def test_every_block_chosen_gives_exact_tracing_s_figures(tmp_path, exact, allocator):
    got = run_program(tmp_path, "1", env_with(PYTHONMALLOC=allocator), tag=allocator)
    assert got.pop("stats")["free_hook"] == free_hook_expected(allocator)
    assert_same_lines(got, exact)
    assert exact[str(line_of("KEPT"))][1] >= 3000  # exact tracing measured something


def assert_same_lines(got, exact):
    """Every line of the program has the same figures in both runs, but the
    one that takes blocks made before tracing out of the free lists (how many
    there were varies by a block or two from run to run), and one block that
    a free list may hand from one line to another in one run and not the
    next (CI, 3.15 with PYTHONMALLOC=pymalloc_debug: a 32-byte block counted
    at `class Node:` and not at KEPT, which had 4,876 of 4,877)."""
    drain = str(line_of("DRAIN"))
    lines = (set(got) | set(exact)) - {drain}
    zero = [0, 0]
    moved = {
        line: (
            got.get(line, zero)[0] - exact.get(line, zero)[0],
            got.get(line, zero)[1] - exact.get(line, zero)[1],
        )
        for line in lines
    }
    moved = {line: d for line, d in moved.items() if d != (0, 0)}
    one_block = len(moved) <= 2 and all(
        abs(size) <= 64 and abs(n) <= 1 for size, n in moved.values()
    )
    assert one_block and sum(n for _, n in moved.values()) == 0, moved


@pytest.mark.skipif(sys.version_info < (3, 13), reason="no reference tracer before 3.13")
@pytest.mark.parametrize("allocator", ALLOCATORS)
def test_every_block_chosen_gives_tracemalloc_s_figures(tmp_path, oracle, allocator):
    """Following free-list reuse as tracemalloc does (3.13+): a sampled
    block is in the raw table, and a reused one moves to the reusing line
    there (direct.rs's object_created). Before 3.13 heapsite keeps a reused
    block at its first line (README, differences), and the test above
    compares with exact tracing."""
    env = env_with(PYTHONMALLOC=allocator)
    got = run_program(tmp_path, "1", env, tag=allocator, follow=True)
    assert got.pop("stats")["free_hook"] == free_hook_expected(allocator)
    for marker in MARKERS:
        line = str(line_of(marker))
        want = oracle.get(line, [0, 0])
        assert got.get(line, [0, 0]) == want, (allocator, marker, got.get(line), want)
    assert oracle[str(line_of("KEPT"))][1] >= 3000  # the oracle measured something
    # 20,000 tuples made and dropped: a few blocks stay, in free lists.
    assert oracle.get(str(line_of("GONE")), [0, 0])[1] <= 5


def test_exact_tracing_keeps_the_free_hook():
    heapsite.start(1)
    try:
        assert heapsite.stats()["free_hook"] == 1
    finally:
        heapsite.stop()
    assert heapsite.stats()["free_hook"] == 0  # not tracing: no hook at work


SWAP = textwrap.dedent(
    """
    import heapsite
    heapsite.start(1, sample_every=1)
    assert heapsite.stats()["free_hook"] == 0, heapsite.stats()
    heapsite.setrelheap()
    assert heapsite.stats()["free_hook"] == 1, heapsite.stats()
    made = [bytearray(100) for _ in range(1000)]  # MADE
    del made
    again = [str(i) * 3 for i in range(1000)]
    h = heapsite.heap()
    assert h.count >= 1000, h
    heapsite.stop()
    heapsite.start(1, sample_every="64 KiB")
    assert heapsite.stats()["free_hook"] == 1, "a setrelheap() set is kept"
    heapsite.clearrelheap()
    heapsite.stop()
    heapsite.start(1, sample_every="64 KiB")
    assert heapsite.stats()["free_hook"] == 0, heapsite.stats()
    heapsite.stop()
    print("ok")
    """
)


def run_script(tmp_path, text):
    script = tmp_path / "script.py"
    script.write_text(text)
    command = [sys.executable, str(script)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_setrelheap_puts_the_free_hook_back(tmp_path):
    done = run_script(tmp_path, SWAP)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert done.stderr == ""


WRAPPED = textwrap.dedent(
    """
    import sys, tracemalloc, heapsite
    heapsite.start(1, sample_every=1)
    tracemalloc.start(1)          # wraps heapsite's layers
    heapsite.setrelheap()         # the free hook cannot go back under it: one line
    heapsite.clearrelheap()
    heapsite.stop()               # heapsite's layers stay, passing through
    kept = [bytearray(100) for _ in range(1000)]  # UNDER
    tracemalloc.stop()            # heapsite's direct layers outermost again
    heapsite.start(1)             # exact: they are taken out, the free hook is back
    assert heapsite.stats()["free_hook"] == 1, heapsite.stats()
    made = [bytearray(100) for _ in range(1000)]  # EXACT
    line = sys._getframe().f_lineno - 1
    stats = heapsite.snapshot().statistics("lineno")
    assert sum(s.count for s in stats if s.traceback[0].lineno == line) >= 1000, stats
    del made
    stats = heapsite.snapshot().statistics("lineno")
    # Freed, and seen freed (3.9 keeps the comprehension's frame: one block).
    assert sum(s.count for s in stats if s.traceback[0].lineno == line) <= 1, stats
    heapsite.stop()
    print("ok")
    """
)


def test_a_tool_wrapping_and_unwrapping_the_direct_layer(tmp_path):
    done = run_script(tmp_path, WRAPPED)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert done.stderr.splitlines() == [
        "heapsite: setrelheap() while another tool wraps sampled tracing: "
        "blocks freed since may stay left out"
    ]


SMALL_TABLES = textwrap.dedent(
    """
    import heapsite
    heapsite.start(1, sample_every=16 * 1024)  # each block sampled, p = 0.98
    kept = [bytearray(64 * 1024) for _ in range(300)]
    stats = heapsite.stats()
    assert stats["live_allocations"] >= 250, stats
    print(stats["tracking_bytes"])
    """
)


def test_sampled_tracing_keeps_its_tables_small(tmp_path):
    """A few hundred sampled blocks spread over the raw table's 16 shards:
    each shard sized for a few blocks, not 4,096 slots (780 KB in all). In a
    fresh process: sites and frames a test session made count too."""
    done = run_script(tmp_path, SMALL_TABLES)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 300_000
