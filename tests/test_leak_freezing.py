"""The leak check's cost per test: objects older than a test frozen out of
its collections (pytest_plugin/_freezer.py), a program's own gc.freeze()
respected, and a clean test cleared after one round. Each on a small
generated suite run in a subprocess (run_suite)."""

import json
import textwrap

from test_pytest_plugin import run_suite

# A conftest that counts the plugin's calls into the collector's freezing:
# the counts are written at the session's end, for the test to read.
COUNTING = textwrap.dedent(
    """
    import gc
    import json
    import os

    CALLS = {"get_freeze_count": 0, "unfreeze": 0}


    def _counting(name):
        real = getattr(gc, name)

        def counted(*args):
            CALLS[name] += 1
            return real(*args)

        setattr(gc, name, counted)


    for _name in CALLS:
        _counting(_name)


    def pytest_unconfigure(config):
        with open(os.environ["CALLS_OUT"], "w") as f:
            json.dump(CALLS, f)
    """
)

SUITE = textwrap.dedent(
    """
    import conftest

    _CACHE = []


    def test_leak_every_call():
        _CACHE.append([object() for _ in range(20)])


    def test_clean_builds_and_drops():
        rows = [[i] * 10 for i in range(200)]
        assert len(rows) == 200
    """
) + "".join(
    f"\n\ndef test_clean_{i}():\n    assert sum([[i] for i in range(50)], []) is not None\n"
    for i in range(30)
)


def _run(tmp_path, monkeypatch, conftest):
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_freezing_suite.py").write_text(SUITE)
    out = tmp_path / "calls.json"
    monkeypatch.setenv("CALLS_OUT", str(out))
    result, verdicts = run_suite("--heapsite-leaks", "-p", "no:randomly", path=str(tmp_path))
    return result, verdicts, json.loads(out.read_text())


def test_a_program_that_froze_keeps_its_verdicts_and_frozen_set(tmp_path, monkeypatch):
    # packaging's conftest freezes its world: the plugin asks how many
    # objects are frozen once (on 3.11 and 3.12 that walks them all), never
    # unfreezes them, and still judges every test.
    conftest = COUNTING + "\n_KEPT = [[i] for i in range(20_000)]\ngc.freeze()\n"
    result, verdicts, calls = _run(tmp_path, monkeypatch, conftest)
    assert verdicts.pop("test_leak_every_call") == "FAILED", result.stdout
    assert set(verdicts.values()) == {"PASSED"}, result.stdout
    assert len(verdicts) == 31
    assert calls == {"get_freeze_count": 1, "unfreeze": 0}, calls


def test_objects_older_than_a_test_are_frozen_and_given_back(tmp_path, monkeypatch):
    # Without a program's freeze: frozen per test, left frozen through the
    # exact pass of the one leaking test (its walks keep to what the test
    # made), and asked the count once.
    result, verdicts, calls = _run(tmp_path, monkeypatch, COUNTING)
    assert verdicts.pop("test_leak_every_call") == "FAILED", result.stdout
    assert set(verdicts.values()) == {"PASSED"}, result.stdout
    assert calls["get_freeze_count"] == 1, calls
    # Never one per test (the session's end comes after this count).
    assert calls["unfreeze"] <= 1, calls


def test_a_clean_test_is_run_once_more_only(tmp_path):
    # pytest's own call, then one round that grows nothing: cleared.
    (tmp_path / "test_once_more.py").write_text(
        textwrap.dedent(
            """
            CALLS = [0]


            def test_first(monkeypatch):
                # The session's first checked test: pytest's and heapsite's
                # lazily made objects come in its rounds.
                monkeypatch.setenv("FIRST", "x")


            def test_clean_counts_its_calls(monkeypatch):
                CALLS[0] += 1
                monkeypatch.setenv("ONCE_MORE", "x")
                assert len([[i] for i in range(100)]) == 100


            def test_counted():
                assert CALLS[0] == 2, CALLS
            """
        )
    )
    result, verdicts = run_suite("--heapsite-leaks", "-p", "no:randomly", path=str(tmp_path))
    assert verdicts == {
        "test_first": "PASSED",
        "test_clean_counts_its_calls": "PASSED",
        "test_counted": "PASSED",
    }, result.stdout


def test_a_test_that_needs_an_older_object_collected_still_passes(tmp_path):
    # The cycle is made at import, before the test's set-up, so it is frozen
    # when the test first runs: its weak reference stays alive, the call
    # fails, and the test is run again unfrozen, which passes as it does
    # without heapsite.
    (tmp_path / "test_old_cycle.py").write_text(
        textwrap.dedent(
            """
            import gc
            import weakref


            class Node:
                pass


            def _cycle():
                node = Node()
                node.me = node
                return node


            _HELD = {"node": _cycle()}


            def test_drops_an_old_cycle():
                ref = weakref.ref(_HELD.pop("node", None) or _cycle())
                gc.collect()
                assert ref() is None
            """
        )
    )
    result, verdicts = run_suite("--heapsite-leaks", path=str(tmp_path))
    assert verdicts == {"test_drops_an_old_cycle": "PASSED"}, result.stdout + result.stderr


def test_a_test_that_is_not_checked_runs_with_nothing_frozen(tmp_path):
    # A unittest method is not run again, so it has no unfrozen retry: the
    # objects a checked test before it froze are given back first.
    (tmp_path / "test_mixed.py").write_text(
        textwrap.dedent(
            """
            import gc
            import unittest

            _OLD = [[1], [2]]


            def test_checked_first():
                assert len(_OLD) == 2


            class T(unittest.TestCase):
                def test_sees_every_object(self):
                    self.assertTrue(any(o is _OLD for o in gc.get_objects()))
            """
        )
    )
    result, verdicts = run_suite("--heapsite-leaks", "-p", "no:randomly", path=str(tmp_path))
    assert verdicts == {
        "test_checked_first": "PASSED",
        "T::test_sees_every_object": "PASSED",
    }, result.stdout + result.stderr
