"""The boundary to the native core (`heapsite._heapsite`, src/lib.rs): the
one module of the package that imports it. Everything else imports this.

What the core answers as a tuple of figures is named here (NamedTuples, so
the rest of the package reads `.live_bytes`, never `[3]`); functions that
answer None, a bool, an int, bytes or a str pass through unchanged. The
types come from the stub beside the core, `_heapsite.pyi`.

Two kinds of tuple stay plain, on purpose:
- frames, `(filename, lineno, name)` (`Frames`): the core caches and shares
  them between sites, and the pytest plugin asks for them while a leak
  check counts objects, where a new object per frame would look like the
  test's growth;
- `traces()`, `object_traceback()`: the standard library's tracemalloc
  reads them, in its own format (`_tracemalloc._get_traces()`).
"""

from __future__ import annotations

import collections

from . import _heapsite
from ._heapsite import (
    FREED_CODE_SITE,
    MAX_FRAMES,
    NO_FRAME_SITE,
    NO_GIL_SITE,
    OVERFLOW_SITE,
    capture_magic,
    clear,
    follow_reuse,
    frames_of,
    http_address,
    http_serve,
    http_stop,
    instance_dict,
    is_tracing,
    native,
    object_traceback,
    own_work_enter,
    own_work_leave,
    path_to,
    paths_to,
    preload_finished,
    preloaded,
    program_live_bytes,
    render_diff,
    render_report,
    reset_peak,
    rounds_add,
    rounds_begin,
    rounds_end,
    rounds_grew,
    sample_rate,
    set_count_total,
    set_native,
    set_native_frames,
    set_relheap,
    sigterm_after_fork,
    sigterm_deadline,
    sigterm_handling,
    site_count,
    site_depth,
    site_names,
    sites_mark,
    start,
    stats,
    stop,
    timeline_after_fork,
    timeline_start,
    traceback_limit,
    traces,
    write_capture,
    write_file,
)

# typing.TYPE_CHECKING without importing typing (`import heapsite` stays
# cheap: typing costs more than the rest of it); type checkers know the name.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple

    from ._heapsite import _Frame, _Frames, _Kind, _Split

    Frame = _Frame
    Frames = _Frames
    Kind = _Kind
    Split = _Split
else:

    class _NamedTupleMeta(type):
        """`class Row(NamedTuple): field: int` as typing.NamedTuple makes it
        (a collections.namedtuple with the class's docstring), for what the
        records here use: fields, no defaults, no methods."""

        def __new__(cls, name, bases, namespace):
            if not bases:
                return super().__new__(cls, name, bases, namespace)
            fields = list(namespace.get("__annotations__", {}))  # in order
            if not fields:  # 3.14+ keeps them only with `from __future__ import annotations`
                raise TypeError(f"{name}: no fields")
            record = collections.namedtuple(name, fields, module=namespace["__module__"])
            record.__doc__ = namespace.get("__doc__") or record.__doc__
            return record

    NamedTuple = _NamedTupleMeta("NamedTuple", (), {})


__version__: str = _heapsite.__version__
PATH: str = _heapsite.__file__  # what LD_PRELOAD loads

__all__ = [
    "FREED_CODE_SITE",
    "MAX_FRAMES",
    "NO_FRAME_SITE",
    "NO_GIL_SITE",
    "OVERFLOW_SITE",
    "PATH",
    "AddressSite",
    "GrownSite",
    "HeapWalk",
    "KindRow",
    "Memory",
    "ObjectSite",
    "PeakSite",
    "Sample",
    "SiteColumns",
    "SiteRow",
    "__version__",
    "capture_magic",
    "clear",
    "follow_reuse",
    "frames_of",
    "http_address",
    "http_serve",
    "http_stop",
    "heap_walk",
    "instance_dict",
    "is_tracing",
    "native",
    "object_site",
    "object_traceback",
    "own_work_enter",
    "own_work_leave",
    "path_to",
    "paths_to",
    "peak_sites",
    "preload_finished",
    "preloaded",
    "program_live_bytes",
    "render_diff",
    "render_report",
    "reset_peak",
    "rounds_add",
    "rounds_begin",
    "rounds_end",
    "rounds_grew",
    "rounds_grown",
    "sample_rate",
    "set_count_total",
    "set_native",
    "set_native_frames",
    "set_relheap",
    "sigterm_after_fork",
    "sigterm_deadline",
    "sigterm_handling",
    "site_count",
    "site_depth",
    "site_figures",
    "site_names",
    "site_of",
    "sites",
    "sites_grown",
    "sites_grown_since_mark",
    "sites_mark",
    "start",
    "stats",
    "stop",
    "timeline_after_fork",
    "timeline_start",
    "timeline_samples",
    "timeline_stop",
    "traceback_limit",
    "traced_memory",
    "traces",
    "write_capture",
    "write_file",
]


class Memory(NamedTuple):
    """Bytes of the traced allocations: live now, and at the peak."""

    current: int
    peak: int


def traced_memory() -> Memory:
    # Read before anything is made here (even a bound method, `Memory._make`):
    # clear_traces() then get_traced_memory() must read (0, 0).
    current, peak = _heapsite.traced_memory()
    return Memory(current, peak)


class SiteRow(NamedTuple):
    """One call site and its figures, as sites() lists them."""

    site_id: int
    frames: Frames
    live_count: int
    live_bytes: int
    total_count: int
    total_bytes: int
    peak_count: int
    peak_bytes: int


def sites() -> list[SiteRow]:
    """Every site that allocated since start() or clear()."""
    return [SiteRow._make(row) for row in _heapsite.sites()]


class SiteColumns(NamedTuple):
    """Per site id, native-endian int64s (`array.array("q")` reads them)."""

    live_bytes: bytes
    live_counts: bytes
    peak_bytes: bytes


def site_figures() -> SiteColumns:
    live_bytes, live_counts, peak_bytes = _heapsite.site_figures()
    return SiteColumns(live_bytes, live_counts, peak_bytes)


class GrownSite(NamedTuple):
    site_id: int
    live_bytes: int
    growth: int
    live_count: int
    count_growth: int


def sites_grown(live_bytes_before: bytes, live_counts_before: bytes) -> list[GrownSite]:
    """The sites holding more bytes now than in those columns of an earlier
    site_figures() (a newer site held 0), most growth first."""
    return [
        GrownSite._make(row) for row in _heapsite.sites_grown(live_bytes_before, live_counts_before)
    ]


def sites_grown_since_mark() -> list[GrownSite] | None:
    """As sites_grown, from the last sites_mark(), reading only the sites
    touched since; None without a mark since the last reset_peak(), or when
    its note missed some sites."""
    rows = _heapsite.sites_grown_since_mark()
    return None if rows is None else [GrownSite._make(row) for row in rows]


def rounds_grown() -> list[GrownSite]:
    """As sites_grown, from the figures at rounds_begin()."""
    return [GrownSite._make(row) for row in _heapsite.rounds_grown()]


class PeakSite(NamedTuple):
    site_id: int
    bytes: int


def peak_sites(limit: int) -> list[PeakSite]:
    """The sites that grew the most from the last reset_peak() to the peak
    since, most first, at most `limit`; over every site these add up to the
    peak less the traced memory at the reset."""
    return [PeakSite._make(pair) for pair in _heapsite.peak_sites(limit)]


class AddressSite(NamedTuple):
    site_id: int
    size: int
    domain: int


def site_of(address: int) -> AddressSite | None:
    """The live allocation at `address`, if heapsite recorded it."""
    found = _heapsite.site_of(address)
    return None if found is None else AddressSite._make(found)


class ObjectSite(NamedTuple):
    site_id: int
    size: int


def object_site(obj: object) -> ObjectSite | None:
    """Where `obj`'s memory was allocated, if heapsite recorded it."""
    found = _heapsite.object_site(obj)
    return None if found is None else ObjectSite._make(found)


class KindRow(NamedTuple):
    """One kind of a heap walk: `tag` 0 objects of `kind_type`, 1 dicts owned by
    instances of `kind_type`, 2 dicts with no owner (kind_type None); `split` as the
    walk was asked to split it."""

    tag: int
    kind_type: type | None
    object_count: int
    size: int
    split: list[Split]


class HeapWalk(NamedTuple):
    object_count: int
    size: int
    rows: list[KindRow]
    signatures: tuple[tuple[Kind, ...], ...]  # the referrer signatures a split 2 indexes


def heap_walk(
    roots: list[object],
    own: list[object],
    split: int,
    relative: bool,
    stride: int = 1,
    through_tracked: bool = True,
) -> HeapWalk:
    """The objects reachable from `roots`, never through `own`, by kind:
    split 0 nothing, 1 by allocating site (looking up one small object in
    `stride`), 2 by the kinds of the referrers; `relative` leaves out what
    set_relheap() saw; without `through_tracked`, only the roots and what
    they reach without passing a gc-tracked object."""
    count, size, rows, signatures = _heapsite.heap_walk(
        roots, own, split, relative, stride, through_tracked
    )
    return HeapWalk(count, size, [KindRow._make(row) for row in rows], signatures)


class Sample(NamedTuple):
    seconds: float
    bytes: int


def timeline_samples() -> list[Sample]:
    """The traced memory every interval so far, sampling going on; empty
    when not sampling."""
    return [Sample._make(sample) for sample in _heapsite.timeline_samples()]


def timeline_stop() -> list[Sample]:
    """Stops sampling: the traced memory every interval since timeline_start()."""
    return [Sample._make(sample) for sample in _heapsite.timeline_stop()]
