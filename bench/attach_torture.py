"""Attach and detach heapsite ROUNDS times into one busy multi-threaded
program, and check that the program did not notice: its output, its exit
status and its standard error are those of a run without heapsite, and no
round failed or left anything behind (pages, threads, tracing).

    python bench/attach_torture.py [--rounds 100] [--threads 4] [--json]

Uses `python -m heapsite attach/detach` as a user would (sys.remote_exec on
3.14+, gdb before). tests/test_attach.py runs a few rounds of it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

# The program: worker threads and the main thread allocate and free all the
# time (lists, dicts, strings, bytes; some kept across rounds, so blocks
# allocated while traced are freed after detach) and check every result;
# it ends when the file `stop` appears (or after a bound), printing what a
# run without heapsite prints, and exits with status 3.
PROGRAM = textwrap.dedent(
    """
    import collections, os, sys, threading, time

    stop_file, threads, bound = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    errors = []
    done = threading.Event()

    def work(n):
        kept = collections.deque(maxlen=64)
        rounds = 0
        while not done.is_set():
            items = [str(i) * (i % 7) for i in range(300)]
            table = {s: len(s) for s in items}
            blob = bytes(range(256)) * (n + 1)
            kept.append((items, table, bytearray(blob)))
            if sum(table.values()) != sum(len(s) for s in set(items)):
                errors.append("table")
            if len(blob) != 256 * (n + 1):
                errors.append("blob")
            rounds += 1

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    print("started", threads, "threads", flush=True)
    started = time.monotonic()
    kept = []
    while not os.path.exists(stop_file) and time.monotonic() - started < bound:
        squares = {i: i * i for i in range(2000)}
        if sum(squares.values()) != sum(i * i for i in range(2000)):
            errors.append("squares")
        kept.append(list(squares))
        del kept[:-20]
    done.set()
    for w in workers:
        w.join()
    print("errors:", errors[:5], flush=True)
    sys.exit(3)
    """
)


def anon_pages(pid: int) -> int:
    """Anonymous one-page mappings (what a gdb injection maps)."""
    count = 0
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if end - start == 4096 and len(parts) == 5 and parts[1] == "rw-p":
                count += 1
    return count


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def torture(rounds: int = 100, threads: int = 4, python: str = sys.executable, say=print) -> dict:
    """Runs the torture; returns its figures (raises nothing for a failed round)."""
    with tempfile.TemporaryDirectory(prefix="heapsite-torture-") as work:
        script = os.path.join(work, "program.py")
        with open(script, "w") as f:
            f.write(PROGRAM)
        env = dict(os.environ, TMPDIR=work)
        bound = str(60 + 20 * rounds)

        def start(stop):
            return subprocess.Popen(
                [python, script, stop, str(threads), bound],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )

        # The reference: the same program, never attached.
        stop = os.path.join(work, "stop-plain")
        plain = start(stop)
        time.sleep(1.0)
        open(stop, "w").close()
        plain_out, plain_err = plain.communicate(timeout=120)

        stop = os.path.join(work, "stop")
        program = start(stop)
        first_line = program.stdout.readline()
        threads_before = thread_count(program.pid)
        pages_before = None  # after the first round (its imports map a page or two)
        failures = []
        attach_times, detach_times = [], []
        started = time.monotonic()
        for i in range(rounds):
            capture = os.path.join(work, f"round-{i}.capture")
            for action, times, extra in (
                ("attach", attach_times, ["-o", capture, "--frames", "8"]),
                ("detach", detach_times, []),
            ):
                t0 = time.monotonic()
                done = subprocess.run(
                    [python, "-m", "heapsite", action, str(program.pid), "-q", *extra],
                    capture_output=True,
                    text=True,
                    timeout=180,
                    env=env,
                )
                times.append(time.monotonic() - t0)
                if done.returncode != 0 or done.stdout or done.stderr:
                    failures.append(f"round {i} {action}: {done.returncode} {done.stderr.strip()}")
                    break
            else:
                if not os.path.getsize(capture):
                    failures.append(f"round {i}: empty capture")
                os.remove(capture)
            if program.poll() is not None:
                failures.append(f"round {i}: the program ended ({program.returncode})")
                break
            if pages_before is None:
                pages_before = anon_pages(program.pid)
            if (i + 1) % 10 == 0:
                say(f"{i + 1} rounds, {len(failures)} failed, {time.monotonic() - started:.1f}s")
        elapsed = time.monotonic() - started
        alive = program.poll() is None
        pages_after = anon_pages(program.pid) if alive else -1
        threads_after = thread_count(program.pid) if alive else -1
        open(stop, "w").close()
        try:
            out, err = program.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            program.kill()
            out, err = program.communicate()
            failures.append("the program did not end after the rounds (killed)")
        out = first_line + out
        leftovers = sorted(
            n for n in os.listdir(work) if n.startswith(("heapsite-attach-", "heapsite-detach-"))
        )
    result = {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "mechanism": "sys.remote_exec" if sys.version_info >= (3, 14) else "gdb",
        "rounds": rounds,
        "threads": threads,
        "failures": failures,
        "seconds": round(elapsed, 1),
        "attach_mean": round(sum(attach_times) / max(len(attach_times), 1), 3),
        "attach_max": round(max(attach_times, default=0), 3),
        "detach_mean": round(sum(detach_times) / max(len(detach_times), 1), 3),
        "detach_max": round(max(detach_times, default=0), 3),
        "exit_status": program.returncode,
        "plain_exit_status": plain.returncode,
        "same_output": out == plain_out,
        "same_stderr": err == plain_err,
        "stderr": err[-2000:],
        # One-page anonymous mappings more than after the first round: a gdb
        # injection that leaked its page would add one per round.
        "pages_left": pages_after - pages_before if alive and pages_before is not None else None,
        "threads_left": threads_after - threads_before if alive else None,
        "session_dirs_left": leftovers,
    }
    # What differs from a plain run, one phrase each; none means the torture passed.
    result["why"] = [
        *failures,
        *(
            [f"exit status {result['exit_status']}, plain {result['plain_exit_status']}"]
            if not result["exit_status"] == result["plain_exit_status"] == 3
            else []
        ),
        *(["standard output differs"] if not result["same_output"] else []),
        *(["standard error differs"] if not result["same_stderr"] else []),
        *([f"session directories left: {leftovers}"] if leftovers else []),
        *(
            [f"anonymous pages left: {result['pages_left']}"]
            if result["pages_left"] is None or result["pages_left"] > 2
            else []
        ),
        *([f"threads left: {result['threads_left']}"] if result["threads_left"] != 0 else []),
    ]
    result["ok"] = not result["why"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    result = torture(args.rounds, args.threads, say=lambda s: print(s, file=sys.stderr))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
