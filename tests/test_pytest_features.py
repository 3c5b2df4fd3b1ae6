"""The pytest plugin's threads option, session summary, xdist run and usage
errors, each on a small generated suite run in a subprocess."""

import re
import textwrap

from test_pytest_plugin import SUITE, is_planted, leaks_run, run_suite

THREADS = textwrap.dedent(
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import pytest

    _KEPT = {}


    def _keep():
        _KEPT["thread"] = bytearray(10_000_000)


    def _churn():
        big = bytearray(10_000_000)
        return len(big)


    @pytest.mark.limit_leaks("1 MB")
    def test_thread_keeps_10mb():
        worker = threading.Thread(target=_keep)
        worker.start()
        worker.join()


    @pytest.mark.limit_memory("1 MB")
    def test_pool_peaks_10mb():
        with ThreadPoolExecutor(2) as pool:
            assert pool.submit(_churn).result() == 10_000_000


    @pytest.mark.limit_leaks("1 MB")
    def test_own_thread_keeps_10mb():
        _KEPT["own"] = bytearray(10_000_000)


    @pytest.mark.limit_memory("1 MB")
    def test_own_thread_peaks_10mb():
        assert _churn() == 10_000_000
    """
)


def test_other_threads_count_only_when_asked(tmp_path):
    suite = tmp_path / "test_threads_suite.py"
    suite.write_text(THREADS)
    _, default = run_suite("--heapsite", path=str(suite))
    _, everything = run_suite("--heapsite", "--heapsite-all-threads", path=str(suite))
    assert default == {
        "test_thread_keeps_10mb": "PASSED",
        "test_pool_peaks_10mb": "PASSED",
        "test_own_thread_keeps_10mb": "FAILED",
        "test_own_thread_peaks_10mb": "FAILED",
    }
    assert everything == dict.fromkeys(default, "FAILED")


def test_session_summary_names_peaks_and_leaks_with_sites():
    result, _ = leaks_run()
    out = result.stdout
    peaks = out.split("heapsite: largest peak memory per test")[1].split("heapsite: tests that")[0]
    leaks = out.split("heapsite: tests that leaked")[1].split("short test summary")[0]
    # Site lines (file:line in function -> size) follow the tests.
    assert "test_planted.py:" in peaks and " in test_" in peaks, peaks
    listed = re.findall(r"^ *\d\S* \S*B  \S*?\.py::(\S+) \(", leaks, re.M)
    assert sorted(listed) == sorted(n for n in leaks_run()[1] if is_planted(n)), leaks
    # Each leaked test comes with its top site, the planted line.
    assert "test_planted.py:" in leaks and "-> " in leaks, leaks


def test_xdist_verdicts_equal_the_serial_run():
    serial = leaks_run()[1]
    result, parallel = run_suite("-p", "xdist", "-n", "2", "--heapsite-leaks")
    assert parallel == serial, result.stdout
    # The workers' figures reach the controller's summary.
    assert "heapsite: tests that leaked" in result.stdout, result.stdout


BAD = {
    "size": "@pytest.mark.limit_leaks('a lot')\ndef test_size():\n    pass\n",
    "type": "@pytest.mark.limit_memory(None)\ndef test_type():\n    pass\n",
    "rounds": "@pytest.mark.no_leaks(rounds=0)\ndef test_rounds():\n    pass\n",
}


def test_bad_input_is_a_usage_error_naming_the_test(tmp_path):
    expected = {
        "size": "test_size: @pytest.mark.limit_leaks: cannot parse size 'a lot'",
        "type": "test_type: @pytest.mark.limit_memory: ",
        "rounds": "test_rounds: @pytest.mark.no_leaks(rounds=...) needs a whole number of at "
        "least 2, got 0",
    }
    for name, body in BAD.items():
        suite = tmp_path / f"test_bad_{name}.py"
        suite.write_text("import pytest\n" + body)
        result, _ = run_suite("--heapsite", path=str(suite))
        assert result.returncode == 4, (name, result.stdout, result.stderr)
        assert expected[name] in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr, result.stderr
    result, _ = run_suite("--heapsite-leaks", "--heapsite-rounds", "0", path=str(suite))
    assert result.returncode == 4 and "--heapsite-rounds needs" in result.stderr, result.stderr


def test_a_test_that_cannot_be_repeated(tmp_path):
    # A non-function item (as a plugin collecting data files makes) marked no_leaks.
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import pytest

            class DataItem(pytest.Item):
                def runtest(self):
                    pass

            class DataFile(pytest.File):
                def collect(self):
                    item = DataItem.from_parent(self, name="case")
                    item.add_marker(pytest.mark.no_leaks(rounds=3))
                    yield item

            def pytest_collect_file(parent, file_path):
                if file_path.suffix == ".data":
                    return DataFile.from_parent(parent, path=file_path)
            """
        )
    )
    (tmp_path / "cases.data").write_text("x\n")
    result, _ = run_suite("--heapsite", path=str(tmp_path))
    assert result.returncode == 4, result.stdout + result.stderr
    assert "cases.data::case: @pytest.mark.no_leaks cannot be used: it is a DataItem" in (
        result.stderr
    )
    # The same item under --heapsite-leaks without the marker is left out of the check.
    (tmp_path / "conftest.py").write_text(
        (tmp_path / "conftest.py").read_text().replace("item.add_marker", "# item.add_marker")
    )
    result, outcomes = run_suite("--heapsite-leaks", path=str(tmp_path))
    assert result.returncode == 0 and "PASSED cases.data::case" in result.stdout, result.stdout


def test_suite_path():
    assert SUITE.endswith("leak_suite")


def test_unittest_methods_are_left_out_of_the_repeat_check(tmp_path):
    # pytest's unittest support keeps per-run state (a TestCase per run, reprs)
    # that grows in every round: repeating such a test would blame the test.
    (tmp_path / "test_ut.py").write_text(
        textwrap.dedent(
            """
            import unittest

            class T(unittest.TestCase):
                def test_subtests(self):
                    for i in range(20):
                        with self.subTest(i=i):
                            self.assertEqual([i] * 3, [i, i, i])
            """
        )
    )
    result, _ = run_suite("--heapsite-leaks", path=str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    (tmp_path / "test_ut.py").write_text(
        "import pytest\n"
        + (tmp_path / "test_ut.py")
        .read_text()
        .replace("class T(", "@pytest.mark.no_leaks(rounds=3)\nclass T(")
    )
    result, _ = run_suite("--heapsite", path=str(tmp_path))
    assert result.returncode == 4, result.stdout + result.stderr
    assert "no_leaks cannot be used: it is a unittest.TestCase method" in result.stderr


def test_the_programs_own_frozen_objects_stay_frozen(tmp_path):
    # The cheap pass freezes objects out of the collector and unfreezes them
    # after; a program that froze objects itself (before forking workers,
    # say) must find them still frozen.
    (tmp_path / "conftest.py").write_text(
        "import gc\n_KEPT = [[i] for i in range(1000)]\ngc.freeze()\n"
    )
    (tmp_path / "test_frozen.py").write_text(
        textwrap.dedent(
            """
            import gc

            import conftest


            def test_grows_once_then_settles():
                conftest._KEPT.append([1])


            def test_still_frozen():
                # A frozen object is not among the collector's objects.
                assert id(conftest._KEPT) not in {id(o) for o in gc.get_objects()}
            """
        )
    )
    result, outcomes = run_suite("--heapsite-leaks", "-p", "no:randomly", path=str(tmp_path))
    assert outcomes == {
        "test_grows_once_then_settles": "FAILED",
        "test_still_frozen": "PASSED",
    }, result.stdout + result.stderr
