import subprocess
import sys
import textwrap

import heapsite
import pytest

# A sample suite with planted leaks, run by test_pytest_plugin.py in its own
# pytest process, not as tests of this one.
collect_ignore = ["leak_suite"]


@pytest.fixture(autouse=True)
def _in_a_temporary_directory(tmp_path, monkeypatch):
    """Every test runs in its own temporary directory, so that files written
    by default names (captures named by pid) never land in the tree."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _stopped_after_each_test():
    yield
    heapsite.stop()


def run_python(
    code: str, *args: str, env=None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter (this one), returns the finished process."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
