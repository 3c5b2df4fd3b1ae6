"""Leaks by cause, for the pytest plugin: one finding per cause, and a
baseline of known causes so that a CI run fails only on a new one.

A cause is where the leaked memory was allocated and what holds it: the
most recent frame of the site that grew the most (its file, relative to the
project when it is the project's, and its function: line numbers move with
every edit, a baseline should not) and the root of the reference chain to a
leaked object (`click._compat._default_text_stdout`, `sys.path_importer_cache`).
Fifty tests leaking one `CliRunner` stream each through the same cache are
one cause, reported once with the list of tests.

    pytest --heapsite-leaks --heapsite-leaks-baseline leaks.json \\
        --heapsite-leaks-update-baseline      # records today's causes
    pytest --heapsite-leaks --heapsite-leaks-baseline leaks.json
                                              # fails only on a new cause

The ini option `heapsite_leaks_ignore` takes patterns (fnmatch) matched
against the holder and the allocating file; a cause that matches one is
reported but fails nothing (`sys.path_importer_cache`, `zipimport.*`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import sysconfig
from collections.abc import Iterable, Sequence

from .._format import format_size

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from _pytest.terminal import TerminalReporter

FORMAT = 1  # of the baseline file
SHOWN_TESTS = 5

_STDLIB = os.path.normcase(os.path.abspath(sysconfig.get_paths()["stdlib"]))
# The first subscript of a reference chain, `mod.__dict__['name']` or
# `<frame of f at x.py:3>.f_locals['name']`: the holder is what it names.
_FIRST_SUBSCRIPT = re.compile(r"^(?P<owner>[^\[]*?)(?:\.__dict__|\.f_locals)?\[(?P<key>[^\]]*)\]")


def holder(path: str | None) -> str:
    """The root of a reference chain: `mod.__dict__['CACHE'][3]['x']` ->
    `mod.CACHE`; '' without a chain (memory outside Python objects)."""
    if not path:
        return ""
    match = _FIRST_SUBSCRIPT.match(path)
    if not match:
        return path
    key = match["key"]
    if len(key) >= 2 and key[0] == key[-1] and key[0] in "'\"":
        return f"{match['owner']}.{key[1:-1]}"
    return f"{match['owner']}[{key}]"


def _place(filename: str, rootdir: str) -> tuple[str, str]:
    """Whose code a file is (the project's, a dependency's or CPython's), and
    the file as a baseline names it, the same on every machine."""
    path = os.path.abspath(filename)
    normal = os.path.normcase(path)
    # <frozen ...>, <string>: CPython's, named as the other files are.
    pseudo = filename.startswith("<")
    if normal.startswith(_STDLIB + os.sep) and "site-packages" not in path:
        return "CPython's", "<stdlib>/" + os.path.relpath(path, _STDLIB).replace(os.sep, "/")
    parts = path.split(os.sep)
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            shown = "/".join(parts[len(parts) - parts[::-1].index(marker) :])
            return ("CPython's" if pseudo else "a dependency's"), shown
    root = os.path.abspath(rootdir)
    if normal.startswith(os.path.normcase(root) + os.sep):
        shown = os.path.relpath(path, root).replace(os.sep, "/")
        return ("CPython's" if pseudo else "the project's"), shown
    return ("CPython's" if pseudo else "a dependency's"), filename


def is_projects(filename: str, rootdir: str) -> bool:
    """Whether a file is the project's code (under its rootdir, not an
    installed package)."""
    return _place(filename, rootdir)[0] == "the project's"


def site_key(frame: tuple | None, rootdir: str) -> str:
    """Where a cause allocates, as its key names it: file and function."""
    if frame is None:
        return "<no Python frame>"
    return f"{_place(frame[0], rootdir)[1]} in {frame[2]}"


def shown_site(frame: tuple | None, rootdir: str) -> str:
    """Where a leak was allocated, as a message shows it: file, line, function."""
    if frame is None:
        return "<no Python frame>"
    filename, lineno, function = frame[:3]
    return f"{_place(filename, rootdir)[1]}:{lineno} in {function}"


def site_key_of(cause: dict) -> str:
    return str(cause["key"]).split(", held by ", 1)[0]


def cause_of(frame: tuple | None, path: str | None, kinds: Sequence[str], rootdir: str) -> dict:
    """A leak's cause (JSON: it travels from pytest-xdist's workers). `frame`
    is (file, line, function) of the most recent frame of the site that grew
    the most, or None; `path` the reference chain to a leaked object."""
    held_by = holder(path)
    whose = "CPython's" if frame is None else _place(frame[0], rootdir)[0]
    return {
        "key": f"{site_key(frame, rootdir)}, held by {held_by or 'no Python object'}",
        "site": shown_site(frame, rootdir),
        "holder": held_by,
        "origin": whose,
        "kinds": list(kinds),
    }


# What each cause in a baseline file must have, and of which type.
_FIELDS = {"key": str, "site": str, "holder": str, "origin": str, "kinds": list, "tests": list}


class BaselineError(Exception):
    """A baseline file that cannot be read: its one-line reason."""


class Baseline:
    """The known causes (`--heapsite-leaks-baseline`), by key, with the tests
    that leaked through each when it was recorded."""

    def __init__(self, path: str, known: dict[str, dict]):
        self.path = path
        self.known = known

    @classmethod
    def read(cls, path: str, missing_ok: bool) -> Baseline:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            if missing_ok:
                return cls(path, {})
            raise BaselineError(
                f"no baseline file {path} (write one with --heapsite-leaks-update-baseline)"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BaselineError(f"baseline file {path} cannot be read: {e}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BaselineError(
                f"baseline file {path} is not a heapsite leak baseline (format {FORMAT})"
            )
        causes = data.get("causes")
        if not isinstance(causes, list):
            raise BaselineError(f"baseline file {path}: 'causes' is not a list of causes")
        for index, cause in enumerate(causes):
            wrong = [
                field
                for field, kind in _FIELDS.items()
                if not isinstance(cause, dict) or not isinstance(cause.get(field), kind)
            ]
            if wrong:
                raise BaselineError(
                    f"baseline file {path}: cause {index} lacks {', '.join(wrong)} "
                    "('causes' is not a list of causes)"
                )
        return cls(path, {c["key"]: c for c in causes})

    def has(self, cause: dict) -> bool:
        return cause["key"] in self.known

    def gone(self, found: Iterable[str], checked: set[str]) -> list[dict]:
        """Known causes that none of this run's tests leaked through though
        one of the tests recorded with them ran its leak check."""
        found = set(found)
        return [
            cause
            for key, cause in sorted(self.known.items())
            if key not in found and checked.intersection(cause.get("tests", ()))
        ]

    def write(self, findings: dict[str, Finding], checked: set[str]) -> None:
        """The file with this run's causes, and the known ones that none of
        this run's checks could have seen (a run of some tests, `-k`, `--lf`:
        their tests did not run), kept as they were."""
        causes = {
            key: {**finding.cause, "tests": sorted(finding.tests), "per_call": finding.per_call}
            for key, finding in findings.items()
        }
        for key, cause in self.known.items():
            if key not in causes and not checked.intersection(cause.get("tests", ())):
                causes[key] = cause
        causes_in_order = [cause for _, cause in sorted(causes.items())]
        with open(self.path, "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, "causes": causes_in_order}, f, indent=1, sort_keys=True)
            f.write("\n")


def ignored(cause: dict, patterns: Sequence[str]) -> bool:
    """Whether `heapsite_leaks_ignore` leaves the cause out: a pattern that
    matches its holder or its allocating file."""
    filename = cause["site"].split(":", 1)[0].split(" in ", 1)[0]
    return any(
        fnmatch.fnmatchcase(cause["holder"], p) or fnmatch.fnmatchcase(filename, p)
        for p in patterns
    )


class Finding:
    """One cause and the tests that leaked through it."""

    def __init__(self, cause: dict):
        self.cause = cause
        self.tests: list[str] = []
        self.per_call = 0
        self.verdict = "new"

    def add(self, nodeid: str, per_call: int, verdict: str) -> None:
        self.tests.append(nodeid)
        self.per_call = max(self.per_call, per_call)
        self.verdict = verdict


def findings(results: Sequence[tuple[str, dict]]) -> dict[str, Finding]:
    """The session's leaks grouped by cause (the summary's per-test figures)."""
    by_key: dict[str, Finding] = {}
    for nodeid, data in results:
        cause = data.get("leak_cause")
        if not isinstance(cause, dict):
            continue
        finding = by_key.setdefault(cause["key"], Finding(cause))
        finding.add(nodeid, int(data.get("leaked", 0)), str(data.get("leak_verdict", "new")))
    return by_key


def write(terminalreporter: TerminalReporter, by_key: dict[str, Finding], gone: list[dict]) -> None:
    if not by_key and not gone:
        return
    terminalreporter.section("heapsite: leaks by cause")
    for finding in sorted(by_key.values(), key=lambda f: (-len(f.tests), -f.per_call)):
        cause, tests = finding.cause, sorted(finding.tests)
        label = {"known": " (known: in the baseline)", "ignored": " (ignored)"}.get(
            finding.verdict, ""
        )
        terminalreporter.write_line(
            f"{len(tests)} test{'s' if len(tests) != 1 else ''}, up to "
            f"{format_size(finding.per_call)} a call{label}: allocated at {cause['site']} "
            f"({cause['origin']} code), held by {cause['holder'] or 'no Python object'}"
        )
        if cause.get("kinds"):
            terminalreporter.write_line(f"    kinds: {', '.join(cause['kinds'])}")
        more = f" and {len(tests) - SHOWN_TESTS} more" if len(tests) > SHOWN_TESTS else ""
        terminalreporter.write_line(f"    tests: {', '.join(tests[:SHOWN_TESTS])}{more}")
    for cause in gone:
        terminalreporter.write_line(f"gone: no test leaks through {cause['key']} any more")
