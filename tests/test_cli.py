"""`heapsite run` and `heapsite report`: the program's I/O and status pass
through; the report names the allocating line; bad input fails cleanly."""

import json
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
    assert "lines by memory live at peak:" in report
    first = next(line for line in report.splitlines() if line.startswith("#1:"))
    assert f"{script}:5:" in first
    capture = json.loads(heapsite._heapsite.render_report(str(out), "json", 10))
    frames = capture["frames"]
    top = max(capture["sites"], key=lambda site: site["peak_bytes"])
    assert frames[top["stack"][0]]["lineno"] == 5 and top["peak_bytes"] >= 20_000_000


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
    assert "lines by memory live at peak" in result.stderr  # the report is still written


def test_report_reads_a_saved_run(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    out = tmp_path / "prog.heapsite"
    heapsite_cli("run", "-o", str(out), str(script), "0")
    result = heapsite_cli("report", str(out), "--top", "3")
    assert result.returncode == 0, result.stderr
    assert f"#1: {script}:5:" in result.stdout
    for fmt in ("json", "html", "pprof"):
        rendered = tmp_path / f"report.{fmt}"
        result = heapsite_cli("report", str(out), "--format", fmt, "-o", str(rendered))
        assert result.returncode == 0, result.stderr
        assert rendered.stat().st_size > 100
    # A snapshot file (Snapshot.dump) is still read as before.
    heapsite.start(1)
    keep = [bytearray(1000) for _ in range(1000)]
    snap_file = tmp_path / "snap.heapsite"
    heapsite.snapshot().dump(snap_file)
    del keep
    result = heapsite_cli("report", str(snap_file), "--view", "peak", "--top", "3")
    assert result.returncode == 0 and "heapsite: top" in result.stdout, result.stderr


def test_diff_ranks_the_line_that_grew(tmp_path):
    script = tmp_path / "grow.py"
    script.write_text("import sys\nkeep = [bytes(1000) for _ in range(int(sys.argv[1]))]\n")
    old, new = tmp_path / "old.capture", tmp_path / "new.capture"
    assert heapsite_cli("run", "-q", "-o", str(old), str(script), "1000").returncode == 0
    assert heapsite_cli("run", "-q", "-o", str(new), str(script), "11000").returncode == 0
    result = heapsite_cli("diff", str(old), str(new), "--view", "live")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[1]
    assert first.startswith(f"{script}:2: size=") and "(+10000)" in first, first


def test_preload_path_is_this_extension():
    result = heapsite_cli("preload-path")
    assert result.returncode == 0
    assert result.stdout.strip() == os.path.abspath(heapsite._heapsite.__file__)


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    corrupt = tmp_path / "corrupt.heapsite"
    corrupt.write_bytes(b"HEAPSITE-SNAPSHOT\n\x00\x01garbage")
    broken = tmp_path / "broken.capture"
    broken.write_bytes(b"HEAPSITE-CAPTURE\n\x01\x00\x00\x00garbage")
    for args in [
        ("report", str(corrupt)),
        ("report", str(broken)),
        ("report", str(broken), "--format", "html"),
        ("report", str(corrupt), "--format", "bogus"),
        ("diff", str(broken), str(corrupt)),
        ("report", str(tmp_path)),
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
    assert broken.read_bytes().endswith(b"garbage")


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


def test_in_process_fallback_for_a_static_python(tmp_path):
    # What a python without a shared libpython gets (forced here).
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    out = tmp_path / "prog.capture"
    result = subprocess.run(
        [sys.executable, "-m", "heapsite", "run", "-o", str(out), str(script), "5"],
        input="x",
        capture_output=True,
        text=True,
        env={**os.environ, "HEAPSITE_IN_PROCESS": "1"},
        timeout=120,
    )
    assert result.returncode == 5, result.stderr
    assert result.stdout == "args: ['5']\nstdin: x\n"
    first = next(line for line in result.stderr.splitlines() if line.startswith("#1:"))
    assert f"{script}:5:" in first
