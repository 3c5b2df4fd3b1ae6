"""Threads: each allocation is attributed to its own thread's frames, and RAW
allocations from threads without the GIL are counted, not lost."""

import ctypes
import sys
import threading

import heapsite

N_THREADS = 8
PER_THREAD = 20_000


def make_worker(k):
    # Each worker has its own code object and pseudo file name, so its
    # allocations can be told apart in the statistics.
    source = (
        "def work(n, out, start):\n"
        "    start.wait()\n"
        f"    out.extend(bytes({k + 2}) for _ in range(n))\n"
    )
    namespace = {}
    exec(compile(source, f"<worker-{k}>", "exec"), namespace)
    return namespace["work"]


def test_eight_threads_each_attributed_to_its_own_frames():
    heapsite.start(4)
    start = threading.Event()
    outs = [[] for _ in range(N_THREADS)]
    threads = [
        threading.Thread(target=make_worker(k), args=(PER_THREAD, outs[k], start))
        for k in range(N_THREADS)
    ]
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join()
    stats = {s.traceback[0].filename: s for s in heapsite.snapshot().statistics("filename")}
    for k in range(N_THREADS):
        stat = stats[f"<worker-{k}>"]
        # bytes(k + 2) is a new bytes object (no cached singleton), one per item.
        expected = PER_THREAD * sys.getsizeof(bytes(k + 2))
        assert stat.count >= PER_THREAD, k
        # ...plus the list they go into: 8 bytes a slot, over-allocated.
        assert expected <= stat.size <= expected + 10 * PER_THREAD, (k, stat)


def test_raw_allocations_without_the_gil_are_counted():
    # ctypes.CDLL calls release the GIL: these run truly without it.
    lib = ctypes.CDLL(None)
    raw_malloc, raw_free = lib.PyMem_RawMalloc, lib.PyMem_RawFree
    raw_malloc.restype, raw_malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    raw_free.restype, raw_free.argtypes = None, [ctypes.c_void_p]
    size, keep, rounds = 1000, 100, 5_000
    heapsite.start(1)
    held = [[] for _ in range(N_THREADS)]

    def work(k):
        mine = held[k]
        for _ in range(rounds):
            mine.append(raw_malloc(size))
            if len(mine) > keep:
                raw_free(mine.pop(0))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = {s.traceback[0].filename: s for s in heapsite.snapshot().statistics("filename")}
    no_gil = stats["<raw allocation without the GIL>"]
    assert no_gil.count == N_THREADS * keep
    assert no_gil.size == N_THREADS * keep * size
    for mine in held:
        for address in mine:
            raw_free(address)
    stats = {s.traceback[0].filename: s for s in heapsite.snapshot().statistics("filename")}
    assert "<raw allocation without the GIL>" not in stats
    total = {s.traceback[0].filename: s for s in heapsite.snapshot().total().statistics("filename")}
    assert total["<raw allocation without the GIL>"].count == N_THREADS * rounds


def _at_line(statistics, line):
    """(count, size) of the statistics at this file's `line` (lineno key)."""
    for stat in statistics:
        frame = stat.traceback[0]
        if frame.lineno == line and frame.filename == __file__:
            return stat.count, stat.size
    return 0, 0


def test_blocks_freed_by_threads_without_the_gil_leave_their_site():
    # Allocated with the GIL (pythonapi holds it), so at this file's line;
    # freed by eight threads without it at once, so the site's counters of
    # such events are made by whichever thread comes first (the others
    # must find and use those, not lose their frees). The line also holds
    # the ints ctypes returns, which stay alive in `blocks`.
    api = ctypes.pythonapi
    api.PyMem_RawMalloc.restype, api.PyMem_RawMalloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    raw_free = ctypes.CDLL(None).PyMem_RawFree
    raw_free.restype, raw_free.argtypes = None, [ctypes.c_void_p]
    per_thread, size = 500, 300
    heapsite.start(1)
    blocks = [[api.PyMem_RawMalloc(size) for _ in range(per_thread)] for _ in range(N_THREADS)]
    line = sys._getframe().f_lineno - 1
    count, held = _at_line(heapsite.snapshot().statistics("lineno"), line)
    total_before = _at_line(heapsite.snapshot().total().statistics("lineno"), line)
    raw = N_THREADS * per_thread
    assert count >= raw and held >= raw * size, (count, held)
    start = threading.Barrier(N_THREADS)

    def free_all(mine):
        start.wait()
        for address in mine:
            raw_free(address)

    threads = [threading.Thread(target=free_all, args=(mine,)) for mine in blocks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = _at_line(heapsite.snapshot().statistics("lineno"), line)
    assert after == (count - raw, held - raw * size), (count, held, after)
    # What the line allocated in all stays as it was.
    total = _at_line(heapsite.snapshot().total().statistics("lineno"), line)
    assert total == total_before, (total_before, total)
