"""Running a test's body again for the leak check (for the pytest plugin).

Each round after pytest's own call tears down the item's function-scoped
fixtures and sets them up afresh, as pytest does for a call, then calls the
test function again. Fixtures of wider scope (class, module, session) stay.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any


def repeatable(item: pytest.Item) -> str | None:
    """Why `item` cannot be run again for the leak check, or None."""
    if not isinstance(item, pytest.Function):
        return (
            f"it is a {type(item).__name__}, not a test function, so its body cannot be run again"
        )
    if _is_unittest(item):
        # pytest's unittest support makes a new TestCase per run and keeps
        # per-run state (reprs, type-equality tables) that grows every round:
        # a repeat would call that the test's leak.
        return "it is a unittest.TestCase method, whose runs pytest does not keep apart"
    return None


def _is_unittest(item: pytest.Item) -> bool:
    try:
        from _pytest.unittest import TestCaseFunction
    except ImportError:  # a pytest without unittest support has none
        return False
    return isinstance(item, TestCaseFunction)


def run_again(item: Any) -> None:
    """One more round of `item`: fresh function-scoped fixtures, then the call.

    Reports the call would log (unittest's subTest logs one per subtest) are
    dropped: pytest keeps every logged report, which is growth of pytest's
    own, not the test's, in every round. A failure still raises."""
    _refresh_fixtures(item)
    hook = item.config.hook
    logreport = hook.pytest_runtest_logreport
    hook.pytest_runtest_logreport = _drop_report
    try:
        item.runtest()
    finally:
        hook.pytest_runtest_logreport = logreport


def _drop_report(**kwargs: object) -> list:
    return []


@contextlib.contextmanager
def fixtures_torn_down(item: Any) -> Iterator[None]:
    """The item's function-scoped fixtures torn down for the block, then
    set up afresh: what still holds a round's objects inside the block is
    not the round's own fixtures (pytest's capsys stream in sys.stdout, a
    monkeypatch) but what keeps them for good. A pytest whose setup state
    looks different keeps them."""
    kept = _tear_down(item)
    try:
        yield
    finally:
        if kept is not None:
            _set_up(item, kept)


def _refresh_fixtures(item: Any) -> None:
    kept = _tear_down(item)
    if kept is not None:
        _set_up(item, kept)


def _tear_down(item: Any) -> tuple[dict, list] | None:
    """Runs the item's function-scoped finalizers; what the set-up after
    needs (the stash's entries, the teardowns' errors), or None when this
    pytest's setup state looks different (the fixtures are then kept, and
    the rounds share the first call's fixture values)."""
    state = getattr(item.session, "_setupstate", None)
    stack = getattr(state, "stack", None)
    if not isinstance(stack, dict) or not stack or next(reversed(stack)) is not item:
        return None
    finalizers, _ = stack.pop(item)
    # Teardowns may take what the reports left in the item's stash (tmp_path's
    # takes the setup report's outcome); the round's own setup writes no
    # report, so what they take is put back for the next round's teardown.
    stored = getattr(getattr(item, "stash", None), "_storage", None)
    kept = dict(stored) if isinstance(stored, dict) else {}
    errors = []
    while finalizers:
        finalizer = finalizers.pop()
        try:
            finalizer()
        except Exception as e:  # a fixture's teardown failed: report it as pytest would
            errors.append(e)
    _drop_finished_from_wider_fixtures(item)
    return kept, errors


def _set_up(item: Any, torn_down: tuple[dict, list]) -> None:
    kept, errors = torn_down
    item.session._setupstate.stack[item] = ([item.teardown], None)
    item._initrequest()
    item.setup()
    stored = getattr(getattr(item, "stash", None), "_storage", None)
    if isinstance(stored, dict):
        for key, value in kept.items():
            stored.setdefault(key, value)
    if errors:
        raise errors[0]


def _drop_finished_from_wider_fixtures(item: pytest.Item) -> None:
    """A function-scoped fixture that uses a wider one (tmp_path uses the
    session's tmp_path_factory) leaves its `finish` among the wider one's
    finalizers, with its request and values, until that one is torn down:
    pytest's own growth per test, not the test's, and it would show in every
    round. Those of fixtures already finished are dropped (calling them is a
    no-op); a pytest whose fixtures look different is left as it is."""
    info = getattr(item, "_fixtureinfo", None)
    for fixturedefs in getattr(info, "name2fixturedefs", {}).values():
        for fixturedef in fixturedefs:
            finalizers = getattr(fixturedef, "_finalizers", None)
            if getattr(fixturedef, "scope", "function") != "function" and isinstance(
                finalizers, list
            ):
                finalizers[:] = [f for f in finalizers if not _finished_for(f, item)]


def _finished_for(finalizer: object, item: pytest.Item) -> bool:
    """Whether `finalizer` is functools.partial(fixturedef.finish, request=...)
    for a request of `item`, of a fixture whose value is already gone."""
    func = getattr(finalizer, "func", None)
    request = (getattr(finalizer, "keywords", None) or {}).get("request")
    owner = getattr(func, "__self__", None)
    return (
        getattr(func, "__name__", None) == "finish"
        and getattr(request, "node", None) is item
        and owner is not None
        and getattr(owner, "cached_result", True) is None
    )
