"""heapsite.heap(): what uses memory, by kind, in heapy's table, joined with
the call sites that allocated each kind.

    >>> import heapsite
    >>> h = heapsite.heap()
    >>> print(h)               # heapy's layout
    Partition of a set of 2027301 objects. Total size = 83671256 bytes.
     Index   Count   %     Size   % Cumulative  % Kind (class / dict of class)
         0 2000000  99 64000000  76   64000000  76 complex
    ...
    >>> heapsite.setrelheap()  # later heap() calls count only what is new
    >>> print(h.bysite)        # each kind split by the line that allocated it
"""

from __future__ import annotations

import builtins
import gc
import types

from . import _heapsite as _core

ROWS_SHOWN = 10
BEFORE_TRACKING = "<before tracking>"


def _type_names() -> dict:
    """Names heapy gives the interpreter's own types that builtins lacks."""
    import weakref

    names = {types.FunctionType: "function", types.ModuleType: "module"}
    special = set(names)
    # Where types has two names for one type, heapy shows the later one
    # (BuiltinMethodType, not BuiltinFunctionType).
    for name, value in sorted(vars(types).items()):
        if isinstance(value, type) and name.endswith("Type") and value not in special:
            if getattr(builtins, value.__name__, None) is not value:
                names[value] = "types." + name
    names[weakref.ref] = "weakref.ReferenceType"
    names[weakref.ProxyType] = "weakref.ProxyType"
    names[weakref.CallableProxyType] = "weakref.CallableProxyType"
    return names


_NAMES: dict | None = None


def kind_name(t: type) -> str:
    """A type's name as heapy prints it: `str`, `types.CodeType`,
    `__main__.Foo`."""
    global _NAMES
    if _NAMES is None:
        _NAMES = _type_names()
    if t in _NAMES:
        return _NAMES[t]
    if t.__module__ == "builtins" and getattr(builtins, t.__name__, None) is t:
        return t.__name__
    return f"{t.__module__}.{t.__name__}"


class Row:
    """One kind: its name, count, size and, when heapsite traced the
    allocations, the sites that made them: [(site label, count, size)]."""

    __slots__ = ("name", "count", "size", "sites")

    def __init__(self, name: str, count: int, size: int, sites: list):
        self.name, self.count, self.size, self.sites = name, count, size, sites

    def __repr__(self) -> str:
        return f"<Row {self.name}: {self.count} objects, {self.size} bytes>"


def _site_label(site_id: int, cache: dict) -> str:
    if site_id < 0:
        return BEFORE_TRACKING
    if site_id not in cache:
        frames = _core.frames_of(site_id)
        filename, lineno, name = frames[0]
        cache[site_id] = f"{filename}:{lineno}" + (f" in {name}" if name and lineno else "")
    return cache[site_id]


def _rows_of(raw_rows) -> list:
    labels: dict = {}
    rows = []
    for tag, t, count, size, sites in raw_rows:
        if tag == 0:
            name = kind_name(t)
        elif tag == 1:
            name = "dict of " + kind_name(t)
        else:
            name = "dict (no owner)"
        labelled = ((_site_label(s, labels), c, z) for s, c, z in sites)
        by_site = sorted(labelled, key=lambda r: (-r[2], -r[1], r[0]))
        rows.append(Row(name, count, size, by_site))
    rows.sort(key=lambda r: (-r.size, -r.count, r.name))
    return rows


def _percent(part: int, whole: int) -> int:
    return int("%.0f" % (part * 100.0 / whole)) if whole else 0


class Partition:
    """A set of objects partitioned by kind, printed as heapy prints it.

    `.count` and `.size` are the set's; `[i]` is row i as a set of its own;
    `.more` shows the next rows, `.all` every row; `.bysite` splits each kind
    by the line that allocated it; `.diff(other)` compares by kind."""

    KIND_HEADER = "Kind (class / dict of class)"

    def __init__(
        self, rows: list, start: int = 0, shown: int | None = ROWS_SHOWN, joined: bool = True
    ):
        self.rows = rows
        self._joined = joined
        self.count = sum(r.count for r in rows)
        self.size = sum(r.size for r in rows)
        self._start = start
        self._shown = shown

    def __len__(self) -> int:
        return len(self.rows)

    def _view(self, rows: list, start: int, shown: int | None) -> Partition:
        view = type(self)(rows, start, shown, self._joined)
        return view

    def __getitem__(self, index: int) -> Partition:
        if not isinstance(index, int):
            raise TypeError(f"row index must be an int, not {type(index).__name__}")
        if not -len(self.rows) <= index < len(self.rows):
            raise IndexError(f"row index {index} out of range (0..{len(self.rows) - 1})")
        return self._view([self.rows[index]], 0, ROWS_SHOWN)

    @property
    def more(self) -> Partition:
        """The next rows (as heapy's `_.more`)."""
        shown = self._shown or len(self.rows)
        return self._view(self.rows, self._start + shown, self._shown)

    @property
    def all(self) -> Partition:
        """Every row."""
        return self._view(self.rows, 0, None)

    @property
    def kinds(self) -> list:
        return [r.name for r in self.rows]

    def _header(self) -> str:
        s = "" if self.count == 1 else "s"
        return f"Partition of a set of {self.count} object{s}. Total size = {self.size} bytes."

    def _lines(self, kind_header: str, rows: list) -> list:
        lines = [self._header()]
        if not (self.count or self.size):
            return lines
        lines.append(" Index  Count   %     Size   % Cumulative  % " + kind_header)
        cumulative = sum(r.size for r in rows[: self._start])
        end = len(rows) if self._shown is None else min(len(rows), self._start + self._shown)
        for index in range(self._start, end):
            row = rows[index]
            cumulative += row.size
            lines.append(
                "%6d %6d %3d %8d %3d %9d %3d %s"
                % (
                    index,
                    row.count,
                    _percent(row.count, self.count),
                    row.size,
                    _percent(row.size, self.size),
                    cumulative,
                    _percent(cumulative, self.size),
                    row.name,
                )
            )
        if end < len(rows):
            lines.append(f"<{len(rows) - end} more rows. Type e.g. '_.more' to view.>")
        return lines

    def __str__(self) -> str:
        return "\n".join(self._lines(self.KIND_HEADER, self.rows))

    __repr__ = __str__

    @property
    def bytype(self) -> Partition:
        """The same objects by type alone: every dict is `dict`."""
        merged: dict = {}
        for row in self.rows:
            name = "dict" if row.name.startswith("dict ") else row.name
            count, size = merged.get(name, (0, 0))
            merged[name] = (count + row.count, size + row.size)
        rows = [Row(name, count, size, []) for name, (count, size) in merged.items()]
        rows.sort(key=lambda r: (-r.size, -r.count, r.name))
        return TypePartition(rows)

    @property
    def bysite(self) -> SitePartition:
        """Each kind split by the call site that allocated its objects
        ("<before tracking>" where heapsite has no record).

        A partition from heap() is joined lazily: the first `.bysite` walks
        the heap again with the allocation records (the join costs a table
        lookup per object, which heap() alone does not pay), so it shows the
        heap as it is then; kinds not in this partition are left out."""
        if not self._joined:
            fresh = {r.name: r for r in _walk(join_sites=True).rows}
            for row in self.rows:
                row.sites = fresh[row.name].sites if row.name in fresh else []
            self._joined = True
        rows = [
            Row(f"{r.name} @ {label}", count, size, [])
            for r in self.rows
            for label, count, size in (r.sites or [(BEFORE_TRACKING, r.count, r.size)])
        ]
        rows.sort(key=lambda r: (-r.size, -r.count, r.name))
        return SitePartition(rows)

    def diff(self, other: Partition) -> Partition:
        """What this set has more (or less) of than `other`, by kind."""
        if not isinstance(other, Partition):
            raise TypeError(f"diff expects a Partition, got {type(other).__name__}")
        theirs = {r.name: r for r in other.rows}
        mine = {r.name: r for r in self.rows}
        rows = []
        for name in mine.keys() | theirs.keys():
            a, b = mine.get(name), theirs.get(name)
            count = (a.count if a else 0) - (b.count if b else 0)
            size = (a.size if a else 0) - (b.size if b else 0)
            if count or size:
                rows.append(Row(name, count, size, []))
        rows.sort(key=lambda r: (-abs(r.size), -abs(r.count), r.name))
        return DiffPartition(rows)


class SitePartition(Partition):
    KIND_HEADER = "Kind @ allocating site"


class TypePartition(Partition):
    KIND_HEADER = "Type"


class DiffPartition(Partition):
    def _header(self) -> str:
        return (
            f"Difference by kind: {self.count:+d} objects, {self.size:+d} bytes "
            "(this set minus the other)."
        )

    def _lines(self, kind_header: str, rows: list) -> list:
        lines = [self._header(), " Index  Count     Size Kind"]
        end = len(rows) if self._shown is None else min(len(rows), self._start + self._shown)
        for index in range(self._start, end):
            row = rows[index]
            lines.append("%6d %+6d %+8d %s" % (index, row.count, row.size, row.name))
        if end < len(rows):
            lines.append(f"<{len(rows) - end} more rows. Type e.g. '_.more' to view.>")
        return lines


def _walk(join_sites: bool) -> Partition:
    count, size, raw_rows = _core.heap_walk(gc.get_objects(), join_sites)
    partition = Partition(_rows_of(raw_rows), joined=join_sites or not _core.is_tracing())
    assert partition.count == count and partition.size == size
    return partition


def heap() -> Partition:
    """Every object reachable from the gc-tracked ones (less what setrelheap()
    saw), by kind. `.bysite` splits each kind by allocating site."""
    return _walk(join_sites=False)


def setrelheap(reference: None = None) -> None:
    """Later heap() calls count only objects created after this call."""
    if reference is not None:
        raise TypeError("setrelheap() takes no reference set in heapsite; call it with no argument")
    _core.set_relheap(gc.get_objects())


def clearrelheap() -> None:
    """heap() counts every object again."""
    _core.set_relheap(None)


class hpy:  # noqa: N801 - heapy's name, so hpy().heap() code runs unchanged
    """guppy's `hpy()`: `hpy().heap()`, `hpy().setrelheap()`."""

    def heap(self) -> Partition:
        return heap()

    def setrelheap(self, reference: None = None) -> None:
        setrelheap(reference)


__all__ = ["Partition", "clearrelheap", "heap", "hpy", "kind_name", "setrelheap"]
