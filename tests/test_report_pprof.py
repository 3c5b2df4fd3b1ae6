"""The pprof report, decoded with pprof's own schema (tests/data/profile.proto,
compiled here with grpcio-tools): the declared sample types, one sample per
call site whose figures are the JSON and text reports' own, and frames that
name the program's functions, files and lines."""

import gzip
import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

# Not skipped when missing: scripts/lib.sh installs both, and a missing
# oracle must fail the run rather than hide it.
import google.protobuf  # noqa: E402, F401
import grpc_tools  # noqa: E402, F401
import pytest
from heapsite import _heapsite

SCHEMA = Path(__file__).parent / "data" / "profile.proto"

PROGRAM = textwrap.dedent(
    """
    import os, sys
    import heapsite, heapsite._capture as capture

    def build(n):
        return [complex(i, i) for i in range(n)]   # line 6

    heapsite.start(16)
    kept = build(100_000)                          # line 9
    dropped = build(50_000)                        # line 10
    del dropped
    capture.write(sys.argv[1])
    print(os.getpid())
    """
)
ALLOC_LINE, KEPT_LINE, DROPPED_LINE = 6, 9, 10

SAMPLE_TYPES = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
    ("peak_objects", "count"),
    ("peak_space", "bytes"),
]
# The capture's figure for each sample type, in the same order.
FIGURES = ["total_count", "total_bytes", "live_count", "live_bytes", "peak_count", "peak_bytes"]


@pytest.fixture(scope="module")
def profile_pb2(tmp_path_factory):
    """The Python module protoc generates from pprof's profile.proto."""
    out = tmp_path_factory.mktemp("profile_pb2")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{SCHEMA.parent}",
            f"--python_out={out}",
            str(SCHEMA),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    spec = importlib.util.spec_from_file_location("profile_pb2", out / "profile_pb2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The test program's capture, its pid and its script path."""
    tmp = tmp_path_factory.mktemp("pprof_run")
    script = tmp / "prog.py"
    script.write_text(PROGRAM)
    path = tmp / "prog.heapsite"
    result = subprocess.run(
        [sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return path, int(result.stdout), str(script)


def decode(profile_pb2, path):
    data = _heapsite.render_report(str(path), "pprof", 10)
    assert data[:2] == b"\x1f\x8b", "pprof files are gzipped"
    profile = profile_pb2.Profile()
    profile.ParseFromString(gzip.decompress(data))
    return profile


def stacks_and_values(profile):
    """Each sample as ((function, filename, line) leaf first, values)."""
    strings = profile.string_table
    functions = {f.id: f for f in profile.function}
    locations = {loc.id: loc for loc in profile.location}
    assert len(functions) == len(profile.function) and 0 not in functions
    assert len(locations) == len(profile.location) and 0 not in locations
    out = []
    for sample in profile.sample:
        stack = []
        for location_id in sample.location_id:
            (line,) = locations[location_id].line
            function = functions[line.function_id]
            stack.append((strings[function.name], strings[function.filename], line.line))
        out.append((tuple(stack), tuple(sample.value)))
    return out


def json_stacks_and_values(path):
    model = json.loads(_heapsite.render_report(str(path), "json", 10))
    frames = [(f["function"], f["filename"], f["lineno"]) for f in model["frames"]]
    # pprof gets one placeholder location for a site without Python frames.
    no_frame = (("<no Python frame>", "", 0),)
    return [
        (tuple(frames[i] for i in site["stack"]) or no_frame, tuple(site[k] for k in FIGURES))
        for site in model["sites"]
        if any(site[k] for k in FIGURES)
    ]


def by_line(samples):
    """Values summed per allocating (filename, line), as the text report groups them."""
    lines = defaultdict(lambda: [0] * len(FIGURES))
    for stack, values in samples:
        key = stack[0][1:] if stack else None
        lines[key] = [a + b for a, b in zip(lines[key], values)]
    return dict(lines)


def test_declares_the_heap_sample_types(profile_pb2, run):
    path, pid, _ = run
    profile = decode(profile_pb2, path)
    strings = profile.string_table
    assert strings[0] == ""
    assert len(set(strings)) == len(strings)
    types = [(strings[t.type], strings[t.unit]) for t in profile.sample_type]
    assert types == SAMPLE_TYPES
    assert strings[profile.default_sample_type] == "peak_space"
    assert (strings[profile.period_type.type], strings[profile.period_type.unit]) == (
        "space",
        "bytes",
    )
    assert all(len(s.value) == len(SAMPLE_TYPES) for s in profile.sample)
    comments = [strings[c] for c in profile.comment]
    assert f"pid: {pid}" in comments
    assert "python: CPython %d.%d.%d" % sys.version_info[:3] in comments
    assert any(c.startswith("argv: ") and "prog.py" in c for c in comments)
    model = json.loads(_heapsite.render_report(str(path), "json", 10))
    assert profile.time_nanos == round(model["meta"]["started"] * 1e9)
    assert profile.duration_nanos == round(model["meta"]["duration"] * 1e9) > 0


def test_samples_are_the_sites_of_the_json_report(profile_pb2, run):
    path, _, _ = run
    samples = stacks_and_values(decode(profile_pb2, path))
    assert sorted(samples) == sorted(json_stacks_and_values(path))
    # One location per distinct frame, one function per (name, file).
    profile = decode(profile_pb2, path)
    strings = profile.string_table
    frames = [(loc.line[0].function_id, loc.line[0].line) for loc in profile.location]
    assert len(set(frames)) == len(frames)
    names = [(strings[f.name], strings[f.filename]) for f in profile.function]
    assert len(set(names)) == len(names)


def test_allocating_line_figures_match_the_text_report(profile_pb2, run):
    path, _, script = run
    lines = by_line(stacks_and_values(decode(profile_pb2, path)))
    alloc_objects, alloc_space, inuse_objects, inuse_space, peak_objects, peak_space = lines[
        (script, ALLOC_LINE)
    ]
    # 150,000 complex numbers allocated (and as many ints from range), the
    # 100,000 complex numbers of `kept` still alive.
    assert alloc_objects >= 150_000
    assert 100_000 <= inuse_objects < 110_000
    assert alloc_space >= 150_000 * 32 and inuse_space >= 100_000 * 32
    assert alloc_space > inuse_space and peak_space >= inuse_space

    # The text report's per-line figures: its "still live at exit" table is
    # inuse, its "live at peak" table is peak.
    text = _heapsite.render_report(str(path), "text", 1000).decode()
    peak_part, _, live_part = text.partition("still live at exit:")
    pattern = re.compile(
        r"^#\d+: " + re.escape(f"{script}:{ALLOC_LINE}") + r": size=.*?, count=(\d+)", re.M
    )
    assert int(pattern.search(live_part).group(1)) == inuse_objects
    assert int(pattern.search(peak_part).group(1)) == peak_objects


def test_frames_name_functions_files_and_lines(profile_pb2, run):
    path, _, script = run
    samples = stacks_and_values(decode(profile_pb2, path))
    kept = max(samples, key=lambda s: s[1][3])  # the most inuse_space
    stack = [frame for frame in kept[0] if frame[1] == script]
    # The comprehension is a function of its own before 3.12 (PEP 709);
    # names are qualified names where the interpreter has them (3.11+).
    leaf, *callers = stack
    if sys.version_info >= (3, 12):
        assert leaf == ("build", script, ALLOC_LINE)
    else:
        assert leaf[0].endswith("<listcomp>") and leaf[1:] == (script, ALLOC_LINE)
        assert callers[0] == ("build", script, ALLOC_LINE)
    assert stack[-1] == ("<module>", script, KEPT_LINE)
    outermost = {s[0][-1] for s in samples if s[0] and s[0][0][1:] == (script, ALLOC_LINE)}
    assert ("<module>", script, DROPPED_LINE) in outermost
