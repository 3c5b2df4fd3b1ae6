"""heapsite's pytest plugin: fail a test that leaks, and say why.

    pytest --heapsite                 # track allocations; markers take effect
    pytest --heapsite-leaks           # also check every test for leaks

Markers (pytest-memray's names and meaning, plus no_leaks):

    @pytest.mark.limit_memory("24 MB")  # peak memory allocated during the test
    @pytest.mark.limit_leaks("1 KB")    # left allocated, per call site, at the end
    @pytest.mark.no_leaks(rounds=3)     # run the body again; fail if memory or
                                        # objects grow in every round after a warm-up

A failure names what leaked (object kinds, heapy's table), where it was
allocated (call sites with tracebacks) and what keeps it alive (a reference
chain from a module to one leaked object).
"""

from __future__ import annotations

import array
import gc
import os

import pytest

from . import (
    _heap,
    format_size,
    is_tracing,
    parse_size,
    reset_peak,
    snapshot,
    start,
    stop,
    traced_memory,
)
from . import (
    _heapsite as _core,
)

FRAMES = 16
TOP_SITES = 5
# heapsite's own allocations (snapshots, partitions) are not the test's.
_OWN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "")


def _program_bytes() -> int:
    """Live bytes of every call site whose most recent frame is not
    heapsite's own (cheap: the native per-site figures, no Snapshot)."""
    return sum(
        live_bytes
        for _, frames, _, live_bytes, *_ in _core.sites()
        if not frames[0][0].startswith(_OWN)
    )


def _program_snapshot():
    return snapshot().filter(exclude=[_OWN + "*"])


def pytest_addoption(parser):
    group = parser.getgroup("heapsite", "memory: heapsite")
    group.addoption("--heapsite", action="store_true", help="track memory with heapsite")
    group.addoption(
        "--heapsite-leaks",
        action="store_true",
        help="check every test for leaks (as @pytest.mark.no_leaks); implies --heapsite",
    )
    group.addoption(
        "--heapsite-rounds",
        type=int,
        default=3,
        help="rounds after the warm-up for the leak check (default 3)",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "limit_memory(size): fail if the test's peak allocated memory exceeds size"
    )
    config.addinivalue_line(
        "markers", "limit_leaks(size): fail if a call site leaves more than size allocated"
    )
    config.addinivalue_line(
        "markers", "no_leaks(rounds=3): fail if memory or objects grow in every round"
    )
    active = config.getoption("--heapsite") or config.getoption("--heapsite-leaks")
    config._heapsite_active = active
    config._heapsite_report = []
    if active and not is_tracing():
        start(FRAMES)


def pytest_unconfigure(config):
    if getattr(config, "_heapsite_active", False):
        stop()


def _marker_size(item, name):
    marker = item.get_closest_marker(name)
    if marker is None:
        return None
    if len(marker.args) != 1 or marker.kwargs:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{name} takes one size, like '24 MB'")
    try:
        return parse_size(marker.args[0])
    except ValueError as e:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{name}: {e}") from None


def _rounds(item):
    marker = item.get_closest_marker("no_leaks")
    if marker is None:
        if item.config.getoption("--heapsite-leaks"):
            return item.config.getoption("--heapsite-rounds")
        return None
    rounds = marker.kwargs.get("rounds", marker.args[0] if marker.args else 3)
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 2:
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.no_leaks(rounds=...) needs a whole number of at least "
            f"2, got {rounds!r}"
        )
    return rounds


def pytest_collection_modifyitems(config, items):
    # Check the markers' arguments before anything runs: a usage error, not a crash.
    for item in items:
        _marker_size(item, "limit_memory")
        _marker_size(item, "limit_leaks")
        _rounds(item)


def _site_lines(diffs, limit=TOP_SITES):
    lines = []
    for diff in diffs[:limit]:
        lines.append(f"  {diff}")
        lines.extend("  " + line for line in diff.traceback.format(most_recent_first=True)[:6])
    return lines


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    if not item.config._heapsite_active:
        yield
        return
    memory_limit = _marker_size(item, "limit_memory")
    leak_limit = _marker_size(item, "limit_leaks")
    rounds = _rounds(item)
    gc.collect()
    before = _program_snapshot() if leak_limit is not None else None
    start_current = traced_memory()[0]
    reset_peak()
    outcome = yield
    if outcome.excinfo is not None:
        return
    peak = traced_memory()[1] - start_current
    item.config._heapsite_report.append((item.nodeid, peak))
    failures = []
    if memory_limit is not None and peak > memory_limit:
        failures.append(
            f"Test was limited to {format_size(memory_limit)} but allocated {format_size(peak)}"
        )
    if leak_limit is not None:
        gc.collect()
        diffs = [
            d
            for d in _program_snapshot().compare_to(before, "traceback")
            if d.size_diff > leak_limit
        ]
        if diffs:
            failures.append(
                f"Test was allowed to leak {format_size(leak_limit)} per location but at least "
                "one location leaked more:"
            )
            failures.extend(_site_lines(diffs))
    if rounds is not None:
        message = _leak_check(item, rounds)
        if message:
            failures.append(message)
    if failures:
        outcome.force_exception(pytest.fail.Exception("\n".join(failures), pytrace=False))


def _leak_check(item, rounds):
    """Runs the test body `rounds` more times after the first (the warm-up)
    and reports growth that happens in every round, or None."""
    gc.collect()
    base_snapshot = _program_snapshot()
    # Figures go to C arrays made before setrelheap: no new Python object
    # per round of the check itself.
    sizes = array.array("q", [0] * (rounds + 1))
    counts = array.array("q", [0] * (rounds + 1))
    sizes[0] = _program_bytes()
    _heap.setrelheap()
    for index in range(1, rounds + 1):
        item.runtest()
        gc.collect()
        sizes[index] = _program_bytes()
        counts[index] = _heap.heap().count
    grew_bytes = all(b > a for a, b in zip(sizes, sizes[1:]))
    grew_objects = all(b > a for a, b in zip(counts, counts[1:]))
    if not (grew_bytes or grew_objects):
        _heap.clearrelheap()
        return None
    leaked = _heap.heap()
    # Found while the relheap still leaves out what existed before the rounds.
    path = leaked.path_to_root() if leaked.rows else None
    _heap.clearrelheap()
    per_round = [b - a for a, b in zip(sizes, sizes[1:])]
    lines = [
        f"{item.nodeid} leaks: memory grew in every one of {rounds} rounds after a warm-up "
        f"({', '.join(format_size(p, True) for p in per_round)} per round); "
        f"{leaked.count} objects ({format_size(leaked.size)}) are still alive.",
        "",
        "Where it was allocated (top call sites of what is still allocated):",
    ]
    diffs = [
        d for d in _program_snapshot().compare_to(base_snapshot, "traceback") if d.size_diff > 0
    ]
    lines.extend(_site_lines(diffs))
    lines += ["", "What leaked, by kind:", str(leaked)]
    if path:
        lines += ["", f"What keeps one {leaked.rows[0].name} alive:", f"  {path}"]
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    report = getattr(config, "_heapsite_report", None)
    if not getattr(config, "_heapsite_active", False) or not report:
        return
    terminalreporter.section("heapsite: largest peak memory per test")
    for nodeid, peak in sorted(report, key=lambda r: -r[1])[:5]:
        terminalreporter.write_line(f"{format_size(peak):>10}  {nodeid}")


class Measurement:
    """What a block allocated: `peak` (most bytes live at once, above what
    was live when it began), `leaked` (bytes it left allocated) and `sites`
    (the call sites still holding them, as StatisticDiff lines)."""

    def __init__(self):
        self.peak = 0
        self.leaked = 0
        self.sites = []


class Tracker:
    """`heapsite_tracker()` measures a block of a test:

    def test_cache(heapsite_tracker):
        with heapsite_tracker() as m:
            build_cache()
        assert m.peak < 10_000_000 and m.leaked < 1_000
    """

    def __call__(self):
        return self._measure()

    @staticmethod
    def _measure():
        import contextlib

        @contextlib.contextmanager
        def measure():
            started_here = not is_tracing()
            if started_here:
                start(FRAMES)
            try:
                gc.collect()
                result = Measurement()
                before = _program_snapshot()
                base = _program_bytes()
                live_at_start = traced_memory()[0]
                reset_peak()
                yield result
                result.peak = max(0, traced_memory()[1] - live_at_start)
                gc.collect()
                result.leaked = _program_bytes() - base
                diffs = _program_snapshot().compare_to(before, "traceback")
                result.sites = [d for d in diffs if d.size_diff > 0]
            finally:
                if started_here:
                    stop()

        return measure()


@pytest.fixture
def heapsite_tracker():
    """Measures the memory a block of the test allocates (see Tracker)."""
    return Tracker()
