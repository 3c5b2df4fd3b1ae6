"""Import noise folded by default: what the import system allocates (and
what an imported module's code allocates) is the importing line's, as
memray's flamegraph shows it when asked; `--show-import-system` shows
importlib's frames as recorded. And the table of lines "with what their
callees allocated" is not led by a thread's entry frames.

The oracle is tracemalloc, run on the same program in a process of its own
(in the traced one, heapsite would count tracemalloc's own tables as the
line's native memory): the imported module's line holds what tracemalloc
says it does either way, and folding moves bytes between lines without
losing any."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import heapsite._heapsite as _core
from capture_files import line_live

IMPORT_FRAMES = ("<frozen importlib.", "<frozen zipimport>")

PROGRAM = """\
import os, sys, tracemalloc
if os.environ.get("ORACLE"): tracemalloc.start(1)
sys.path.insert(0, {folder!r})
import decimal, email.mime.text, xml.dom.minidom  # stdlib line
import bigmod  # import line
if os.environ.get("ORACLE"):
    for stat in tracemalloc.take_snapshot().statistics("lineno"):
        if stat.traceback[0].filename.endswith("bigmod.py"):
            print(stat.size)
"""

BIGMOD = "TABLE = {i: str(i) * 5 for i in range(20000)}\n"


def run(folder: Path, *options: str, program: str = "imp.py") -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "heapsite", "run", "-o", "run.capture", *options, program],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result


def model(folder: Path, show: bool) -> dict:
    return json.loads(_core.render_report(str(folder / "run.capture"), "json", 10, show))


def frames_of(document: dict, site: dict) -> list:
    return [document["frames"][f] for f in site["stack"]]


def is_import_frame(frame: dict) -> bool:
    return frame["filename"].startswith(IMPORT_FRAMES)


def setup_program(folder: Path) -> None:
    (folder / "imp.py").write_text(PROGRAM.format(folder=str(folder)))
    (folder / "bigmod.py").write_text(BIGMOD)


def test_an_imports_memory_is_the_importing_lines(tmp_path):
    setup_program(tmp_path)
    result = run(tmp_path, "--frames", "32")
    folded, shown = model(tmp_path, False), model(tmp_path, True)

    assert folded["meta"].get("import_system_folded") is True
    assert "import_system_folded" not in shown["meta"]
    # No folded stack keeps an import frame unless it has nothing else.
    for site in folded["sites"]:
        frames = frames_of(folded, site)
        if not all(is_import_frame(f) for f in frames):
            assert not any(is_import_frame(f) for f in frames), frames
    # Unfolded, the import system has sites of its own at the top.
    assert any(
        site["stack"] and is_import_frame(frames_of(shown, site)[0]) for site in shown["sites"]
    )
    # Folding loses nothing.
    for figure in ("peak_bytes", "total_bytes", "live_bytes", "total_count"):
        assert sum(s[figure] for s in folded["sites"]) == sum(s[figure] for s in shown["sites"])
    # The import line now holds what importing bigmod cost the import system;
    # bigmod's own line is still its own, and equals tracemalloc's figure.
    importing = line_live(folded, "imp.py", 5)
    assert importing > line_live(shown, "imp.py", 5)
    oracle = int(
        subprocess.run(
            [sys.executable, "imp.py"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
            env={**os.environ, "ORACLE": "1"},
        ).stdout
    )
    for document in (folded, shown):
        assert abs(line_live(document, "bigmod.py", 1) - oracle) <= 0.05 * oracle

    text = result.stderr
    assert "import-system frames folded into the lines that imported" in text
    assert "<frozen importlib" not in text.split("Objects alive at exit")[0]


def test_show_import_system_shows_them(tmp_path):
    setup_program(tmp_path)
    text = run(tmp_path, "--show-import-system").stderr
    assert "import-system frames folded" not in text
    assert "<frozen importlib" in text
    report = subprocess.run(
        [sys.executable, "-m", "heapsite", "report", "run.capture", "--show-import-system"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert report.returncode == 0 and "<frozen importlib" in report.stdout
    default = subprocess.run(
        [sys.executable, "-m", "heapsite", "report", "run.capture", "--format", "html"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert default.returncode == 0 and "import-system frames folded" in default.stdout


def test_diff_folds_both_sides(tmp_path):
    setup_program(tmp_path)
    run(tmp_path)
    (tmp_path / "run.capture").rename(tmp_path / "old.capture")
    (tmp_path / "bigmod.py").write_text(BIGMOD.replace("20000", "40000"))
    run(tmp_path)
    diff = subprocess.run(
        # Live at exit: the peak may be a compile's (Debian's 3.14 has no .pyc).
        [sys.executable, "-m", "heapsite", "diff", "old.capture", "run.capture"]
        + ["--view", "live", "--top", "3"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert diff.returncode == 0, diff.stderr
    assert "bigmod.py:1" in diff.stdout and "<frozen importlib" not in diff.stdout


def test_callee_table_is_not_led_by_thread_entry_frames(tmp_path):
    (tmp_path / "pool.py").write_text(
        textwrap.dedent(
            """\
            from concurrent.futures import ThreadPoolExecutor

            def work(n):
                return [bytearray(1000) for _ in range(n)]  # work line

            with ThreadPoolExecutor(4) as pool:
                results = list(pool.map(work, [500] * 8))
            """
        )
    )
    text = run(tmp_path, program="pool.py").stderr
    table = text.split("with what their callees allocated:")[1]
    first = next(line for line in table.splitlines() if line.startswith("#1:"))
    assert "threading.py" not in first and "futures/thread.py" not in first, table
    assert "threading.py" not in table.split("Objects alive")[0], table
