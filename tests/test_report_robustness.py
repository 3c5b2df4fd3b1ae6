"""`heapsite report` given a capture or snapshot file of any content: exit 2
and one error line naming the problem, in bounded memory and time, nothing
written; every renderer bounded on deep stacks; standard output that fails
(a full disk, a reader gone) handled."""

import base64
import json
import os
import re
import subprocess
import sys
import time

import heapsite
import pytest
from capture_files import (
    FULL_DEVICE,
    bomb,
    capture_around,
    capture_of,
    memory_device,
    model_of,
    real_capture,
    snapshot_around,
    snapshot_of,
    with_many_sites,
)

FORMATS = ("text", "json", "html", "pprof")
TIMEOUT = 120


def measured(args, tmp_path, stdout=None):
    """Runs `heapsite ARGS`; (status, stdout, stderr, peak RSS in MiB, seconds).
    The peak is this child's alone (os.wait4)."""
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    started = time.monotonic()
    with open(err_path, "wb") as err, open(out_path, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "heapsite", *args],
            stdout=stdout if stdout is not None else out,
            stderr=err,
        )
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        process.returncode = 0  # reaped above: Popen must not wait again
    seconds = time.monotonic() - started
    return (
        os.waitstatus_to_exitcode(status),
        out_path.read_bytes(),
        err_path.read_text(),
        usage.ru_maxrss / 1024,
        seconds,
    )


def assert_one_error_line(stderr: str, *words: str):
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("heapsite: error: "), stderr
    for word in words:
        assert word in lines[0], stderr


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return model_of(real_capture(tmp_path_factory.mktemp("real")))


@pytest.mark.parametrize("kind", ["capture", "snapshot"])
def test_a_decompression_bomb_is_refused_in_bounded_memory(tmp_path, kind):
    payload = bomb(3 * 1024)  # 3 GiB of spaces in about 3 MB
    bad = tmp_path / f"bomb.{kind}"
    bad.write_bytes(capture_around(payload) if kind == "capture" else snapshot_around(payload))
    out = tmp_path / "out.txt"
    status, _, stderr, rss_mib, seconds = measured(["report", str(bad), "-o", str(out)], tmp_path)
    assert status == 2
    assert_one_error_line(stderr, str(bad), "inflates")
    assert rss_mib < 1024, f"{rss_mib:.0f} MiB"
    assert not out.exists()
    print(f"{kind} bomb: refused in {seconds:.2f} s, peak RSS {rss_mib:.0f} MiB")


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _model_with(model, change) -> bytes:
    changed = json.loads(json.dumps(model))
    change(changed)
    return json.dumps(changed).encode()


BAD_CAPTURES = {
    "nested": lambda m: _nested(100_000),
    "nested in sites": lambda m: (
        json.dumps(m).encode().replace(b'"sites": [', b'"sites": [' + _nested(100_000)[:50_000], 1)
    ),
    "Infinity": lambda m: (
        json.dumps(m).encode().replace(b'"duration": ', b'"duration": Infinity, "x": ', 1)
    ),
    "NaN": lambda m: json.dumps(m).encode().replace(b'"started": ', b'"started": NaN, "x": ', 1),
    "1e999": lambda m: _model_with(m, lambda d: d["meta"].update(duration=1e300)).replace(
        b"1e+300", b"1e999"
    ),
    "sites not a list": lambda m: _model_with(m, lambda d: d.update(sites={})),
    "frame index out of range": lambda m: _model_with(
        m, lambda d: d["sites"][0]["stack"].append(10**6)
    ),
    "negative bytes": lambda m: _model_with(m, lambda d: d["sites"][0].update(live_bytes=-1)),
    "text for a number": lambda m: _model_with(m, lambda d: d["meta"].update(pid="12")),
    "not JSON": lambda m: b"\x00" * 100,
    "empty": lambda m: b"",
}


@pytest.mark.parametrize("problem", BAD_CAPTURES)
def test_bad_capture_content_is_one_line(tmp_path, model, problem):
    bad = tmp_path / "bad.capture"
    bad.write_bytes(capture_of(BAD_CAPTURES[problem](model)))
    for fmt in FORMATS:
        out = tmp_path / f"out.{fmt}"
        status, _, stderr, _, _ = measured(
            ["report", str(bad), "--format", fmt, "-o", str(out)], tmp_path
        )
        assert status == 2, (fmt, stderr)
        assert_one_error_line(stderr, str(bad), "corrupt heapsite capture")
        assert not out.exists()


def _snapshot_document(sites=None, traced=(1, 2), limit=1) -> dict:
    return {
        "format": "heapsite-snapshot",
        "version": 1,
        "traceback_limit": limit,
        "traced_memory": list(traced),
        "view": "live",
        "sites": [[[["a.py", 1, "f"]], 1, 2, 3, 4, 5, 6]] if sites is None else sites,
    }


BAD_SNAPSHOTS = {
    "nested": _nested(100_000),
    "nested in sites": json.dumps(_snapshot_document())
    .encode()
    .replace(b'"sites": [', b'"sites": [' + _nested(100_000)[:50_000], 1),
    "Infinity": json.dumps(_snapshot_document(traced=(float("inf"), 1))).encode(),
    "NaN": json.dumps(_snapshot_document(traced=(float("nan"), 1))).encode(),
    "1e999": json.dumps(_snapshot_document(traced=(1, 2)))
    .encode()
    .replace(b"[1, 2]", b"[1e999, 2]"),
    "float figure": json.dumps(_snapshot_document(sites=[[[], 1.5, 2, 3, 4, 5, 6]])).encode(),
    "short site": json.dumps(_snapshot_document(sites=[[[], 1]])).encode(),
    "frame not a triple": json.dumps(
        _snapshot_document(sites=[[[["a.py"]], 1, 2, 3, 4, 5, 6]])
    ).encode(),
    "text for a number": json.dumps(_snapshot_document(limit="1")).encode(),
    "huge number": json.dumps(_snapshot_document())
    .encode()
    .replace(b'"traceback_limit": 1', b'"traceback_limit": ' + b"9" * 5000),
}


@pytest.mark.parametrize("problem", BAD_SNAPSHOTS)
def test_bad_snapshot_content_is_one_line(tmp_path, problem):
    bad = tmp_path / "bad.snapshot"
    bad.write_bytes(snapshot_of(BAD_SNAPSHOTS[problem]))
    status, stdout, stderr, _, _ = measured(["report", str(bad)], tmp_path)
    assert status == 2, stderr
    assert_one_error_line(stderr, str(bad), "corrupt heapsite snapshot")
    assert stdout == b""


def _svgs(page: str) -> str:
    return "".join(
        base64.b64decode(data).decode()
        for data in re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', page)
    )


def test_every_renderer_is_bounded_on_deep_stacks(tmp_path, model):
    depth, sites = 3200, 300
    frames = [
        {"filename": f"/deep/m{i}.py", "lineno": i, "function": f"f{i}"} for i in range(depth)
    ]
    deep = dict(model, frames=frames, sites=[])
    for s in range(sites):
        stack = [(s + i) % depth for i in range(depth)]
        deep["sites"].append(
            {
                "stack": stack,
                **{
                    f"{view}_{what}": 1000 + s
                    for view in ("live", "total", "peak")
                    for what in ("bytes", "count")
                },
            }
        )
    capture = tmp_path / "deep.capture"
    capture.write_bytes(capture_of(json.dumps(deep).encode()))
    for fmt in FORMATS:
        out = tmp_path / f"deep.{fmt}"
        status, _, stderr, rss_mib, seconds = measured(
            ["report", str(capture), "--format", fmt, "-o", str(out)], tmp_path
        )
        assert status == 0, stderr
        assert seconds < 60 and rss_mib < 1024, (fmt, seconds, rss_mib)
        print(f"{fmt}: {seconds:.2f} s, peak RSS {rss_mib:.0f} MiB, {out.stat().st_size} bytes")
    svgs = _svgs((tmp_path / "deep.html").read_text())
    assert "stacks deeper than 128 frames have their outer frames folded" in svgs
    assert "[3072 outer frames folded]" in svgs


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_full_standard_output_is_one_line(tmp_path, fmt):
    capture = real_capture(tmp_path)
    with open(memory_device(tmp_path / "full", FULL_DEVICE), "wb") as full:
        status, _, stderr, _, _ = measured(
            ["report", str(capture), "--format", fmt], tmp_path, full
        )
    assert status == 2
    assert_one_error_line(stderr, "standard output", "No space left on device")


def test_a_reader_that_stops_early_ends_the_report_quietly(tmp_path, model):
    many = with_many_sites(model)
    capture = tmp_path / "many.capture"
    capture.write_bytes(capture_of(json.dumps(many).encode()))
    process = subprocess.Popen(
        [sys.executable, "-m", "heapsite", "report", str(capture), "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout.read(100).startswith(b"{")  # of megabytes
    process.stdout.close()  # as `| head -c 100` does
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=TIMEOUT) == 1
    assert stderr == ""


def test_source_lines_are_read_from_regular_files_only(tmp_path, model):
    fifo = tmp_path / "never-written.fifo"
    os.mkfifo(fifo)  # opening it to read would wait for a writer for ever
    model["frames"][0]["filename"] = str(fifo)
    capture = tmp_path / "fifo.capture"
    capture.write_bytes(capture_of(json.dumps(model).encode()))
    status, stdout, stderr, _, seconds = measured(["report", str(capture)], tmp_path)
    assert status == 0 and str(fifo) in stdout.decode(), stderr
    snapshot = tmp_path / "fifo.snapshot"
    snapshot.write_bytes(
        snapshot_of(
            json.dumps(
                _snapshot_document(sites=[[[[str(fifo), 1, "f"]], 1, 2, 3, 4, 5, 6]])
            ).encode()
        )
    )
    status, stdout, stderr, _, _ = measured(["report", str(snapshot)], tmp_path)
    assert status == 0 and str(fifo) in stdout.decode(), stderr


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_large_report_reaches_a_pipe_whole(tmp_path, model, unbuffered):
    many = with_many_sites(model)
    capture = tmp_path / "many.capture"
    capture.write_bytes(capture_of(json.dumps(many).encode()))
    result = subprocess.run(
        [sys.executable, "-m", "heapsite", "report", str(capture), "--format", "json"],
        capture_output=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONUNBUFFERED": unbuffered},
    )
    assert result.returncode == 0, result.stderr
    expected = heapsite._heapsite.render_report(str(capture), "json", 10)
    assert len(expected) > 1 << 20 and result.stdout == expected
