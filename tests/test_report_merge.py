"""Several processes of one program, one answer: `heapsite report a b c`
adds the captures up (sites by their frames, kinds by name, the timeline
over time) and keeps a per-process breakdown; `heapsite diff` takes groups
of captures joined by commas. Each process's own figures are checked
against tracemalloc elsewhere; here the merged figures must be the sums of
the single ones, for workers run apart and for a program's forked
children (`--follow-fork`)."""

import glob
import subprocess
import sys
import textwrap

from capture_files import line_live, report_json
from heapsite._format import format_size

WORKER = textwrap.dedent(
    """\
    import sys
    KEEP = [bytearray(1000) for _ in range(1000 * int(sys.argv[1]))]  # keep line
    """
)


def heapsite_cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "heapsite", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


json_of = report_json


def kind_count(document: dict, name: str) -> int:
    return sum(k["count"] for k in document["kinds"] if k["name"] == name)


def workers(tmp_path) -> list:
    (tmp_path / "worker.py").write_text(WORKER)
    paths = []
    for n in (1, 2, 3):
        out = tmp_path / f"worker{n}.capture"
        result = heapsite_cli("run", "-q", "-o", str(out), "worker.py", str(n), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        paths.append(str(out))
    return paths


def test_workers_add_up_with_each_process_kept(tmp_path):
    paths = workers(tmp_path)
    singles = [json_of(p) for p in paths]
    merged = json_of(paths)
    assert [p["pid"] for p in merged["processes"]] == [s["meta"]["pid"] for s in singles]
    for figure in ("peak_bytes", "live_bytes"):
        assert merged["meta"][figure] == sum(s["meta"][figure] for s in singles)
    keep = [line_live(s, "worker.py", 2) for s in singles]
    assert keep[1] > 1.9 * keep[0] and keep[2] > 2.9 * keep[0]  # 1000, 2000, 3000
    assert line_live(merged, "worker.py", 2) == sum(keep)
    assert kind_count(merged, "bytearray") == sum(kind_count(s, "bytearray") for s in singles)
    for figure in ("total_bytes", "total_count"):
        assert sum(s[figure] for s in merged["sites"]) == sum(
            site[figure] for s in singles for site in s["sites"]
        )
    # The timeline adds the processes up: never below any one of them.
    assert max(s["bytes"] for s in merged["timeline"]) >= max(
        s["bytes"] for s in singles[2]["timeline"]
    )

    text = heapsite_cli("report", *paths, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "3 processes, figures added" in text.stdout
    for single in singles:
        assert f"  pid {single['meta']['pid']}: worker.py" in text.stdout
    for fmt in ("html", "pprof"):
        out = heapsite_cli("report", *paths, "--format", fmt, "-o", f"all.{fmt}", cwd=tmp_path)
        assert out.returncode == 0 and (tmp_path / f"all.{fmt}").stat().st_size > 0, out.stderr


def test_diff_of_groups(tmp_path):
    paths = workers(tmp_path)
    result = heapsite_cli(
        "diff", paths[0], ",".join(paths[1:]), "--view", "live", "--top", "1", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[1]
    singles = [line_live(json_of(p), "worker.py", 2) for p in paths]
    growth = singles[1] + singles[2] - singles[0]
    assert first.startswith("worker.py:2: size=") or "/worker.py:2: size=" in first, first
    assert f"({format_size(growth, sign=True)})" in first, (first, growth)


def test_forked_children_report_as_one(tmp_path):
    (tmp_path / "forks.py").write_text(
        textwrap.dedent(
            """\
            import os
            children = []
            for n in range(3):
                pid = os.fork()
                if pid == 0:
                    KEEP = [bytearray(1000) for _ in range(500)]  # child line
                    os._exit(0)
                children.append(pid)
            for pid in children:
                os.waitpid(pid, 0)
            """
        )
    )
    result = heapsite_cli(
        "run", "-q", "--follow-fork", "-o", "forks.capture", "forks.py", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    captures = sorted(glob.glob(str(tmp_path / "forks*.capture")))
    assert len(captures) == 4, captures  # the parent and three children
    merged = json_of(captures)
    assert len(merged["processes"]) == 4
    children = [json_of(p) for p in captures]
    assert line_live(merged, "forks.py", 6) == sum(line_live(c, "forks.py", 6) for c in children)
    assert line_live(merged, "forks.py", 6) >= 3 * 500 * 1000


def test_bad_groups_are_one_line(tmp_path):
    paths = workers(tmp_path)[:1]
    missing = heapsite_cli("report", paths[0], "nothing.capture", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "nothing.capture" in missing.stderr
    snapshot = tmp_path / "snap.heapsite"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import heapsite; heapsite.start(); heapsite.snapshot().dump('snap.heapsite')",
        ],
        cwd=tmp_path,
        check=True,
        timeout=120,
    )
    mixed = heapsite_cli("report", paths[0], str(snapshot), cwd=tmp_path)
    assert mixed.returncode == 2 and mixed.stderr.count("\n") == 1, mixed.stderr
    assert "snapshot file" in mixed.stderr
