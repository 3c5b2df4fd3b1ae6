"""Never harm the host (issue 19): programs that stress heapsite's engine run
exactly as they do without it -- same output, same exit status -- in-process,
under `heapsite run` and under `heapsite run --native`.

Each case runs in a child bounded by a timeout, so a hang fails the test
instead of the suite; everything it writes stays under pytest's tmp_path."""

import json
import subprocess
import sys
import textwrap

import pytest
from heapsite.cli import _can_preload

# The program runs with heapsite tracing in-process (started before its first
# line, as `heapsite.start(frames=16)`), preloaded, preloaded with native
# frames, or preloaded and sampled (at 64 KiB, so that the recording path
# runs often too). The plain run is the reference.
IN_PROCESS = (
    "import heapsite, runpy, sys; heapsite.start(frames=16); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)
MODES = ["in-process", "run", "run --native", "run --sample"]


def command(mode, script, capture):
    if mode == "plain":
        return [sys.executable, str(script)]
    if mode == "in-process":
        return [sys.executable, "-c", IN_PROCESS, str(script)]
    if not _can_preload():
        pytest.skip("this python cannot be preloaded (no shared libpython)")
    extra = {"run": [], "run --native": ["--native"], "run --sample": ["--sample", "64KiB"]}[mode]
    return [sys.executable, "-m", "heapsite", "run", "-q", *extra, "-o", str(capture), str(script)]


def run(mode, script, tmp_path, timeout):
    capture = tmp_path / f"{mode.replace(' ', '_')}.capture"
    try:
        return subprocess.run(
            command(mode, script, capture),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp_path,
        )
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"{mode}: no exit within {timeout} s (a hang?): {hung.stderr!r}")


def same_as_plain(mode, program, tmp_path, timeout=120):
    """Runs `program` plainly and in `mode`; both must print the same and exit
    with the same status. Returns the traced run."""
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(program))
    plain = run("plain", script, tmp_path, timeout)
    traced = run(mode, script, tmp_path, timeout)
    assert plain.returncode == 0, plain.stderr
    assert (traced.returncode, traced.stdout) == (plain.returncode, plain.stdout), traced.stderr
    return traced


# ---- 1. no self-deadlock ----------------------------------------------------

CLEAR_AFTER_ALLOCATING = """
import heapsite

kept = [bytearray(100 + i) for i in range(1000)]
for _ in range(20):
    heapsite.clear()
    kept += [bytearray(5000) for _ in range(200)]
print("kept", len(kept), sum(map(len, kept)))
"""


@pytest.mark.parametrize("mode", MODES)
def test_clear_while_tracing_does_not_deadlock(mode, tmp_path):
    same_as_plain(mode, CLEAR_AFTER_ALLOCATING, tmp_path, timeout=60)


CONTROL_WHILE_THREADS_ALLOCATE = """
import hashlib, threading, zlib
import heapsite

ROUNDS = 3000

def churn(seed, results):
    # Python objects (MEM/OBJ, GIL held) and zlib's buffers (RAW, allocated
    # with the GIL released): a checksum of everything made on the way.
    digest = hashlib.sha256(str(seed).encode())
    kept = []
    for i in range(ROUNDS):
        block = bytearray((seed * 31 + i) % 251 for _ in range(64 + i % 200))
        kept.append({"i": i, "data": block, "list": [i] * (i % 17)})
        if i % 7 == 0:
            digest.update(zlib.compress(bytes(block) * 50, 6)[:16])
        if len(kept) > 50:
            digest.update(bytes(kept.pop(0)["data"]))
    results[seed] = digest.hexdigest()

results = {}
threads = [threading.Thread(target=churn, args=(seed, results)) for seed in range(4)]
for thread in threads:
    thread.start()
while any(thread.is_alive() for thread in threads):
    heapsite.start(16)
    heapsite.clear()
    heapsite.snapshot()
    heapsite.stats()
    heapsite.stop()
for thread in threads:
    thread.join()
for seed in sorted(results):
    print(seed, results[seed])
"""


@pytest.mark.parametrize("mode", MODES)
def test_start_clear_snapshot_stop_while_threads_allocate(mode, tmp_path):
    same_as_plain(mode, CONTROL_WHILE_THREADS_ALLOCATE, tmp_path, timeout=180)


# ---- 2. out of memory ---------------------------------------------------------


# The program caps its own address space at what it uses when it starts
# (heapsite included, when it is there) plus 300 MB (`ulimit -v`), so
# allocating on ends in MemoryError soon. Capped from the parent instead, the
# cap followed the test runner's size, and a runner grown to a gigabyte left
# the program a gigabyte and a half to fill: 25 s a run instead of 4.
ALLOCATE_UNTIL_MEMORY_ERROR = """
import resource
with open("/proc/self/status") as status:
    vm_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
cap = vm_kb * 1024 + 300 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

def exhaust(make):
    kept = []
    try:
        while True:
            kept.append(make())
    except MemoryError:
        made = len(kept)
        kept.clear()
        return made > 0

print("bytearrays", exhaust(lambda: bytearray(1 << 20)))
print("small lists", exhaust(lambda: [0] * 8))
print("dicts", exhaust(lambda: {i: str(i) for i in range(8)}))
try:
    bytearray(50 << 30)
except MemoryError:
    print("50 GiB refused")
print("and on:", sum(len(str(i)) for i in range(100_000)))
"""


@pytest.mark.parametrize("mode", MODES)
def test_a_program_that_runs_out_of_memory_recovers_as_without_heapsite(mode, tmp_path):
    same_as_plain(mode, ALLOCATE_UNTIL_MEMORY_ERROR, tmp_path, timeout=180)


# ---- 3. code that comes and goes -------------------------------------------

EXEC_AND_DROP_FUNCTIONS = """
import json, sys, time
import heapsite

def heapsite_figures():
    if not heapsite.is_tracing():
        return None
    heapsite.traced_memory()  # lets heapsite settle what died
    stats = heapsite.stats()
    return {"sites": stats["sites"], "tracking_bytes": stats["tracking_bytes"]}

checksum = 0
figures = {}
started = time.perf_counter()
for i in range(20_000):
    namespace = {}
    exec(f"def function_{i}(x):\\n    return [x, {i}] * 3\\n", namespace)
    checksum += len(namespace[f"function_{i}"](i))
    if i + 1 in (5_000, 20_000):
        figures[i + 1] = heapsite_figures()
seconds = time.perf_counter() - started
print(json.dumps({"checksum": checksum, "seconds": seconds, "figures": figures}))
"""


@pytest.mark.parametrize("mode", MODES[:2])
def test_code_that_comes_and_goes_costs_time_and_memory_in_proportion(mode, tmp_path):
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(EXEC_AND_DROP_FUNCTIONS))
    plain = run("plain", script, tmp_path, timeout=120)
    traced = run(mode, script, tmp_path, timeout=300)
    assert (plain.returncode, traced.returncode) == (0, 0), traced.stderr
    plain, traced = json.loads(plain.stdout), json.loads(traced.stdout)
    assert traced["checksum"] == plain["checksum"]
    assert traced["seconds"] < 5 * plain["seconds"] + 5
    # Four times the functions, not four times heapsite's memory: what it
    # keeps follows the code alive, not the code that ever ran.
    early, late = traced["figures"]["5000"], traced["figures"]["20000"]
    assert late["sites"] < 2 * early["sites"], (early, late)
    assert late["tracking_bytes"] < 2 * early["tracking_bytes"], (early, late)
