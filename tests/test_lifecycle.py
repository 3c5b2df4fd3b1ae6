"""Never harm the host: start/stop at any time, fork, threads, exit, stacking."""

import ctypes
import os
import threading
import time
import tracemalloc

import heapsite
import pytest
from conftest import run_python


def allocate_some():
    return [{"k": i} for i in range(1000)]


def test_start_stop_a_thousand_times():
    for i in range(1000):
        heapsite.start(1 + i % 16)
        assert heapsite.is_tracing()
        assert heapsite.traceback_limit() == 1 + i % 16
        data = allocate_some()
        assert heapsite.traced_memory()[0] > 50_000
        heapsite.stop()
        assert not heapsite.is_tracing()
        assert heapsite.traced_memory() == (0, 0)
        del data  # blocks from a past session pass through


def test_stop_and_start_while_other_threads_allocate():
    lib = ctypes.CDLL(None)
    lib.PyMem_RawMalloc.restype, lib.PyMem_RawMalloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    lib.PyMem_RawFree.restype, lib.PyMem_RawFree.argtypes = None, [ctypes.c_void_p]
    stop = threading.Event()
    errors = []

    def python_work():
        try:
            while not stop.is_set():
                allocate_some()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def raw_work():
        while not stop.is_set():
            blocks = [lib.PyMem_RawMalloc(64) for _ in range(100)]
            for b in blocks:
                lib.PyMem_RawFree(b)

    threads = [threading.Thread(target=python_work) for _ in range(3)]
    threads += [threading.Thread(target=raw_work) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(200):
            heapsite.start(1 + i % 8)
            time.sleep(0.001)
            heapsite.snapshot()
            heapsite.stop()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors


# Threads joined by earlier tests may linger in /proc for a moment; 3.12+ warns.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_fork_parent_and_child_both_keep_working():
    heapsite.start(1)
    before = allocate_some()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            more = [bytearray(1000) for _ in range(1000)]
            snap = heapsite.snapshot()
            size = sum(
                s.size for s in snap.statistics("filename") if s.traceback[0].filename == __file__
            )
            os.write(write, f"{heapsite.is_tracing()} {size} {len(more)}".encode())
        finally:
            os._exit(0)
    os.close(write)
    report = os.read(read, 1000).decode()
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    tracing, size, _ = report.split()
    assert tracing == "True"
    assert int(size) > 1_000_000  # the child's bytearrays, at its own line
    after = allocate_some()
    snap = heapsite.snapshot()
    assert snap.statistics("lineno")
    assert len(before) == len(after)


def test_tracing_left_on_through_interpreter_exit():
    result = run_python(
        """
        import threading, heapsite
        heapsite.start(16)
        def churn():
            while True:
                [dict(a=i) for i in range(100)]
        for _ in range(4):
            threading.Thread(target=churn, daemon=True).start()
        data = [str(i) for i in range(100000)]
        print("bye")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "bye\n"


@pytest.mark.parametrize("first", ["tracemalloc", "heapsite"])
def test_stacks_with_tracemalloc_in_either_order(first):
    starts = {"tracemalloc": lambda: tracemalloc.start(1), "heapsite": lambda: heapsite.start(1)}
    stops = {"tracemalloc": tracemalloc.stop, "heapsite": heapsite.stop}
    second = "heapsite" if first == "tracemalloc" else "tracemalloc"
    starts[first]()
    starts[second]()
    try:
        data = allocate_some()
        assert heapsite.traced_memory()[0] > 50_000
        assert tracemalloc.get_traced_memory()[0] > 50_000
        # Stop the inner one first: the outer one must keep working.
        stops[first]()
        more = allocate_some()
        tracer = heapsite if second == "heapsite" else None
        if tracer:
            assert heapsite.traced_memory()[0] > 100_000
        else:
            assert tracemalloc.get_traced_memory()[0] > 100_000
        stops[second]()
        # Both start again cleanly, and each block is counted once even where
        # heapsite now sits both inside and outside tracemalloc.
        heapsite.start(1)
        tracemalloc.start(1)
        heapsite.stop()
        heapsite.start(1)
        ours, theirs = heapsite.traced_memory()[0], tracemalloc.get_traced_memory()[0]
        again = allocate_some()
        ours = heapsite.traced_memory()[0] - ours
        theirs = tracemalloc.get_traced_memory()[0] - theirs
        assert theirs > 50_000
        assert abs(ours - theirs) <= 0.01 * theirs
        del data, more, again
    finally:
        tracemalloc.stop()
        heapsite.stop()


@pytest.mark.parametrize("mode", ["malloc", "debug", "pymalloc_debug"])
def test_works_under_other_python_allocators(mode):
    result = run_python(
        """
        import heapsite
        heapsite.start(4)
        data = [bytearray(100) for _ in range(10000)]
        top = heapsite.snapshot().statistics("lineno")[0]
        assert top.count >= 10000, top
        del data
        heapsite.stop()
        print("ok", top.traceback[0].lineno)
        """,
        env={**os.environ, "PYTHONMALLOC": mode},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "4"]


def test_dev_mode_and_tracemalloc_flag():
    result = run_python(
        """
        import heapsite, tracemalloc
        assert tracemalloc.is_tracing()
        heapsite.start(2)
        data = [bytearray(100) for _ in range(10000)]
        assert heapsite.snapshot().statistics("lineno")[0].count >= 10000
        print("ok")
        """,
        env={**os.environ, "PYTHONDEVMODE": "1", "PYTHONTRACEMALLOC": "5"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
