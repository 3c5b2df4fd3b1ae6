"""The Snapshot API: grouping, formatting (tracemalloc's, as the oracle), files."""

import io
import re
import tracemalloc

import heapsite
from heapsite import Frame, Statistic, StatisticDiff, Traceback


def make_lists():
    return [list(range(10)) for _ in range(2000)]


def make_strings():
    return ["s%d" % i for i in range(5000)]


def test_statistic_lines_read_like_tracemalloc():
    tb_ours = Traceback([Frame("file.py", 12)])
    tb_theirs = tracemalloc.Traceback((("file.py", 12),))
    for size, count in [(1382 * 1024, 29731), (48, 1), (0, 0), (10 * 1024 * 1024 * 1024, 3)]:
        assert str(Statistic(tb_ours, size, count)) == str(
            tracemalloc.Statistic(tb_theirs, size, count)
        )
        for size_diff, count_diff in [(size, count - 2), (-size, -count), (0, 0)]:
            ours = StatisticDiff(tb_ours, size, size_diff, count, count_diff)
            theirs = tracemalloc.StatisticDiff(tb_theirs, size, size_diff, count, count_diff)
            assert str(ours) == str(theirs)


def test_statistics_keys_and_cumulative():
    heapsite.start(8)
    lists, strings = make_lists(), make_strings()
    snap = heapsite.snapshot().filter(include=__file__)
    by_line = snap.statistics("lineno")
    by_file = snap.statistics("filename")
    by_tb = snap.statistics("traceback")
    assert {s.traceback[0].filename for s in by_line} == {__file__}
    assert len(by_file) == 1
    assert by_file[0].size == sum(s.size for s in by_line)
    assert sum(s.size for s in by_tb) == by_file[0].size
    # Sorted largest first.
    assert [s.size for s in by_line] == sorted((s.size for s in by_line), reverse=True)
    # Cumulative counts each site once per frame: the test function's line
    # that called make_lists includes everything make_lists allocated.
    cumulative = {
        s.traceback[0].lineno: s.size
        for s in heapsite.snapshot().statistics("lineno", cumulative=True)
        if s.traceback[0].filename == __file__
    }
    plain = {s.traceback[0].lineno: s.size for s in by_line}
    assert max(cumulative.values()) >= max(plain.values())
    del lists, strings


def test_compare_to_shows_growth():
    heapsite.start(1)
    old = heapsite.snapshot()
    grown = make_strings()
    new = heapsite.snapshot()
    diffs = [d for d in new.compare_to(old, "lineno") if d.traceback[0].filename == __file__]
    top = diffs[0]
    assert top.count_diff >= 5000 and top.size_diff > 200_000
    assert "(+" in str(top)
    del grown


def test_filter_include_exclude_and_all_frames():
    heapsite.start(4)
    kept = make_lists()
    snap = heapsite.snapshot()
    only_here = snap.filter(include=__file__)
    not_here = snap.filter(exclude=[__file__])
    assert only_here.sites and all(s.traceback[0].filename == __file__ for s in only_here.sites)
    assert all(s.traceback[0].filename != __file__ for s in not_here.sites)
    assert len(only_here.sites) + len(not_here.sites) == len(snap.sites)
    # Sites whose *any* frame is in this file: a superset.
    assert len(snap.filter(include=__file__, all_frames=True).sites) >= len(only_here.sites)
    del kept


def test_dump_and_load_round_trip(tmp_path):
    heapsite.start(3)
    kept = make_lists()
    snap = heapsite.snapshot()
    path = tmp_path / "snap.heapsite"
    snap.dump(path)
    loaded = heapsite.Snapshot.load(path)
    assert loaded.statistics("traceback") == snap.statistics("traceback")
    assert loaded.traceback_limit == 3
    assert loaded.traced_memory == snap.traced_memory
    assert [f.name for f in loaded.sites[-1].traceback] == [
        f.name for f in snap.sites[-1].traceback
    ]
    del kept


def test_top_prints_a_readable_table():
    heapsite.start(1)
    kept = make_strings()
    out = io.StringIO()
    heapsite.top(3, file=out)
    text = out.getvalue().splitlines()
    # At most 3: fewer where fewer lines hold memory (3.14 allocates nothing
    # else at start(1) time).
    assert re.match(r"heapsite: top [123] lineno by memory live", text[0]), text[0]
    assert text[1].startswith(f"#1: {__file__}:")
    assert '"s%d" % i' in text[2]
    assert text[-1].startswith("Total: ")
    del kept


def test_traceback_format_has_source_lines():
    heapsite.start(4)
    kept = make_lists()
    stat = heapsite.snapshot().filter(include=__file__).statistics("traceback")[0]
    lines = stat.traceback.format()
    assert any("list(range(10))" in line for line in lines)
    line = make_lists.__code__.co_firstlineno + 1
    assert lines[-2].startswith(f'  File "{__file__}", line {line}')
    assert any("make_lists" in line for line in lines)
    del kept
