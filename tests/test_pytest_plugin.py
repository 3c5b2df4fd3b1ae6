"""The pytest plugin on a suite with planted leaks (tests/leak_suite)."""

import os
import re
import subprocess
import sys

import pytest

SUITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "leak_suite")


def run_suite(*args, path=SUITE):
    here = os.path.dirname(path) if os.path.isfile(path) else path
    result = subprocess.run(
        # --confcutdir: this project's own tests/conftest.py stays out of the suite.
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "--confcutdir", here]
        + ["--rootdir", here, *args, path],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=here,
    )
    return result, outcomes_of(result.stdout)


def outcomes_of(stdout):
    """{test id after the file (Class::test_x[param]): verdict} from -rA lines."""
    return dict(
        (name, verdict)
        for verdict, name in re.findall(
            r"^(PASSED|FAILED|ERROR) (?:\[gw\d+\] )?\S*?\.py::(\S+)", stdout, re.M
        )
    )


def is_planted(name):
    return name.split("::")[-1].startswith("test_leak_")


_LEAKS_RUN = []


def leaks_run():
    """The suite under --heapsite-leaks, run once for the tests that read it."""
    if not _LEAKS_RUN:
        _LEAKS_RUN.append(run_suite("--heapsite-leaks"))
    return _LEAKS_RUN[0]


def test_no_leaks_fails_exactly_the_planted_tests():
    result, outcomes = leaks_run()
    planted = {name for name in outcomes if is_planted(name)}
    clean = set(outcomes) - planted
    # 5 plain, 2 parametrized, 1 method; 7 plain, 2 parametrized, 2 fixtures, 1 method.
    assert len(planted) == 8 and len(clean) == 12, result.stdout
    assert {n: outcomes[n] for n in planted} == dict.fromkeys(planted, "FAILED"), result.stdout
    assert {n: outcomes[n] for n in clean} == dict.fromkeys(clean, "PASSED"), result.stdout


def failure_text(stdout, test):
    match = re.search(rf"_+ {test} _+\n(.*?)(?=\n_{{5,}} |\n=+ )", stdout, re.S)
    assert match, stdout
    return match.group(1)


def planted_line(tag):
    source = open(os.path.join(SUITE, "test_planted.py")).read().splitlines()
    return next(i + 1 for i, line in enumerate(source) if f"PLANTED {tag}" in line)


def test_messages_name_the_line_the_kind_and_the_root():
    result, _ = leaks_run()
    text = failure_text(result.stdout, "test_leak_module_list")
    assert "leaks: memory grew in every one of 3 rounds" in text
    assert f"test_planted.py:{planted_line('list')}" in text
    assert "bytearray" in text
    assert "test_planted.__dict__['_GROWING']" in text
    text = failure_text(result.stdout, "test_leak_callback_registry")
    assert f"test_planted.py:{planted_line('callbacks')}" in text
    assert "test_planted.__dict__['_CALLBACKS']" in text
    text = failure_text(result.stdout, "test_leak_c_buffer")
    assert f"test_planted.py:{planted_line('c-buffer')}" in text
    # No object grows there: pytest's per-round request is not called the leak.
    assert "no kind of Python object grew in every round" in text, text
    assert "TopRequest" not in text and "What keeps" not in text, text
    text = failure_text(result.stdout, re.escape("test_leak_parametrized[30000]"))
    assert f"test_planted.py:{planted_line('param')}" in text and "bytearray" in text
    text = failure_text(result.stdout, "TestInClass.test_leak_method")
    assert f"test_planted.py:{planted_line('method')}" in text and "bytearray" in text
    assert "TestInClass.__dict__['registry']" in text or "'registry'" in text, text
    # A chain never passes through heapsite's own modules.
    assert "['heapsite." not in result.stdout, result.stdout


def test_limit_markers_and_usage_errors(tmp_path):
    suite = tmp_path / "test_limits.py"
    suite.write_text(
        "import pytest\n"
        "_KEEP = []\n"
        "@pytest.mark.limit_memory('1 MB')\n"
        "def test_over():\n"
        "    x = bytearray(5_000_000)\n"
        "@pytest.mark.limit_memory('10 MB')\n"
        "def test_under():\n"
        "    x = bytearray(1_000_000)\n"
        "@pytest.mark.limit_leaks('1 KB')\n"
        "def test_leaky():\n"
        "    _KEEP.append(bytearray(100_000))\n"
        "@pytest.mark.limit_leaks('1 KB')\n"
        "def test_tidy():\n"
        "    x = bytearray(100_000)\n"
    )
    result, outcomes = run_suite("--heapsite", path=str(suite))
    assert outcomes == {
        "test_over": "FAILED",
        "test_under": "PASSED",
        "test_leaky": "FAILED",
        "test_tidy": "PASSED",
    }, result.stdout
    assert re.search(r"Test was limited to 977 KiB but allocated 48\d\d KiB", result.stdout)
    assert "Test was allowed to leak 1000 B per location" in result.stdout
    assert "heapsite: largest peak memory per test" in result.stdout

    bad = tmp_path / "test_bad.py"
    bad.write_text(
        "import pytest\n@pytest.mark.limit_memory('lots')\ndef test_x():\n    pass\n"
        "@pytest.mark.no_leaks(rounds=0)\ndef test_y():\n    pass\n"
    )
    result, _ = run_suite("--heapsite", path=str(bad))
    assert result.returncode == 4, result.stdout + result.stderr  # pytest's usage error
    assert "test_x: @pytest.mark.limit_memory: cannot parse size 'lots'" in result.stderr


def test_inactive_without_the_option():
    result, outcomes = run_suite()
    assert result.returncode == 0, result.stdout
    assert set(outcomes.values()) == {"PASSED"}


def test_tracker_fixture(tmp_path):
    suite = tmp_path / "test_tracker.py"
    suite.write_text(
        "_KEEP = []\n"
        "def test_measures(heapsite_tracker):\n"
        "    with heapsite_tracker() as m:\n"
        "        big = bytearray(3_000_000)\n"
        "        del big\n"
        "        _KEEP.append(bytearray(50_000))\n"
        "    assert 3_000_000 <= m.peak < 3_200_000, m.peak\n"
        "    assert 45_000 <= m.leaked < 60_000, m.leaked  # net of what the block freed\n"
        "    assert m.sites[0].traceback[0].lineno == 6, m.sites[0]\n"
    )
    result, outcomes = run_suite(path=str(suite))
    assert outcomes == {"test_measures": "PASSED"}, result.stdout


def test_sites_grown_agrees_with_the_columns_compared_in_python():
    """The core's comparison of every site with earlier site_figures()
    columns, which the leak check's shortcut for known causes uses, against
    the same comparison done by hand over the columns."""
    import array

    import heapsite
    from heapsite import _core

    was_tracing = heapsite.is_tracing()
    if not was_tracing:
        heapsite.start(1)
    try:
        before = _core.site_figures()
        kept = [bytearray(100 + i) for i in range(50)]
        dropped = [bytearray(3000) for _ in range(5)]
        del dropped
        after = _core.site_figures()
        grown = _core.sites_grown(before.live_bytes, before.live_counts)
    finally:
        if not was_tracing:
            heapsite.stop()
    del kept
    old_bytes, new_bytes = array.array("q", before.live_bytes), array.array("q", after.live_bytes)
    old_counts = array.array("q", before.live_counts)
    new_counts = array.array("q", after.live_counts)

    def was(column, site):
        return column[site] if site < len(column) else 0

    by_hand = {
        site: (new_bytes[site] - was(old_bytes, site), new_counts[site] - was(old_counts, site))
        for site in range(len(new_bytes))
        if new_bytes[site] > was(old_bytes, site)
    }
    mine = {row.site_id: (row.growth, row.count_growth) for row in grown}
    # The line that kept 50 arrays (an object and a buffer each, and the
    # list), and no site the dropped ones freed.
    kept_line = [site for site, (_, count) in by_hand.items() if count == 101]
    assert len(kept_line) == 1, by_hand
    assert mine[kept_line[0]] == by_hand[kept_line[0]]
    assert by_hand[kept_line[0]][0] >= sum(range(100, 150))
    # (`after` itself and the call's arguments were made between the two:
    # the lines of those may differ.)
    assert [row.growth for row in grown] == sorted((row.growth for row in grown), reverse=True)


def test_rounds_tell_the_sites_that_grew_in_every_round():
    """The leak check's per-round readings, kept in the core: a line that
    keeps more in every round grows in every round, one that keeps something
    in some rounds only does not, and what grew since the base agrees with
    sites_grown over the same interval."""
    import heapsite
    from heapsite import _core

    def keep_every_round(into):
        into.append(bytearray(1000))

    def keep_in_the_first_round(into):
        into.append(bytearray(2000))

    was_tracing = heapsite.is_tracing()
    if not was_tracing:
        heapsite.start(1)
    every, first = [], []
    try:
        with pytest.raises(RuntimeError, match="no rounds begun"):
            _core.rounds_end()
            _core.rounds_add()
        before = _core.site_figures()
        _core.rounds_begin()
        for index in range(3):
            keep_every_round(every)
            if index == 0:
                keep_in_the_first_round(first)
            _core.rounds_add()
        grew_bytes, grew_counts = _core.rounds_grew(False), _core.rounds_grew(True)
        grown = _core.rounds_grown()
        compared = _core.sites_grown(before.live_bytes, before.live_counts)
    finally:
        _core.rounds_end()
        if not was_tracing:
            heapsite.stop()

    def line_of(function):
        code = function.__code__
        return next(
            site
            for site in range(_core.site_count())
            if (frames := _core.frames_of(site)) and frames[0][2].endswith(code.co_name)
        )

    every_line, first_line = line_of(keep_every_round), line_of(keep_in_the_first_round)
    assert every_line in grew_bytes and every_line in grew_counts
    assert first_line not in grew_bytes and first_line not in grew_counts
    mine = {row.site_id: (row.growth, row.count_growth) for row in grown}
    assert mine[every_line][0] >= 3000 and mine[every_line][1] >= 3
    assert mine[first_line][0] >= 2000
    full = {row.site_id: (row.growth, row.count_growth) for row in compared}
    assert mine[every_line] == full[every_line] and mine[first_line] == full[first_line]


def test_program_live_bytes_sums_the_sorted_sites_and_hands_back_the_rest():
    """The plugin's per-round sum of the program's live bytes: the core adds
    the sites marked the program's and hands back the live ones not sorted
    yet; the two together are every live byte of the sites."""
    import array

    import heapsite
    from heapsite import _core

    was_tracing = heapsite.is_tracing()
    if not was_tracing:
        heapsite.start(1)
    try:
        kept = [bytearray(500) for _ in range(20)]
        live = array.array("q", _core.site_figures().live_bytes)
        nothing_sorted, unsorted = _core.program_live_bytes(bytearray())
        # Every live site the program's (1), past the end of `kinds` unsorted.
        kinds = bytearray(b"\x01" * (len(live) // 2))
        some_sorted, rest = _core.program_live_bytes(kinds)
        with pytest.raises(TypeError, match="bytearray"):
            _core.program_live_bytes(b"")  # type: ignore[arg-type]
    finally:
        if not was_tracing:
            heapsite.stop()
    del kept
    assert nothing_sorted == 0
    by_site = dict(unsorted)
    # The call's own allocations (the figures, the list) come between.
    assert sum(by_site.values()) >= sum(b for b in live if b) - 4096
    assert all(size != 0 for size in by_site.values())
    # The two calls split the same live bytes (less what the first call's
    # own answer holds) at the end of `kinds`.
    assert all(site >= len(kinds) for site, _ in rest)
    assert abs(some_sorted + sum(size for _, size in rest) - sum(by_site.values())) < 4096
    assert some_sorted >= sum(size for site, size in unsorted if site < len(kinds)) - 4096


def test_sites_grown_since_mark_reads_only_touched_sites_and_agrees():
    """The leak check's shortcut for known causes reads only the sites
    touched since a mark; what it finds agrees with the comparison of every
    site's figures over the same interval, and there is nothing to read once
    the peak is reset again."""
    import heapsite
    from heapsite import _core

    was_tracing = heapsite.is_tracing()
    if not was_tracing:
        heapsite.start(1)
    try:
        before = _core.site_figures()
        assert _core.sites_mark()
        kept = [bytearray(100 + i) for i in range(50)]
        dropped = [bytearray(3000) for _ in range(5)]
        del dropped
        marked = _core.sites_grown_since_mark()
        everything = _core.sites_grown(before.live_bytes, before.live_counts)
        _core.reset_peak()
        after_reset = _core.sites_grown_since_mark()
    finally:
        if not was_tracing:
            heapsite.stop()
    del kept
    assert marked is not None and after_reset is None
    mine = {row.site_id: (row.growth, row.count_growth) for row in marked}
    full = {row.site_id: (row.growth, row.count_growth) for row in everything}
    # The line that kept 50 arrays (an object and a buffer each, and the
    # list); other threads of the suite may allocate meanwhile.
    kept_lines = [site for site, (growth, count) in full.items() if count == 101]
    assert len(kept_lines) == 1, full
    kept_line = kept_lines[0]
    assert full[kept_line][0] >= sum(range(100, 150))
    assert mine[kept_line] == full[kept_line]
    # The full comparison also sees what grew before the mark (`before`
    # itself, the mark's call); the mark sees nothing the full one does not.
    assert set(mine) <= set(full)
    assert [row.growth for row in marked] == sorted((row.growth for row in marked), reverse=True)
