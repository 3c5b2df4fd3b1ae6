"""One schema for the capture: Rust's structs (src/report/model.rs) are the
file's model. Python gives `write_capture` only what it alone knows (the
run: argv, times, flags, memory over time, the kinds and joined tables);
Rust builds the sites, frames and process facts from its own tables. A
capture written so reads back (the JSON report) equal in every field the
run gave, and the rest as the engine and the process have it."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent(
    """
    import json, os, sys
    import heapsite
    from heapsite import _capture, _core

    class Order:
        def __init__(self, i):
            self.i = i

    heapsite.start(16)
    kept = [Order(i) for i in range(2_000)]
    # As cli's in-process run does, outside own work, before this program
    # itself calls json (whose encoder then keeps a few blocks of its own).
    _capture.write(sys.argv[2])
    run = _capture.run(timeline=[(0.0, 0), (0.5, 1234)], argv=["prog.py", "--x"])
    _core.write_capture(sys.argv[1], json.dumps(run), _capture._own_prefix())
    print(json.dumps({
        "run": run,
        "pid": os.getpid(),
        "python_version": "%d.%d.%d" % sys.version_info[:3],
        "version": _core.__version__,
        "frames_limit": _core.traceback_limit(),
        "own_prefix": _capture._own_prefix(),
    }))
    """
)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schema")
    script = folder / "prog.py"
    script.write_text(PROGRAM)
    path = folder / "out.capture"
    again = folder / "again.capture"
    done = subprocess.run(
        [sys.executable, str(script), str(path), str(again)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    from heapsite import _heapsite

    report = json.loads(_heapsite.render_report(str(path), "json", 1_000_000))
    second = json.loads(_heapsite.render_report(str(again), "json", 1_000_000))
    return json.loads(done.stdout), report, second


def test_the_run_reads_back_equal_in_every_field(written):
    said, report, _ = written
    run = said["run"]
    assert run["joined"]["kinds"], "the walk found no kinds"
    assert run["kinds"]
    meta = report["meta"]
    for key in (
        "argv",
        "started",
        "duration",
        "native",
        "native_frames",
        "peak_bytes",
        "live_bytes",
    ):
        assert meta[key] == run[key], key
    # Every field of the tables the walk computed, as Python built them
    # (deserialised into Rust's Kind and Joined and serialised back).
    assert report["kinds"] == run["kinds"]
    assert report["joined"] == run["joined"]
    assert (
        report["timeline"] == run["timeline"] == [{"t": 0.0, "bytes": 0}, {"t": 0.5, "bytes": 1234}]
    )


def test_rust_fills_in_the_process_and_the_sites(written):
    said, report, _ = written
    meta = report["meta"]
    assert meta["pid"] == said["pid"]
    assert meta["python_version"] == said["python_version"]
    assert meta["heapsite_version"] == said["version"]
    assert meta["frames_limit"] == said["frames_limit"] == 16
    frames = report["frames"]
    assert len({(f["filename"], f["lineno"], f["function"]) for f in frames}) == len(frames)
    tops = [frames[site["stack"][0]] for site in report["sites"] if site["stack"]]
    assert not [f for f in tops if f["filename"].startswith(said["own_prefix"])]
    assert any(f["filename"].endswith("prog.py") for f in tops)
    for site in report["sites"]:
        assert all(site[k] >= 0 for k in site if k != "stack")


def test_a_run_with_a_key_of_the_rest_is_refused(tmp_path):
    """The run is checked as strictly as the file: a key Rust fills in (or
    any other) is refused, not silently dropped."""
    from heapsite import _heapsite

    run = {
        "argv": [],
        "started": 0.0,
        "duration": 0.0,
        "native": False,
        "peak_bytes": 0,
        "live_bytes": 0,
        "pid": 1,
    }
    with pytest.raises(ValueError, match="bad capture run: unknown field `pid`"):
        _heapsite.write_capture(str(tmp_path / "x.capture"), json.dumps(run), os.sep)
    assert not (tmp_path / "x.capture").exists()


def test_the_work_of_writing_is_not_in_the_sites(written):
    """`_capture.write` outside heapsite's own work (cli's in-process run):
    the run's JSON, made before Rust reads the sites, is not one of them."""
    _, _, second = written
    frames = second["frames"]
    live = [
        frames[site["stack"][0]]
        for site in second["sites"]
        if site["stack"] and site["live_bytes"] > 0
    ]
    assert not [f for f in live if f"{os.sep}json{os.sep}" in f["filename"]]
