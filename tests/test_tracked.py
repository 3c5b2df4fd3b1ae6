"""PyTraceMalloc_Track / Untrack: memory C extensions report (numpy's arrays)."""

import os
import tracemalloc

import heapsite
import heapsite.tracemalloc
import numpy as np  # scripts/lib.sh installs it for every version
from conftest import run_python

NUMPY_DOMAIN = 389047


def make_array():
    return np.ones(10**6)  # 8,000,000 bytes of data, tracked by numpy


def test_numpy_data_is_attributed_to_the_line_that_asked():
    heapsite.start(16)
    array = make_array()
    stats = heapsite.snapshot().statistics("lineno", cumulative=True)
    here = {s.traceback[0].lineno: s.size for s in stats if s.traceback[0].filename == __file__}
    line = make_array.__code__.co_firstlineno + 1
    assert 8_000_000 <= here[line] < 8_100_000
    del array
    stats = heapsite.snapshot().statistics("lineno", cumulative=True)
    here = {s.traceback[0].lineno: s.size for s in stats if s.traceback[0].filename == __file__}
    assert here.get(line, 0) < 100_000  # untracked when the array is freed


def test_domain_traces_match_the_standard_tracemalloc():
    # Both trace the same run: numpy's calls reach heapsite, which forwards
    # them to the interpreter's tracemalloc.
    tracemalloc.start(1)
    heapsite.tracemalloc.start(1)
    try:
        array = make_array()
        theirs = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.DomainFilter(True, NUMPY_DOMAIN)]
        )
        ours = heapsite.tracemalloc.take_snapshot().filter_traces(
            [heapsite.tracemalloc.DomainFilter(True, NUMPY_DOMAIN)]
        )

        def key(snapshot):
            frames = lambda tb: tuple((f.filename, f.lineno) for f in tb)  # noqa: E731
            return sorted((t.domain, t.size, frames(t.traceback)) for t in snapshot.traces)

        assert key(ours) == key(theirs)
        assert any(size == 8_000_000 for _, size, _ in key(theirs))
        del array
    finally:
        heapsite.tracemalloc.stop()
        tracemalloc.stop()


def test_extension_loaded_after_start_is_seen_too():
    result = run_python(
        """
        import heapsite
        heapsite.start(1)
        import numpy as np   # loaded after start(): dlopen is watched
        a = np.zeros(2 * 10**6)
        b = np.ones(2 * 10**6)
        top = heapsite.snapshot().statistics("lineno")[0]
        assert top.size >= 16_000_000, top
        print("ok")
        """,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
