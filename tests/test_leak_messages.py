"""The leak check's message counts the test's objects only: heapsite's own
bookkeeping (its arrays of per-site figures, its flags) is never counted as
the program's. The oracle is sys.getsizeof of what the test keeps, in the
same interpreter."""

import array
import os
import re
import subprocess
import sys


def leak_check(folder, suite: str) -> subprocess.CompletedProcess:
    """`pytest --heapsite-leaks` on one test file of `folder`."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--heapsite-leaks", suite],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=300,
    )


SUITE = """\
import array

KEEP = []


def test_array_leak():
    KEEP.append(array.array("b", bytes(64)))  # planted
"""


def test_an_array_a_call_is_one_array_a_round(tmp_path):
    (tmp_path / "test_arr.py").write_text(SUITE)
    result = leak_check(tmp_path, "test_arr.py")
    assert result.returncode == 1, result.stdout + result.stderr
    match = re.search(
        r"memory grew in every one of (\d+) rounds.*?; (\d+) more objects \((\d+) B\)",
        result.stdout,
        re.S,
    )
    assert match, result.stdout
    rounds, objects, size = map(int, match.groups())
    one = sys.getsizeof(array.array("b", bytes(64)))
    assert objects == rounds, result.stdout
    assert size == rounds * one, (size, one, result.stdout)
    table = result.stdout.split("What leaked, by kind:")[1].split("What keeps")[0]
    assert re.search(rf"^ +0 +{rounds} +100 +{rounds * one} .* array\.array$", table, re.M), table


OBJECTS_ONLY = """\
BIG = [bytearray(1000) for _ in range(100)]
KEEP = []


def test_more_objects_less_memory():
    BIG.pop()  # a round frees a kilobyte (two blocks)...
    KEEP.extend((object(), object(), object()))  # ...and keeps three small objects
"""


def test_the_message_names_the_measure_that_failed(tmp_path):
    (tmp_path / "test_objects.py").write_text(OBJECTS_ONLY)
    result = leak_check(tmp_path, "test_objects.py")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "memory grew" not in result.stdout, result.stdout
    # Three objects a round at the test's line, kept by a list older than
    # the test, while memory shrank: the count of that line's blocks is the
    # measure that grew (on 3.9, whose exact pass walks the whole heap, the
    # number of objects), and the kind that grew is named.
    match = re.search(
        r"the number of blocks held by a call site below grew in every one of (\d+) rounds "
        r"after a warm-up \(memory ([^)]*) per round\)",
        result.stdout,
    ) or re.search(
        r"the number of objects grew in every one of (\d+) rounds after a warm-up "
        r"\([^;]* per round; memory ([^)]*)\)",
        result.stdout,
    )
    assert match, result.stdout
    rounds = int(match.group(1))
    assert all(step.strip().startswith("-") for step in match.group(2).split(",")), match.group(0)
    assert re.search(
        r"test_objects.py:7: size=\d+ B \(\+\d+ B\), count=%d " % (3 * rounds), result.stdout
    )
    assert re.search(r"\s%d\s+100\s+\d+\s+100\s+\d+\s+100 object\n" % (3 * rounds), result.stdout)


LIBRARY = """\
def build():
    return _make()


def _make():
    return _inner()


def _inner():
    return [bytearray(500) for _ in range(4)]
"""

THROUGH_A_LIBRARY = """\
import library

REGISTRY = []


def test_keeps_what_a_library_built():
    REGISTRY.append(library.build())  # planted
"""


def test_a_leak_through_a_library_names_the_tests_line(tmp_path):
    (tmp_path / "library.py").write_text(LIBRARY)
    (tmp_path / "test_lib.py").write_text(THROUGH_A_LIBRARY)
    result = leak_check(tmp_path, "test_lib.py")
    assert result.returncode == 1, result.stdout + result.stderr
    sites = result.stdout.split("Where it was allocated")[1].split("What leaked")[0]
    planted = THROUGH_A_LIBRARY.splitlines().index(
        "    REGISTRY.append(library.build())  # planted"
    )
    assert f'test_lib.py", line {planted + 1}, in test_keeps_what_a_library_built' in sites, sites
    assert "library.py" in sites.splitlines()[1], sites  # the allocating line first


VERDICTS = """\
import pytest

KEEP = []


def test_leaks():
    KEEP.append(bytearray(5000))


@pytest.mark.xfail(reason="known to fail")
def test_leaks_and_is_expected_to_fail():
    KEEP.append(bytearray(5000))


def test_clean():
    assert len(bytearray(5000)) == 5000
"""


def test_a_leak_fails_the_tests_report_with_its_message(tmp_path):
    """A leak fails the call's report (not raised in the call): the short
    summary still carries the message, a test expected to fail is reported
    as an expected failure, and a clean one passes."""
    (tmp_path / "test_verdicts.py").write_text(VERDICTS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfEsxXp", "--heapsite-leaks"]
        + ["test_verdicts.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    summary = result.stdout.split("short test summary info")[1]
    assert re.search(
        r"^FAILED test_verdicts.py::test_leaks - test_verdicts.py::test_leaks leaks: memory grew",
        summary,
        re.M,
    ), summary
    assert re.search(r"^XFAIL test_verdicts.py::test_leaks_and_is_expected_to_fail", summary, re.M)
    assert re.search(r"^PASSED test_verdicts.py::test_clean", summary, re.M), summary
    assert "1 failed, 1 passed, 1 xfailed" in result.stdout, result.stdout
    assert "Traceback" not in result.stdout, result.stdout
