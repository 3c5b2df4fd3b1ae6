"""Runs CPython's own Lib/test/test_tracemalloc.py against heapsite.tracemalloc.

    python tests/stdlib/run_test_tracemalloc.py [--json]

The suite's `import tracemalloc` gets heapsite's drop-in (installed in
sys.modules before the suite is imported). Runs the classes the drop-in is
held to and prints one line per test: `PASS name`, `FAIL name`, `SKIP name`;
with --json, one JSON object instead.
"""

from __future__ import annotations

import json
import sys
import unittest

import heapsite.tracemalloc

CLASSES = ("TestTraceback", "TestTracemallocEnabled", "TestSnapshot", "TestFilters")


class _Collector(unittest.TestResult):
    def __init__(self):
        super().__init__()
        self.outcomes: dict[str, str] = {}

    def addSuccess(self, test):
        self.outcomes[test.id()] = "PASS"

    def addFailure(self, test, err):
        self.outcomes[test.id()] = "FAIL"
        super().addFailure(test, err)

    def addError(self, test, err):
        self.outcomes[test.id()] = "FAIL"
        super().addError(test, err)

    def addSkip(self, test, reason):
        self.outcomes[test.id()] = "SKIP"

    def addExpectedFailure(self, test, err):
        self.outcomes[test.id()] = "PASS"

    def addUnexpectedSuccess(self, test):
        self.outcomes[test.id()] = "FAIL"


def main() -> int:
    # --stdlib runs the same classes against the standard module: the control.
    if "--stdlib" not in sys.argv:
        heapsite.tracemalloc.install()
    import test.test_tracemalloc as suite

    if "--stdlib" not in sys.argv:
        assert suite.tracemalloc is heapsite.tracemalloc, "the suite must see the drop-in"

    class Runner:
        result = _Collector()

        def run(self, test):
            test(self.result)
            return self.result

    # Through unittest.main, as `python -m unittest` runs it: the suite's
    # test_snapshot expects a stack at least that deep.
    names = [name for name in CLASSES if hasattr(suite, name)]
    unittest.main(module=suite, defaultTest=names, argv=["run"], exit=False, testRunner=Runner)
    result = Runner.result
    if "--json" in sys.argv:
        details = {test.id(): text for test, text in result.failures + result.errors}
        print(json.dumps({"outcomes": result.outcomes, "details": details}))
    else:
        for name, outcome in sorted(result.outcomes.items()):
            print(outcome, name)
        for test, text in result.failures + result.errors:
            print(f"--- {test.id()}\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
