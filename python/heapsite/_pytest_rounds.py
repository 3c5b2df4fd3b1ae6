"""Running a test's body again for the leak check (for the pytest plugin).

Each round after pytest's own call tears down the item's function-scoped
fixtures and sets them up afresh, as pytest does for a call, then calls the
test function again. Fixtures of wider scope (class, module, session) stay.
"""

from __future__ import annotations

import pytest


def repeatable(item) -> str | None:
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


def _is_unittest(item) -> bool:
    try:
        from _pytest.unittest import TestCaseFunction
    except ImportError:  # a pytest without unittest support has none
        return False
    return isinstance(item, TestCaseFunction)


def run_again(item) -> None:
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


def _drop_report(**kwargs) -> list:
    return []


def _refresh_fixtures(item) -> None:
    state = getattr(item.session, "_setupstate", None)
    stack = getattr(state, "stack", None)
    if not isinstance(stack, dict) or not stack or next(reversed(stack)) is not item:
        # A pytest whose setup state looks different: keep the fixtures
        # (the rounds then share the first call's fixture values).
        return
    finalizers, _ = stack.pop(item)
    errors = []
    while finalizers:
        finalizer = finalizers.pop()
        try:
            finalizer()
        except Exception as e:  # a fixture's teardown failed: report it as pytest would
            errors.append(e)
    stack[item] = ([item.teardown], None)
    item._initrequest()
    item.setup()
    if errors:
        raise errors[0]
