"""The session summary of the pytest plugin, like pytest-memray's: the tests
with the largest peak memory and the tests that leaked, with their top sites.

Per-test figures travel in `report.user_properties` (so that pytest-xdist
brings them from the workers to the controller) as ("heapsite", dict).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from .._format import format_size

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any

    import pytest
    from _pytest.terminal import TerminalReporter

KEY = "heapsite"
TOP_TESTS = 5
TOP_SITES = 3


def site_line(frames: Sequence[tuple], size: int) -> str:
    """`file:line in function -> size` for a site's most recent frame."""
    if not frames:
        return f"<no Python frame> -> {format_size(size)}"
    filename, lineno, name = frames[0][:3]
    return f"{filename}:{lineno} in {name} -> {format_size(size)}"


def other_lines(size: int) -> str:
    """What the lines not listed add (negative when they freed more than
    they took), so that a test's lines add up to its peak."""
    return f"other lines -> {format_size(size, sign=size < 0)}"


class PeakSites:
    """Top sites at a test's peak, worked out only for the tests that enter
    this process's running top (a full site listing is too dear per test)."""

    def __init__(self, size=TOP_TESTS):
        self.size = size
        self.peaks = []  # a min-heap of the largest peaks seen here

    def wanted(self, peak: int) -> bool:
        if len(self.peaks) < self.size:
            heapq.heappush(self.peaks, peak)
            return True
        if peak > self.peaks[0]:
            heapq.heapreplace(self.peaks, peak)
            return True
        return False


def collect(config: Any, report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for name, value in getattr(report, "user_properties", ()):
        if name == KEY and isinstance(value, dict):
            config._heapsite_report.append((report.nodeid, value))


def write(terminalreporter: TerminalReporter, results: list[tuple[str, dict]]) -> None:
    if not results:
        return
    terminalreporter.section("heapsite: largest peak memory per test")
    for nodeid, data in sorted(results, key=lambda r: -r[1].get("peak", 0))[:TOP_TESTS]:
        terminalreporter.write_line(f"{format_size(data.get('peak', 0)):>10}  {nodeid}")
        for line in data.get("peak_sites", [])[: TOP_SITES + 1]:
            terminalreporter.write_line(f"              {line}")
    leaked = [r for r in results if r[1].get("leaked")]
    if leaked:
        terminalreporter.section("heapsite: tests that leaked")
        for nodeid, data in sorted(leaked, key=lambda r: -r[1]["leaked"]):
            what = data.get("leak_kind", "leaked")
            terminalreporter.write_line(f"{format_size(data['leaked']):>10}  {nodeid} ({what})")
            for line in data.get("leak_sites", [])[:TOP_SITES]:
                terminalreporter.write_line(f"              {line}")
