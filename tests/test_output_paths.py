"""Output paths are written, never replaced: a device, a FIFO or a link to
either is written into; a regular file is replaced atomically (through a
link, the file it points to). Nothing here touches the machine's own device
files: the devices are nodes made under tmp_path."""

import contextlib
import os
import stat
import subprocess
import sys
import threading

import heapsite
import pytest
from capture_files import NULL_DEVICE, memory_device
from heapsite.cli import preload_path

CAPTURE_MAGIC = heapsite._heapsite.capture_magic()
PROGRAM = "data = [bytearray(100) for _ in range(1000)]\nprint('done')\n"


def heapsite_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "heapsite", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@contextlib.contextmanager
def fifo_reader(path):
    """A FIFO at `path` with a thread reading it to the end; yields the list
    that receives what was read."""
    os.mkfifo(path)
    received = []
    reader = threading.Thread(target=lambda: received.append(path.read_bytes()), daemon=True)
    reader.start()
    try:
        yield received
    finally:
        reader.join(timeout=30)
        if reader.is_alive():  # nobody wrote: let the reader see an end
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            reader.join(timeout=5)


def null_device(path):
    return memory_device(path, NULL_DEVICE)


def is_char_device(path) -> bool:
    return stat.S_ISCHR(os.lstat(path).st_mode)


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "prog.py"
    path.write_text(PROGRAM)
    return path


def test_run_writes_into_a_fifo(tmp_path, script):
    fifo = tmp_path / "capture.fifo"
    with fifo_reader(fifo) as received:
        result = heapsite_cli("run", "-o", str(fifo), str(script))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert received and received[0].startswith(CAPTURE_MAGIC)
    assert "not a regular file: no report" in result.stderr


def test_run_writes_into_a_device_and_leaves_it_a_device(tmp_path, script):
    device = null_device(tmp_path / "null")
    result = heapsite_cli("run", "-o", str(device), str(script))
    assert result.returncode == 0, result.stderr
    assert is_char_device(device)
    assert sorted(tmp_path.iterdir()) == sorted([device, script])  # nothing written beside


def test_a_link_to_a_regular_file_stays_a_link(tmp_path, script):
    real = tmp_path / "real.capture"
    real.write_bytes(b"an old capture")
    link = tmp_path / "link.capture"
    link.symlink_to(real)
    result = heapsite_cli("run", "-o", str(link), str(script))
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes().startswith(CAPTURE_MAGIC)
    assert "lines by memory live at peak" in result.stderr  # read back for the report
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert leftovers == []


def test_a_link_to_a_fifo_is_written_through(tmp_path, script):
    fifo = tmp_path / "capture.fifo"
    link = tmp_path / "link.capture"
    link.symlink_to(fifo)
    with fifo_reader(fifo) as received:
        result = heapsite_cli("run", "-o", str(link), str(script))
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert received and received[0].startswith(CAPTURE_MAGIC)


def test_a_regular_file_is_replaced_whole(tmp_path, script):
    output = tmp_path / "prog.capture"
    output.write_bytes(b"x" * 100_000)  # longer than the capture: no tail may remain
    before = os.stat(output).st_ino
    result = heapsite_cli("run", "-q", "-o", str(output), str(script))
    assert result.returncode == 0, result.stderr
    assert os.stat(output).st_ino != before  # a new file renamed over the old
    assert heapsite._heapsite.render_report(str(output), "json", 1).startswith(b"{")


def test_a_stale_capture_does_not_pass_for_this_runs(tmp_path):
    script = tmp_path / "dies.py"
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    output = tmp_path / "dies.capture"
    good = tmp_path / "good.py"
    good.write_text(PROGRAM)
    assert heapsite_cli("run", "-q", "-o", str(output), str(good)).returncode == 0
    result = heapsite_cli("run", "-o", str(output), str(script))
    assert result.returncode == -9
    assert "the program ended without a capture (killed by signal 9)" in result.stderr


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_preloaded_output_setting_writes_into_other_files(tmp_path, script, kind):
    env = {**os.environ, "LD_PRELOAD": preload_path()}
    if kind == "device":
        target = null_device(tmp_path / "null")
        env["HEAPSITE_OUTPUT"] = str(target)
        result = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
        )
        assert is_char_device(target)
    else:
        target = tmp_path / "out.fifo"
        env["HEAPSITE_OUTPUT"] = str(target)
        with fifo_reader(target) as received:
            result = subprocess.run(
                [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
            )
        assert received[0].startswith(CAPTURE_MAGIC)
    assert (result.returncode, result.stdout, result.stderr) == (0, "done\n", "")


def test_snapshot_dump_writes_into_a_fifo_a_device_and_through_links(tmp_path):
    heapsite.start(1)
    snap = heapsite.snapshot()
    device = null_device(tmp_path / "null")
    snap.dump(device)
    assert is_char_device(device)
    fifo = tmp_path / "snap.fifo"
    with fifo_reader(fifo) as received:
        snap.dump(fifo)
    assert received[0].startswith(heapsite.Snapshot.MAGIC)
    real = tmp_path / "real.snap"
    real.write_bytes(b"old")
    link = tmp_path / "link.snap"
    link.symlink_to(real)
    snap.dump(link)
    assert link.is_symlink() and heapsite.Snapshot.load(real).traceback_limit == 1


def test_report_output_into_a_device_and_a_fifo(tmp_path, script):
    capture = tmp_path / "prog.capture"
    assert heapsite_cli("run", "-q", "-o", str(capture), str(script)).returncode == 0
    device = null_device(tmp_path / "null")
    result = heapsite_cli("report", str(capture), "--format", "html", "-o", str(device))
    assert result.returncode == 0, result.stderr
    assert is_char_device(device)
    fifo = tmp_path / "report.fifo"
    with fifo_reader(fifo) as received:
        result = heapsite_cli("report", str(capture), "--format", "json", "-o", str(fifo))
    assert result.returncode == 0, result.stderr
    assert received[0].startswith(b"{")
