"""Keeping the collector's work per leak-checked test proportional to that
test's own objects (for the pytest plugin).

The leak check measures memory after a collection, several times per test.
A full collection walks every object the collector tracks: in a pytest
process, tens of thousands (pytest's items, the modules), milliseconds
each time, for every test. So before each checked test's set-up, the
objects alive then are collected once and frozen (gc.freeze()): what the
test's collections walk from then on is only what was made since, its
fixtures and rounds. Frozen before the set-up, not after the test's first
call, so that the first call's fixtures and garbage are not frozen: a clean
test then grows in no round, and the screen clears it after one.

What the freezing costs: an object frozen here that becomes cyclic garbage
is not freed until it is unfrozen. Every REFRESH tests everything is
unfrozen, so that the next freeze collects it (one full collection now and
then, not per test). A test that needs such an object freed (a weak
reference to it gone) and fails frozen is run again unfrozen: see
`thaw()`.

A program that froze objects of its own (packaging's conftest calls
gc.freeze()) is told once, at the first checked test: its frozen set is
never unfrozen here (it may have frozen it for a reason: objects shared
with forked workers, or __del__ it does not want run), tests are frozen on
top of it, and gc.get_freeze_count(), which walks the whole frozen set on
3.11 and 3.12, is not asked again.
"""

from __future__ import annotations

import gc

# Checked tests between two full collections of everything (see above).
REFRESH = 500

# How many objects may be frozen when the program froze none itself: none,
# or the interpreter's own. CPython 3.12 keeps its immortal objects (its
# static types' base tuples) in the frozen generation: a full collection
# moves any it finds there. Any other count means the program froze objects
# of its own.
_NOT_THE_PROGRAMS = {0, gc.get_freeze_count()}


class Freezer:
    """The freezing state of one pytest session."""

    def __init__(self) -> None:
        self.program_froze: bool | None = None  # not known before the first test
        self.frozen = False  # whether objects are frozen by us now
        self.since_refresh = 0

    def before_test(self) -> None:
        """Collects what was made since the last freeze, then freezes
        everything alive: a test's collections walk only its own objects."""
        if self.program_froze is None:
            self.program_froze = gc.get_freeze_count() not in _NOT_THE_PROGRAMS
        self.since_refresh += 1
        if self.since_refresh >= REFRESH and not self.program_froze:
            # Frees what was frozen alive and died since in a cycle (a class
            # fixture torn down, a cache's evicted entry): the collection
            # below walks everything, once in REFRESH tests.
            self.since_refresh = 0
            gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.frozen = True

    def thaw(self) -> bool:
        """Unfreezes what we froze, if we may (not a program's own frozen
        set, which ours are mixed with); whether anything was unfrozen.
        Asked before the leak check's whole-heap walks, which start from
        the collector's objects (the exact pass's own walks keep to what the
        test made, with the rest frozen), and before a round that failed
        frozen is run again."""
        if not self.frozen or self.program_froze:
            return False
        gc.unfreeze()
        self.frozen = False
        return True

    def at_end(self) -> None:
        """The collector as the session found it: nothing frozen by us."""
        self.thaw()
