"""`heapsite run` and `heapsite report`: the program's I/O and status pass
through; the report names the allocating line; bad input fails cleanly."""

import os
import subprocess
import sys
import textwrap

import heapsite

PROGRAM = textwrap.dedent(
    """
    import sys

    def build():
        return [bytearray(1000) for _ in range(20000)]   # line 5

    data = build()
    print("args:", sys.argv[1:])
    print("stdin:", sys.stdin.read().strip())
    del data
    sys.exit(int(sys.argv[1]))
    """
)


def heapsite_cli(*args, stdin=""):
    return subprocess.run(
        [sys.executable, "-m", "heapsite", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_passes_io_and_status_through_and_reports_the_peak_line(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    out = tmp_path / "prog.heapsite"
    result = heapsite_cli("run", "-o", str(out), str(script), "3", "--flag", stdin="hello")
    assert result.returncode == 3, result.stderr
    assert result.stdout == "args: ['3', '--flag']\nstdin: hello\n"
    report = result.stderr
    assert "top" in report and "by memory live at peak" in report
    first = next(line for line in report.splitlines() if line.startswith("#1:"))
    assert f"{script}:5:" in first
    snap = heapsite.Snapshot.load(out)
    top = snap.peak().statistics("lineno")[0]
    assert top.traceback[0].lineno == 5 and top.size >= 20_000_000


def test_run_module_and_uncaught_exception(tmp_path):
    (tmp_path / "crashy.py").write_text("x = [1] * 100000\nraise SystemExit('bye')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "heapsite", "run", "-m", "crashy"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert "bye" in result.stderr
    (tmp_path / "boom.py").write_text("raise ValueError('boom')\n")
    result = heapsite_cli("run", str(tmp_path / "boom.py"))
    assert result.returncode == 1
    assert "ValueError: boom" in result.stderr
    assert "heapsite: top" in result.stderr  # the report is still written


def test_report_reads_a_saved_run(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    out = tmp_path / "prog.heapsite"
    heapsite_cli("run", "-o", str(out), str(script), "0")
    result = heapsite_cli("report", str(out), "--view", "peak", "--top", "3")
    assert result.returncode == 0, result.stderr
    assert f"{script}:5:" in result.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    corrupt = tmp_path / "corrupt.heapsite"
    corrupt.write_bytes(b"HEAPSITE-SNAPSHOT\n\x00\x01garbage")
    for args in [
        ("report", str(corrupt)),
        ("report", str(tmp_path / "missing.heapsite")),
        ("run", "--frames", "0", "x.py"),
        ("run", str(tmp_path / "missing.py")),
        ("frobnicate",),
    ]:
        result = heapsite_cli(*args)
        assert result.returncode == 2, (args, result)
        error_lines = [line for line in result.stderr.splitlines() if "error" in line]
        assert len(error_lines) == 1, (args, result.stderr)
    assert corrupt.read_bytes().startswith(b"HEAPSITE-SNAPSHOT")  # nothing lost


def test_tracemalloc_environment_variable_installs_the_drop_in(tmp_path):
    script = tmp_path / "uses_tracemalloc.py"
    script.write_text("import tracemalloc\nprint(tracemalloc.__name__)\n")
    for value, expected in [("1", "heapsite.tracemalloc"), ("", "tracemalloc")]:
        result = subprocess.run(
            [sys.executable, "-m", "heapsite", "run", str(script)],
            capture_output=True,
            text=True,
            env={**os.environ, "HEAPSITE_TRACEMALLOC": value},
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected + "\n"
