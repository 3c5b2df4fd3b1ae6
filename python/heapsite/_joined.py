"""The joined answer a capture carries: what is alive at exit (the largest
kinds, as heap() counts them), where it was allocated (each kind's top
lines, as heap().bysite splits them) and what holds it (a shortest
reference path to one object of the kind, as path_to_root() writes it):

    30000 __main__.Order  1406 KiB  100% at orders.py:19 (build)  held by __main__.AUDIT_LOG[0]

It is computed when the capture is written, since the objects are gone by
the time it is read (`src/report/joined.rs` renders it). One heap walk
split by site gives both the kinds table and the sites; one breadth-first
search from the modules finds the paths of all the top kinds at once. The
search is skipped, with a note, when the walk alone shows that the heap
is too big to search within the time budget.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import sysconfig
import time

from . import _core, _heap
from ._plumbing import fold_import_system

KINDS = 10  # kinds in the table
SITES = 3  # allocating lines per kind
PATHS = 5  # kinds, largest first, that get a holder path (see _table)
# Seconds the table may add to the program's exit. A path search costs
# about what a heap walk does (both visit every reachable object once),
# so it runs only when the walk took less than half of the budget.
BUDGET = 2.0
# Site lookups per walk. A lookup in the allocation table costs more than
# the rest of the walk does per object (about 0.5 us against 0.1 us), so
# beyond this many objects only one small object (under 1 KiB) in `stride`
# is looked up, standing for `stride` in its line's figures (the kinds' own
# figures stay exact).
LOOKUPS = 250_000


def _library_prefixes() -> tuple:
    """Where code that is not the program's lives: the standard library,
    installed packages, heapsite itself."""
    paths = sysconfig.get_paths()
    prefixes = {
        os.path.realpath(paths[key]) + os.sep
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if key in paths
    }
    prefixes.add(os.path.dirname(os.path.realpath(__file__)) + os.sep)
    return tuple(sorted(prefixes))


def _is_program_file(filename: str, library: tuple) -> bool:
    """Whether a file is the program's own: not under `library`, and not
    <frozen ...> or <string> (a dataclass's generated __init__)."""
    if not filename or filename.startswith("<"):
        return False
    return not os.path.realpath(filename).startswith(library)


def _frame(frame: _core.Frame) -> dict:
    filename, lineno, function = frame
    return {"filename": filename, "lineno": max(lineno, 0), "function": function}


class _Lines:
    """Site ids to allocating lines: (allocating frame, program frame),
    where the program frame is the innermost of the program's own code
    when the allocating frame is library code (json.loads' caller)."""

    def __init__(self):
        self._library = _library_prefixes()
        self._cache: dict = {}
        self._program_files: dict = {}

    def _is_program(self, filename: str) -> bool:
        known = self._program_files.get(filename)
        if known is None:
            known = self._program_files[filename] = _is_program_file(filename, self._library)
        return known

    def of(self, site_id: int) -> tuple:
        if site_id < 0:
            return (None, None)
        if site_id not in self._cache:
            self._cache[site_id] = self._line(_core.frames_of(site_id))
        return self._cache[site_id]

    def _line(self, frames: _core.Frames) -> tuple:
        # What an import allocated is the importing line's, as the reports
        # show it (the module's own lines stay its own).
        shown = fold_import_system(frames)
        if not shown:
            return (None, None)
        top = shown[0]
        if self._is_program(top[0]):
            return (top, None)
        program = next((f for f in shown[1:] if self._is_program(f[0])), None)
        return (top, program)


def _scaled(splits: list[_core.Split], count: int, size: int) -> list:
    """A sampled split's estimates scaled to add up to the kind's exact
    count and size (empty if no object of the kind was sampled)."""
    seen_count = sum(c for _, c, _ in splits)
    seen_size = sum(z for _, _, z in splits)
    if seen_count == 0:
        return []
    by_count = count / seen_count
    by_size = size / seen_size if seen_size else 0.0
    return [(key, round(c * by_count), round(z * by_size)) for key, c, z in splits]


def _top_sites(splits: list[_core.Split], lines: _Lines) -> list:
    """A kind's allocating lines, largest first, each [line, count, bytes,
    its largest site id] (several sites can share a line: other callers)."""
    by_line: dict = {}
    for site_id, count, size in splits:
        line = lines.of(site_id)
        entry = by_line.setdefault(line, [line, 0, 0, site_id, -1])
        entry[1] += count
        entry[2] += size
        if size > entry[4]:
            entry[3], entry[4] = site_id, size
    ranked = sorted(by_line.values(), key=lambda e: (-e[2], -e[1]))
    return [e[:4] for e in ranked[:SITES]]


def _site_entry(line: tuple, count: int, size: int) -> dict:
    frame, program = line
    entry: dict = {"count": count, "bytes": size}
    if frame is not None:
        entry["frame"] = _frame(frame)
    if program is not None:
        entry["program_frame"] = _frame(program)
    return entry


_DICT_KEY = re.compile(r"\.__dict__\[(['\"])([A-Za-z_][A-Za-z0-9_]*)\1\]")


def readable(path: str) -> str:
    """`__main__.__dict__['AUDIT_LOG'][0]` as `__main__.AUDIT_LOG[0]`: an
    attribute read through `__dict__` is the attribute."""
    return _DICT_KEY.sub(r".\2", path)


def _paths(goals: list) -> list:
    """For each (tag, type, site) goal, a shortest path from a module to an
    object of that kind from that site, failing that from a running frame."""
    own = _heap._own()
    chains = list(_core.paths_to(_heap._roots(), own, goals))
    missing = [i for i, chain in enumerate(chains) if not chain]
    frames = {}
    if missing:
        frames = _heap._frame_roots(0)
        roots = [d for d, _ in frames.values()]
        # This frame holds the chains found so far: no path through them.
        found_so_far = [chain for chain in chains if chain]
        found = _core.paths_to(roots, own + found_so_far, [goals[i] for i in missing])
        for i, chain in zip(missing, found):
            chains[i] = chain
    return [_heap._describe(chain, frames) for chain in chains]


def stride() -> int:
    """One object in how many to look up: the objects allocated since
    tracking started (heapsite's live blocks) over LOOKUPS, at least 1."""
    return max(1, -(-_core.stats()["live_allocations"] // LOOKUPS))


def _walk(every: int) -> list:
    """The heap by kind, largest first: (name, tag, type, count, size,
    [(site id, count, size), ...]), the sites sampled one in `every`."""
    _count, _size, raw_rows, _ = _core.heap_walk(
        gc.get_objects(), _heap._own(), _heap.SPLIT_SITES, True, every
    )
    rows = [
        (_heap._name(tag, t), tag, t, c, z, _scaled(splits, c, z) if every > 1 else splits)
        for tag, t, c, z, splits in raw_rows
    ]
    rows.sort(key=lambda r: (-r[4], -r[3], r[0]))
    return rows


def _table(rows: list) -> tuple:
    """The joined rows of the KINDS largest kinds, and the (row, goal)
    pairs of the PATHS largest whose top line is known: a kind made before
    tracking started is the interpreter's and its imports', not what the
    program holds on to."""
    lines = _Lines()
    table: list = []
    goals: list = []
    for name, tag, t, count, size, splits in rows[:KINDS]:
        sites = _top_sites(splits, lines)
        entry = {
            "name": name,
            "count": count,
            "bytes": size,
            "sites": [_site_entry(*s[:3]) for s in sites],
        }
        table.append(entry)
        top_site = sites[0][3] if sites else -1
        if top_site >= 0 and len(goals) < PATHS:
            goals.append((entry, (tag, t, top_site)))
    return table, goals


def compute(budget: float = BUDGET) -> tuple:
    """(kinds, joined): every kind alive now as the capture's `kinds`, and
    the joined table as the capture's `joined` (docs/json-report.md)."""
    started = time.perf_counter()
    every = stride()
    rows = _walk(every)
    kinds = [{"name": name, "count": c, "bytes": z} for name, _, _, c, z, _ in rows]
    table, goals = _table(rows)
    walked = time.perf_counter() - started
    notes = []
    if every > 1:
        notes.append(f"lines' figures estimated from one object in {every}")
    if walked < budget / 2:
        paths = _paths([goal for _, goal in goals])
        for (entry, _), path in zip(goals, paths):
            if path is not None:
                entry["path"] = readable(path)
    elif goals:
        notes.append(
            f"holders not searched: the heap walk took {walked:.2f} s, "
            f"a search would pass the {budget:.1f} s budget"
        )
    joined: dict = {"kinds": table, "site_stride": every}
    if notes:
        joined["note"] = "; ".join(notes)
    joined["seconds"] = round(time.perf_counter() - started, 4)
    return kinds, joined


def at_exit(budget: float = BUDGET) -> tuple:
    """compute(), or ([], None) if the heap cannot be walked: a report
    without the table beats no report."""
    try:
        return compute(budget)
    except Exception as e:  # noqa: BLE001
        sys.stderr.write(f"heapsite: objects at exit not recorded: {e}\n")
        return [], None
