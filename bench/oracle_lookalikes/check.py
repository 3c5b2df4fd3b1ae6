"""Runs bench/leak_oracle.py on the look-alikes beside this file and says
which verdicts are not the ones their names call for.

    python bench/oracle_lookalikes/check.py [--calls 50] [--warmup 5] [PYTEST ARGS...]

test_leak_* must be "leaks", test_clean_* "clean", test_artifact_* are
reported as they come (growth the oracle counts that is not the test's own
leak). Extra arguments go to pytest (another suite, say, to see what the
oracle makes of it). Exits 1 on a wrong verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
WANTED = {"test_leak": "leaks", "test_clean": "clean"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    args, pytest_args = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "oracle.jsonl")
        path = os.pathsep.join([BENCH, os.environ.get("PYTHONPATH", "")])
        env = dict(os.environ, PYTHONPATH=path)
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "leak_oracle"]
            + ["-p", "no:heapsite", "-p", "no:memray", f"--leak-oracle-out={out}"]
            + [f"--leak-oracle-calls={args.calls}", f"--leak-oracle-warmup={args.warmup}"]
            + (pytest_args or [HERE]),
            env=env,
            check=False,
        )
        with open(out) as f:
            records = [json.loads(line) for line in f]
    wrong = 0
    for record in records:
        name = record["nodeid"].rsplit("::", 1)[-1]
        wanted = WANTED.get("_".join(name.split("_")[:2]))
        mark = "" if wanted in (None, record["verdict"]) else f"  WRONG (wanted {wanted})"
        wrong += bool(mark)
        print(
            f"{record['verdict']:6} {record['per_call']!s:>9} B/call"
            f"  growth {record.get('growth')!s:>7}  quarters {record.get('quarters')!s:24}"
            f"  {record['nodeid']}{mark}"
        )
    print(f"{len(records)} checked, {wrong} wrong")
    sys.exit(1 if wrong else 0)


if __name__ == "__main__":
    main()
