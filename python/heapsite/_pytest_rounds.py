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
    return None


def run_again(item) -> None:
    """One more round of `item`: fresh function-scoped fixtures, then the call."""
    _refresh_fixtures(item)
    item.runtest()


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
