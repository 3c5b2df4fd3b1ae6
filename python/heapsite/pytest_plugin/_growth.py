"""What grew in every round of the leak check (for the pytest plugin): call
sites by their live bytes, kinds of object by their counts.

A leak grows in every round; the last round's own allocations (pytest's
request, the fixtures' values) are alive at the end too but were not there
a round before. State is kept in arrays and bytearrays made once, updated
in place: the heap walk of the next round would count a new container."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from itertools import compress

from .._heap import Partition, Row
from .._own import own_work
from ._sites import Column, Flags


class EveryRound:
    """Which entries of a column (a value per index; later columns may be
    longer, an entry new since counting from 0) grew in every round so far,
    a byte per index. The first column handed in is the base; only the last
    one is kept."""

    def __init__(self):
        self.previous = None
        self.grew = Flags()
        self.compared = 0

    @own_work  # untraced, as the loops of _sites are
    def add(self, values: Sequence[int]) -> None:
        previous, grew = self.previous, self.grew
        if previous is not None:

            def above(index: int, value: int) -> bool:
                return value > (previous[index] if index < len(previous) else 0)

            # Only entries above 0 can have grown, and after the first round
            # only those that grew so far can go on: both picked by
            # itertools.compress in C, not by a Python loop over every
            # entry (a session's heap has thousands of kinds, most of them
            # the same each round).
            if self.compared == 0:
                grew.extend(bytes(len(values)))
                for index in compress(range(len(values)), values):
                    grew[index] = above(index, values[index])
            else:
                # An entry new since the first round did not grow in it.
                grew.extend(bytes(len(values) - len(grew)))
                for index in compress(range(len(grew)), grew):
                    if not above(index, values[index]):
                        grew[index] = 0
            self.compared += 1
        self.previous = values


class KindsEveryRound:
    """Which kinds of object grew in count in every round so far, from each
    round's whole_heap() partition (the first is the base): each kind gets
    an index the first time it is seen, and each round a column of counts.
    Kinds are found by key in a sorted array (bisect), not a dict, whose new
    int keys the next walk would count."""

    def __init__(self):
        self.sorted_keys = Column.of()  # a kind: its type's id * 4 + its tag
        self.index_of = Column.of()  # the index of each sorted key
        self.every = EveryRound()
        self.base_counts: Column | None = None
        self.base_sizes: Column | None = None

    @staticmethod
    def _key(row: Row) -> int:
        assert row.kind is not None  # a walk's rows know their kind
        tag, kind_type = row.kind
        return id(kind_type) * 4 + tag

    def _index(self, row: Row, add: bool = True) -> int:
        """The index of the row's kind (-1 if unseen and not `add`)."""
        key = self._key(row)
        at = bisect.bisect_left(self.sorted_keys, key)
        if at < len(self.sorted_keys) and self.sorted_keys[at] == key:
            return self.index_of[at]
        if not add:
            return -1
        self.sorted_keys.insert(at, key)
        self.index_of.insert(at, len(self.index_of))
        return len(self.index_of) - 1

    def add(self, partition: Partition) -> int:
        """Takes one round's partition; returns its count of objects."""
        indexed = [(self._index(row), row) for row in partition.rows]
        counts = Column.of(bytes(8 * len(self.index_of)))
        for index, row in indexed:
            counts[index] = row.count
        if self.base_counts is None:
            # Sizes only for the base: leaked() reports the gain since.
            sizes = Column.of(bytes(8 * len(self.index_of)))
            for index, row in indexed:
                sizes[index] = row.size
            self.base_counts, self.base_sizes = counts, sizes
        self.every.add(counts)
        return partition.count

    def leaked(self, last: Partition) -> Partition:
        """What the kinds that grew in every round gained from the base to
        `last` (the last round's partition), by kind, as a partition."""
        grew, base_counts, base_sizes = self.every.grew, self.base_counts, self.base_sizes
        assert base_counts is not None and base_sizes is not None  # add() came first
        rows = []
        for row in last.rows:
            index = self._index(row, add=False)
            if 0 <= index < len(grew) and grew[index]:
                known = index < len(base_counts)
                count = row.count - (base_counts[index] if known else 0)
                size = row.size - (base_sizes[index] if known else 0)
                rows.append(Row(row.name, count, size, kind=row.kind))
        rows.sort(key=lambda r: (-r.size, -r.count, r.name))
        return type(last)(rows)
