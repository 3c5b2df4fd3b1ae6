"""Leaks planted in copies of real projects' tests (issue 17): each must be
flagged by --heapsite-leaks with its planted line among the lines the
message names, and no other test of the file may change verdict.

    python bench/planted_leaks.py [--dir DIR] [--only click]

The projects are bench/pytest_suite.py's pinned sdists (click 8.5.1, jinja2
3.1.6, packaging 26.4), downloaded into DIR (default: a temporary one).
Each plant adds a module-level holder to one test file of a copy and, at
the start of one test, a statement that keeps something in it on every
call (the line marked `# planted`): the leaks a real suite has, by their
shape: new strings in a module list (objects the collector does not
track), an lru_cache keyed by a new object, templates kept in a module
list (allocated inside the library, not on the planted line), a registry
of containers, a set of a project's objects, one buffer that grows. The
file is run with --heapsite-leaks before and after the plant.

Prints a line per plant and exits 1 if any plant was missed, named wrong or
changed another test's verdict.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import NamedTuple

from pytest_suite import PROJECTS, environment, fetch, install_missing


class Plant(NamedTuple):
    project: str
    test_file: str  # inside the project's sdist
    test: str  # "function" or "Class.method"
    holder: str  # module-level lines added after the imports
    planted: str  # the statement added at the start of the test


PLANTS = [
    Plant(
        "click",
        # One that does not leak already (most of click's tests leak through
        # CliRunner's stream cache, whose sites, larger, come first).
        "tests/test_parser.py",
        "test_parser_default_prefixes",
        "_PLANTED_NAMES = []",
        '_PLANTED_NAMES.append("planted-name-" + str(len(_PLANTED_NAMES)) * 8)',
    ),
    Plant(
        "click",
        "tests/test_context.py",
        "test_ensure_context_objects",
        "import functools\n\n\n@functools.lru_cache(maxsize=None)\n"
        "def _planted_cached(key):\n    return [key, bytearray(100)]",
        "_planted_cached(object())",
    ),
    Plant(
        "jinja2",
        "tests/test_api.py",
        "TestExtendedAPI.test_finalize",
        "_PLANTED_TEMPLATES = []",
        '_PLANTED_TEMPLATES.append(Environment().from_string("{{ planted }}"))',
    ),
    Plant(
        "jinja2",
        "tests/test_filters.py",
        "TestFilter.test_capitalize",
        "_PLANTED_REGISTRY = {}",
        "_PLANTED_REGISTRY[len(_PLANTED_REGISTRY)] = {'k': [object() for _ in range(5)]}",
    ),
    Plant(
        "packaging",
        "tests/test_version.py",
        "test_parse",
        "_PLANTED_SEEN = set()",
        '_PLANTED_SEEN.add(Version("1." + str(len(_PLANTED_SEEN))))',
    ),
    Plant(
        "packaging",
        "tests/test_specifiers.py",
        "TestSpecifier.test_replace_parts",
        "_PLANTED_BUFFER = bytearray()",
        "_PLANTED_BUFFER.extend(bytes(2000))",
    ),
]

MARK = "  # planted"


def plant(source: str, plant: Plant) -> tuple[str, int]:
    """`source` with the plant's holder after the imports and its statement
    first in the test's body; and the planted line's number (1-based)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    *classes, name = plant.test.split(".")
    body = tree.body
    for cls in classes:
        body = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == cls).body
    function = next(
        n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name
    )
    first = function.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
        and len(function.body) > 1
    ):
        first = function.body[1]  # after the docstring
    indent = " " * first.col_offset
    at = first.lineno - 1
    if hasattr(first, "decorator_list") and first.decorator_list:
        at = first.decorator_list[0].lineno - 1
    last_import = max(
        (
            n.end_lineno or n.lineno
            for n in tree.body
            if isinstance(n, (ast.Import, ast.ImportFrom))
        ),
        default=0,
    )
    holder = ["", "", *plant.holder.splitlines(), "", ""]
    new = lines[:at] + [indent + plant.planted + MARK] + lines[at:]
    new = new[:last_import] + holder + new[last_import:]
    planted_line = at + 1 + len(holder)
    assert new[planted_line - 1].endswith(MARK)
    return "\n".join(new) + "\n", planted_line


SUMMARY = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+)", re.M)


def run(root: str, project: str, test_file: str) -> tuple[dict[str, str], str]:
    """The file's tests run with --heapsite-leaks: each test's verdict (a
    parametrized test's cases by their ids), and the output."""
    info = PROJECTS[project]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:memray", "-rfEsxXp"]
        + ["--heapsite-leaks", *info.pytest_args, test_file],
        cwd=root,
        env={**environment(root, info), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    verdicts: dict[str, str] = {}
    for verdict, nodeid in SUMMARY.findall(result.stdout):
        verdicts.setdefault(nodeid, verdict)
    if not verdicts:
        raise SystemExit(f"no verdicts from {project} {test_file}:\n{result.stdout[-3000:]}")
    return verdicts, result.stdout


def failure_section(stdout: str, test: str) -> str:
    """The failure text of the tests whose node id ends with `test` (its
    parametrized cases included)."""
    name = test.split(".")[-1]
    sections = re.split(r"^_{3,} (.+?) _{3,}$", stdout, flags=re.M)
    return "\n".join(
        text
        for title, text in zip(sections[1::2], sections[2::2])
        if title.split("[")[0].split(".")[-1] == name
    )


def check(root: str, p: Plant) -> bool:
    path = os.path.join(root, p.test_file)
    original = open(path).read()
    before, _ = run(root, p.project, p.test_file)
    source, planted_line = plant(original, p)
    try:
        with open(path, "w") as f:
            f.write(source)
        after, stdout = run(root, p.project, p.test_file)
    finally:
        with open(path, "w") as f:
            f.write(original)
    test_ids = "::".join(p.test.split("."))
    planted_ids = [n for n in after if n.split("[")[0].endswith("::" + test_ids)]
    flagged = bool(planted_ids) and all(after[n] == "FAILED" for n in planted_ids)
    section = failure_section(stdout, p.test)
    basename = os.path.basename(p.test_file)
    named = (
        f'{basename}", line {planted_line},' in section or f"{basename}:{planted_line} " in section
    )
    changed = sorted(
        n for n in before if n not in planted_ids and after.get(n, "missing") != before[n]
    )
    ok = flagged and named and not changed
    print(
        f"{'ok    ' if ok else 'MISSED'} {p.project:9} {p.test_file}::{test_ids} "
        f"line {planted_line}: flagged {flagged}, line named {named}, "
        f"other verdicts changed: {changed or 'none'}"
    )
    if not ok:
        print(section[-3000:] or stdout[-3000:])
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--only", choices=sorted({p.project for p in PLANTS}), default=None)
    args = parser.parse_args()
    scratch = args.dir or tempfile.mkdtemp(prefix="heapsite-planted-")
    results = []
    try:
        for project in sorted({p.project for p in PLANTS}):
            if args.only and project != args.only:
                continue
            info = PROJECTS[project]
            install_missing(info)
            root = fetch(info.spec, scratch)
            for p in PLANTS:
                if p.project == project:
                    results.append(check(root, p))
    finally:
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"{sum(results)} of {len(results)} planted leaks found and named")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
