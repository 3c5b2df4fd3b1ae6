"""What a site costs: frames shared between sites, offsets of a line merged.

src/engine/frame_table.rs interns each frame once (by code object and
line); a site keeps ids, 16 bits each where they fit (src/engine/id_lists.rs).
These tests fail if sites go back to a copy of their frames each, or to one
site per instruction offset.
"""

import subprocess
import sys
import textwrap

# N sites, each a distinct leaf function at the bottom of one shared
# recursion (DEPTH frames); prints the tracking bytes they added.
SHARED_STACK = textwrap.dedent(
    """
    import sys
    import heapsite

    N, FRAMES = int(sys.argv[1]), int(sys.argv[2])
    leaves = []
    for i in range(N):
        scope = {}
        exec(f"def leaf_{i}():\\n    return bytearray(64)\\n", scope)
        leaves.append(scope[f"leaf_{i}"])

    def down(k, leaf):
        return down(k - 1, leaf) if k else leaf()

    heapsite.start(frames=FRAMES)
    down(FRAMES, leaves[0])  # the shared part's frames, before the measure
    before = heapsite.stats()["tracking_bytes"]
    sites_before = heapsite.stats()["sites"]
    kept = [down(FRAMES, leaf) for leaf in leaves]
    stats = heapsite.stats()
    print(stats["tracking_bytes"] - before, stats["sites"] - sites_before)
    """
)


def _numbers(script, *args):
    """The numbers `script` prints, run in a new interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    return [int(number) for number in out]


def _two_numbers(script, *args):
    """The first two numbers `script` prints, run in a new interpreter."""
    return tuple(_numbers(script, *args)[:2])


def _added(frames, n=3000):
    return _two_numbers(SHARED_STACK, n, frames)


def test_sites_sharing_a_deep_stack_share_its_frames():
    n = 3000
    deep, deep_sites = _added(16, n)
    shallow, shallow_sites = _added(1, n)
    assert deep_sites >= n and shallow_sites >= n
    # 15 more frames per site: a copy of each frame (16 bytes) would add
    # 240 bytes a site; ids in a shared table, 32 bits each, 60 (76 as a
    # malloc chunk of their own); packed in 16 bits in the shared id store
    # (src/engine/id_lists.rs), 30.
    per_site = (deep - shallow) / n
    assert per_site < 50, f"{per_site:.0f} bytes a site for 15 shared frames"


ONE_LINE = textwrap.dedent(
    """
    import heapsite
    from heapsite import _core

    def two_on_one_line():
        a, b = bytearray(1000), bytearray(3000)
        return a, b

    heapsite.start(frames=1)
    kept = two_on_one_line()
    line = two_on_one_line.__code__.co_firstlineno + 1
    here = [s for s in _core.sites() if s[1] and s[1][0][1] == line
            and s[1][0][2] == "two_on_one_line"]
    print(len(here), sum(s[3] for s in here))
    """
)


def test_two_offsets_on_one_line_are_one_site():
    out = subprocess.run(
        [sys.executable, "-c", ONE_LINE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    sites, live_bytes = int(out[0]), int(out[1])
    assert sites == 1
    assert live_bytes >= 4000


# A peak of many small objects, all dropped; then the tracker's own memory
# against the standard tracemalloc's on the same program (the oracle).
PAST_THE_PEAK = textwrap.dedent(
    """
    import gc
    import sys
    import tracemalloc
    import heapsite

    tool = sys.argv[1]
    if tool == "tracemalloc":
        tracemalloc.start(16)
    else:
        heapsite.start(frames=16)

    def own():
        if tool == "tracemalloc":
            return tracemalloc.get_tracemalloc_memory()
        return heapsite.stats()["tracking_bytes"]

    class Point:
        def __init__(self, i):
            self.x, self.y = float(i), float(-i)

    points = [Point(i) for i in range(200_000)]
    at_peak = own()
    del points
    gc.collect()
    print(at_peak, own())
    """
)


def _own_memory(tool):
    return _two_numbers(PAST_THE_PEAK, tool)


def test_past_its_peak_the_tracker_gives_its_table_back():
    # heapsite's live table kept its peak size (20 MB for 600,000 blocks);
    # it is rebuilt smaller when the figures are read past the peak.
    peak, after = _own_memory("heapsite")
    tm_peak, tm_after = _own_memory("tracemalloc")
    assert peak > 5_000_000, peak  # the table did grow for the points
    assert after < peak / 20, (peak, after)
    # Within the same order as tracemalloc's own after its table shrank
    # (its traces' tracebacks stay interned; heapsite's sites stay too).
    assert after < max(4 * tm_after, 1_000_000), (after, tm_after, tm_peak)


# A recursive generator walk (pyperformance's generators): each node's
# generator is made under a different 16-frame stack, so 2^16 sites, and
# nothing the program allocates goes to malloc (all small objects, pymalloc's
# arenas being mmapped). What malloc hands out meanwhile is the tracker's.
GENERATOR_WALK = textwrap.dedent(
    """
    import ctypes
    import gc
    import sys

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks"
                    " keepcost".split()]

    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    mallinfo2.restype = MallInfo2

    def in_use():
        info = mallinfo2()
        return info.uordblks + info.hblkhd

    class Tree:
        def __init__(self, left, value, right):
            self.left, self.value, self.right = left, value, right

        def __iter__(self):
            if self.left:
                yield from self.left
            yield self.value
            if self.right:
                yield from self.right

    def tree(values):
        if not values:
            return None
        i = len(values) // 2
        return Tree(tree(values[:i]), values[i], tree(values[i + 1:]))

    tool = sys.argv[1]
    if tool == "tracemalloc":
        import tracemalloc
        own = tracemalloc.get_tracemalloc_memory
    else:
        import heapsite
        own = lambda: heapsite.stats()["tracking_bytes"]
    walked = tree(range(60_000))
    gc.collect()
    malloc_before = in_use()
    if tool == "tracemalloc":
        tracemalloc.start(16)
    else:
        heapsite.start(frames=16)
    own_before = own()
    sites_before = 0 if tool == "tracemalloc" else heapsite.stats()["sites"]
    for _ in walked:
        pass
    gc.collect()
    sites = 0 if tool == "tracemalloc" else heapsite.stats()["sites"] - sites_before
    print(own() - own_before, in_use() - malloc_before, sites)
    """
)


def test_tracking_bytes_is_what_malloc_gives_the_tracker():
    # tracking_bytes is counted by heapsite's allocator: it must agree with
    # glibc's own count of what it handed out (it missed a fifth before: the
    # frame arrays' chunks, the per-code lists of sites).
    reported, from_malloc = _two_numbers(GENERATOR_WALK, "heapsite")
    assert from_malloc > 5_000_000, from_malloc  # the walk did make sites
    assert abs(reported - from_malloc) < 0.1 * from_malloc, (reported, from_malloc)


def test_on_many_sites_heapsite_takes_less_from_malloc_than_tracemalloc():
    # The oracle, measured the same way from outside: tracemalloc's own
    # figure leaves out its tracebacks and traces (CPython's
    # _Py_hashtable_size counts a table's entries, not what they point to).
    heapsite_bytes = _two_numbers(GENERATOR_WALK, "heapsite")[1]
    tm_reported, tm_bytes = _two_numbers(GENERATOR_WALK, "tracemalloc")
    assert tm_reported < 0.7 * tm_bytes, (tm_reported, tm_bytes)
    assert heapsite_bytes < tm_bytes, (heapsite_bytes, tm_bytes)


def test_a_site_of_sixteen_distinct_frames_costs_under_110_bytes():
    # What each of the walk's sites costs in all: its slot (56 bytes), its
    # 16 frame ids packed in 16 bits in the shared id store (32), its entry
    # in the interner (about 5), its share of the frame table: 98 bytes
    # (CPython 3.11). It was 196 with the ids in a malloc chunk of their own
    # per site (80 bytes), 148 with a 96-byte slot that kept what the site
    # held at the peak and at the last reset (now in logs that note only
    # the sites that held something then, src/engine/counters.rs) and an
    # interner of (key, id) pairs.
    reported, _, sites = _numbers(GENERATOR_WALK, "heapsite")
    assert sites > 50_000, sites  # distinct stacks: a site per node or so
    per_site = reported / sites
    assert per_site < 110, f"{per_site:.0f} bytes a site"
