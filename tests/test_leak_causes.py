"""Leaks by cause (issue 17): tests that leak through the same allocating
function and the same holder are one finding, listed once with their tests; a
baseline file of known causes makes a run fail only on a new one and say
when a known one is gone; `heapsite_leaks_ignore` leaves causes out.

The suite is generated: two tests leak through one helper into one module
list (one cause), a third into a registry (another); the truth is known by
construction, and the verdicts are checked against it."""

import json
import re
import textwrap

from test_pytest_plugin import run_suite

SUITE = textwrap.dedent(
    """\
    _CACHE = []
    _REGISTRY = {}


    def _remember():
        _CACHE.append(bytearray(2000))  # the shared cause's line


    def test_leak_a():
        _remember()


    def test_leak_b():
        _remember()


    def test_other_leak():
        _REGISTRY[len(_REGISTRY)] = [object() for _ in range(20)]


    def test_clean():
        assert len([0] * 1000) == 1000
    """
)
NEW_LEAK = textwrap.dedent(
    """

    _NEW = []


    def test_new_leak():
        _NEW.append(bytearray(3000))
    """
)


def causes_section(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "heapsite: leaks by cause" in line)
    section = []
    for line in lines[start + 1 :]:
        if line.startswith("="):
            break
        if not line.startswith("heapsite:"):
            section.append(line)
    return section


def suite_in(tmp_path, text=SUITE):
    path = tmp_path / "test_causes_suite.py"
    path.write_text(text)
    return str(path)


def test_two_tests_through_one_cause_are_one_finding(tmp_path):
    result, verdicts = run_suite("--heapsite-leaks", path=suite_in(tmp_path))
    assert verdicts == {
        "test_leak_a": "FAILED",
        "test_leak_b": "FAILED",
        "test_other_leak": "FAILED",
        "test_clean": "PASSED",
    }, result.stdout[-3000:]
    section = causes_section(result.stdout)
    findings = [line for line in section if not line.startswith(" ")]
    assert len(findings) == 2, section
    shared, other = findings
    assert shared.startswith("2 tests, ") and "test_causes_suite.py:6 in _remember" in shared
    assert "(the project's code), held by test_causes_suite._CACHE" in shared
    # Before 3.12 a list comprehension is a function of its own.
    assert re.search(r"test_causes_suite.py:18 in (test_other_leak|\S*<listcomp>) ", other), other
    assert other.endswith("held by test_causes_suite._REGISTRY")
    assert (
        "    tests: test_causes_suite.py::test_leak_a, test_causes_suite.py::test_leak_b" in section
    )
    assert "    kinds: bytearray" in section


def test_a_baseline_fails_only_new_causes_and_says_which_are_gone(tmp_path):
    baseline = tmp_path / "leaks.json"
    options = ["--heapsite-leaks", "--heapsite-leaks-baseline", str(baseline)]
    suite = suite_in(tmp_path)

    written, verdicts = run_suite(*options, "--heapsite-leaks-update-baseline", path=suite)
    assert written.returncode == 0 and set(verdicts.values()) == {"PASSED"}, written.stdout
    assert "heapsite: 2 leak causes written to " in written.stdout
    recorded = json.loads(baseline.read_text())
    assert sorted(sorted(c["tests"]) for c in recorded["causes"]) == [
        ["test_causes_suite.py::test_leak_a", "test_causes_suite.py::test_leak_b"],
        ["test_causes_suite.py::test_other_leak"],
    ]

    # Known causes fail nothing; a new one fails its test alone.
    suite = suite_in(tmp_path, SUITE + NEW_LEAK)
    checked, verdicts = run_suite(*options, path=suite)
    failed = {name for name, verdict in verdicts.items() if verdict == "FAILED"}
    assert failed == {"test_new_leak"}, checked.stdout[-3000:]
    assert sum("(known: in the baseline)" in line for line in causes_section(checked.stdout)) == 2

    # A known cause that no test leaks through any more is said to be gone.
    fixed = SUITE.replace("_REGISTRY[len(_REGISTRY)] =", "_ =")
    fixed_run, verdicts = run_suite(*options, path=suite_in(tmp_path, fixed))
    assert fixed_run.returncode == 0, fixed_run.stdout[-3000:]
    gone = [line for line in causes_section(fixed_run.stdout) if line.startswith("gone:")]
    registry = next(c["key"] for c in recorded["causes"] if c["holder"].endswith("_REGISTRY"))
    assert gone == [f"gone: no test leaks through {registry} any more"]


def test_ignored_causes_fail_nothing(tmp_path):
    suite = suite_in(tmp_path)
    (tmp_path / "pytest.ini").write_text("[pytest]\nheapsite_leaks_ignore = *._REGISTRY\n")
    result, verdicts = run_suite("--heapsite-leaks", path=suite)
    assert verdicts["test_other_leak"] == "PASSED" and verdicts["test_leak_a"] == "FAILED"
    assert any(
        line.startswith("1 test, ") and "(ignored)" in line
        for line in causes_section(result.stdout)
    )


def test_bad_baselines_are_one_line_usage_errors(tmp_path):
    suite = suite_in(tmp_path)
    cases = {
        "no baseline file": [],
        "cannot be read": ["{not json"],
        "is not a heapsite leak baseline": ['{"causes": []}'],
        "'causes' is not a list of causes": ['{"format": 1, "causes": [3]}'],
    }
    for reason, content in cases.items():
        baseline = tmp_path / f"b{len(reason)}.json"
        if content:
            baseline.write_text(content[0])
        result, _ = run_suite(
            "--heapsite-leaks", "--heapsite-leaks-baseline", str(baseline), path=suite
        )
        assert result.returncode == 4, (reason, result.stdout, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
        assert len(errors) == 1 and reason in errors[0], (reason, result.stderr)
    result, _ = run_suite("--heapsite-leaks", "--heapsite-leaks-update-baseline", path=suite)
    assert result.returncode == 4 and "needs --heapsite-leaks-baseline FILE" in result.stderr


def test_a_later_test_through_a_known_cause_is_told_by_its_sites(tmp_path):
    """The first test through a cause pays the heap walks; a later one is
    told by its sites alone and its message points at the first."""
    result, verdicts = run_suite("--heapsite-leaks", "-p", "no:randomly", path=suite_in(tmp_path))
    assert verdicts["test_leak_a"] == verdicts["test_leak_b"] == "FAILED"
    first = result.stdout.index("test_causes_suite.py::test_leak_a leaks: ")
    second = result.stdout.index("test_causes_suite.py::test_leak_b leaks: ")
    assert "What leaked, by kind:" in result.stdout[first:second]
    message = result.stdout[second:].split("\n\n")[0]
    assert "through the cause found in test_causes_suite.py::test_leak_a: allocated at " in message
    assert message.endswith("held by test_causes_suite._CACHE."), message


CACHED_STREAM = textwrap.dedent(
    """\
    import sys

    _SEEN = {}


    def test_keeps_each_capsys_stream(capsys):
        _SEEN[id(sys.stdout)] = sys.stdout
    """
)


def test_the_holder_is_what_keeps_it_not_the_rounds_fixture(tmp_path):
    """A cache that keeps each round's capsys stream (click's stream cache
    does): the chain is found with the round's fixtures torn down, so it
    ends at the cache, not at sys.stdout, which holds the running round's
    stream."""
    result, verdicts = run_suite("--heapsite-leaks", path=suite_in(tmp_path, CACHED_STREAM))
    assert verdicts == {"test_keeps_each_capsys_stream": "FAILED"}, result.stdout[-3000:]
    keeps = result.stdout.split("What keeps one ", 1)[1].splitlines()
    assert keeps[1].strip().startswith("test_causes_suite.__dict__['_SEEN']"), keeps[:2]
    assert "held by test_causes_suite._SEEN" in "\n".join(causes_section(result.stdout))


AFTER_A_KNOWN_CAUSE = textwrap.dedent(
    """\
    _CACHE = []
    _BUFFER = bytearray()


    def test_leak_a():
        _CACHE.append(bytearray(2000))


    def test_grows_one_buffer():
        _BUFFER.extend(bytes(5000))  # no new object: memory alone grows
    """
)


def test_a_memory_only_leak_after_a_known_cause_is_found(tmp_path):
    """Once a cause is known, the shortcut looks at the next leaking test's
    sites first; the exact pass after it must still count them (a leak of
    memory alone has no object count to fall back on)."""
    suite = suite_in(tmp_path, AFTER_A_KNOWN_CAUSE)
    result, verdicts = run_suite("--heapsite-leaks", "-p", "no:randomly", path=suite)
    assert verdicts == {"test_leak_a": "FAILED", "test_grows_one_buffer": "FAILED"}, result.stdout
