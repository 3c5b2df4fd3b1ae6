"""The session summary's peak per test is the test's own: its listed lines
(the top lines, then what the other lines add) sum to it, an import in the
test is the importing line's, and one line's sites are one row. The
oracle is pytest-memray on the same suite: its high watermark for a test
of large buffers (which it sees exactly: they are malloc'd one by one),
and its line for the first test's allocating line."""

import re
import subprocess
import sys

import pytest

SUITE = """\
KEEP = []


def test_first_imports_and_allocates():
    KEEP.append([bytearray(1000) for _ in range(100)])  # small line
    import xml.dom.minidom  # import line (its peak: Debian's 3.14 compiles it)


def test_big_buffers():
    KEEP.append([bytearray(50_000) for _ in range(20)])  # big line


def test_one_line_many_offsets():
    KEEP.append([str(i) * 20 for i in range(3000)] + [(i, i) for i in range(3000)])  # many line
"""

UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
SIZE = r"(-?[\d.]+) ?(B|KiB|MiB|GiB)"


def size_of(number: str, unit: str) -> float:
    return float(number) * UNITS[unit]


def summary(tmp_path, *options) -> str:
    (tmp_path / "test_suite.py").write_text(SUITE)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options, "test_suite.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def heapsite_peaks(out: str) -> dict:
    """test name -> (peak, [(line text, bytes), ...])"""
    section = out.split("heapsite: largest peak memory per test")[1]
    tests: dict = {}
    current = None
    for line in section.splitlines()[1:]:
        head = re.match(r"^ *" + SIZE + r"  \S+::(\S+)$", line)
        if head:
            current = head.group(3)
            tests[current] = (size_of(head.group(1), head.group(2)), [])
        elif current and " -> " in line:
            where, _, size = line.strip().rpartition(" -> ")
            tests[current][1].append((where, size_of(*re.fullmatch(SIZE, size).groups())))
        elif line.startswith("="):
            break
    return tests


def rounding(size: float) -> float:
    """The most a printed size can be off (tracemalloc's format: 3 digits)."""
    return max(1.0, size / 200)


def test_listed_lines_add_up_to_the_peak(tmp_path):
    tests = heapsite_peaks(summary(tmp_path, "--heapsite"))
    assert set(tests) == {
        "test_first_imports_and_allocates",
        "test_big_buffers",
        "test_one_line_many_offsets",
    }
    for name, (peak, lines) in tests.items():
        listed = sum(size for _, size in lines)
        slack = rounding(peak) + sum(rounding(abs(size)) for _, size in lines)
        assert abs(listed - peak) <= slack, (name, peak, lines)
        # One row per line, and no import machinery named.
        wheres = [where for where, _ in lines]
        assert len(wheres) == len(set(wheres)), lines
        assert not any("<frozen importlib" in where for where in wheres), lines


def test_an_import_in_the_test_is_the_importing_line(tmp_path):
    peak, lines = heapsite_peaks(summary(tmp_path, "--heapsite"))[
        "test_first_imports_and_allocates"
    ]
    wheres = [where for where, _ in lines]
    number = next(i for i, text in enumerate(SUITE.splitlines(), 1) if "# import line" in text)
    assert f"test_suite.py:{number} in test_first_imports_and_allocates" in wheres[0], lines


def test_one_line_is_one_row(tmp_path):
    peak, lines = heapsite_peaks(summary(tmp_path, "--heapsite"))["test_one_line_many_offsets"]
    number = next(i for i, text in enumerate(SUITE.splitlines(), 1) if "# many line" in text)
    rows = [size for where, size in lines if f"test_suite.py:{number} " in where]
    assert len(rows) == 1, lines
    assert rows[0] >= 0.9 * peak, lines


def memray_report(out: str) -> dict:
    """test name -> (high watermark, {function:file:line -> bytes})"""
    tests = {}
    for block in out.split("Allocation results for ")[1:]:
        name = block.split(" ", 1)[0].split("::")[1]
        total = re.search(r"Total memory allocated: " + SIZE, block)
        lines = {
            m.group(1): size_of(m.group(2), m.group(3))
            for m in re.finditer(r"- (\S+) -> " + SIZE, block)
        }
        tests[name] = (size_of(*total.groups()), lines)
    return tests


def test_peaks_agree_with_pytest_memray(tmp_path):
    pytest.importorskip("pytest_memray")
    memray = memray_report(summary(tmp_path, "--memray", "-p", "no:heapsite"))
    ours = heapsite_peaks(summary(tmp_path, "--heapsite", "-p", "no:memray"))
    # Large buffers: both see every byte.
    assert ours["test_big_buffers"][0] == pytest.approx(memray["test_big_buffers"][0], rel=0.02)
    # The first test's allocating line: memray sees the buffers (malloc'd),
    # not the 56-byte objects around them (pymalloc's arenas); heapsite both.
    number = next(i for i, text in enumerate(SUITE.splitlines(), 1) if "# small line" in text)
    # memray names the comprehension's frame (`<listcomp>` before 3.12),
    # with line 0 on 3.9 and 3.10; the test's other lines allocate little.
    theirs = sum(
        size
        for where, size in memray["test_first_imports_and_allocates"][1].items()
        if where.endswith(
            (f"test_suite.py:{number}", "<listcomp>:" + f"{tmp_path}/test_suite.py:0")
        )
    )
    mine = next(
        size
        for where, size in ours["test_first_imports_and_allocates"][1]
        if f"test_suite.py:{number} " in where
    )
    assert theirs <= mine <= theirs * 1.1, (mine, theirs)
