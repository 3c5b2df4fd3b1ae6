"""What the pytest plugin costs on a real project's test suite.

Downloads the sdist of a pure-Python project into a scratch directory,
then runs its tests plain, with --heapsite, with --heapsite-leaks, under
`-X tracemalloc=16` and, where it is installed, with pytest-memray's
--memray, alternating, and prints the median times and their ratios to
plain (and of --heapsite-leaks to --heapsite).

    python bench/pytest_suite.py [--project NAME] [--runs 3] [--dir DIR] [--tests PATH]
        [--modes MODE,...] [--verify [--oracle-calls 50] [--sample 20] [--flagged-sample N]]

Projects: more-itertools, toolz, boltons (latest release; tests that need
nothing but pytest), and click 8.5.1, jinja2 3.1.6 and packaging 26.4
(pinned; src layouts, so PYTHONPATH is the sdist's src). A project's test
dependencies (jinja2: markupsafe, trio; packaging: pretend, tomli_w) are
installed with pip into the running interpreter's environment when missing.
packaging's property tests (deselected by its own `-m "not property"`) are
not collected, so hypothesis is not needed. --tests restricts the runs to a
file or directory of the project (`tests/test_arguments.py`).

more-itertools' tests are unittest classes (left out of the repeat check);
the others are plain pytest functions (boltons' use tmp_path and compile
code), so every one of them is repeated.

--verify: after the timed runs, every test that the last --heapsite-leaks
run failed with a leak message, and a sample of up to --sample tests it
passed, are checked by bench/leak_oracle.py (an independent check with the
standard library's tracemalloc: memory against the number of runs of the
test's set-up, call and tear-down, heapsite not loaded) in one more run of
the same tests, and a table puts the two verdicts side by side.

Targets: --heapsite at most 1.5x plain; --heapsite-leaks at most 3x plain
(issue 17, "cost a team accepts in CI").
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import NamedTuple

BENCH = os.path.dirname(os.path.abspath(__file__))


class Project(NamedTuple):
    spec: str  # what pip downloads
    tests: str  # where its tests are, inside the sdist
    src: str = ""  # where its package is, inside the sdist (PYTHONPATH)
    deps: tuple[tuple[str, str], ...] = ()  # (module, requirement) its tests import
    pytest_args: tuple[str, ...] = ()


PROJECTS = {
    "more-itertools": Project("more-itertools", "tests"),
    "toolz": Project("toolz", "toolz/tests"),
    "boltons": Project("boltons", "tests"),
    "click": Project("click==8.5.1", "tests", src="src"),
    "jinja2": Project(
        "jinja2==3.1.6", "tests", src="src", deps=(("markupsafe", "markupsafe"), ("trio", "trio"))
    ),
    "packaging": Project(
        "packaging==26.4",
        "tests",
        src="src",
        deps=(("pretend", "pretend"), ("tomli_w", "tomli_w"))
        + ((("tomli", "tomli"),) if sys.version_info < (3, 11) else ()),
        # Deselected by its own addopts (-m "not property"), but collected,
        # which needs hypothesis.
        pytest_args=("--ignore=tests/property",),
    ),
}

NO_MEMRAY = ["-p", "no:memray"]
# Each mode: (interpreter options, pytest options).
MODES = {
    "plain": ([], NO_MEMRAY),
    "--heapsite": ([], [*NO_MEMRAY, "--heapsite"]),
    "--heapsite-leaks": ([], [*NO_MEMRAY, "--heapsite-leaks"]),
    # The standard library's tracer at the plugin's frame depth, for scale.
    "-X tracemalloc=16": (["-X", "tracemalloc=16"], NO_MEMRAY),
}
# The peer, where installed: pytest-memray tracking every test (its markers
# check only the tests that carry them).
PEER = ("pytest-memray --memray", ([], ["--memray"]))


def fetch(spec: str, scratch: str) -> str:
    """The sdist of `spec` downloaded and unpacked in its own folder of
    `scratch`; the unpacked root."""
    where = os.path.join(scratch, spec.replace("==", "-"))
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        + ["-d", where, spec],
        check=True,
    )
    (sdist,) = glob.glob(os.path.join(where, "*.tar.gz"))
    with tarfile.open(sdist) as tar:
        tar.extractall(where)  # noqa: S202 - a package we chose, in a scratch dir
    return sdist[: -len(".tar.gz")]


def install_missing(project: Project) -> None:
    missing = [req for module, req in project.deps if importlib.util.find_spec(module) is None]
    if missing:
        print(f"(installing the tests' dependencies: {' '.join(missing)})")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)


def environment(root: str, project: Project, *more: str) -> dict[str, str]:
    """The project's source first on PYTHONPATH, then `more`, then the
    PYTHONPATH this script was given."""
    path = [os.path.join(root, project.src) if project.src else root, *more]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    # Wide lines: pytest cuts a short summary line to the terminal's width.
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), COLUMNS="10000")


def run(
    root: str, project: Project, tests: str, mode: tuple[list[str], list[str]]
) -> tuple[float, str, str]:
    """The run's wall time, pytest's closing line (its counts) and its output.

    `-rfp` lists the failed and the passed tests, for --verify."""
    python_options, extra = mode
    began = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *python_options, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfp"]
        + ["--rootdir", root, *project.pytest_args, *extra, tests],
        cwd=root,
        capture_output=True,
        text=True,
        env=environment(root, project),
    )
    took = time.perf_counter() - began
    if result.returncode not in (0, 1):  # 1: the project's own failures, if any
        command = " ".join(python_options + extra)
        sys.exit(f"pytest {command} exited {result.returncode}:\n{result.stdout[-3000:]}")
    lines = result.stdout.strip().splitlines()
    return took, (lines[-1].strip("= ") if lines else ""), result.stdout


def verdicts(output: str) -> tuple[list[str], list[str]]:
    """From a --heapsite-leaks run's `-rfp` summary: the tests failed with
    heapsite's leak message (`FAILED <id> - Failed: <id> leaks: ...`) and
    the tests passed, in order."""
    flagged, passed = [], []
    for line in output.splitlines():
        if line.startswith("PASSED "):
            passed.append(line[len("PASSED ") :].strip())
        elif line.startswith("FAILED "):
            rest = line[len("FAILED ") :]
            # The message begins with the node id again: split where it does
            # (a parametrized id may itself hold " - ").
            at = rest.find(" - ")
            while at != -1:
                nodeid = rest[:at]
                message = rest[at + 3 :].removeprefix("Failed: ")
                if message.startswith(f"{nodeid} leaks: "):
                    flagged.append(nodeid)
                    break
                at = rest.find(" - ", at + 1)
    return flagged, passed


def oracle(
    root: str, project: Project, tests: str, nodeids: list[str], calls: int
) -> dict[str, dict]:
    """bench/leak_oracle.py's records for `nodeids`, by node id (heapsite's
    plugin and pytest-memray not loaded). The whole of `tests` runs, in its
    order, so each checked test meets the state the tests before it left."""
    with tempfile.TemporaryDirectory(prefix="leak-oracle-") as scratch:
        out = os.path.join(scratch, "oracle.jsonl")
        only = os.path.join(scratch, "only.txt")
        with open(only, "w") as f:
            f.write("\n".join(nodeids) + "\n")
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:heapsite"]
            + ["-p", "no:memray", "-p", "leak_oracle", f"--leak-oracle-out={out}"]
            + [f"--leak-oracle-only={only}", f"--leak-oracle-calls={calls}"]
            + ["--rootdir", root, *project.pytest_args, tests],
            cwd=root,
            capture_output=True,
            text=True,
            env=environment(root, project, BENCH),
        )
        if result.returncode not in (0, 1) or not os.path.exists(out):
            sys.exit(f"the oracle's pytest exited {result.returncode}:\n{result.stdout[-3000:]}")
        with open(out) as f:
            return {record["nodeid"]: record for record in map(json.loads, f)}


def verify(
    root: str,
    project: str,
    tests: str,
    output: str,
    calls: int,
    sample_size: int,
    flagged_sample: int | None = None,
) -> None:
    flagged, passed = verdicts(output)
    if flagged_sample is not None and flagged_sample < len(flagged):
        print(
            f"(the oracle checks {flagged_sample} of the {len(flagged)} flagged tests, at random)"
        )
        flagged = sorted(random.Random(1).sample(flagged, flagged_sample))
    sample = sorted(random.Random(0).sample(passed, min(sample_size, len(passed))))
    checked = flagged + sample
    records = oracle(root, PROJECTS[project], tests, checked, calls) if checked else {}
    rows = [(nodeid, "leaks") for nodeid in flagged] + [(nodeid, "passed") for nodeid in sample]
    width = max([len(nodeid) for nodeid, _ in rows] + [4])
    print()
    print(f"{'project':14} {'test':{width}} {'heapsite':8} {'oracle':7} {'oracle B/call':>13}")
    for nodeid, heapsite in rows:
        record = records.get(nodeid, {"verdict": "not run", "per_call": None})
        per_call = "" if record["per_call"] is None else f"{record['per_call']:.1f}"
        reason = f"  ({record['reason']})" if record.get("reason") else ""
        print(
            f"{project:14} {nodeid:{width}} {heapsite:8} {record['verdict']:7} {per_call:>13}"
            + reason
        )
    agrees = sum(records.get(nodeid, {}).get("verdict") == "leaks" for nodeid in flagged)
    found = sum(records.get(nodeid, {}).get("verdict") == "leaks" for nodeid in sample)
    print(
        f"flagged {len(flagged)}, oracle agrees on {agrees}; "
        f"sample of {len(sample)} passed tests: oracle finds {found} leaking"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default="more-itertools", choices=sorted(PROJECTS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument(
        "--tests", default=None, help="a file or directory of the project's (default: its tests)"
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="check the last --heapsite-leaks run's verdicts with bench/leak_oracle.py",
    )
    parser.add_argument("--oracle-calls", type=int, default=50, help="for --verify (default 50)")
    parser.add_argument(
        "--sample", type=int, default=20, help="passed tests checked by --verify (default 20)"
    )
    parser.add_argument(
        "--modes",
        default=None,
        help="a comma-separated subset of the modes to time besides plain, --heapsite and "
        "--heapsite-leaks (default: all; '' for those three alone)",
    )
    parser.add_argument(
        "--flagged-sample",
        type=int,
        default=None,
        help="flagged tests checked by --verify, at random (default: all; click's whole suite "
        "flags 1,006)",
    )
    args = parser.parse_args()
    project = PROJECTS[args.project]
    scratch = args.dir or tempfile.mkdtemp(prefix="heapsite-bench-")
    root = fetch(project.spec, scratch)
    install_missing(project)
    tests = args.tests or project.tests
    modes = dict(MODES)
    if importlib.util.find_spec("pytest_memray") is not None:
        modes[PEER[0]] = PEER[1]
    else:
        print(f"(pytest-memray is not installed: no {PEER[0]} column)")
    if args.modes is not None:
        wanted = {"plain", "--heapsite", "--heapsite-leaks", *filter(None, args.modes.split(","))}
        unknown = wanted - set(modes)
        if unknown:
            parser.error(
                f"--modes: no mode {', '.join(sorted(unknown))} (modes: {', '.join(modes)})"
            )
        modes = {mode: options for mode, options in modes.items() if mode in wanted}
    times = {mode: [] for mode in modes}
    outcomes, outputs = {}, {}
    for _ in range(args.runs):
        for mode, options in modes.items():
            took, outcomes[mode], outputs[mode] = run(root, project, tests, options)
            times[mode].append(took)
    plain = statistics.median(times["plain"])
    print(
        f"{os.path.basename(root)} {tests}, CPython {sys.version.split()[0]}, {args.runs} runs each"
    )
    for mode, values in times.items():
        median = statistics.median(values)
        print(f"{mode:22} median {median:7.2f} s  {median / plain:5.2f}x plain  {values}")
        print(f"{'':22} last run: {outcomes[mode]}")
    leaks = statistics.median(times["--heapsite-leaks"]) / statistics.median(times["--heapsite"])
    print(f"--heapsite-leaks is {leaks:.2f}x --heapsite")
    if args.verify:
        verify(
            root,
            args.project,
            tests,
            outputs["--heapsite-leaks"],
            args.oracle_calls,
            args.sample,
            args.flagged_sample,
        )


if __name__ == "__main__":
    main()
