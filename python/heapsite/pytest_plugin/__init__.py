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

import gc
import os
import sys
from collections.abc import Callable, Iterable, MutableSequence, Sequence

import pytest

from .. import (
    _core,
    _heap,
    format_size,
    is_tracing,
    parse_size,
    reset_peak,
    snapshot,
    start,
    stop,
)
from .. import _own as own_work
from .._plumbing import fold_import_system
from .._snapshot import Frame, StatisticDiff, Traceback
from . import _causes, _summary, _threads
from ._freezer import Freezer
from ._growth import KindsEveryRound
from ._rerun import fixtures_torn_down, repeatable, run_again
from ._sites import OWN, Column, ProgramSites, figures, own

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any

    from ._threads import Foreign

FRAMES = 16
TOP_SITES = 5


def _program_snapshot():
    return snapshot().filter(exclude=[OWN + "*"])


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
    group.addoption(
        "--heapsite-leaks-baseline",
        metavar="FILE",
        help="known leaks by cause (a JSON file): a leak through one of them fails nothing, "
        "and one gone is said",
    )
    group.addoption(
        "--heapsite-leaks-update-baseline",
        action="store_true",
        help="write the leaks found, by cause, to the --heapsite-leaks-baseline file; no leak "
        "fails the run",
    )
    parser.addini(
        "heapsite_leaks_ignore",
        type="linelist",
        help="heapsite: leaks whose holder or allocating file matches one of these patterns "
        "(fnmatch) are reported and fail nothing",
    )
    group.addoption(
        "--heapsite-all-threads",
        action="store_true",
        help="count other threads' allocations against the test too (default: the test's "
        "own thread only)",
    )


# Last: pytest-memray's own pytest_configure has made its manager by then,
# which _retire_memray_manager takes back (see there).
@pytest.hookimpl(trylast=True)
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
    active = bool(config.getoption("--heapsite") or config.getoption("--heapsite-leaks"))
    config._heapsite_active = active
    config._heapsite_report = []
    config._heapsite_peaks = _summary.PeakSites()
    config._heapsite_freezer = Freezer()
    if not active:
        return
    if is_tracing() and _core.sample_rate():
        # A per-test limit or leak verdict on estimates would pass or fail by chance.
        raise pytest.UsageError(
            "--heapsite needs every allocation traced, and heapsite is sampling "
            f"(one per {format_size(_core.sample_rate())}: --sample, HEAPSITE_SAMPLE or "
            "heapsite.start(sample_every=...)); run pytest without sampling"
        )
    rounds = config.getoption("--heapsite-rounds")
    if rounds < 2:
        raise pytest.UsageError(
            f"--heapsite-rounds needs a whole number of at least 2, got {rounds}"
        )
    config._heapsite_baseline = _baseline(config)
    # Causes found so far this session, by where they allocate: a later
    # test leaking there is told by its sites alone (_through_a_known_cause).
    config._heapsite_known = {}
    # Sites whose count of blocks grew in every round of a test while no
    # kind of object grew over the whole heap: not taken for growth again
    # (see _leak_check).
    config._heapsite_blocks_not_objects = set()
    config.pluginmanager.register(_Collector(config), "heapsite_collector")
    if not _memray_asked(config):
        # pytest-memray acts on the same marker names; under --heapsite they are ours.
        _retire_memray_manager(config)
    if not is_tracing():
        start(FRAMES)


def _baseline(config: pytest.Config) -> _causes.Baseline | None:
    """The --heapsite-leaks-baseline file read, or None; a usage error for
    one that cannot be read, or for an update without a file."""
    path = config.getoption("--heapsite-leaks-baseline")
    update = config.getoption("--heapsite-leaks-update-baseline")
    if path is None:
        if update:
            raise pytest.UsageError(
                "--heapsite-leaks-update-baseline needs --heapsite-leaks-baseline FILE"
            )
        return None
    try:
        return _causes.Baseline.read(path, missing_ok=update)
    except _causes.BaselineError as e:
        raise pytest.UsageError(str(e)) from None


def _retire_memray_manager(config: pytest.Config) -> None:
    """Takes pytest-memray's manager out, as it would have left: its
    pytest_configure always makes one, with a temporary directory named in
    MEMRAY_RESULT_PATH for its workers. Blocked before it registers, the
    manager was dropped with its directory (a ResourceWarning, an error
    under `filterwarnings = error`) and the variable left naming a
    directory that no longer exists."""
    manager = config.pluginmanager.get_plugin("memray_manager")
    if manager is not None:
        config.pluginmanager.unregister(manager)
        made_here = getattr(manager, "_tmp_dir", None)
        if made_here is not None:
            made_here.cleanup()
            os.environ.pop("MEMRAY_RESULT_PATH", None)
    config.pluginmanager.set_blocked("memray_manager")


def _memray_asked(config: pytest.Config) -> bool:
    try:
        return bool(config.getoption("memray", False) or config.getini("memray"))
    except (ValueError, KeyError):
        return False


def pytest_unconfigure(config):
    if getattr(config, "_heapsite_active", False):
        config._heapsite_freezer.at_end()
        stop()


def _marker_size(item, name):
    marker = item.get_closest_marker(name)
    if marker is None:
        return None
    if len(marker.args) != 1 or marker.kwargs:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{name} takes one size, like '24 MB'")
    try:
        return parse_size(marker.args[0])
    except (ValueError, TypeError) as e:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{name}: {e}") from None


def _rounds(item):
    marker = item.get_closest_marker("no_leaks")
    if marker is None:
        if item.config.getoption("--heapsite-leaks") and repeatable(item) is None:
            return item.config.getoption("--heapsite-rounds")
        return None
    rounds = marker.kwargs.get("rounds", marker.args[0] if marker.args else 3)
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 2:
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.no_leaks(rounds=...) needs a whole number of at least "
            f"2, got {rounds!r}"
        )
    why = repeatable(item)
    if why:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.no_leaks cannot be used: {why}")
    return rounds


def pytest_collection_modifyitems(config, items):
    # Check the markers' arguments before anything runs: a usage error, not a crash.
    for item in items:
        _marker_size(item, "limit_memory")
        _marker_size(item, "limit_leaks")
        _rounds(item)


SHOWN_FRAMES = 3  # of a site's traceback, most recent first
REACHED_FRAMES = 8  # shown to reach the test's own line, if it is that close


def _site_lines(diffs: list[StatisticDiff], test_file: str, limit: int = TOP_SITES) -> list[str]:
    """Each site as tracemalloc's StatisticDiff line and the most recent
    frames of its traceback, down to the test's own line: a test that
    leaks through a library (jinja2 templates kept in a module list) is
    named at the line that called it as well as the library's."""
    lines = []
    for diff in diffs[:limit]:
        lines.append(f"  {diff}")
        frames = list(diff.traceback)
        own = next((i for i, f in enumerate(frames) if _same_file(f.filename, test_file)), None)
        if own is None or own < SHOWN_FRAMES:
            shown = frames[:SHOWN_FRAMES]
        elif own < REACHED_FRAMES:
            shown = frames[: own + 1]
        else:
            shown = frames[:SHOWN_FRAMES] + [None] + [frames[own]]
        for frame in shown:
            if frame is None:
                lines.append("      ...")
            else:
                lines.extend("  " + line for line in Traceback([frame]).format())
    return lines


def _same_file(filename: str, test_file: str) -> bool:
    return os.path.normcase(os.path.abspath(filename)) == test_file


def _short_sites(diffs):
    return [
        _summary.site_line(tuple((f.filename, f.lineno, f.name) for f in d.traceback), d.size_diff)
        for d in diffs[: _summary.TOP_SITES]
    ]


def _thread_peak(baseline: Column, foreign: Foreign | None) -> int:
    """The test thread's growth at the moment of the peak: each site's bytes
    live at the peak less its bytes live when the test began (`baseline`,
    the live column of figures()), summed over the program's sites."""
    sites = ProgramSites.of(foreign)
    _, _, at_peak = figures()
    return sum(
        peak - (baseline[site] if site < len(baseline) else 0)
        for site, peak in enumerate(at_peak)
        if sites.is_program(site)
    )


@own_work.own_work
def _grown_sites(
    grown: Iterable[_core.GrownSite],
    sites: ProgramSites,
    only: set[int] | None = None,
    limit: int = TOP_SITES,
) -> list[StatisticDiff]:
    """Of `grown` (the core's rounds_grown or sites_grown_since_mark, most
    growth first), the program's sites, at most `limit`, as tracemalloc's
    StatisticDiff lines; given `only`, just those of its sites."""
    diffs = []
    for site, live, growth, count, count_diff in grown:
        if only is not None and site not in only:
            continue
        if not sites.is_program(site):
            continue
        traceback = Traceback(Frame(*frame) for frame in _core.frames_of(site))
        diffs.append(StatisticDiff(traceback, live, growth, count, count_diff))
        if len(diffs) == limit:
            break
    return diffs


def _peak_sites(peak: int) -> list[str]:
    """The lines that grew the most from the test's start to its peak (see
    _heapsite.peak_sites; an import's growth is the importing line's, and a
    line's sites are one), then what the other lines add, so that the
    listing adds up to the test's peak."""
    by_line: dict = {}  # (file, line) -> [bytes, its largest site's frame]
    try:
        grown_sites = _core.peak_sites(64)  # largest first
    except MemoryError:
        # heapsite had no memory to note what sites held at the test's start:
        # the peak stands, without its split by line.
        return []
    for grown in grown_sites:
        recorded = _core.frames_of(grown.site_id)
        if not own(recorded):
            frames = fold_import_system(recorded)
            key = tuple(frames[0][:2]) if frames else None
            entry = by_line.setdefault(key, [0, frames[0] if frames else None])
            entry[0] += grown.bytes
    top = sorted(by_line.values(), key=lambda entry: -entry[0])[: _summary.TOP_SITES]
    lines = [_summary.site_line((frame,) if frame else (), size) for size, frame in top]
    rest = peak - sum(size for size, _ in top)
    if top and rest:
        lines.append(_summary.other_lines(rest))
    return lines


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # Before the fixtures are set up: see _freezer. A test that is not
    # checked (a unittest method) runs with nothing frozen, as without
    # heapsite: it has no round to run again in if freezing fails it.
    if not item.config._heapsite_active:
        return
    if _rounds(item) is not None:
        item.config._heapsite_freezer.before_test()
    else:
        item.config._heapsite_freezer.thaw()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    config = item.config
    if not config._heapsite_active:
        yield
        return
    memory_limit = _marker_size(item, "limit_memory")
    leak_limit = _marker_size(item, "limit_leaks")
    rounds = _rounds(item)
    foreign = None if config.getoption("--heapsite-all-threads") else _threads.foreign_test(FRAMES)
    if leak_limit is not None:
        gc.collect()
    before = _program_snapshot() if leak_limit is not None else None
    baseline = figures()[0] if memory_limit is not None and foreign else None
    start_current = _core.traced_memory().current
    reset_peak()
    outcome = yield
    peak = _core.traced_memory().peak - start_current
    data: dict[str, object] = {"peak": peak}
    item._heapsite_data = data
    if config._heapsite_peaks.wanted(peak):
        data["peak_sites"] = _peak_sites(peak)
    if outcome.excinfo is not None:
        if rounds is None or not _passes_thawed(item, outcome.excinfo[1]):
            return
        outcome.force_result([])  # the hook's results: a list, none from pytest's
    failures = []
    if memory_limit is not None:
        if baseline is not None:
            peak = min(peak, _thread_peak(baseline, foreign)) if peak > memory_limit else peak
        if peak > memory_limit:
            failures.append(
                f"Test was limited to {format_size(memory_limit)} but allocated {format_size(peak)}"
            )
    if leak_limit is not None:
        gc.collect()
        diffs = [
            d
            for d in _program_snapshot().compare_to(before, "traceback")
            if d.size_diff > leak_limit and not (foreign and foreign(d.traceback))
        ]
        if diffs:
            failures.append(
                f"Test was allowed to leak {format_size(leak_limit)} per location but at least "
                "one location leaked more:"
            )
            failures.extend(_site_lines(diffs, _test_file(item)))
            data.update(
                leaked=sum(d.size_diff for d in diffs),
                leak_kind="limit_leaks",
                leak_sites=_short_sites(diffs),
            )
    if rounds is not None:
        message = _leak_check(item, rounds, foreign, data)
        data["checked"] = True  # not when a round raised: its cause is not known gone
        if message and _fails(config, data):
            failures.append(message)
    if failures:
        # Told in the call's report (pytest_runtest_makereport), not raised
        # here: a raised failure's report is formatted from its traceback
        # through pytest's and pluggy's frames, 5% of click's checked run
        # with its 1,006 leaking tests.
        item._heapsite_failure = "\n".join(failures)


def _passes_thawed(item: Any, error: BaseException) -> bool:
    """Whether a test whose call failed with objects frozen (see _freezer)
    passes when run again with none: a test that needs an object older
    than its set-up collected. Judged by that run, as without heapsite. A
    skip or an expected failure is not run again."""
    if isinstance(error, (pytest.skip.Exception, pytest.xfail.Exception)):
        return False
    if not item.config._heapsite_freezer.thaw():
        return False
    try:
        run_again(item)
    except Exception:
        return False
    return True


def _fails(config: Any, data: dict) -> bool:
    """Whether a leak fails its test: not when its cause is in the baseline,
    matches heapsite_leaks_ignore, or the baseline is being written. The
    verdict goes with the test's figures to the summary."""
    cause = data.get("leak_cause")
    verdict = _verdict(config, cause) if cause is not None else "new"
    data["leak_verdict"] = verdict
    return verdict == "new"


def _verdict(config: Any, cause: dict) -> str:
    """new (fails), recorded (the baseline is being written), known (in the
    baseline) or ignored (heapsite_leaks_ignore)."""
    baseline = config._heapsite_baseline
    if config.getoption("--heapsite-leaks-update-baseline"):
        return "recorded"
    if baseline is not None and baseline.has(cause):
        return "known"
    if _causes.ignored(cause, config.getini("heapsite_leaks_ignore")):
        return "ignored"
    return "new"


# First: the outermost wrapper, so that the report it fails is the one the
# others (pytest's xfail handling) have made.
@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when != "call":
        return
    report = outcome.get_result()
    failure = item.__dict__.pop("_heapsite_failure", None)
    if failure is not None and report.passed:
        if hasattr(report, "wasxfail"):
            report.outcome = "skipped"  # a test expected to fail: it did
        else:
            report.outcome = "failed"
            report.longrepr = _Failure(failure, item)
    data = item.__dict__.pop("_heapsite_data", None)
    if data is not None:
        report.user_properties.append((_summary.KEY, data))


class _Crash:
    """Where and why a test failed, as pytest's short summary and `--tb=line`
    read it from a report (`longrepr.reprcrash`)."""

    def __init__(self, path: str, lineno: int, message: str):
        self.path, self.lineno, self.message = path, lineno, message

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}: {self.message}"


class _Failure:
    """A leak's failure as the test's report holds it: the message as it
    is, and its first line for the short summary (which pytest before 9
    reads only from a `reprcrash`, not from a plain text)."""

    def __init__(self, text: str, item: pytest.Item):
        self.text = text
        path, lineno, _ = item.location
        self.reprcrash = _Crash(path, (lineno or 0) + 1, text.split("\n", 1)[0])

    def toterminal(self, out: Any) -> None:
        for line in self.text.splitlines():
            out.line(line)

    def __str__(self) -> str:
        return self.text


class _Collector:
    """Gathers the per-test figures from the reports (the workers' too, under
    pytest-xdist) for the session summary."""

    def __init__(self, config):
        self.config = config

    def pytest_runtest_logreport(self, report):
        _summary.collect(self.config, report)


def _grew(figures: Sequence[int]) -> bool:
    return all(b > a for a, b in zip(figures, figures[1:]))


# The interpreter's own attribute cache keeps the name strings of recent
# lookups: `"{obj.attr}".format(...)` or `getattr(obj, "visit_" + kind)` make
# a new name string each call, and the cache fills with them over many
# rounds. Cleared before each measurement, it is not taken for the test's.
_clear_internal_caches = getattr(sys, "_clear_internal_caches", None) or getattr(
    sys, "_clear_type_cache", None
)


def _settle() -> None:
    """Frees what the test left unreachable, and empties the interpreter's
    caches that hold objects, before memory is measured. (A young-generation
    collection would be cheaper, but what it leaves lets clean tests through
    the cheap pass into the exact one, where pytest's own per-round objects
    look like growth.)"""
    gc.collect()
    if _clear_internal_caches is not None:
        _clear_internal_caches()


def _cheap_pass(
    item: Any,
    sizes: MutableSequence[int],
    blocks: MutableSequence[int],
    early: list | None = None,
    told: Callable[[int], bool] | None = None,
) -> bool:
    """Whether traced bytes or pymalloc blocks grew in every round, stopping
    at the first round that grows neither. Given `early`, the core is told
    after a first round that grew to note the sites touched from then on
    (whether it can goes to `early`), so that a leak where a known cause
    allocates is told without reading every site or more rounds: from
    the second round on, `told(index)` says whether it is, and ends the
    pass (as grown) if so.

    The objects alive before the test's set-up are frozen (see _freezer):
    each round's collection walks only what the test made. A clean test
    grows in no round from its first call on, and is cleared after one. A
    round that fails frozen is run again unfrozen, in case the test relies
    on the collector freeing something older than the test."""
    # The loop's iterator made before the first measurement: made after, it
    # is one block alive in the first round only, which every test grew by.
    indices = iter(range(1, len(sizes)))
    _settle()
    sizes[0], blocks[0] = _totals()
    for index in indices:
        _cheap_round(item)
        sizes[index], blocks[index] = _totals()
        if not (_grew(sizes[: index + 1]) or _grew(blocks[: index + 1])):
            return False
        if index == 1 and early is not None:
            measured = sizes[index]
            # From here on the core notes the sites touched: which grew is
            # then read from those alone (sites_grown_since_mark).
            early.append(_core.sites_mark())
            # Measured again: the next round is compared with memory
            # that holds the note's own, whose size is kept (early[1]) to
            # be left out of what a message shows.
            sizes[index], blocks[index] = _totals()
            early.append(sizes[index] - measured)
        elif early and told is not None and index < len(sizes) - 1 and told(index):
            return True
    return True


def _totals() -> tuple:
    """All traced bytes and pymalloc blocks, now."""
    return _core.traced_memory().current, sys.getallocatedblocks()


def _cheap_round(item: Any) -> None:
    """One round and a collection."""
    try:
        run_again(item)
    except Exception:
        if not item.config._heapsite_freezer.thaw():
            raise
        run_again(item)
    _settle()


# CPython 3.9 leaves objects of its own behind in every round that only a
# walk of the whole heap sees balanced (a type's dict, its method
# descriptors, arrays: found in CI, not yet explained), so there the exact
# pass thaws and walks the whole heap, as it did before.
_WALK_THE_TESTS_OWN = sys.version_info >= (3, 10)


def _leak_check(item, rounds, foreign, data):
    """Runs the test body `rounds` more times after the first (the warm-up)
    and reports growth that happens in every round, or None.

    A cheap pass first: all traced bytes and pymalloc blocks per round,
    stopping at the first round that grows neither. Only a test that grew in
    every round of it gets the exact pass: the same number of rounds again,
    measuring the program's own sites (less other threads' unless
    --heapsite-all-threads) and new objects by a heap walk."""
    # Figures go to C arrays made beforehand: no new Python object per round
    # of the check itself.
    sizes = Column.of([0] * (rounds + 1))
    blocks = Column.of([0] * (rounds + 1))
    known = item.config._heapsite_known
    early: list | None = [] if known else None
    sites = ProgramSites.of(foreign)
    message = None

    def through_a_known_cause(index: int) -> bool:
        """Whether the rounds so far leak through a known cause (the message
        then kept): a test leaking where a cause found already allocates
        pays two rounds, not the check's whole."""
        nonlocal message
        assert early  # the mark, taken after the first round
        shown = [sizes[0], *(size - early[1] for size in sizes[1 : index + 1])]
        message = _through_a_known_cause(item, shown, early[0], sites, known, data)
        return message is not None

    if not _cheap_pass(item, sizes, blocks, early, through_a_known_cause):
        return None
    if message is None and early:
        through_a_known_cause(rounds)
    if message is not None:
        return message

    try:
        return _exact_pass(item, rounds, sites, sizes, data)
    finally:
        _core.rounds_end()


def _exact_pass(
    item: Any, rounds: int, sites: ProgramSites, sizes: Column, data: dict
) -> str | None:
    """The exact pass of _leak_check: the leak message, or None.

    The exact pass measures what the test made, with the objects older than
    its set-up still frozen (_freezer): a round's collection and heap walk
    cost what the test's own objects do, not the whole heap (a click
    session keeps its 31,000 deselected tests: a whole-heap walk and a full
    collection took 0.2 s to 0.4 s each, six of each per test). Three
    measures, each of the program's own: its sites' live bytes, the
    objects made since the freeze, and each of its sites' live blocks (a
    site whose count grows in every round: new objects kept by an older
    container, which the walk from the collector's unfrozen objects does
    not reach, or one kind growing while another shrinks)."""
    walk = _heap.unfrozen_heap
    if not _WALK_THE_TESTS_OWN:
        item.config._heapsite_freezer.thaw()
        walk = _heap.whole_heap
    counts = Column.of([0] * (rounds + 1))
    # One more round first, so that the base is taken with a round's own
    # objects alive, as every later measurement is.
    run_again(item)
    _settle()
    # Which sites grow in every round, by live bytes and by live blocks, is
    # kept in the core (rounds_*): compared in Python, 339,000 sites of a
    # click session took a sixth of its checked run.
    _core.rounds_begin()
    not_objects = item.config._heapsite_blocks_not_objects
    kinds = KindsEveryRound()
    sizes[0] = sites.live_bytes()
    counts[0] = kinds.add(walk())
    for index in range(1, rounds + 1):
        walked = None  # the last round's partition is not in this round's walk
        run_again(item)
        _settle()
        _core.rounds_add()
        sizes[index] = sites.live_bytes()
        walked = walk()
        counts[index] = kinds.add(walked)
        # As in the cheap pass: a round that grows none ends the check.
        if not (
            _grew(sizes[: index + 1])
            or _grew(counts[: index + 1])
            or _blocks_grown(item, sites) - not_objects
        ):
            return None
    assert walked is not None  # at least one round ran
    leaked = kinds.leaked(walked)
    freezer = item.config._heapsite_freezer
    # A new object of a leaked kind is one made since the freeze, found
    # without a whole-heap walk while the objects older than the test are
    # still frozen; else (nothing frozen, or the kinds that grew found by
    # whole-heap walks) one that a whole-heap relheap did not see.
    since_freeze = freezer.frozen and bool(leaked.rows)
    if not leaked.rows:
        freezer.thaw()
        leaked = _grown_over_the_whole_heap(item, rounds)
        if not (leaked.rows or _grew(sizes) or _grew(counts)):
            # Only a site's count of blocks grew, and no kind of object did
            # over the whole heap: what grew is the interpreter's own, not
            # kept by the program (names it interns). Those sites are not
            # taken for growth again: each such test pays these two
            # whole-heap walks (35 of click's tests did, for pathlib's
            # interning of each round's tmp_path, before sites without a
            # frame of the project's were left out: _blocks_grown).
            not_objects.update(_blocks_grown(item, sites))
            return None
    path = _path_to_a_new_one(item, leaked, since_freeze) if leaked.rows else None
    # The sites that grew in every round; failing any, all that grew (the
    # last round's own allocations, alive until the next, are among those).
    grown = _core.rounds_grown()
    diffs = _grown_sites(grown, sites, set(_core.rounds_grew(False))) or _grown_sites(grown, sites)
    cause = _causes.cause_of(
        _top_frame(diffs), path, [row.name for row in leaked.rows[:3]], str(item.config.rootpath)
    )
    item.config._heapsite_known.setdefault(_causes.site_key_of(cause), (cause, item.nodeid))
    _record_leak(data, max(0, sizes[rounds] - sizes[0]) // rounds, diffs, cause)
    return _leak_message(item, sizes, counts, diffs, leaked, path)


@own_work.own_work
def _blocks_grown(item: Any, sites: ProgramSites) -> set[int]:
    """The program's sites whose count of blocks grew in every round of the
    exact pass so far, of those with a frame in the project's code: new
    objects the project keeps in an older container are made with its code
    on the stack, and what pytest's fixtures make or tear down between
    rounds (the names of each round's new tmp_path, interned by pathlib) is
    not (click's tests paid two whole-heap walks for each such site)."""
    rootdir = str(item.config.rootpath)
    return {
        site
        for site in sites.of_program(_core.rounds_grew(True))
        if any(_causes.is_projects(filename, rootdir) for filename, _ in _core.site_names(site))
    }


def _record_leak(data: dict, per_round: int, diffs: list[StatisticDiff], cause: dict) -> None:
    """A no_leaks failure's figures, for the session summary."""
    data.update(
        leaked=per_round,
        leak_kind="no_leaks, per round",
        leak_sites=_short_sites(diffs),
        leak_cause=cause,
    )


def _top_frame(diffs: list[StatisticDiff]) -> tuple | None:
    """(file, line, function) of the most recent frame of the site that grew
    the most, or None."""
    if not diffs or not len(diffs[0].traceback):
        return None
    top = diffs[0].traceback[0]
    return (top.filename, top.lineno, top.name)


def _through_a_known_cause(
    item: Any,
    sizes: Sequence[int],
    marked: bool,
    sites: ProgramSites,
    known: dict,
    data: dict,
) -> str | None:
    """The leak message of a test that leaks where a cause already found
    (earlier in the session, or in the baseline) allocates; None if it does
    not, and the exact pass decides.

    `sizes` are the cheap pass's, less the figures' own arrays. Told by the
    cheap pass alone, no more rounds, no heap walk, no chain of
    references: memory grew in every round of it, and of the program's
    sites, the one that grew the most from the end of its first round
    (`marked`: sites_mark() then) to its end is where the known cause
    allocates.
    Fifty tests that leak through one cache pay the exact pass once. (A
    test that leaks through the same function into another holder is taken
    for the same cause.)"""
    if not _grew(sizes):
        return None
    rootdir = str(item.config.rootpath)
    grown = _core.sites_grown_since_mark() if marked else None
    if grown is None:  # no mark, or the note of touched sites missed some
        return None
    diffs = _grown_sites(grown, sites)
    entry = known.get(_causes.site_key(_top_frame(diffs), rootdir))
    if not diffs or entry is None:
        return None
    cause, first = entry
    if _verdict(item.config, cause) in ("known", "ignored"):
        # The test would pass on the cause's word: only the exact pass, with
        # the holder found, may say that it leaks through a known cause.
        return None
    site_now = _causes.shown_site(_top_frame(diffs), rootdir)
    _record_leak(data, max(0, sizes[-1] - sizes[1]) // max(len(sizes) - 2, 1), diffs, cause)
    where = f"the cause found in {first}"
    return "\n".join(
        [
            f"{item.nodeid} leaks: {_what_grew(sizes, sizes)}, through {where}: allocated at "
            f"{site_now}, held by {cause['holder'] or 'no Python object'}.",
            "",
            "Where it was allocated (top call sites of what is still allocated):",
            *_site_lines(diffs, _test_file(item)),
        ]
    )


def _grown_over_the_whole_heap(item: Any, rounds: int) -> _heap.Partition:
    """The kinds that grow over `rounds` more rounds, counted over the whole
    heap: what the exact pass's walks of the test's own objects cannot see,
    new objects that hold no reference (strings, numbers) kept by an older
    container (a module's list). Only a failing test pays these two
    whole-heap walks."""
    kinds = KindsEveryRound()
    kinds.add(_heap.whole_heap())
    for _ in range(rounds):
        run_again(item)
    _settle()
    walked = _heap.whole_heap()
    kinds.add(walked)
    return kinds.leaked(walked)


def _path_to_a_new_one(item: Any, leaked: _heap.Partition, since_freeze: bool) -> str | None:
    """A reference chain to one object of the first kind of `leaked` that one
    more round makes (a kind that grew in every round grows in that one
    too), or with `since_freeze`, that the rounds made since the objects
    older than the test were frozen. The chain is found with the round's
    fixtures torn down, so that it ends at what keeps the object for good
    (click's stream cache) rather than at the round's own fixture (the
    capsys stream in sys.stderr). (Only a failing test pays for this round
    and the relheap it needs.)"""
    if since_freeze and _heap.collector_may_track(leaked.rows[0]):
        # The objects the collector tracks since the freeze: a leaked kind
        # whose new ones are not reached is looked for the whole-heap way
        # below; so is one whose objects it never tracks (str, bytes), at
        # once: this search would walk everything reachable to find none.
        try:
            run_again(item)
            with fixtures_torn_down(item):
                _settle()
                _heap.relheap_since_freeze()
                path = leaked.path_to_root()
        finally:
            _heap.clearrelheap()
        if path is not None:
            return path
    _heap.setrelheap()
    try:
        run_again(item)
        with fixtures_torn_down(item):
            _settle()
            return leaked.path_to_root()
    finally:
        _heap.clearrelheap()


def _what_grew(sizes: Sequence[int], counts: Sequence[int]) -> str:
    """What grew in every round, in the words of the measure that did:
    memory, else the number of objects, else a site's count of blocks
    (memory then said as it went)."""
    per_round = ", ".join(format_size(b - a, True) for a, b in zip(sizes, sizes[1:]))
    rounds = len(sizes) - 1
    if _grew(sizes):
        return (
            f"memory grew in every one of {rounds} rounds after a warm-up ({per_round} per round)"
        )
    if not _grew(counts):
        return (
            f"the number of blocks held by a call site below grew in every one of {rounds} rounds "
            f"after a warm-up (memory {per_round} per round)"
        )
    objects = ", ".join("%+d" % (b - a) for a, b in zip(counts, counts[1:]))
    return (
        f"the number of objects grew in every one of {rounds} rounds after a warm-up "
        f"({objects} per round; memory {per_round})"
    )


def _test_file(item: pytest.Item) -> str:
    return os.path.normcase(os.path.abspath(str(item.fspath)))


def _leak_message(
    item: pytest.Item,
    sizes: Sequence[int],
    counts: Sequence[int],
    diffs: list[StatisticDiff],
    leaked: _heap.Partition,
    path: str | None,
) -> str:
    """The failure: what grew per round, the sites (StatisticDiff lines),
    the kinds that grew (a partition) and a chain to one object of the first."""
    objects = (
        f"{leaked.count} more objects ({format_size(leaked.size)}) of the kinds that grew than "
        "before the rounds"
        if leaked.rows
        else "no kind of Python object grew"
    )
    lines = [
        f"{item.nodeid} leaks: {_what_grew(sizes, counts)}; {objects}.",
        "",
        "Where it was allocated (top call sites of what is still allocated):",
        *_site_lines(diffs, _test_file(item)),
        "",
    ]
    if leaked.rows:
        lines += ["What leaked, by kind:", str(leaked)]
    else:
        lines.append(
            "What leaked, by kind: no kind of Python object grew in every round; what grew is "
            "memory outside Python objects (a C-level allocation), made at the sites above."
        )
    if path:
        lines += ["", f"What keeps one {leaked.rows[0].name} alive:", f"  {path}"]
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if getattr(config, "_heapsite_active", False):
        _summary.write(terminalreporter, config._heapsite_report)
        _write_causes(terminalreporter, config)


def _write_causes(terminalreporter: Any, config: Any) -> None:
    """Leaks by cause; the baseline's causes gone, or the baseline written
    (by pytest-xdist's controller, which has every worker's figures)."""
    if hasattr(config, "workerinput"):
        return
    results = config._heapsite_report
    by_key = _causes.findings(results)
    baseline = config._heapsite_baseline
    gone = []
    if baseline is not None and not config.getoption("--heapsite-leaks-update-baseline"):
        gone = baseline.gone(by_key, {nodeid for nodeid, data in results if data.get("checked")})
    _causes.write(terminalreporter, by_key, gone)
    if baseline is not None and config.getoption("--heapsite-leaks-update-baseline"):
        baseline.write(by_key, {nodeid for nodeid, data in results if data.get("checked")})
        terminalreporter.write_line(
            f"heapsite: {len(by_key)} leak cause{'s' if len(by_key) != 1 else ''} written to "
            f"{baseline.path}"
        )


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
                # Set-up and tear-down are heapsite's own work: only the
                # block between them is measured.
                entered = own_work.enter()
                try:
                    gc.collect()
                    result = Measurement()
                    before = _program_snapshot()
                    sites = ProgramSites.of()
                    base = sites.live_bytes()
                    live_at_start = _core.traced_memory().current
                    reset_peak()
                finally:
                    own_work.leave(entered)
                yield result
                entered = own_work.enter()
                try:
                    result.peak = max(0, _core.traced_memory().peak - live_at_start)
                    gc.collect()
                    result.leaked = sites.live_bytes() - base
                    diffs = _program_snapshot().compare_to(before, "traceback")
                    result.sites = [d for d in diffs if d.size_diff > 0]
                finally:
                    own_work.leave(entered)
            finally:
                if started_here:
                    stop()

        return measure()


@pytest.fixture
def heapsite_tracker():
    """Measures the memory a block of the test allocates (see Tracker)."""
    return Tracker()
