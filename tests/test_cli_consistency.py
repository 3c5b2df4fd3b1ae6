"""One consistent command line: --version, -q, settings honoured or refused
alike by `heapsite run` and the preloaded library, captures named by the
program's pid, a program that cannot start, and inputs `report` refuses."""

import json
import os
import subprocess
import sys

import heapsite

TIMEOUT = 120

PROGRAM = "import os\nprint(os.getpid())\ndata = [bytearray(100) for _ in range(1000)]\n"


def cli(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "heapsite", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=TIMEOUT,
    )


def meta(path):
    return json.loads(heapsite._heapsite.render_report(str(path), "json", 1))["meta"]


def test_version():
    result = cli("--version")
    assert (result.returncode, result.stdout) == (0, f"heapsite {heapsite.__version__}\n")


def test_quiet_prints_nothing_of_heapsites_on_success(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    result = cli("run", "-q", "-o", str(tmp_path / "out.capture"), str(script))
    assert result.returncode == 0
    assert result.stderr == ""
    assert (tmp_path / "out.capture").exists()


def test_the_default_capture_is_named_by_the_programs_pid(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    result = cli("run", str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    pid = int(result.stdout)
    capture = tmp_path / f"heapsite-prog.{pid}.capture"
    assert capture.exists(), sorted(os.listdir(tmp_path))
    assert meta(capture)["pid"] == pid
    assert f"capture written to {capture}" in result.stderr
    # How to read it again, as this interpreter runs heapsite.
    assert f"{sys.executable} -m heapsite report {capture} --format html" in result.stderr


def test_a_pid_pattern_in_the_output(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    result = cli("run", "-q", "-o", str(tmp_path / "run.%p.capture"), str(script))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / f"run.{int(result.stdout)}.capture").exists()


def test_settings_are_honoured_and_options_take_precedence(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    out = tmp_path / "out.capture"
    assert (
        cli("run", "-q", "-o", str(out), str(script), env={"HEAPSITE_FRAMES": "4"}).returncode == 0
    )
    assert meta(out)["frames_limit"] == 4
    result = cli(
        "run", "-q", "--frames", "2", "-o", str(out), str(script), env={"HEAPSITE_FRAMES": "4"}
    )
    assert result.returncode == 0
    assert meta(out)["frames_limit"] == 2


def test_a_bad_setting_is_refused_before_the_program_runs(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    for name, value in [
        ("HEAPSITE_FRAMES", "abc"),
        ("HEAPSITE_FRAMES", "0"),
        ("HEAPSITE_KINDS", "x"),
    ]:
        result = cli("run", "-o", str(tmp_path / "out.capture"), str(script), env={name: value})
        assert result.returncode == 2
        assert result.stdout == ""  # the program did not run
        assert len(result.stderr.splitlines()) == 1 and name in result.stderr, result.stderr
        # The preloaded library says the same of the same setting.
        preloaded = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            env={
                **os.environ,
                "LD_PRELOAD": heapsite._heapsite.__file__,
                "HEAPSITE_OUTPUT": str(tmp_path / "p.capture"),
                name: value,
            },
            timeout=TIMEOUT,
        )
        assert (preloaded.returncode, preloaded.stderr) == (2, result.stderr)


def test_a_module_that_does_not_exist_runs_nothing_as_python_says(tmp_path):
    plain = subprocess.run(
        [sys.executable, "-m", "no_such_module_here"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=TIMEOUT,
    )
    result = cli("run", "-m", "no_such_module_here", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (plain.returncode, plain.stderr)
    assert os.listdir(tmp_path) == []  # no capture


def test_a_snapshot_file_in_another_format_is_one_line(tmp_path):
    heapsite.start(1)
    data = [str(i) for i in range(1000)]
    snap = tmp_path / "snap.heapsite"
    heapsite.snapshot().dump(str(snap))
    heapsite.stop()
    del data
    assert cli("report", str(snap)).returncode == 0
    for fmt in ("json", "html", "pprof"):
        result = cli("report", str(snap), "--format", fmt, "-o", str(tmp_path / "out"))
        assert result.returncode == 2
        assert len(result.stderr.splitlines()) == 1 and "snapshot file" in result.stderr
