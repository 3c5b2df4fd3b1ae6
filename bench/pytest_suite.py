"""What the pytest plugin costs on a real project's test suite.

Downloads the sdist of a pure-Python project whose tests need nothing but
pytest into a scratch directory, then runs its tests plain, with --heapsite,
with --heapsite-leaks, under `-X tracemalloc=16` and, where it is
installed, with pytest-memray's --memray, alternating, and prints the
median times and their ratios to plain (and of --heapsite-leaks to
--heapsite).

    python bench/pytest_suite.py [--project more-itertools|toolz|boltons] [--runs 3] [--dir DIR]

more-itertools' tests are unittest classes (left out of the repeat check);
toolz's and boltons' are plain pytest functions (boltons' use tmp_path and
compile code), so every one of them is repeated.

Targets: --heapsite at most 1.5x plain; --heapsite-leaks at most rounds (3)
times --heapsite.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

# Where each known project keeps its tests, inside the sdist.
TEST_DIRS = {"more-itertools": "tests", "toolz": "toolz/tests", "boltons": "tests"}

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


def fetch(project: str, scratch: str) -> str:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        + ["-d", scratch, project],
        check=True,
    )
    (sdist,) = glob.glob(os.path.join(scratch, "*.tar.gz"))
    with tarfile.open(sdist) as tar:
        tar.extractall(scratch)  # noqa: S202 - a package we chose, in a scratch dir
    return sdist[: -len(".tar.gz")]


def run(root: str, tests: str, mode: tuple[list[str], list[str]]) -> tuple[float, str]:
    """The run's wall time and pytest's closing line (its counts)."""
    python_options, extra = mode
    began = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *python_options, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + ["--rootdir", root, *extra, tests],
        cwd=root,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=root),
    )
    took = time.perf_counter() - began
    if result.returncode not in (0, 1):  # 1: the project's own failures, if any
        command = " ".join(python_options + extra)
        sys.exit(f"pytest {command} exited {result.returncode}:\n{result.stdout[-3000:]}")
    lines = result.stdout.strip().splitlines()
    return took, (lines[-1].strip("= ") if lines else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default="more-itertools", choices=sorted(TEST_DIRS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    args = parser.parse_args()
    scratch = args.dir or tempfile.mkdtemp(prefix="heapsite-bench-")
    root = fetch(args.project, scratch)
    modes = dict(MODES)
    if importlib.util.find_spec("pytest_memray") is not None:
        modes[PEER[0]] = PEER[1]
    else:
        print(f"(pytest-memray is not installed: no {PEER[0]} column)")
    times = {mode: [] for mode in modes}
    outcomes = {}
    for _ in range(args.runs):
        for mode, options in modes.items():
            took, outcomes[mode] = run(root, TEST_DIRS[args.project], options)
            times[mode].append(took)
    plain = statistics.median(times["plain"])
    print(f"{os.path.basename(root)}, CPython {sys.version.split()[0]}, {args.runs} runs each")
    for mode, values in times.items():
        median = statistics.median(values)
        print(f"{mode:22} median {median:7.2f} s  {median / plain:5.2f}x plain  {values}")
        print(f"{'':22} last run: {outcomes[mode]}")
    leaks = statistics.median(times["--heapsite-leaks"]) / statistics.median(times["--heapsite"])
    print(f"--heapsite-leaks is {leaks:.2f}x --heapsite")


if __name__ == "__main__":
    main()
