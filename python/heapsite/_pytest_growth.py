"""What grew in every round of the leak check (for the pytest plugin): call
sites by their live bytes, kinds of object by their counts.

A leak grows in every round; the last round's own allocations (pytest's
request, the fixtures' values) are alive at the end too but were not there
a round before. State is kept in arrays and bytearrays made once, updated
in place: the heap walk of the next round would count a new container."""

from __future__ import annotations

import array


class EveryRound:
    """Which sites' live bytes grew in every round so far, a byte per site
    (a site made during the rounds counts from 0). Rounds hand in the
    live-bytes column of figures(); only the last one is kept."""

    def __init__(self, live):
        self.previous = live
        self.grew = bytearray()
        self.rounds = 0

    def add(self, live) -> None:
        previous, grew = self.previous, self.grew

        def above(site, value) -> bool:
            return value > (previous[site] if site < len(previous) else 0)

        if self.rounds == 0:
            grew.extend(above(site, value) for site, value in enumerate(live))
        else:
            # Sites never go away, so `live` is at least as long as `grew`.
            grew.extend(bytes(len(live) - len(grew)))
            for site, value in enumerate(live):
                if grew[site] and not above(site, value):
                    grew[site] = 0
        self.rounds += 1
        self.previous = live


class KindsEveryRound:
    """Which kinds of object grew in count in every round so far, from each
    round's whole_heap() partition. The first partition handed in is the
    base."""

    def __init__(self):
        self.keys = array.array("q")  # a kind: its type's id * 4 + its tag
        self.counts = array.array("q")
        self.grew = bytearray()
        self.rounds = 0

    @staticmethod
    def _key(row) -> int:
        tag, kind_type = row.kind
        return id(kind_type) * 4 + tag

    def add(self, partition) -> int:
        """Takes one round's partition; returns its count of objects."""
        now = array.array("q", bytes(8 * len(self.keys)))
        for row in partition.rows:
            key = self._key(row)
            try:
                index = self.keys.index(key)
            except ValueError:
                # Absent until now: it grew in every round so far only if
                # this is the first round (or the base).
                self.keys.append(key)
                self.counts.append(0)
                self.grew.append(self.rounds <= 1)
                now.append(0)
                index = len(self.keys) - 1
            now[index] = row.count
        if self.rounds:
            for index, count in enumerate(now):
                if count <= self.counts[index]:
                    self.grew[index] = 0
        self.counts = now
        self.rounds += 1
        return partition.count

    def leaked(self, partition):
        """The rows of `partition` (a heap() after the last round) whose
        kind grew in every round, as a partition of its own."""
        rows = []
        for row in partition.rows:
            key = self._key(row)
            if key in self.keys and self.grew[self.keys.index(key)]:
                rows.append(row)
        return type(partition)(rows)
