"""heapsite attach PID / detach PID (docs/attach.md): tracing a process that
was started without heapsite, through sys.remote_exec on 3.14+ and a
gdb-scheduled pending call before; bad input refused in one line with exit
status 2; the program's output and exit status unchanged, also over repeated
attach/detach rounds (bench/attach_torture.py, HEAPSITE_ATTACH_ROUNDS)."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import heapsite
import pytest
from heapsite import _attach

TIMEOUT = 120
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REMOTE_EXEC = sys.version_info >= (3, 14)
CAN_INJECT = REMOTE_EXEC or bool(_attach._gdb_path())
needs_injection = pytest.mark.skipif(
    not CAN_INJECT, reason="attach before CPython 3.14 needs gdb, which is not installed"
)

# The program: a recognisable allocation site, worker threads, a known end.
PROGRAM = textwrap.dedent(
    """
    import faulthandler, os, signal, sys, threading, time
    # Should it ever hang, the test has every thread's Python stack printed.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    stop_file = sys.argv[1]
    kept = []
    def worker():
        while not os.path.exists(stop_file):
            kept.append([str(i) for i in range(100)])  # WORKER LINE
            del kept[:-50]
            time.sleep(0.001)
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    started = time.monotonic()
    while not os.path.exists(stop_file) and time.monotonic() - started < 100:
        squares = {i: i * i for i in range(500)}
    for t in threads:
        t.join()
    print("done", sum(squares.values()), "heapsite" in sys.modules)
    sys.exit(7)
    """
)


class Program:
    """The program above, started and bounded (killed at the end if need be)."""

    def __init__(self, tmp_path, code=PROGRAM, python=sys.executable, args=()):
        self.stop = tmp_path / "stop"
        script = tmp_path / "program.py"
        script.write_text(code)
        self.process = subprocess.Popen(
            [python, *args, str(script), str(self.stop)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid
        self.first = self.process.stdout.readline()

    def finish(self, timeout=60):
        self.stop.write_text("")
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(self.hung(timeout)) from None
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.communicate()
        return self.first + out, err, self.process.returncode

    def hung(self, timeout):
        """What a program that did not end tells of its threads: the kernel's
        state of each (stopped, in which wait), then their Python stacks
        (faulthandler, SIGUSR1) on its standard error."""
        threads = [f"program {self.pid} has not ended {timeout} s after its stop file:"]
        for tid in sorted(os.listdir(f"/proc/{self.pid}/task"), key=int):
            task = f"/proc/{self.pid}/task/{tid}"
            fields = []
            for name in ("comm", "wchan", "syscall"):
                try:
                    with open(f"{task}/{name}") as f:
                        fields.append(f"{name}={f.read().strip()}")
                except OSError as e:
                    fields.append(f"{name}: {e.strerror}")
            try:
                with open(f"{task}/stat") as f:
                    fields.append("state=" + f.read().rpartition(")")[2].split()[0])
            except (OSError, IndexError):
                pass
            threads.append(f"  thread {tid}: " + " ".join(fields))
        self.process.send_signal(signal.SIGUSR1)
        time.sleep(2)
        self.process.kill()
        out, err = self.process.communicate()
        return "\n".join(threads) + "\nits stdout:\n" + out + "its stderr:\n" + err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def cli(*args, tmp_path=None, timeout=TIMEOUT, **extra_env):
    env = dict(os.environ, **extra_env)
    if tmp_path is not None:
        env["TMPDIR"] = str(tmp_path)  # session directories land here
    return subprocess.run(
        [sys.executable, "-m", "heapsite", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def quiet_attach(program, capture, tmp_path):
    result = cli("attach", str(program.pid), "-q", "-o", str(capture), tmp_path=tmp_path)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


def one_line_error(result, status=2):
    assert result.returncode == status, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("heapsite: error: "), result.stderr
    return lines[0]


def expected_end():
    return "ready\ndone " + str(sum(i * i for i in range(500)))


# ---- bad input ---------------------------------------------------------------


@pytest.fixture
def sleeper():
    process = subprocess.Popen(["sleep", "60"])
    yield process.pid
    process.kill()
    process.wait(timeout=10)


@pytest.mark.parametrize(
    "args, message",
    [
        (["attach"], "the following arguments are required: pid"),
        (["attach", "abc"], "a pid is a whole number, got 'abc'"),
        (["attach", "-5"], "unrecognized arguments|a pid is a positive number"),
        (["attach", "0"], "a pid is a positive number"),
        (["detach", "4999999"], "no process with pid 4999999"),
        (["attach", "4999999"], "no process with pid 4999999"),
        (["attach", "1", "--bogus"], "unrecognized arguments: --bogus"),
        (["attach", "1", "--duration", "5x"], "a duration is a number with s, m, h or ms"),
        (["attach", "1", "--duration", "0"], "a duration must be above 0"),
        (["attach", "1", "--sample", "lots"], "cannot parse size 'lots'"),
        (["attach", "1", "--duration", "-3s"], "expected one argument|a duration is"),
        (["attach", "1", "--frames", "0"], "--frames must be between 1 and 128"),
        (["detach", "1", "--timeout", "soon"], "a duration is a number"),
    ],
)
def test_bad_input_is_one_line_and_status_2(args, message):
    line = one_line_error(cli(*args))
    assert re.search(message, line), line


def test_not_a_python_process(sleeper):
    line = one_line_error(cli("attach", str(sleeper)))
    assert f"process {sleeper} is not a Python process (/usr/bin/sleep)" in line or (
        "is not a Python process" in line
    )


def test_heapsite_does_not_attach_to_itself():
    assert "cannot attach to itself" in str(
        pytest.raises(_attach.AttachError, _attach.inspect, os.getpid()).value
    )


def test_an_output_in_a_missing_directory(tmp_path):
    with Program(tmp_path) as program:
        line = one_line_error(cli("attach", str(program.pid), "-o", str(tmp_path / "no" / "x")))
        assert "no directory" in line
        out, err, status = program.finish()
    assert (out.startswith(expected_end()), err, status) == (True, "", 7)


def test_permission_denied_names_the_user(tmp_path, monkeypatch, capsys):
    with Program(tmp_path) as program:
        monkeypatch.setattr(os, "geteuid", lambda: 54321)
        assert _attach.main(["attach", str(program.pid)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "permission denied for process" in err and "run heapsite as that user" in err


def other_python():
    """An interpreter of another minor version on this machine, or None."""
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = sorted(glob.glob(os.path.join(pyenv, "versions", "3.*", "bin", "python3")))
    candidates += sorted(
        glob.glob(os.path.expanduser("~/.cache/heapsite/python/3.*/root/usr/bin/python3.*"))
    )
    for path in candidates:
        try:
            version = subprocess.run(
                [path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            continue
        if (
            version
            and version != "%d.%d" % sys.version_info[:2]
            and tuple(map(int, version.split("."))) >= (3, 9)
        ):
            return path, version
    return None


def test_another_python_version_is_refused(tmp_path):
    found = other_python()
    if found is None:
        pytest.skip("no CPython of another version on this machine")
    python, version = found
    with Program(tmp_path, python=python) as program:
        line = one_line_error(cli("attach", str(program.pid)))
        own = "%d.%d" % sys.version_info[:2]
        assert f"runs CPython {version}, this heapsite is built for {own}" in line
        out, err, status = program.finish()
    assert (out.startswith(expected_end()), err, status) == (True, "", 7)


@pytest.mark.skipif(not REMOTE_EXEC, reason="PEP 768 is CPython 3.14+")
def test_remote_debugging_disabled_is_refused(tmp_path):
    with Program(tmp_path, args=("-X", "disable-remote-debug")) as program:
        line = one_line_error(cli("attach", str(program.pid)))
        assert "does not allow remote debugging" in line
        out, err, status = program.finish()
    assert (out, err, status) == (expected_end() + " False\n", "", 7)


@pytest.mark.skipif(REMOTE_EXEC, reason="gdb is used before CPython 3.14 only")
def test_a_gdb_that_cannot_call_functions_is_named_and_nothing_changes(tmp_path):
    # What Debian 12's gdb 13 answers on CPUs with AMX under recent kernels
    # (scripts/get-gdb), played by a stand-in named in HEAPSITE_GDB.
    fake = tmp_path / "gdb"
    fake.write_text(
        '#!/bin/sh\necho "HEAPSITE-FAILED Couldn\'t write extended state status: Bad address."\n'
    )
    fake.chmod(0o755)
    with Program(tmp_path) as program:
        result = cli("attach", str(program.pid), HEAPSITE_GDB=str(fake))
        line = one_line_error(result, status=1)
        assert f"{fake} cannot call functions in a process on this machine" in line
        assert "name gdb 14 or newer in HEAPSITE_GDB" in line
        out, err, status = program.finish()
    assert (out, err, status) == (expected_end() + " False\n", "", 7)


@pytest.mark.skipif(REMOTE_EXEC, reason="gdb is used before CPython 3.14 only")
def test_heapsite_gdb_naming_no_program_is_refused(tmp_path):
    with Program(tmp_path) as program:
        missing = tmp_path / "no-gdb-here"
        line = one_line_error(cli("attach", str(program.pid), HEAPSITE_GDB=str(missing)))
        assert f"HEAPSITE_GDB names {missing}, which is not an executable file" in line
        out, err, status = program.finish()
    assert (out, err, status) == (expected_end() + " False\n", "", 7)


# ---- attaching ---------------------------------------------------------------


def report_text(path):
    return heapsite._heapsite.render_report(str(path), "text", 5).decode()


@needs_injection
def test_attach_then_detach_writes_the_capture_and_changes_nothing(tmp_path):
    capture = tmp_path / "out.capture"
    with Program(tmp_path) as program:
        attached = cli("attach", str(program.pid), "-o", str(capture), tmp_path=tmp_path)
        assert attached.returncode == 0, attached.stderr
        assert f"`heapsite detach {program.pid}` writes the capture to {capture}" in attached.stderr
        time.sleep(0.5)
        detached = cli("detach", str(program.pid), tmp_path=tmp_path)
        assert detached.returncode == 0, detached.stderr
        assert f"capture written to {capture}" in detached.stderr
        assert "program.py" in detached.stderr  # the text report
        again = one_line_error(cli("detach", str(program.pid), tmp_path=tmp_path))
        assert f"heapsite is not attached to process {program.pid}" in again
        out, err, status = program.finish()
    # Heapsite's modules stay imported (sys.modules says so), nothing else shows.
    assert (out, err, status) == (expected_end() + " True\n", "", 7)
    text = report_text(capture)
    assert "# WORKER LINE" in text or "program.py:9" in text
    meta = json.loads(heapsite._heapsite.render_report(str(capture), "json", 1))["meta"]
    assert meta["pid"] == program.pid
    assert not any(
        name.startswith(("heapsite-attach-", "heapsite-detach-")) for name in os.listdir(tmp_path)
    )


@needs_injection
def test_a_sampled_attach_says_so_in_its_capture(tmp_path):
    capture = tmp_path / "sampled.capture"
    with Program(tmp_path) as program:
        result = cli(
            *("attach", str(program.pid), "--duration", "2s", "--sample", "64KiB"),
            *("-o", str(capture)),
            tmp_path=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        out, err, status = program.finish()
    assert (out, err, status) == (expected_end() + " True\n", "", 7)
    data = json.loads(heapsite._heapsite.render_report(str(capture), "json", 5))
    assert data["meta"]["sample_rate"] == 64 * 1024
    # Two seconds of the workers' lists at 64 KiB: some samples, few blocks.
    assert data["sites"], data
    assert "sampled, one per 64.0 KiB" in report_text(capture)


@needs_injection
def test_duration_detaches_by_itself(tmp_path):
    capture = tmp_path / "timed.capture"
    with Program(tmp_path) as program:
        started = time.monotonic()
        result = cli(
            "attach", str(program.pid), "--duration", "1s", "-o", str(capture), tmp_path=tmp_path
        )
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - started >= 1.0
        assert f"detached from process {program.pid}; capture written to {capture}" in result.stderr
        out, err, status = program.finish()
    assert (out, err, status) == (expected_end() + " True\n", "", 7)
    assert capture.stat().st_size > 0


@needs_injection
def test_sigterm_or_ctrl_c_ends_the_duration_with_a_detach(tmp_path):
    capture = tmp_path / "early.capture"
    with Program(tmp_path) as program:
        attacher = subprocess.Popen(
            [sys.executable, "-m", "heapsite", "attach", str(program.pid), "--duration", "60s"]
            + ["-o", str(capture)],
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, TMPDIR=str(tmp_path)),
        )
        try:
            assert "attached to process" in attacher.stderr.readline()
            attacher.send_signal(signal.SIGTERM)
            _, err = attacher.communicate(timeout=TIMEOUT)
        finally:
            if attacher.poll() is None:
                attacher.kill()
                attacher.communicate()
        assert attacher.returncode == 0, err
        assert f"detached from process {program.pid}; capture written to {capture}" in err
        out, err, status = program.finish()
    assert (out, err, status) == (expected_end() + " True\n", "", 7)


@needs_injection
def test_a_program_that_ends_while_attached_writes_its_capture(tmp_path):
    capture = tmp_path / "at-exit.capture"
    with Program(tmp_path) as program:
        attached = cli("attach", str(program.pid), "-q", "-o", str(capture), tmp_path=tmp_path)
        assert attached.returncode == 0, attached.stderr
        out, err, status = program.finish()
    assert (out, err, status) == (expected_end() + " True\n", "", 7)
    assert "program.py" in report_text(capture)


@needs_injection
def test_attaching_twice_is_refused_and_the_first_stays(tmp_path):
    capture = tmp_path / "first.capture"
    with Program(tmp_path) as program:
        quiet_attach(program, capture, tmp_path)
        second = str(tmp_path / "second.capture")
        line = one_line_error(cli("attach", str(program.pid), "-o", second, tmp_path=tmp_path))
        assert f"heapsite is already attached to process {program.pid}" in line
        assert cli("detach", str(program.pid), "-q", tmp_path=tmp_path).returncode == 0
        out, err, status = program.finish()
    assert (out, err, status) == (expected_end() + " True\n", "", 7)
    assert capture.exists() and not (tmp_path / "second.capture").exists()


@needs_injection
def test_a_program_that_traces_itself_is_left_alone(tmp_path):
    code = PROGRAM.replace(
        'print("ready", flush=True)',
        'import heapsite\nheapsite.start(4)\nprint("ready", flush=True)',
    ).replace('"heapsite" in sys.modules', "heapsite.is_tracing()")
    with Program(tmp_path, code=code) as program:
        line = one_line_error(cli("attach", str(program.pid), tmp_path=tmp_path))
        assert "already runs heapsite itself" in line
        out, err, status = program.finish()
    assert (out, err, status) == (expected_end() + " True\n", "", 7)


SLEEPER = textwrap.dedent(
    """
    import sys, time
    print("ready", flush=True)
    time.sleep(4)
    x = 0
    for i in range(200000):
        x += i
    names = sorted(k for k in globals() if not k.startswith("__"))
    print("done", x, "heapsite" in sys.modules, names)
    """
)


@needs_injection
def test_no_safe_point_in_time_changes_nothing_even_later(tmp_path):
    """The main thread sleeps in C: the attacher gives up, and the scheduled
    code that runs once the program wakes up does nothing."""
    with Program(tmp_path, code=SLEEPER) as program:
        started = time.monotonic()
        line = one_line_error(
            cli("attach", str(program.pid), "--timeout", "0.5s", tmp_path=tmp_path), 1
        )
        assert f"process {program.pid} reached no safe point in 0.5s" in line
        assert "nothing was changed" in line
        assert time.monotonic() - started < 3.5
        out, err, status = program.finish()
    assert (out, err, status) == (
        "ready\ndone 19999900000 False ['i', 'sys', 'time', 'x']\n",
        "",
        0,
    )


@needs_injection
def test_a_forked_child_is_not_traced(tmp_path):
    code = textwrap.dedent(
        """
        import os, sys, time
        stop_file = sys.argv[1]
        print("ready", flush=True)
        while not os.path.exists(stop_file):
            data = [str(i) for i in range(100)]
        pid = os.fork()
        if pid == 0:
            import heapsite
            print("child", heapsite.is_tracing(), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        import heapsite
        print("parent", heapsite.is_tracing(), flush=True)
        started = time.monotonic()
        while not os.path.exists(stop_file + ".2") and time.monotonic() - started < 60:
            data = [str(i) for i in range(100)]
        print("parent", heapsite.is_tracing(), flush=True)
        """
    )
    capture = tmp_path / "fork.capture"
    with Program(tmp_path, code=code) as program:
        quiet_attach(program, capture, tmp_path)
        program.stop.write_text("")
        assert program.process.stdout.readline() == "child False\n"
        assert program.process.stdout.readline() == "parent True\n"
        assert cli("detach", str(program.pid), "-q", tmp_path=tmp_path).returncode == 0
        (tmp_path / "stop.2").write_text("")
        out, err = program.process.communicate(timeout=60)
    assert (out, err, program.process.returncode) == ("parent False\n", "", 0)
    assert capture.exists()


# ---- over and over -------------------------------------------------------------


@needs_injection
def test_attach_and_detach_over_and_over(tmp_path):
    """HEAPSITE_ATTACH_ROUNDS rounds (default 5; bench/attach_torture.py runs
    100) into a busy multi-threaded program: every round succeeds, and the
    program's output, standard error and exit status are a plain run's."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        import attach_torture
    finally:
        sys.path.pop(0)
    rounds = int(os.environ.get("HEAPSITE_ATTACH_ROUNDS", "5"))
    result = attach_torture.torture(rounds=rounds, threads=4, say=lambda _: None)
    assert result["ok"], "; ".join(result["why"])


@needs_injection
def test_the_docs_example_runs(tmp_path):
    with open(os.path.join(ROOT, "docs", "attach.md")) as f:
        block = re.search(r"## Example.*?```sh\n(.*?)```", f.read(), re.S).group(1)
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    process = subprocess.Popen(
        ["bash", "-c", block],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PATH=path, TMPDIR=str(tmp_path)),
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the example's program, whatever happened
        except ProcessLookupError:
            pass
    assert process.returncode == 0, err
    assert "cache.append(bytearray(1000))" in out, out + err


def test_a_run_after_the_sessions_deadline_does_nothing(tmp_path):
    """An attacher killed before it could cancel: nobody waits, nothing starts."""
    session = {
        "dir": str(tmp_path),
        "action": "attach",
        "version": list(sys.version_info[:2]),
        "package": os.path.dirname(os.path.abspath(heapsite.__file__)),
        "options": {"output": str(tmp_path / "x.capture"), "frames": 4, "kinds": True},
        "deadline": time.time() - 1,
    }
    (tmp_path / "pending").write_text("")
    boot = tmp_path / "boot.py"
    boot.write_text(_attach._boot_source(session))
    code = _attach.starter(str(boot)) + "import sys\nprint('heapsite' in sys.modules)\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert (result.stdout, result.stderr, result.returncode) == ("False\n", "", 0)
    assert sorted(os.listdir(tmp_path)) == ["boot.py", "pending"]
