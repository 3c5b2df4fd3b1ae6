"""Captures on demand: `heapsite.dump(path)` and, under `heapsite run`, a
signal (`--dump-signal`, HEAPSITE_DUMP_SIGNAL) write a capture of the
running program (what is live, the peak so far, the kinds alive with their
lines and holders, memory over time so far) and the program goes on, its
output and exit status unchanged. The oracle for the figures is the
standard tracemalloc, run on the same program in a process of its own."""

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

from capture_files import line_live, report_json

SERVICE = textwrap.dedent(
    """\
    import os, sys, tracemalloc
    if os.environ.get("ORACLE"):
        tracemalloc.start()
    CACHE = []
    def handle(n):
        CACHE.append([bytearray(1000) for _ in range(n)])  # cache line
    handle(1000)
    if os.environ.get("ORACLE"):
        for stat in tracemalloc.take_snapshot().statistics("lineno"):
            if stat.traceback[0].lineno == 6:
                print(stat.size)
        sys.exit(0)
    print("ready", flush=True)
    sys.stdin.readline()  # the test sends the signal, then a line
    handle(500)
    print("done", flush=True)
    sys.exit(3)
    """
)


def read_line(stream, seconds: float = 60) -> str:
    """The next line of a child's pipe, or AssertionError after `seconds`."""
    ready, _, _ = select.select([stream], [], [], seconds)
    assert ready, f"no line within {seconds} s"
    return stream.readline()


# read()'s number in /proc/PID/syscall, by machine.
READ_SYSCALL = {"x86_64": "0", "aarch64": "63"}


def wait_until_blocked_in_read(pid: int, seconds: float = 30) -> None:
    """Until `pid`'s main thread sits in read() (/proc/PID/syscall). A
    signal that lands after the interpreter's last check for signals and
    before the read() call is noted and acted upon only when
    read() returns: CPython's own race, without heapsite too. Signalled
    after the call has begun, the read is interrupted and the handler runs."""
    number = READ_SYSCALL.get(os.uname().machine)
    if number is None:  # a machine whose numbers this test does not know
        time.sleep(1)
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/syscall") as f:
            if f.read().split()[0] == number:
                return
        time.sleep(0.01)
    raise AssertionError(f"{pid} never blocked in read()")


def json_of(path) -> dict:
    return report_json(str(path))


def oracle(tmp_path) -> int:
    result = subprocess.run(
        [sys.executable, "service.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "ORACLE": "1"},
    )
    return int(result.stdout)


def test_dump_in_process_and_the_program_goes_on(tmp_path):
    (tmp_path / "prog.py").write_text(
        textwrap.dedent(
            """\
            import heapsite
            heapsite.start(4)
            kept = [bytearray(1000) for _ in range(1000)]  # kept line
            first = heapsite.dump("d-%p-%n.capture")
            more = [bytearray(1000) for _ in range(1000)]  # more line
            second = heapsite.dump("d-%p-%n.capture")
            print(first, second, heapsite.is_tracing())
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "prog.py"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    first, second, tracing = result.stdout.split()
    assert first.endswith("-1.capture") and second.endswith("-2.capture") and tracing == "True"
    one, two = json_of(tmp_path / first), json_of(tmp_path / second)
    assert line_live(one, "prog.py", 3) >= 1000 * 1000
    assert line_live(one, "prog.py", 5) == 0
    assert line_live(two, "prog.py", 5) >= 1000 * 1000
    assert two["meta"]["peak_bytes"] >= two["meta"]["live_bytes"] > one["meta"]["live_bytes"]
    # The kinds alive at the dump, and what holds the kept ones.
    assert any(k["name"] == "bytearray" and k["count"] >= 2000 for k in two["kinds"])
    held = next(k for k in two["joined"]["kinds"] if k["name"] == "bytearray")
    assert held["path"].startswith(("__main__.kept[", "__main__.more[")), held


def test_a_signal_dumps_the_running_service(tmp_path):
    (tmp_path / "service.py").write_text(SERVICE)
    process = subprocess.Popen(
        [sys.executable, "-m", "heapsite", "run", "-q", "-o", "svc.capture"]
        + ["--dump-signal", "USR2", "service.py"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert read_line(process.stdout) == "ready\n"
        # The program's pid: the launcher's only child.
        children = open(f"/proc/{process.pid}/task/{process.pid}/children").read().split()
        program = int(children[0])
        wait_until_blocked_in_read(program)
        os.kill(program, signal.SIGUSR2)
        line = read_line(process.stderr)
        assert "capture of the running program written to " in line, line
        assert line.strip().endswith(os.sep + "svc.dump1.capture"), line
        process.stdin.write("go on\n")
        process.stdin.flush()
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait(timeout=60)
    assert process.returncode == 3, err  # the program's own status
    assert out == "done\n", out
    dump, final = json_of(tmp_path / "svc.dump1.capture"), json_of(tmp_path / "svc.capture")
    expected = oracle(tmp_path)
    assert abs(line_live(dump, "service.py", 6) - expected) <= 0.05 * expected
    assert line_live(final, "service.py", 6) > 1.4 * line_live(dump, "service.py", 6)
    assert dump["timeline"] and dump["meta"]["native"] is True
    assert dump["meta"]["duration"] < final["meta"]["duration"]


def test_bad_dump_signals_are_one_line(tmp_path):
    (tmp_path / "ok.py").write_text("print('ran')\n")
    for how in (
        {"args": ["--dump-signal", "NOPE"]},
        {"args": [], "env": {"HEAPSITE_DUMP_SIGNAL": "KILL"}},
        {"args": ["--dump-signal", "TERM"]},
    ):
        result = subprocess.run(
            [sys.executable, "-m", "heapsite", "run", *how["args"], "ok.py"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
            env={**os.environ, **how.get("env", {})},
        )
        assert result.returncode == 2, (how, result.stderr)
        assert result.stderr.count("\n") == 1 and "HEAPSITE_DUMP_SIGNAL" in result.stderr
        assert "ran" not in result.stdout


def test_dump_needs_tracing():
    import heapsite

    assert not heapsite.is_tracing()
    try:
        heapsite.dump("never.capture")
    except RuntimeError as e:
        assert "heapsite.start()" in str(e)
    else:
        raise AssertionError("dump() without tracing wrote something")
    assert not os.path.exists("never.capture")
