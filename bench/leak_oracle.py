"""An independent leak oracle for pytest tests: does memory grow with the number of runs?

A pytest plugin module that does not import heapsite. Loaded with `bench/`
on PYTHONPATH:

    PYTHONPATH=bench python -m pytest -p leak_oracle --leak-oracle-out=out.jsonl [ARGS...]

(With `=`: pytest reads its arguments once before it loads plugins, and a
value given apart from an option it does not know yet is taken for a path
to test, which moves where it looks for the project's configuration: the
suite would run without its addopts, markers and filters.)

Before pytest runs a checked test, the oracle runs the test's whole protocol
(set-up, call, tear-down, as pytest-rerunfailures reruns a test) another
`--leak-oracle-warmup` times (default 5), then `--leak-oracle-calls` N times
(default 50) with the standard library's tracemalloc tracing (started for
the check only, 1 frame, stopped after); then pytest runs and reports the
test as usual. Each run sets the test's function-scoped fixtures up afresh
and tears them down, and keeps the wider ones (module, class, session), as
a suite runs a test: a leak through a new fixture value per run (a new
capture stream kept by a cache of the code under test, say) is seen. After
each of the N runs: gc.collect(), the interpreter's type attribute cache
emptied (a bounded cache holding the attribute names of recent lookups), and
tracemalloc's traced memory read. A least-squares line through (run number,
memory) gives the bytes kept per run. The verdict is "leaks" when that slope
is at least MIN_SLOPE bytes per run, memory after the last run exceeds
memory after the first by at least MIN_SLOPE * N * MIN_SHARE bytes, and each
quarter of the runs grows by at least its share of that: growth that goes
on, not a step or two. (One step of about 530 bytes in the middle of 50 runs
alone gives a slope of 16 and 530 bytes of growth: a deque moving to a new
block, a dict resized once, a lazy one-time allocation. And tracemalloc
counts a table made during the check that replaces one made before it
without the old one's free: os.environ's dict, rebuilt now and then as
pytest sets and removes PYTEST_CURRENT_TEST, is 2,200 bytes of one step.)
Else "clean". A test one of whose runs fails or skips is
"error" (it is not checked).

What pytest itself records per run is not counted as the test's: the
runs' reports are not logged (so the terminal keeps none of them); the
report sections (captured output) and user properties they add to the item
are dropped after each run; so are the finalizers that each run's function
fixtures leave with the wider fixtures they depend on (tmp_path's with
tmp_path_factory: pytest calls them when the wider fixture is torn down,
and they keep the run's request and item state); the temporary directories
a run makes under pytest's base temporary directory are removed after it,
and pytest's count of them set back, so that the next run's tmp_path has
the same name (pytest numbers them anew, and pathlib keeps an interned
copy of every path component it parses, immortal since CPython 3.12: 62
bytes per run); and warnings raised during the check are caught by the
oracle and dropped after each run.

The checked tests: every test pytest runs, or with `--leak-oracle-only
FILE` those whose node ids the file lists, one per line. The whole suite
still runs, in its own order, so a test meets the state the tests before it
left, as it does under heapsite.

One JSON object per line goes to `--leak-oracle-out PATH`:
{"nodeid", "verdict": "leaks"|"clean"|"error", "per_call": slope in bytes,
"calls": N}, plus "growth" (last minus first, bytes), "quarters" (the
growth over each quarter of the runs) and, for "error", "reason". Without
--leak-oracle-out the plugin checks nothing.
"""

from __future__ import annotations

import array
import gc
import json
import os
import shutil
import sys
import tracemalloc
import warnings

import pytest
from _pytest.runner import runtestprotocol

MIN_SLOPE = 16  # bytes per run
MIN_SHARE = 0.5  # of MIN_SLOPE * N, as growth from the first run to the last
QUARTERS = 4

_clear_type_cache = getattr(sys, "_clear_type_cache", None)


def pytest_addoption(parser):
    group = parser.getgroup("leak_oracle", "leak oracle (tracemalloc, memory against runs)")
    group.addoption(
        "--leak-oracle-calls",
        type=int,
        default=50,
        help="measured runs of each test (default 50)",
    )
    group.addoption(
        "--leak-oracle-warmup",
        type=int,
        default=5,
        help="unmeasured runs before them (default 5)",
    )
    group.addoption(
        "--leak-oracle-out",
        metavar="PATH",
        help="JSON lines file for the verdicts; the check runs only when given",
    )
    group.addoption(
        "--leak-oracle-only",
        metavar="FILE",
        help="check only the tests whose node ids FILE lists, one per line (default: all)",
    )


def pytest_configure(config):
    path = config.getoption("--leak-oracle-out")
    calls = config.getoption("--leak-oracle-calls")
    warmup = config.getoption("--leak-oracle-warmup")
    if path is not None and (calls < 2 * QUARTERS or warmup < 1):  # quarters of 2+ runs
        raise pytest.UsageError(
            f"--leak-oracle-calls needs at least {2 * QUARTERS}, --leak-oracle-warmup 1+"
        )
    only = config.getoption("--leak-oracle-only")
    try:
        config._leak_oracle_only = None if only is None else _node_ids(only)
    except OSError as e:
        raise pytest.UsageError(f"--leak-oracle-only: {e}") from None
    config._leak_oracle_out = open(path, "w") if path is not None else None  # noqa: SIM115


def _node_ids(path: str) -> set[str]:
    with open(path) as f:
        return {line.strip() for line in f if line.strip()}


def pytest_unconfigure(config):
    out = getattr(config, "_leak_oracle_out", None)
    if out is not None:
        out.close()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    """Checks the test, then leaves its usual run and report to pytest."""
    config = item.config
    out = config._leak_oracle_out
    only = config._leak_oracle_only
    if out is None or (only is not None and item.nodeid not in only):
        return None
    calls = config.getoption("--leak-oracle-calls")
    warmup = config.getoption("--leak-oracle-warmup")
    out.write(json.dumps(check(item, warmup, calls)) + "\n")
    out.flush()
    return None


def check(item, warmup: int, calls: int) -> dict:
    """The verdict on `item`, run warmup + calls times."""
    if tracemalloc.is_tracing():
        return _error(item, calls, "tracemalloc was already tracing")
    # Filled in place: storing a reading allocates nothing that outlives it.
    memory = array.array("q", bytes(8 * calls))
    # The objects alive before the check are frozen for it, so each run's
    # collection scans only what the runs made (0.1 s each in click's
    # session, which keeps 31,000 deselected tests): the verdict is the
    # same, since a frozen object still keeps what it refers to alive.
    frozen_before = gc.get_freeze_count()
    gc.collect()
    gc.freeze()
    tracemalloc.start(1)
    try:
        with _DropPytestRecords(item) as drop:
            for index in range(-warmup, calls):
                failed = _run_once(item)
                if index == -warmup:
                    drop.note_wider_state()
                drop.after_run()
                if failed is not None:
                    return _error(item, calls, f"run {index + warmup + 1} {failed}")
                if index >= 0:
                    _settle()
                    memory[index] = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        if not frozen_before:  # else the program froze first, and keeps it so
            gc.unfreeze()
    slope = _slope(memory)
    ends = [calls * part // QUARTERS - 1 for part in range(QUARTERS + 1)]
    ends[0] = 0
    quarters = [memory[end] - memory[start] for start, end in zip(ends, ends[1:])]
    return {
        "nodeid": item.nodeid,
        "verdict": verdict(slope, memory[-1] - memory[0], quarters, calls),
        "per_call": round(slope, 1),
        "calls": calls,
        "growth": memory[-1] - memory[0],
        "quarters": quarters,
    }


def _run_once(item) -> str | None:
    """One unlogged run of the test's protocol, torn down to its parent (its
    function-scoped fixtures only); what went wrong, or None."""
    for report in runtestprotocol(item, log=False, nextitem=item.parent):
        if not report.passed:
            text = getattr(report, "longreprtext", "") or ""
            first = (text.strip().splitlines() or [""])[-1][:200]
            return f"{report.outcome} in {report.when}: {first}"
    return None


def _error(item, calls: int, reason: str) -> dict:
    return {
        "nodeid": item.nodeid,
        "verdict": "error",
        "per_call": None,
        "calls": calls,
        "reason": reason,
    }


def verdict(slope: float, growth: int, quarters: list[int], calls: int) -> str:
    """ "leaks" or "clean" (see the module's docstring)."""
    wanted = MIN_SLOPE * calls * MIN_SHARE
    steady = all(grown >= wanted / QUARTERS for grown in quarters)
    return "leaks" if slope >= MIN_SLOPE and growth >= wanted and steady else "clean"


def _settle() -> None:
    gc.collect()
    if _clear_type_cache is not None:
        _clear_type_cache()


def _slope(memory) -> float:
    """Least-squares slope of memory against run number (1..N), bytes per run."""
    n = len(memory)
    mean_x = (n + 1) / 2
    mean_y = sum(memory) / n
    sxy = sum((i + 1 - mean_x) * (y - mean_y) for i, y in enumerate(memory))
    sxx = sum((i + 1 - mean_x) ** 2 for i in range(n))
    return sxy / sxx


class _DropPytestRecords:
    """Keeps what pytest records per run from counting as the test's.

    Warnings: pytest catches them for the whole protocol and keeps each one
    until the test ends; during the check they are caught here instead
    (the filters in force stay as they are) and dropped after each run.
    Report sections (each phase's captured output and log) and user
    properties: pytest adds them to the item, for the report; the ones the
    runs add are dropped. Finalizers of the wider fixtures: those the runs
    after the first add (the first may set a wider fixture up, with its own
    tear-down) are dropped. Temporary directories: those the runs after the
    first make under pytest's base temporary directory are removed, and
    pytest 9's count of names by prefix set back."""

    def __init__(self, item: pytest.Item):
        self._item = item
        self._sections = len(item._report_sections)
        self._properties = len(item.user_properties)
        self._finalizers: list[tuple[list, int]] = []
        self._base_temp: str | None = None
        self._made_before: set[str] = set()
        self._counters: dict | None = None  # pytest 9's next number by prefix
        self._counted: dict = {}

    def __enter__(self):
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        return self

    def note_wider_state(self) -> None:
        """After the first run (which may set wider fixtures up, with their
        own tear-down): what the later runs' additions are told from."""
        self._finalizers = [(kept, len(kept)) for kept in _wider_finalizers(self._item)]
        factory = getattr(self._item.config, "_tmp_path_factory", None)
        base = getattr(factory, "_basetemp", None)
        if base is not None:
            self._base_temp = str(base)
            self._made_before = set(os.listdir(base))
        counters = getattr(factory, "_next_number", None)
        if isinstance(counters, dict):
            self._counters, self._counted = counters, dict(counters)

    def after_run(self) -> None:
        del self._caught[:]
        del self._item._report_sections[self._sections :]
        del self._item.user_properties[self._properties :]
        for kept, count in self._finalizers:
            del kept[count:]
        if self._base_temp is not None:
            for name in set(os.listdir(self._base_temp)) - self._made_before:
                shutil.rmtree(os.path.join(self._base_temp, name), ignore_errors=True)
        if self._counters is not None:
            self._counters.update(self._counted)

    def __exit__(self, *exc_info):
        self.after_run()
        return self._warnings.__exit__(*exc_info)


def _wider_finalizers(item: pytest.Item) -> list[list]:
    """The finalizer lists of the fixtures wider than a function that `item`
    uses (pytest's FixtureDef._finalizers)."""
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.values() if info is not None else ()
    return [
        fixture._finalizers
        for chain in definitions
        for fixture in chain
        if fixture.scope != "function" and isinstance(getattr(fixture, "_finalizers", None), list)
    ]
