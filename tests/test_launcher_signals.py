"""`heapsite run` and signals: whatever signal reaches the launcher reaches
the program once; the launcher ends as a plain `python` run does (status, or
killed by the same signal); the program is never left orphaned; a program
ended by SIGINT or SIGTERM still leaves its capture."""

import fcntl
import os
import pty
import resource
import select
import signal
import subprocess
import sys
import termios
import textwrap
import time

import heapsite
import pytest

SERVER = textwrap.dedent(
    """
    import os, time
    data = [bytearray(1000) for _ in range(2000)]
    print("ready", os.getpid(), flush=True)
    while True:
        time.sleep(0.05)
    """
)
TIMEOUT = 20


@pytest.fixture
def reaper():
    """Pids to kill (with their process groups) when the test ends, so that a
    failing test leaves nothing running."""
    pids = []
    yield pids
    for pid in pids:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _no_core_dumps():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _wait_for_ready(stream, deadline: float) -> int:
    """Reads up to the program's "ready <pid>" line; returns the pid."""
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([stream], [], [], max(remaining, 0))
        if not ready:
            raise AssertionError(f"no 'ready' line in time, got {line!r}")
        chunk = os.read(stream.fileno(), 1)
        if not chunk:
            raise AssertionError(f"the program ended before 'ready': {line!r}")
        line += chunk
    word, pid = line.split()
    assert word == b"ready", line
    return int(pid)


def start(command, cwd, reaper, env=None):
    """The command in a session of its own (so that killpg reaches it and
    nothing else), once its program printed "ready"; (process, program pid)."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_no_core_dumps,
        env=env,
    )
    reaper.append(process.pid)
    program = _wait_for_ready(process.stdout, time.monotonic() + TIMEOUT)
    reaper.append(program)
    return process, program


def heapsite_run(output, script):
    return [sys.executable, "-m", "heapsite", "run", "-q", "-o", str(output), str(script)]


def signalled(command, cwd, sig, to_group, reaper, env=None, busy_for=0.0):
    """Runs the command until ready (and, with `busy_for`, until its program
    has used that many seconds of CPU since), sends `sig` (to its process or
    its whole process group); (status, stderr)."""
    process, program = start(command, cwd, reaper, env)
    if busy_for:
        _wait_for_cpu(program, busy_for)
    (os.killpg if to_group else os.kill)(process.pid, sig)
    _, stderr = process.communicate(timeout=TIMEOUT)
    return process.returncode, stderr.decode()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for_cpu(pid: int, seconds: float) -> None:
    """Until the process has run `seconds` on a CPU: past the few
    instructions between its "ready" and a long C call, however busy the
    machine (wall time alone would race with the scheduler)."""
    start_cpu, deadline = _cpu_seconds(pid), time.monotonic() + TIMEOUT
    while _cpu_seconds(pid) - start_cpu < seconds and time.monotonic() < deadline:
        time.sleep(0.02)


def capture_is_readable(path) -> bool:
    return path.exists() and b'"sites"' in heapsite._heapsite.render_report(str(path), "json", 1)


@pytest.mark.parametrize("to_group", [False, True], ids=["kill", "killpg"])
@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT], ids=lambda s: s.name
)
def test_a_signal_ends_the_program_as_it_ends_plain_python(tmp_path, sig, to_group, reaper):
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    plain_status, plain_err = signalled(
        [sys.executable, str(script)], tmp_path, sig, to_group, reaper
    )
    output = tmp_path / "server.capture"
    status, err = signalled(heapsite_run(output, script), tmp_path, sig, to_group, reaper)
    assert status == plain_status == -sig, err
    # Delivered once: a second SIGINT would interrupt the first one's unwinding.
    assert err.count("KeyboardInterrupt") == plain_err.count("KeyboardInterrupt"), err
    if sig in (signal.SIGINT, signal.SIGTERM):
        assert capture_is_readable(output), err
        assert "heapsite:" not in err  # -q: nothing of heapsite's on success
    else:
        assert "the program ended without a capture (killed by signal" in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_in_process_a_signal_still_leaves_the_capture(tmp_path, reaper, sig):
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    output = tmp_path / "server.capture"
    env = {**os.environ, "HEAPSITE_IN_PROCESS": "1"}
    status, err = signalled(heapsite_run(output, script), tmp_path, sig, False, reaper, env)
    assert status == -sig, err
    assert capture_is_readable(output), err


def test_a_program_with_its_own_sigterm_handler_keeps_it(tmp_path, reaper):
    script = tmp_path / "graceful.py"
    script.write_text(
        "import signal, sys\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n" + SERVER
    )
    output = tmp_path / "graceful.capture"
    status, err = signalled(heapsite_run(output, script), tmp_path, signal.SIGTERM, False, reaper)
    assert status == 7, err
    assert capture_is_readable(output)  # written at exit, as for any sys.exit


def test_sigterm_still_ends_a_program_busy_in_a_long_c_call(tmp_path, reaper):
    # sum() over a range runs in C and never checks for signals: heapsite's
    # Python handler cannot run, so its deadline ends the program instead.
    script = tmp_path / "busy.py"
    script.write_text("print('ready', __import__('os').getpid(), flush=True)\nsum(range(10**13))\n")
    plain_status, _ = signalled(
        [sys.executable, str(script)], tmp_path, signal.SIGTERM, False, reaper, busy_for=0.2
    )
    started = time.monotonic()
    output = tmp_path / "busy.capture"
    status, err = signalled(
        heapsite_run(output, script), tmp_path, signal.SIGTERM, False, reaper, busy_for=0.2
    )
    assert status == plain_status == -signal.SIGTERM, err
    assert time.monotonic() - started < 10
    assert "the program ended without a capture (killed by signal 15)" in err


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_the_program_does_not_outlive_a_killed_launcher(tmp_path, reaper):
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    launcher, program = start(heapsite_run(tmp_path / "s.capture", script), tmp_path, reaper)
    assert program != launcher.pid and not _gone(program)
    launcher.kill()  # SIGKILL: nothing can be passed on
    launcher.wait(timeout=TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while not _gone(program) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(program)


def _in_a_terminal(command, cwd, reaper):
    """Runs the command with a new pseudo-terminal as its controlling
    terminal, types Ctrl-C once it is ready; (status, what it printed)."""
    master, slave = pty.openpty()

    def controlling_terminal():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        command, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_terminal
    )
    reaper.append(process.pid)
    os.close(slave)
    deadline = time.monotonic() + TIMEOUT
    printed = b""
    try:
        while b"ready" not in printed or not printed.endswith(b"\n"):
            printed += _read_some(master, deadline)
        os.write(master, b"\x03")  # the terminal sends SIGINT to its foreground group
        while process.poll() is None or _has_more(master):
            printed += _read_some(master, deadline)
    except OSError:
        pass  # EIO: every holder of the terminal's other end has ended
    finally:
        os.close(master)
    return process.wait(timeout=TIMEOUT), printed.decode(errors="replace")


def _has_more(fd) -> bool:
    return bool(select.select([fd], [], [], 0.2)[0])


def _read_some(fd, deadline) -> bytes:
    if not select.select([fd], [], [], max(deadline - time.monotonic(), 0))[0]:
        raise AssertionError("the program printed nothing more in time")
    return os.read(fd, 4096)


def test_ctrl_c_in_a_terminal_is_one_keyboard_interrupt(tmp_path, reaper):
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    plain_status, plain = _in_a_terminal([sys.executable, str(script)], tmp_path, reaper)
    output = tmp_path / "server.capture"
    status, printed = _in_a_terminal(heapsite_run(output, script), tmp_path, reaper)
    assert status == plain_status == -signal.SIGINT, printed
    assert printed.count("KeyboardInterrupt") == plain.count("KeyboardInterrupt") == 1, printed
    assert capture_is_readable(output), printed


OWN_THREADS = textwrap.dedent(
    """
    import os, signal
    blocks_all = {}
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/status") as f:
            blocked = next(int(l.split()[1], 16) for l in f if l.startswith("SigBlk:"))
        signals = (signal.SIGUSR2, signal.SIGINT, signal.SIGTERM, signal.SIGALRM)
        blocks_all[int(task)] = all(blocked >> (s - 1) & 1 for s in signals)
    main = blocks_all.pop(os.getpid())
    print(main, sorted(blocks_all.values()))
    """
)


def test_heapsites_own_threads_take_no_signals(tmp_path):
    """A signal sent to the process goes to one thread that does not block
    it. Taken by one of heapsite's threads, CPython would note it there while
    the main thread stayed blocked in read(), its handler (Ctrl-C, a dump
    signal) waiting until the read returned. heapsite's threads (the program
    starts none) block them all; the program's main thread blocks none.
    Threads are told apart by id, not name: a new thread names itself when it
    first runs."""
    (tmp_path / "threads.py").write_text(OWN_THREADS)
    result = subprocess.run(
        [sys.executable, "-m", "heapsite", "run", "-q", "-o", "t.capture", "threads.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    main, others = result.stdout.split(" ", 1)
    assert main == "False", result.stdout
    others = eval(others)
    assert others and all(others), result.stdout
