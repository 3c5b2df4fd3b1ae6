"""A slow leak in a service, found by sampled tracing.

    python bench/sampled_leak.py [--seconds 60] [--rate 512KiB] [--leak 100000] [--runs 1]

A service-like loop (requests parsed into dicts and lists, rendered to JSON,
an LRU cache of 1,000 responses that stays full) leaks `--leak` bytes a
second at one line: a list that keeps a small record per request. It runs
under `heapsite run --sample RATE --dump-signal USR2`; after `--seconds`
the benchmark sends SIGUSR2, the service writes a capture of itself and goes
on, and the benchmark stops it with SIGTERM (sent to `heapsite run`, which
passes it on). The top line of the capture's
live bytes is checked against the planted line.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SERVICE = textwrap.dedent(
    """
    import collections, json, os, sys, time

    LEAK_PER_SECOND = int(sys.argv[1])
    cache = collections.OrderedDict()
    history = []
    print("ready", os.getpid(), flush=True)
    started = time.monotonic()
    request = 0
    while True:
        request += 1
        body = {"id": request, "user": f"user-{request % 977}",
                "items": [{"sku": f"sku-{i}", "qty": i % 7} for i in range(20)]}
        response = json.dumps(body)
        cache[request % 5000] = response
        cache.move_to_end(request % 5000)
        while len(cache) > 1000:
            cache.popitem(last=False)
        # The leak: a record per request, kept for good, paced to the rate.
        due = (time.monotonic() - started) * LEAK_PER_SECOND
        while len(history) * 1000 < due:
            history.append(bytearray(1000 - 57))  # LEAK
        time.sleep(0.0005)
    """
)


def run_once(seconds, rate, leak, scratch):
    script = scratch / "service.py"
    script.write_text(SERVICE)
    output = scratch / "service.capture"
    cmd = [sys.executable, "-m", "heapsite", "run", "-q", "--sample", rate]
    cmd += ["--dump-signal", "USR2", "-o", str(output), str(script), str(leak)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        if ready[:1] != ["ready"]:
            raise SystemExit("the service did not start")
        time.sleep(seconds)
        # To the program itself (`heapsite run` is its parent).
        os.kill(int(ready[1]), signal.SIGUSR2)
        dump = scratch / "service.dump1.capture"
        deadline = time.monotonic() + 60
        while not dump.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    if not dump.exists():
        raise SystemExit(f"no dump written: {proc.stderr.read() if proc.stderr else ''}")
    from heapsite import _heapsite

    data = json.loads(_heapsite.render_report(str(dump), "json", 10))
    frames = data["frames"]
    sites = sorted(data["sites"], key=lambda s: -s["live_bytes"])

    def where(site):
        frame = frames[site["stack"][0]] if site["stack"] else {"filename": "?", "lineno": 0}
        return f"{os.path.basename(frame['filename'])}:{frame['lineno']}"

    leak_line = next(n for n, t in enumerate(SERVICE.splitlines(), 1) if "# LEAK" in t)
    top = [(where(s), s["live_bytes"]) for s in sites[:3]]
    return top, f"service.py:{leak_line}", leak * seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", default="512KiB")
    parser.add_argument("--leak", type=int, default=100_000, help="bytes leaked per second")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    if args.seconds <= 0 or args.leak <= 0 or args.runs < 1:
        parser.error("--seconds, --leak and --runs must be positive")
    found = 0
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            top, planted, leaked = run_once(args.seconds, args.rate, args.leak, Path(tmp))
        hit = top and top[0][0] == planted
        found += bool(hit)
        shown = ", ".join(f"{line} {size / 1e6:.2f} MB" for line, size in top)
        print(
            f"run {run + 1}: planted {planted} (about {leaked / 1e6:.1f} MB leaked); "
            f"top lines: {shown}; {'FOUND' if hit else 'MISSED'}"
        )
    print(f"{found} of {args.runs} runs: the planted leak is the top line")


if __name__ == "__main__":
    main()
