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
import sys
import types
from collections.abc import Sequence

from . import _core
from . import _own as own_work

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import TypeVar

    _P = TypeVar("_P", bound="Partition")

ROWS_SHOWN = 10
BEFORE_TRACKING = "<before tracking>"


def _type_names() -> dict:
    """Names heapy gives the interpreter's own types that builtins lacks.
    (`_weakref` is built in: importing `weakref` here, on the first heap(),
    would make its objects look like growth in `heap().diff(before)`.)"""
    import _weakref as weakref

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


class _Rows(list):
    """A partition's rows, or a row's split. A class of heapsite's own, as
    is _Share: walks neither count nor walk through instances of heapsite's
    classes, so a Partition kept in a variable (`before = heap()`) is not
    growth in the next heap(). Plain lists and tuples would be: the walk's
    roots are every gc-tracked object, these among them."""

    __slots__ = ()


class _Share(tuple):
    """(label, count, size): one line of a row's split (see _Rows)."""

    __slots__ = ()


class Row:
    """One kind: its name, count and size; once asked for, its objects split
    by allocating site and by the kinds of their referrers, each as
    [(label, count, size)]."""

    __slots__ = ("name", "count", "size", "sites", "referrers", "kind")

    def __init__(
        self,
        name: str,
        count: int,
        size: int,
        sites: list | None = None,
        referrers: list | None = None,
        kind: tuple[int, type | None] | None = None,
    ) -> None:
        self.name, self.count, self.size = name, count, size
        self.sites, self.referrers = sites, referrers
        # (tag, type) as the walk reports it, for path_to_root.
        self.kind = _Share(kind) if kind is not None else None

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


SPLIT_NOTHING, SPLIT_SITES, SPLIT_REFERRERS = 0, 1, 2


def _name(tag: int, t: type | None) -> str:
    if t is None:  # tag 2
        return "dict (no owner)"
    if tag == 0:
        return kind_name(t)
    if tag == 1:
        return "dict of " + kind_name(t)
    return "dict (no owner)"


def _rows_of(
    raw_rows: list[_core.KindRow], split: int, signatures: tuple[tuple[_core.Kind, ...], ...]
) -> list[Row]:
    if split == SPLIT_SITES:
        labels: dict = {}

        def label(key):
            return _site_label(key, labels)
    else:
        names = [", ".join(sorted(_name(*k) for k in kinds)) or "<Nothing>" for kinds in signatures]

        def label(key):
            return names[key]

    rows = []
    for kind in raw_rows:
        row = Row(
            _name(kind.tag, kind.kind_type),
            kind.object_count,
            kind.size,
            kind=(kind.tag, kind.kind_type),
        )
        if split != SPLIT_NOTHING:
            labelled = _Rows(
                sorted(
                    (_Share((label(k), c, z)) for k, c, z in kind.split),
                    key=lambda r: (-r[2], -r[1], r[0]),
                )
            )
            if split == SPLIT_SITES:
                row.sites = labelled
            else:
                row.referrers = labelled
        rows.append(row)
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
    # No instance __dict__ (a gc-tracked dict before 3.11): see _Rows.
    __slots__ = ("rows", "count", "size", "_start", "_shown")

    def __init__(self, rows: list, start: int = 0, shown: int | None = ROWS_SHOWN):
        self.rows = rows if isinstance(rows, _Rows) else _Rows(rows)
        self.count = sum(r.count for r in rows)
        self.size = sum(r.size for r in rows)
        self._start = start
        self._shown = shown

    def __len__(self) -> int:
        return len(self.rows)

    def _view(self, rows: list, start: int, shown: int | None) -> Partition:
        return type(self)(rows, start, shown)

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
        rows = [Row(name, count, size) for name, (count, size) in merged.items()]
        rows.sort(key=lambda r: (-r.size, -r.count, r.name))
        return TypePartition(rows)

    def path_to_root(self) -> str | None:
        """The shortest chain of references from a module (failing that, a
        running frame) to an object of this partition's first kind, as
        `__main__.__dict__['objs'][0]`; None if none reaches one."""
        if not self.rows or self.rows[0].kind is None:
            return None
        tag, t = self.rows[0].kind
        return _path(None, tag, t)

    def _fill(self, split: int, attribute: str) -> None:
        """Fetches a split the rows do not have yet, by walking the heap
        again (so it shows the heap as it is then)."""
        if all(getattr(r, attribute) is not None for r in self.rows):
            return
        fresh = {r.name: r for r in _walk(split).rows}
        for row in self.rows:
            if getattr(row, attribute) is None:
                other = fresh.get(row.name)
                setattr(row, attribute, getattr(other, attribute) if other else _Rows())

    def _regrouped(self, attribute: str, fallback: str, cls: type[_P], by_kind: bool) -> _P:
        merged: dict = {}
        for row in self.rows:
            for label, count, size in getattr(row, attribute) or [(fallback, row.count, row.size)]:
                name = f"{row.name} @ {label}" if by_kind else label
                c, z = merged.get(name, (0, 0))
                merged[name] = (c + count, z + size)
        rows = [Row(name, count, size) for name, (count, size) in merged.items()]
        rows.sort(key=lambda r: (-r.size, -r.count, r.name))
        return cls(rows)

    @property
    def bysite(self) -> SitePartition:
        """Each kind split by the call site that allocated its objects
        ("<before tracking>" where heapsite has no record).

        The split costs a table lookup per object, which heap() alone does
        not pay: the first `.bysite` walks the heap again with the records,
        so it shows the heap as it is then."""
        self._fill(SPLIT_SITES, "sites")
        return self._regrouped("sites", BEFORE_TRACKING, SitePartition, by_kind=True)

    @property
    def byrcs(self) -> ReferrerPartition:
        """The objects by the kinds of their referrers (heapy's byrcs):
        "list" for objects only lists refer to, "dict (no owner), list" for
        those both kinds refer to, "<Nothing>" for none. Walks again when
        first asked, as `.bysite` does."""
        self._fill(SPLIT_REFERRERS, "referrers")
        return self._regrouped("referrers", "<Nothing>", ReferrerPartition, by_kind=False)

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
                rows.append(Row(name, count, size))
        rows.sort(key=lambda r: (-abs(r.size), -abs(r.count), r.name))
        return DiffPartition(rows)


class SitePartition(Partition):
    __slots__ = ()
    KIND_HEADER = "Kind @ allocating site"


class ReferrerPartition(Partition):
    __slots__ = ()
    KIND_HEADER = "Referrers by Kind (class / dict of class)"


class TypePartition(Partition):
    __slots__ = ()
    KIND_HEADER = "Type"


class DiffPartition(Partition):
    __slots__ = ()

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


def _roots() -> list:
    """The modules, less heapsite's own: what they hold is not the program's
    (and is left out of walks and of the relheap alike)."""
    return [
        m
        for name, m in list(sys.modules.items())
        if isinstance(m, types.ModuleType)
        and name != "heapsite"
        and not name.startswith("heapsite.")
    ]


def _frame_roots(depth: int) -> dict:
    """The running frames' locals, as {id(locals dict): (dict, label)}: the
    caller's frames (`depth` up) and other threads'. Asked only when no
    module reaches the object (reading them creates frame objects, which
    heap() itself never does; a running frame's own traversal does not show
    its locals, so they are copied into dicts)."""
    import threading

    me = threading.get_ident()
    tops: list[types.FrameType | None] = [
        f for ident, f in sys._current_frames().items() if ident != me
    ]
    tops.insert(0, sys._getframe(depth + 1))
    roots = {}
    for frame in tops:
        while frame is not None:
            code = frame.f_code
            label = f"<frame of {code.co_name} at {code.co_filename}:{frame.f_lineno}>.f_locals"
            local_vars = dict(frame.f_locals)
            roots[id(local_vars)] = (local_vars, label)
            frame = frame.f_back
    return roots


def _path(target: object, tag: int, kind_type: type | None) -> str | None:
    own = _own()
    chain = _core.path_to(_roots(), own, target, tag, kind_type)
    if chain:
        return _describe(chain)
    frames = _frame_roots(2)
    chain = _core.path_to([d for d, _ in frames.values()], own, target, tag, kind_type)
    return _describe(chain, frames)


def _step(parent: object, child: object) -> str:
    """How `parent` refers to `child`, as Python source would say it (never
    creating an instance's __dict__ to find out)."""
    if isinstance(parent, types.ModuleType) and vars(parent) is child:
        return ".__dict__"
    if isinstance(parent, type) and isinstance(child, dict) and child == dict(vars(parent)):
        return ".__dict__"
    if not isinstance(parent, type):
        attributes = _core.instance_dict(parent)
        if attributes is child:
            return ".__dict__"
        # 3.13 reports an instance's attribute values straight from the
        # instance even when its __dict__ exists: say it the same way.
        for key, value in (attributes or {}).items():
            if value is child:
                return f".__dict__[{key!r}]"
    if isinstance(parent, dict):
        for key, value in parent.items():
            if value is child:
                return f"[{key!r}]"
        for key in parent:
            if key is child:
                return ".keys()[...]"
    if isinstance(parent, (list, tuple)):
        for index, value in enumerate(parent):
            if value is child:
                return f"[{index}]"
    for slot in getattr(type(parent), "__slots__", ()) or ():
        if getattr(parent, slot, None) is child:
            return f".{slot}"
    for name in _declared_attributes(type(parent)):
        if getattr(parent, name, None) is child:
            return f".{name}"
    return f" -> <{kind_name(type(child))}>"


def _declared_attributes(cls: type) -> list:
    """The instance attributes a class declares (dataclass fields,
    annotations, and on 3.13+ those its methods assign): how to name an
    attribute of an instance whose values live without a __dict__ (3.11+),
    reading it without creating one."""
    names: list = []
    for klass in getattr(cls, "__mro__", ()):
        try:
            names += getattr(klass, "__dataclass_fields__", {}) or {}
            names += klass.__dict__.get("__annotations__", {}) or {}
            names += getattr(klass, "__static_attributes__", ()) or ()
        except Exception:  # noqa: BLE001 - a class's own attributes may raise
            continue
    return list(dict.fromkeys(n for n in names if isinstance(n, str)))


def _describe(chain: Sequence[object], frames: dict | None = None) -> str | None:
    if not chain:
        return None
    root = chain[0]
    if isinstance(root, types.ModuleType):
        text = root.__name__
    elif frames and id(root) in frames:
        text = frames[id(root)][1]
    else:
        text = f"<{kind_name(type(root))}>"
    for parent, child in zip(chain, chain[1:]):
        text += _step(parent, child)
    return text


_HAVE_GC = 1 << 14  # Py_TPFLAGS_HAVE_GC


def collector_may_track(row: Row) -> bool:
    """Whether the collector may track objects of `row`'s kind: dicts, and
    instances of a type it can track (not str, bytes or int, for which
    relheap_since_freeze() can never see a new one)."""
    if row.kind is None:
        return False
    tag, t = row.kind
    return tag != 0 or (t is not None and bool(t.__flags__ & _HAVE_GC))


def path_to_root(obj: object) -> str | None:
    """The shortest chain of references from a module to `obj`, as
    `mymodule.__dict__['_registry'][41]`; failing that, from a running frame
    (`<frame of main at app.py:12>.f_locals['cache'][3]`); None if neither
    reaches it."""
    return _path(obj, -1, None)


def _own() -> list:
    """heapsite's modules, their dicts and its classes: left out of walks."""
    own = []
    for name, module in list(sys.modules.items()):
        if (name == "heapsite" or name.startswith("heapsite.")) and module is not None:
            own += [module, vars(module)]
            classes = [v for v in vars(module).values() if isinstance(v, type)]
            own += [c for c in classes if c.__module__ == name]
    return own


def _walk(split: int, relative: bool = True, through_tracked: bool = True) -> Partition:
    entered = own_work.enter()  # not a decorator: its arguments would be walked
    try:
        walk = _core.heap_walk(
            gc.get_objects(), _own(), split, relative, through_tracked=through_tracked
        )
        partition = Partition(_rows_of(walk.rows, split, walk.signatures))
    finally:
        own_work.leave(entered)
    assert partition.count == walk.object_count and partition.size == walk.size
    return partition


def heap() -> Partition:
    """Every object reachable from the gc-tracked ones (less what setrelheap()
    saw), by kind. `.bysite` splits each kind by allocating site, `.byrcs`
    by the kinds of the referrers."""
    return _walk(SPLIT_NOTHING)


def whole_heap() -> Partition:
    """Every object reachable from the gc-tracked ones, by kind, whatever
    setrelheap() saw. Counts by kind compare across time where objects
    made since a setrelheap() do not: a free list hands out the block of
    an object setrelheap() saw without the allocator knowing, and the new
    object is then left out as if it were that old one."""
    return _walk(SPLIT_NOTHING, relative=False)


def unfrozen_heap() -> Partition:
    """The objects the collector tracks outside its frozen set
    (gc.freeze()), and what they reach without passing another tracked
    object (their strings and numbers), by kind, whatever setrelheap() saw.
    With nothing frozen, nearly whole_heap()'s objects; with the objects
    older than something frozen (the leak check freezes them before each
    test), what was made since, at the cost of those objects only."""
    return _walk(SPLIT_NOTHING, relative=False, through_tracked=False)


def setrelheap(reference: None = None) -> None:
    """Later heap() calls count only objects created after this call."""
    if reference is not None:
        raise TypeError("setrelheap() takes no reference set in heapsite; call it with no argument")
    entered = own_work.enter()
    try:
        _core.set_relheap(gc.get_objects(), _own())
    finally:
        own_work.leave(entered)


def relheap_since_freeze() -> None:
    """Later heap() calls and searches for a new object of a kind count only
    the objects the collector tracks outside its frozen set (gc.freeze()):
    the leak check's objects of a test, found without a walk of the whole
    heap. Not the untracked objects they refer to (strings, numbers), which
    may be older. clearrelheap() undoes it."""
    entered = own_work.enter()
    try:
        _core.set_relheap(gc.get_objects(), _own(), True)
    finally:
        own_work.leave(entered)


def clearrelheap() -> None:
    """heap() counts every object again."""
    _core.set_relheap(None, [])


class hpy:  # noqa: N801 - heapy's name, so hpy().heap() code runs unchanged
    """guppy's `hpy()`: `hpy().heap()`, `hpy().setrelheap()`."""

    def heap(self) -> Partition:
        return heap()

    def setrelheap(self, reference: None = None) -> None:
        setrelheap(reference)


__all__ = ["Partition", "clearrelheap", "heap", "hpy", "kind_name", "path_to_root", "setrelheap"]
