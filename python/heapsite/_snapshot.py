"""Snapshots of heapsite's call sites: statistics, comparisons, filters, files.

A snapshot is a list of call sites, each with its traceback and its figures:
live (count, bytes), allocated in total since start(), and live at the peak.
Grouping and formatting follow the standard library's tracemalloc, so a
statistic line reads like `file.py:12: size=1382 KiB, count=29731, average=48 B`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence

from ._format import format_size
from ._own import own_work

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import IO, Any, NoReturn

KEY_TYPES = ("lineno", "filename", "traceback")
VIEWS = ("live", "peak", "total")


class SnapshotFileError(ValueError):
    """A snapshot file that is not one, is truncated, or is corrupt."""


class _Record:
    """A small immutable record: equal, hashed and ordered by `_key()`.

    (dataclasses would do, but importing them costs more than heapsite's
    whole import otherwise, and `import heapsite` should be cheap.)
    """

    __slots__ = ()

    def _key(self) -> tuple:
        raise NotImplementedError

    def __eq__(self, other):
        return type(other) is type(self) and self._key() == other._key()

    def __lt__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._key() < other._key()

    def __hash__(self):
        return hash(self._key())

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _init(self, **fields):
        for name, value in fields.items():
            object.__setattr__(self, name, value)


class Frame(_Record):
    """One frame of a traceback: file, line and function name."""

    __slots__ = ("filename", "lineno", "name")
    filename: str
    lineno: int
    name: str

    def __init__(self, filename: str, lineno: int, name: str = ""):
        self._init(filename=filename, lineno=lineno, name=name)

    def _key(self) -> tuple:
        # The name is not part of identity: statistics group by file and
        # line, as tracemalloc does.
        return (self.filename, self.lineno)

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno}"

    def __repr__(self) -> str:
        return f"<Frame filename={self.filename!r} lineno={self.lineno!r} name={self.name!r}>"


class Traceback(tuple):
    """Frames of one call site, most recent first."""

    def __new__(cls, frames: Iterable[Frame] = ()) -> Traceback:
        return super().__new__(cls, tuple(frames))

    def __str__(self) -> str:
        return str(self[0]) if self else "<unknown>"

    def __repr__(self) -> str:
        return f"<Traceback {tuple(self)!r}>"

    def format(self, limit: int | None = None, most_recent_first: bool = False) -> list[str]:
        """Lines like the standard library's traceback format, with source."""
        frames = list(self) if most_recent_first else list(reversed(self))
        if limit is not None:
            frames = frames[:limit] if limit >= 0 else frames[limit:]
        lines = []
        for frame in frames:
            where = f'  File "{frame.filename}", line {frame.lineno}'
            lines.append(where + (f", in {frame.name}" if frame.name else ""))
            source = _source_line(frame.filename, frame.lineno)
            if source:
                lines.append(f"    {source}")
        return lines


class Site(_Record):
    """One call site and its figures."""

    __slots__ = (
        "traceback",
        "live_count",
        "live_size",
        "total_count",
        "total_size",
        "peak_count",
        "peak_size",
    )
    traceback: Traceback
    live_count: int
    live_size: int
    total_count: int
    total_size: int
    peak_count: int
    peak_size: int

    def __init__(
        self,
        traceback: Traceback,
        live_count: int,
        live_size: int,
        total_count: int,
        total_size: int,
        peak_count: int,
        peak_size: int,
    ):
        self._init(
            traceback=traceback,
            live_count=live_count,
            live_size=live_size,
            total_count=total_count,
            total_size=total_size,
            peak_count=peak_count,
            peak_size=peak_size,
        )

    def _key(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __repr__(self) -> str:
        return f"<Site {self.traceback} live={self.live_size}B/{self.live_count}>"

    def measure(self, view: str) -> tuple[int, int]:
        """(size, count) for a view: live now, live at the peak, or in total."""
        if view == "live":
            return self.live_size, self.live_count
        if view == "peak":
            return self.peak_size, self.peak_count
        return self.total_size, self.total_count


class Statistic(_Record):
    """Memory of one group of call sites."""

    __slots__ = ("traceback", "size", "count")
    traceback: Traceback
    size: int
    count: int

    def __init__(self, traceback: Traceback, size: int, count: int):
        self._init(traceback=traceback, size=size, count=count)

    def _key(self) -> tuple:
        return (self.traceback, self.size, self.count)

    def __repr__(self) -> str:
        return f"<Statistic traceback={self.traceback!r} size={self.size} count={self.count}>"

    def __str__(self) -> str:
        text = f"{self.traceback}: size={format_size(self.size)}, count={self.count}"
        if self.count:
            text += f", average={format_size(self.size / self.count)}"
        return text

    def _sort_key(self):
        return (self.size, self.count, self.traceback)


class StatisticDiff(_Record):
    """The difference of one group between two snapshots."""

    __slots__ = ("traceback", "size", "size_diff", "count", "count_diff")
    traceback: Traceback
    size: int
    size_diff: int
    count: int
    count_diff: int

    def __init__(
        self, traceback: Traceback, size: int, size_diff: int, count: int, count_diff: int
    ):
        self._init(
            traceback=traceback, size=size, size_diff=size_diff, count=count, count_diff=count_diff
        )

    def _key(self) -> tuple:
        return (self.traceback, self.size, self.size_diff, self.count, self.count_diff)

    def __repr__(self) -> str:
        return (
            f"<StatisticDiff traceback={self.traceback!r} size={self.size} "
            f"size_diff={self.size_diff} count={self.count} count_diff={self.count_diff}>"
        )

    def __str__(self) -> str:
        text = (
            f"{self.traceback}: size={format_size(self.size)} "
            f"({format_size(self.size_diff, True)}), count={self.count} ({self.count_diff:+d})"
        )
        if self.count:
            text += f", average={format_size(self.size / self.count)}"
        return text

    def _sort_key(self):
        return (abs(self.size_diff), self.size, abs(self.count_diff), self.count, self.traceback)


def _normalize(filename: str) -> str:
    return filename[:-1] if filename.lower().endswith(".pyc") else filename


def _patterns(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    patterns = list(value)
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"file patterns must be str, got {type(pattern).__name__}")
    return patterns


def _group_keys(traceback: Traceback, key_type: str, cumulative: bool) -> list[Traceback]:
    if not traceback:
        return [Traceback((Frame("<unknown>", 0),))]
    if key_type == "traceback":
        return [traceback]
    frames = traceback if cumulative else traceback[:1]
    if key_type == "lineno":
        keys = [Traceback((f,)) for f in frames]
    else:
        keys = [Traceback((Frame(f.filename, 0),)) for f in frames]
    return list(dict.fromkeys(keys))  # a site counts once per key


# Snapshot files: a payload larger than this is not one dump() wrote, and
# one may inflate at most this far (JSON of sites compresses 20-40 times,
# deep recursive stacks the most; a decompression bomb, up to 1032 times).
_MAX_STORED = 1 << 30
_MAX_RATIO = 256
_MIN_INFLATE_LIMIT = 64 << 20
_MAX_INFLATE_LIMIT = 512 << 20


def _parse_payload(payload: bytes) -> Any:
    """The JSON document of a snapshot payload; ValueError naming what is
    wrong (an inflating bomb, a broken stream, bad JSON, non-finite numbers,
    nesting too deep)."""
    import json

    limit = min(max(_MIN_INFLATE_LIMIT, _MAX_RATIO * len(payload)), _MAX_INFLATE_LIMIT)
    text = _inflate(payload, limit)
    try:
        return json.loads(text, parse_constant=_not_a_number)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _inflate(payload: bytes, limit: int) -> bytearray:
    """The payload inflated a MiB at a time, refused once past `limit`."""
    import zlib

    inflater = zlib.decompressobj()
    text = bytearray()
    rest = payload
    try:
        while rest or not inflater.eof:
            chunk = inflater.decompress(rest, 1 << 20)
            if not chunk and rest == inflater.unconsumed_tail:
                break  # no progress: the stream ends early
            text += chunk
            if len(text) > limit:
                raise ValueError(f"the payload inflates to more than {limit} bytes")
            rest = inflater.unconsumed_tail
    except zlib.error as e:
        raise ValueError(str(e)) from None
    if not inflater.eof:
        raise ValueError("incomplete or truncated stream")
    return text


def _not_a_number(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number a snapshot holds")


def _list(value: object, what: str, length: int | None = None) -> list:
    if type(value) is not list:
        raise TypeError(f"{what} must be a list, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise ValueError(f"{what} must have {length} items, got {len(value)}")
    return value


def _whole(value: object, what: str) -> int:
    if type(value) is not int:
        raise TypeError(f"{what} must be a whole number, got {type(value).__name__}")
    return value


def _whole_numbers(value: object, length: int, what: str) -> list:
    return [_whole(item, what) for item in _list(value, what, length)]


def _text(value: object, what: str) -> str:
    if type(value) is not str:
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    return value


def _frame_of(entry: object) -> Frame:
    filename, lineno, name = _list(entry, "a frame", 3)
    return Frame(
        _text(filename, "a file name"),
        _whole(lineno, "a line number"),
        _text(name, "a function name"),
    )


def _site_of(entry: object) -> Site:
    frames, *figures = _list(entry, "a site", 7)
    traceback = Traceback(_frame_of(frame) for frame in _list(frames, "a traceback"))
    return Site(traceback, *(_whole(n, "a site's figure") for n in figures))


def _source_line(filename: str, lineno: int) -> str:
    """The source of a line, from a regular file only: a snapshot may name a
    device or a FIFO, which linecache would read without end."""
    import linecache
    import stat

    try:
        if not stat.S_ISREG(os.stat(filename).st_mode):
            return ""
    except (OSError, ValueError):
        return ""
    return linecache.getline(filename, lineno).strip()


def _check_key(key_type: str, cumulative: bool) -> None:
    if key_type not in KEY_TYPES:
        raise ValueError(f"unknown key_type: {key_type!r} (expected one of {', '.join(KEY_TYPES)})")
    if cumulative and key_type == "traceback":
        raise ValueError(f"cumulative mode cannot by used with key type {key_type!r}")


class Snapshot:
    """Call sites and their memory at one moment.

    `view` picks which figures statistics use: "live" (allocated and not yet
    freed), "peak" (live at the moment of the peak) or "total" (allocated in
    total since tracing started).
    """

    FORMAT = "heapsite-snapshot"
    MAGIC = b"HEAPSITE-SNAPSHOT\n"
    VERSION = 1

    def __init__(
        self,
        sites: Sequence[Site],
        traceback_limit: int,
        traced_memory: Sequence[int] = (0, 0),
        view: str = "live",
    ):
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r} (expected one of {', '.join(VIEWS)})")
        self.sites = list(sites)
        self.traceback_limit = traceback_limit
        self.traced_memory = tuple(traced_memory)
        self.view = view

    def _with(self, sites: Sequence[Site] | None = None, view: str | None = None) -> Snapshot:
        return Snapshot(
            self.sites if sites is None else sites,
            self.traceback_limit,
            self.traced_memory,
            self.view if view is None else view,
        )

    @own_work
    def peak(self) -> Snapshot:
        """The same sites, measured by what each had live at the peak."""
        return self._with(view="peak")

    @own_work
    def total(self) -> Snapshot:
        """The same sites, measured by all they allocated since start()."""
        return self._with(view="total")

    def _grouped(self, key_type: str, cumulative: bool) -> dict[Traceback, list[int]]:
        _check_key(key_type, cumulative)
        groups: dict[Traceback, list[int]] = {}
        for site in self.sites:
            size, count = site.measure(self.view)
            if not size and not count:
                continue
            for key in _group_keys(site.traceback, key_type, cumulative):
                entry = groups.setdefault(key, [0, 0])
                entry[0] += size
                entry[1] += count
        return groups

    @own_work
    def statistics(self, key: str = "lineno", cumulative: bool = False) -> list[Statistic]:
        """Memory grouped by line, file or whole traceback, largest first."""
        stats = [
            Statistic(k, size, count) for k, (size, count) in self._grouped(key, cumulative).items()
        ]
        stats.sort(reverse=True, key=Statistic._sort_key)
        return stats

    @own_work
    def compare_to(
        self, old: Snapshot, key: str = "lineno", cumulative: bool = False
    ) -> list[StatisticDiff]:
        """What changed since `old`, biggest change first."""
        if not isinstance(old, Snapshot):
            raise TypeError(f"compare_to expects a Snapshot, got {type(old).__name__}")
        new_groups = self._grouped(key, cumulative)
        old_groups = old._grouped(key, cumulative)
        diffs = []
        for k in new_groups.keys() | old_groups.keys():
            size, count = new_groups.get(k, (0, 0))
            old_size, old_count = old_groups.get(k, (0, 0))
            diffs.append(StatisticDiff(k, size, size - old_size, count, count - old_count))
        diffs.sort(reverse=True, key=StatisticDiff._sort_key)
        return diffs

    @own_work
    def filter(
        self,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        all_frames: bool = False,
    ) -> Snapshot:
        """Only sites whose file matches `include` and not `exclude` (globs).

        By default the most recent frame is matched; with all_frames, any.
        """
        import fnmatch

        includes, excludes = _patterns(include), _patterns(exclude)

        def matches(site: Site, patterns: list[str]) -> bool:
            frames = site.traceback if all_frames else site.traceback[:1]
            return any(
                fnmatch.fnmatch(_normalize(f.filename), _normalize(p))
                for f in frames
                for p in patterns
            )

        kept = [
            s
            for s in self.sites
            if (not includes or matches(s, includes)) and not (excludes and matches(s, excludes))
        ]
        return self._with(sites=kept)

    @own_work
    def top(self, limit: int = 10, key: str = "lineno", file: IO[str] | None = None) -> None:
        """Prints the `limit` largest groups with their source lines."""
        out = file if file is not None else sys.stdout
        stats = self.statistics(key)
        what = {"live": "live", "peak": "live at peak", "total": "allocated in total"}[self.view]
        current, peak = self.traced_memory
        print(
            f"heapsite: top {min(limit, len(stats))} {key} by memory {what} "
            f"(traced now {format_size(current)}, peak {format_size(peak)})",
            file=out,
        )
        for index, stat in enumerate(stats[:limit], 1):
            print(f"#{index}: {stat}", file=out)
            frame = stat.traceback[0]
            line = _source_line(frame.filename, frame.lineno)
            if line and key != "filename":
                print(f"    {line}", file=out)
        rest = stats[limit:]
        if rest:
            size = sum(s.size for s in rest)
            count = sum(s.count for s in rest)
            print(f"{len(rest)} other: size={format_size(size)}, count={count}", file=out)
        total = sum(s.size for s in stats)
        print(f"Total: {format_size(total)}", file=out)

    # ---- files ---------------------------------------------------------

    def _to_json(self) -> dict:
        return {
            "format": self.FORMAT,
            "version": self.VERSION,
            "traceback_limit": self.traceback_limit,
            "traced_memory": list(self.traced_memory),
            "view": self.view,
            "sites": [
                [
                    [[f.filename, f.lineno, f.name] for f in s.traceback],
                    s.live_count,
                    s.live_size,
                    s.total_count,
                    s.total_size,
                    s.peak_count,
                    s.peak_size,
                ]
                for s in self.sites
            ],
        }

    @own_work
    def dump(self, filename: str | os.PathLike) -> None:
        """Writes the snapshot to a file: atomically over a regular file (a
        crash leaves no half file), into a device or a FIFO."""
        import json
        import zlib

        from . import _core

        payload = zlib.compress(json.dumps(self._to_json(), separators=(",", ":")).encode())
        data = self.MAGIC + len(payload).to_bytes(8, "little") + payload
        _core.write_file(os.fspath(filename), data)

    @classmethod
    @own_work
    def load(cls, filename: str | os.PathLike) -> Snapshot:
        """Reads a file written by dump(); SnapshotFileError if it is not one."""
        path = os.fspath(filename)
        header = len(cls.MAGIC)
        with open(path, "rb") as f:
            start = f.read(header + 8)
            if not start.startswith(cls.MAGIC):
                raise SnapshotFileError(f"{path}: not a heapsite snapshot file")
            if len(start) < header + 8:
                raise SnapshotFileError(f"{path}: truncated heapsite snapshot (no length field)")
            length = int.from_bytes(start[header:], "little")
            if length > _MAX_STORED:
                raise SnapshotFileError(
                    f"{path}: corrupt heapsite snapshot (a payload of {length} bytes)"
                )
            payload = f.read(length + 1)  # never more: the file may not end
        if len(payload) != length:
            raise SnapshotFileError(
                f"{path}: truncated or corrupt heapsite snapshot "
                f"({len(payload)} of {length} payload bytes)"
            )
        try:
            doc = _parse_payload(payload)
        except ValueError as e:
            raise SnapshotFileError(f"{path}: corrupt heapsite snapshot ({e})") from None
        return cls._from_json(doc, path)

    @classmethod
    def _from_json(cls, doc: object, path: str) -> Snapshot:
        if not isinstance(doc, dict) or doc.get("format") != cls.FORMAT:
            raise SnapshotFileError(f"{path}: not a heapsite snapshot (format field)")
        if doc.get("version") != cls.VERSION:
            raise SnapshotFileError(
                f"{path}: heapsite snapshot version {doc.get('version')!r} is not supported "
                f"(this heapsite reads version {cls.VERSION})"
            )
        try:
            sites = [_site_of(entry) for entry in _list(doc.get("sites"), "sites")]
            current, peak = _whole_numbers(doc.get("traced_memory"), 2, "traced_memory")
            limit = _whole(doc.get("traceback_limit"), "traceback_limit")
            return cls(sites, limit, (current, peak), doc.get("view", "live"))
        except (TypeError, ValueError) as e:
            raise SnapshotFileError(f"{path}: corrupt heapsite snapshot ({e})") from None
