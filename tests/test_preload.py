"""LD_PRELOAD mode: an unmodified program, preloaded with heapsite, runs as
it would without it and leaves a capture whose figures agree with the
standard tracemalloc on the same program."""

import json
import os
import subprocess
import sys
import textwrap

import heapsite
import pytest
from heapsite.cli import preload_path

PROGRAM = textwrap.dedent(
    """
    import os, sys

    def build():
        return [bytearray(1000) for _ in range(20000)]   # line 5

    data = build()
    print("args:", sys.argv[1:])
    print("stdin:", sys.stdin.read().strip())
    mode = sys.argv[1]
    if mode == "raise":
        raise ValueError("boom")
    if mode == "os_exit":
        sys.stdout.flush()
        os._exit(4)
    sys.exit(int(mode))
    """
)


def run(script, *args, env=None, flags=(), stdin="hello"):
    return subprocess.run(
        [sys.executable, *flags, str(script), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def preloaded_env(output, **settings):
    env = {**os.environ, "LD_PRELOAD": preload_path(), "HEAPSITE_OUTPUT": str(output)}
    env.update({f"HEAPSITE_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def report(path, fmt="json", top=10):
    data = heapsite._heapsite.render_report(str(path), fmt, top)
    return json.loads(data) if fmt == "json" else data.decode()


def line_bytes(capture, filename, lineno, view="peak", cumulative=False):
    """Bytes a view holds at one line, summed over sites (innermost frame
    only, or anywhere in the stack when cumulative)."""
    frames = capture["frames"]
    total = 0
    for site in capture["sites"]:
        stack = site["stack"] if cumulative else site["stack"][:1]
        if any(frames[f]["filename"] == filename and frames[f]["lineno"] == lineno for f in stack):
            total += site[f"{view}_bytes"]
    return total


@pytest.mark.parametrize(
    "mode, status", [("0", 0), ("3", 3), ("raise", 1), ("os_exit", 4)], ids=str
)
def test_same_output_and_status_and_a_capture_at_any_exit(tmp_path, mode, status):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    plain = run(script, mode)
    output = tmp_path / "prog.capture"
    traced = run(script, mode, env=preloaded_env(output))
    assert (traced.returncode, traced.stdout, traced.stderr) == (
        plain.returncode,
        plain.stdout,
        plain.stderr,
    )
    assert traced.returncode == status
    capture = report(output)
    assert capture["meta"]["argv"] == [str(script), mode]
    # 20,000 bytearrays of 1,000 bytes and their list (3.15 keeps each buffer
    # in a bytes object: 40 bytes more each, as tracemalloc also counts).
    assert 20_000_000 <= line_bytes(capture, str(script), 5) < 23_000_000
    assert capture["kinds"], "kinds at exit"


@pytest.mark.parametrize(
    "flags, env",
    [
        ((), {"PYTHONMALLOC": "malloc"}),
        ((), {"PYTHONMALLOC": "debug"}),
        (("-X", "dev"), {}),
        (("-X", "tracemalloc=5"), {}),
    ],
    ids=["malloc", "debug", "dev", "tracemalloc"],
)
def test_alongside_interpreter_options(tmp_path, flags, env):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    plain = run(script, "0", flags=flags, env={**os.environ, **env})
    output = tmp_path / "prog.capture"
    traced = run(script, "0", flags=flags, env={**preloaded_env(output), **env})
    assert (traced.returncode, traced.stdout) == (plain.returncode, plain.stdout)
    assert traced.stderr == plain.stderr
    assert 20_000_000 <= line_bytes(report(output), str(script), 5) < 23_000_000


def test_children_that_are_not_python_still_run(tmp_path):
    script = tmp_path / "spawn.py"
    script.write_text(
        "import subprocess\n"
        "r = subprocess.run(['sh', '-c', 'echo from sh; echo \"[$LD_PRELOAD]\"'],"
        " capture_output=True, text=True)\n"
        "print(r.returncode, r.stdout, end='')\n"
    )
    traced = run(script, env=preloaded_env(tmp_path / "spawn.capture"))
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout == "0 from sh\n[]\n"


def test_a_bad_setting_is_one_line_and_exit_2(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    for setting in [{"frames": 0}, {"frames": "many"}, {"native": "maybe"}]:
        traced = run(script, "0", env=preloaded_env(tmp_path / "x.capture", **setting))
        assert traced.returncode == 2, (setting, traced)
        assert traced.stdout == ""  # the program did not run
        assert len(traced.stderr.splitlines()) == 1, traced.stderr
        assert "HEAPSITE_" in traced.stderr


FORKING = textwrap.dedent(
    """
    import multiprocessing, os, sys

    def child_work():
        return [bytes(5000) for _ in range(2000)]        # line 5

    def in_process(q):
        kept = child_work()
        q.put(len(kept))

    if __name__ == "__main__":
        pid = os.fork()
        if pid == 0:
            kept = child_work()
            sys.exit(0)
        os.waitpid(pid, 0)
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=in_process, args=(q,))
        p.start()
        print(q.get())
        p.join()
        print("children", pid, p.pid)
    """
)


@pytest.mark.parametrize("follow", [True, False])
def test_forked_and_multiprocessing_children_write_their_own_capture(tmp_path, follow):
    script = tmp_path / "forking.py"
    script.write_text(FORKING)
    output = tmp_path / "forking.capture"
    traced = run(script, env=preloaded_env(output, follow_fork=int(follow)))
    assert traced.returncode == 0, traced.stderr
    fork_pid, mp_pid = (int(x) for x in traced.stdout.split()[-2:])
    children = [tmp_path / f"forking.{pid}.capture" for pid in (fork_pid, mp_pid)]
    parent = report(output)
    assert line_bytes(parent, str(script), 5, "total") == 0  # only children ran it
    if not follow:
        assert not any(c.exists() for c in children)
        return
    for child in children:
        capture = report(child)
        assert capture["meta"]["pid"] != parent["meta"]["pid"]
        assert 10_000_000 <= line_bytes(capture, str(script), 5, "total") < 10_500_000


NATIVE = textwrap.dedent(
    """
    import ctypes, sys
    import numpy as np

    libc = ctypes.PyDLL(None)  # PyDLL: called with the GIL held, as C extensions are
    libc.malloc.restype = ctypes.c_void_p

    def arrays():
        return np.ones(10**7)                               # line 9

    def raw_malloc():
        return libc.malloc(30_000_000)                      # line 12

    a = arrays()
    b = raw_malloc()
    if "tracemalloc" in sys.argv:
        import tracemalloc
        snap = tracemalloc.take_snapshot()
        stats = snap.statistics("lineno", cumulative=True)
        print([s.size for s in stats if s.traceback[0].lineno == 9][0])
    """
)


def test_native_memory_is_attributed_to_the_python_line(tmp_path):
    script = tmp_path / "native.py"
    script.write_text(NATIVE)
    output = tmp_path / "native.capture"
    traced = run(script, env=preloaded_env(output))
    assert traced.returncode == 0, traced.stderr
    capture = report(output)
    assert capture["meta"]["native"] is True
    # numpy's data buffer: the standard tracemalloc (numpy reports it with
    # PyTraceMalloc_Track) is the oracle for line 9.
    oracle = run(script, "tracemalloc", flags=("-X", "tracemalloc=16"))
    expected = int(oracle.stdout)
    assert expected >= 80_000_000
    got = line_bytes(capture, str(script), 9, cumulative=True)
    assert abs(got - expected) <= 0.01 * expected, (got, expected)
    # A plain malloc no Python allocator saw: only native tracking finds it.
    assert 30_000_000 <= line_bytes(capture, str(script), 12, cumulative=True) < 30_100_000
    without = tmp_path / "without.capture"
    assert run(script, env=preloaded_env(without, malloc=0)).returncode == 0
    assert line_bytes(report(without), str(script), 12, cumulative=True) < 1_000_000


def test_native_frames_name_the_c_function_under_the_python_line(tmp_path):
    script = tmp_path / "native.py"
    script.write_text(NATIVE)
    output = tmp_path / "native.capture"
    traced = run(script, env=preloaded_env(output, native=1))
    assert traced.returncode == 0, traced.stderr
    capture = report(output)
    assert capture["meta"]["native_frames"] is True
    frames = capture["frames"]
    (site,) = [
        s
        for s in capture["sites"]
        if s["live_bytes"] >= 30_000_000
        and any(
            frames[f]["lineno"] == 12 and frames[f]["filename"] == str(script) for f in s["stack"]
        )
    ]
    stack = [frames[f] for f in site["stack"]]
    python_at = next(i for i, f in enumerate(stack) if f["filename"] == str(script))
    native = stack[:python_at]
    # ctypes calls malloc through libffi: C frames above the Python line,
    # heapsite's own (the malloc hook) left out.
    assert native, stack
    assert any("ffi" in f["filename"] or "ctypes" in f["filename"] for f in native), native
    assert not any("_heapsite" in f["filename"] for f in native), native


def test_capture_is_small_and_timeline_spans_the_run(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(
        PROGRAM.replace("def build():", "import time\ndef build():\n    time.sleep(0.2)")
    )
    output = tmp_path / "prog.capture"
    assert run(script, "0", env=preloaded_env(output)).returncode == 0
    assert output.stat().st_size < 2_000_000
    capture = report(output)
    timeline = capture["timeline"]
    assert len(timeline) >= 5
    assert max(s["bytes"] for s in timeline) >= 20_000_000
    assert timeline[-1]["t"] >= 0.2


def test_tracemalloc_setting_puts_the_drop_in_in_place(tmp_path):
    script = tmp_path / "uses_tracemalloc.py"
    script.write_text(
        "import tracemalloc\n"
        "tracemalloc.start(5)\n"
        "data = [bytearray(1000) for _ in range(1000)]\n"
        "stat = tracemalloc.take_snapshot().statistics('lineno')[0]\n"
        "print(tracemalloc.__name__, stat.traceback[0].lineno, stat.count >= 1000)\n"
    )
    for value, name in [("1", "heapsite.tracemalloc"), ("0", "tracemalloc")]:
        env = preloaded_env(tmp_path / "t.capture", tracemalloc=value)
        traced = run(script, env=env)
        assert traced.returncode == 0, traced.stderr
        assert traced.stdout == f"{name} 3 True\n"


def test_threads_are_attributed_to_their_own_lines(tmp_path):
    script = tmp_path / "threads.py"
    script.write_text(
        textwrap.dedent(
            """
            import threading
            kept = {}

            def worker(k):
                kept[k] = [bytearray(1000 + k) for _ in range(5000)]   # line 6

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            main = [bytearray(500) for _ in range(5000)]                # line 13
            """
        )
    )
    output = tmp_path / "threads.capture"
    assert run(script, env=preloaded_env(output)).returncode == 0
    capture = report(output)
    assert 4 * 5000 * 1000 <= line_bytes(capture, str(script), 6, "live") < 4 * 5000 * 1200
    assert 5000 * 500 <= line_bytes(capture, str(script), 13, "live") < 5000 * 700
