"""Which call sites are the program's, and their figures (for the pytest plugin).

A site is the program's when its most recent frame is not in heapsite itself
and, given a `foreign` test (see _threads), it was not allocated by
another thread. A site's frames never change, so what a site is is worked
out once per process and kept in a byte per site id, which the core reads
to sum the program's live bytes: the leak check asks that every round
without making a Python object per site.
"""

from __future__ import annotations

import array
import os
from collections.abc import Iterable, Sequence

from .. import _core
from .._own import own_work

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from ._threads import Foreign

# heapsite's own allocations (snapshots, partitions) are not the test's:
# the whole package's, this plugin's and the core's.
OWN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "")

_UNKNOWN, _PROGRAM, _OTHER = 0, 1, 2


def own(frames: Sequence[tuple]) -> bool:
    return bool(frames) and frames[0][0].startswith(OWN)


def is_program(frames: Sequence[tuple], foreign: Foreign | None = None) -> bool:
    """Whether a site with these frames is the program's: not heapsite's
    own and, given `foreign`, not another thread's."""
    return not own(frames) and not (foreign and foreign(frames))


class Column(array.array):
    """An int64 array of heapsite's bookkeeping. A class of heapsite's own,
    as Flags is, so that heap walks leave it out: as a plain array.array,
    each live one counted as the program's object ("7 more objects (47 KiB)"
    where the test kept one 64-byte array per call)."""

    __slots__ = ()

    @classmethod
    def of(cls, values: bytes | Sequence[int] = b"") -> Column:
        """A column of int64 from raw bytes or from ints."""
        column = cls("q")
        if isinstance(values, (bytes, bytearray)):
            column.frombytes(values)
        else:
            column.extend(values)
        return column


class Flags(bytearray):
    """A byte per entry of heapsite's bookkeeping (see Column)."""

    __slots__ = ()


# The loops over every site below run as heapsite's own work: untraced, so
# that the ints and arrays they make are neither measured as the test's nor
# each paid for with a traced allocation (jinja2's tests: 4% of a
# --heapsite-leaks run was in the allocator hook under these loops).


@own_work
def figures():
    """(live bytes, live blocks, bytes at the peak) per site id, as arrays."""
    return [Column.of(raw) for raw in _core.site_figures()]


class ProgramSites:
    """What each site is, for one `foreign` test, kept by site id."""

    _by_foreign: dict = {}

    @classmethod
    def of(cls, foreign: Foreign | None = None) -> ProgramSites:
        known = cls._by_foreign.get(foreign)
        if known is None:
            known = cls._by_foreign[foreign] = cls(foreign)
        return known

    def __init__(self, foreign):
        self.foreign = foreign
        # A byte per site id: _UNKNOWN until asked, then _PROGRAM or
        # _OTHER (the core's program_live_bytes reads the same bytes).
        self.kinds = Flags()

    def is_program(self, site: int) -> bool:
        if site >= len(self.kinds):
            self.kinds.extend(bytes(site + 1 - len(self.kinds)))
        kind = self.kinds[site]
        if kind == _UNKNOWN:
            # site_names, not frames_of: it keeps no new object (frames_of
            # caches its tuples), so asking between a leak check's heap
            # walks does not look like the test's growth.
            kind = _PROGRAM if is_program(_core.site_names(site), self.foreign) else _OTHER
            self.kinds[site] = kind
        return kind == _PROGRAM

    @own_work
    def live_bytes(self) -> int:
        """The program's live bytes now: summed in the core over the sites
        sorted so far, and the sites holding memory not sorted yet are
        sorted here (few after a session's first tests)."""
        total, unsorted = _core.program_live_bytes(self.kinds)
        for site, size in unsorted:
            if self.is_program(site):
                total += size
        return total

    @own_work
    def of_program(self, sites: Iterable[int]) -> set[int]:
        """Those of `sites` that are the program's."""
        return {site for site in sites if self.is_program(site)}
