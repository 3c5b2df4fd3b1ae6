"""An independent leak oracle for pytest tests: does memory grow with the number of calls?

A pytest plugin module that does not import heapsite. Loaded with `bench/`
on PYTHONPATH:

    PYTHONPATH=bench python -m pytest -p leak_oracle --leak-oracle-out out.jsonl NODEID...

After pytest's own call of a test has passed, the test function is called
again `--leak-oracle-warmup` times (default 5), then `--leak-oracle-calls` N
times (default 50) with the standard library's tracemalloc tracing (started
for the check only, 1 frame, stopped after). After each of the N calls:
gc.collect(), the interpreter's type attribute cache emptied (a bounded
cache holding the attribute names of recent lookups), and tracemalloc's
traced memory read. A least-squares line through (call number, memory)
gives the bytes kept per call. The verdict is "leaks" when that slope is at
least MIN_SLOPE bytes per call, memory after the last call exceeds memory
after the first by at least MIN_SLOPE * N * MIN_SHARE bytes, and each half
of the calls grows by at least its share of that (N/2 * MIN_SLOPE *
MIN_SHARE): growth that goes on, not one step. (One step of about 530 bytes
in the middle of 50 calls alone gives a slope of 16 and 530 bytes of
growth: a deque moving to a new block, a dict resized once, a lazy one-time
allocation.) Else "clean". A test whose repeated calls raise is "error", and
so is one whose own call failed or was skipped (it is not checked).

The repeated calls are `item.runtest()` alone: fixtures are not set up
again, so every call shares the first call's fixture values. What pytest
itself records per call is not counted as the test's: warnings raised
during the check are caught by the oracle and dropped after each call, and
log records that pytest's capture handlers took during a call are dropped
after it. A `monkeypatch` fixture is undone after each call, as its
teardown does: it keeps every value it replaced, for the undo, so a test
that patches in a new lambda each call would grow by it.

One JSON object per line goes to `--leak-oracle-out PATH`:
{"nodeid", "verdict": "leaks"|"clean"|"error", "per_call": slope in bytes,
"calls": N}, plus "growth" (last minus first, bytes), "halves" (the growth
over each half of the calls) and, for "error", "reason". Without
--leak-oracle-out the plugin checks nothing.
"""

from __future__ import annotations

import array
import gc
import json
import logging
import sys
import tracemalloc
import warnings

import pytest

MIN_SLOPE = 16  # bytes per call
MIN_SHARE = 0.5  # of MIN_SLOPE * N, as growth from the first call to the last

# What a repeated call may raise: pytest.fail, pytest.skip and pytest.xfail
# raise BaseExceptions of pytest's own.
RAISED = (Exception, pytest.fail.Exception, pytest.skip.Exception, pytest.xfail.Exception)

_clear_type_cache = getattr(sys, "_clear_type_cache", None)


def pytest_addoption(parser):
    group = parser.getgroup("leak_oracle", "leak oracle (tracemalloc, memory against calls)")
    group.addoption(
        "--leak-oracle-calls",
        type=int,
        default=50,
        help="measured calls of each test (default 50)",
    )
    group.addoption(
        "--leak-oracle-warmup",
        type=int,
        default=5,
        help="unmeasured calls before them (default 5)",
    )
    group.addoption(
        "--leak-oracle-out",
        metavar="PATH",
        help="JSON lines file for the verdicts; the check runs only when given",
    )


def pytest_configure(config):
    path = config.getoption("--leak-oracle-out")
    calls = config.getoption("--leak-oracle-calls")
    warmup = config.getoption("--leak-oracle-warmup")
    if path is not None and (calls < 4 or warmup < 0):  # halves of at least 2 calls
        raise pytest.UsageError("--leak-oracle-calls needs at least 4, --leak-oracle-warmup 0+")
    config._leak_oracle_out = open(path, "w") if path is not None else None  # noqa: SIM115


def pytest_unconfigure(config):
    out = getattr(config, "_leak_oracle_out", None)
    if out is not None:
        out.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    outcome = yield
    out = item.config._leak_oracle_out
    if out is None:
        return
    calls = item.config.getoption("--leak-oracle-calls")
    warmup = item.config.getoption("--leak-oracle-warmup")
    if outcome.excinfo is not None:
        kind = "skipped" if isinstance(outcome.excinfo[1], pytest.skip.Exception) else "failed"
        record = _error(item, calls, f"the test's own call {kind}")
    else:
        record = check(item, warmup, calls)
    out.write(json.dumps(record) + "\n")
    out.flush()


def _error(item, calls: int, reason: str) -> dict:
    return {
        "nodeid": item.nodeid,
        "verdict": "error",
        "per_call": None,
        "calls": calls,
        "reason": reason,
    }


def check(item, warmup: int, calls: int) -> dict:
    """The verdict on `item`, called warmup + calls more times."""
    if tracemalloc.is_tracing():
        return _error(item, calls, "tracemalloc was already tracing")
    # Filled in place: storing a reading allocates nothing that outlives it.
    memory = array.array("q", bytes(8 * calls))
    tracemalloc.start(1)
    try:
        with _DropPytestRecords(item) as drop:
            for _ in range(warmup):
                item.runtest()
                drop.after_call()
            for index in range(calls):
                item.runtest()
                drop.after_call()
                _settle()
                memory[index] = tracemalloc.get_traced_memory()[0]
    except RAISED as e:  # the test failed (or skipped itself) when called again
        first = (str(e).splitlines() or [""])[0][:200]
        return _error(item, calls, f"a repeated call raised {type(e).__name__}: {first}")
    finally:
        tracemalloc.stop()
    slope = _slope(memory)
    half = calls // 2
    halves = (memory[half - 1] - memory[0], memory[-1] - memory[half - 1])
    return {
        "nodeid": item.nodeid,
        "verdict": verdict(slope, memory[-1] - memory[0], halves, calls),
        "per_call": round(slope, 1),
        "calls": calls,
        "growth": memory[-1] - memory[0],
        "halves": halves,
    }


def verdict(slope: float, growth: int, halves: tuple[int, int], calls: int) -> str:
    """ "leaks" or "clean" (see the module's docstring)."""
    wanted = MIN_SLOPE * calls * MIN_SHARE
    steady = all(grown >= wanted / 2 for grown in halves)
    return "leaks" if slope >= MIN_SLOPE and growth >= wanted and steady else "clean"


def _settle() -> None:
    gc.collect()
    if _clear_type_cache is not None:
        _clear_type_cache()


def _slope(memory) -> float:
    """Least-squares slope of memory against call number (1..N), bytes per call."""
    n = len(memory)
    mean_x = (n + 1) / 2
    mean_y = sum(memory) / n
    sxy = sum((i + 1 - mean_x) * (y - mean_y) for i, y in enumerate(memory))
    sxx = sum((i + 1 - mean_x) ** 2 for i in range(n))
    return sxy / sxx


class _DropPytestRecords:
    """Keeps what pytest records per call from counting as the test's.

    Warnings: pytest catches them for the whole test and keeps each one
    until the test ends; during the check they are caught here instead
    (the filters in force stay as they are) and dropped after each call.
    Logs: pytest's capture handlers (caplog's and the report's) keep every
    record of the call phase; those the repeated calls add are dropped.
    monkeypatch: undone after each call (its undo list keeps what it
    replaced)."""

    def __init__(self, item: pytest.Item):
        self._patcher = getattr(item, "funcargs", {}).get("monkeypatch")

    def __enter__(self):
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        self._handlers = [
            (handler, len(handler.records), handler.stream, handler.stream.tell())
            for handler in _capture_handlers()
        ]
        return self

    def after_call(self) -> None:
        if self._patcher is not None:
            self._patcher.undo()
        del self._caught[:]
        for handler, count, stream, position in self._handlers:
            del handler.records[count:]
            if handler.stream is stream and stream.tell() > position:
                stream.seek(position)
                stream.truncate()

    def __exit__(self, *exc_info):
        self.after_call()
        return self._warnings.__exit__(*exc_info)


def _capture_handlers() -> list:
    """pytest's log capture handlers now on the root logger: a list of
    records and a text stream each."""
    return [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(getattr(handler, "records", None), list)
        and hasattr(getattr(handler, "stream", None), "truncate")
    ]
