"""Subinterpreters never harm the host (issue 19): a program that runs code in
subinterpreters, sharing the main GIL or each with its own, behaves the same
traced (in-process or under `heapsite run`) as untraced; the main
interpreter's allocations are still attributed to their lines; a
subinterpreter's are not traced, which heapsite says once on stderr; and the
API called from a subinterpreter raises one clear error.

Each program runs in its own process (a crash must fail a test, not end the
suite), with a timeout."""

import json
import os
import subprocess
import sys
import textwrap

import heapsite
import pytest

WARNING = "heapsite: allocations in subinterpreters are not traced"
API_ERROR = "heapsite: snapshots are taken from the main interpreter"

# Which private module creates subinterpreters, and how. Legacy ones share
# the main GIL (every version); isolated ones have their own GIL from 3.12.
# `_interpreters` (3.13+) takes a config name and reports a failure as its
# result; `_xxsubinterpreters` (3.9-3.12) takes `isolated` and raises.
PRELUDE = textwrap.dedent(
    """
    import sys
    try:
        import _interpreters as _si

        def create(own_gil):
            return _si.create("isolated" if own_gil else "legacy")

        def run_in(interp, code):
            failure = _si.exec(interp, code)
            if failure is not None:
                raise RuntimeError(failure.formatted)
    except ImportError:
        import _xxsubinterpreters as _si

        def create(own_gil):
            return _si.create(isolated=own_gil)

        def run_in(interp, code):
            _si.run_string(interp, code)

    destroy = _si.destroy
    """
)

# A subinterpreter's allocations: lists, dicts, bytearrays, 100k objects,
# checked in there (a wrong result fails the program). Compiled under a name
# of its own, so that a report would show it if it were traced.
ALLOCATING_BODY = textwrap.dedent(
    """
    data = [[i, i + 1] for i in range(40_000)]
    data += [{"k": i, str(i): i} for i in range(30_000)]
    data += [bytearray(64) for _ in range(30_000)]
    assert len(data) == 100_000 and data[-1] == bytearray(64), len(data)
    total = sum(len(x) for x in data)
    assert total == 80_000 + 60_000 + 64 * 30_000, total
    del data
    """
)
ALLOCATING = f"exec(compile({ALLOCATING_BODY!r}, '<subinterpreter>', 'exec'))"

# The main interpreter's report of `big` (allocated at the line marked BIG),
# written by a traced program to HEAPSITE_TEST_REPORT as JSON.
REPORT_BIG = textwrap.dedent(
    """
    import json, os, heapsite
    if heapsite.is_tracing():
        stats = heapsite.snapshot().statistics("lineno")
        big_line = next(n for n, text in enumerate(open(__file__), 1) if "# BIG" in text)
        with open(os.environ["HEAPSITE_TEST_REPORT"], "w") as out:
            json.dump({
                "big_line_bytes": sum(s.size for s in stats
                                      if s.traceback[0].filename == __file__
                                      and s.traceback[0].lineno == big_line),
                "subinterpreter_bytes": sum(s.size for s in stats
                                            if any(f.filename == "<subinterpreter>"
                                                   for f in s.traceback)),
            }, out)
    """
)

# Started in-process two ways: plainly, and following objects reused from
# free lists (3.13+: a reference tracer, which is the runtime's, so every
# interpreter's object creations reach it; a no-op before 3.13).
START = "import heapsite; heapsite.start(frames=16)\n"
STARTS = {
    "start": START,
    "sampled": "import heapsite; heapsite.start(frames=16, sample_every='64 KiB')\n",
    "follow_reuse": START + "heapsite._heapsite.follow_reuse(True)\n",
}

SHARED_GIL_PROGRAM = PRELUDE + textwrap.dedent(
    """
        CODE = {code!r}
        for round in range(3):
            interp = create(own_gil=False)
            run_in(interp, CODE)
            destroy(interp)
            print("round", round, "done", flush=True)
        big = bytearray(10_000_000)  # BIG
        print("main", len(big))
        """
).format(code=ALLOCATING)

OWN_GIL_PROGRAM = PRELUDE + textwrap.dedent(
    """
        import threading

        CODE = {code!r}
        failures = []

        def work(interp):
            try:
                for _ in range(3):
                    run_in(interp, CODE)
            except Exception as error:
                failures.append(error)

        for round in range(3):
            interps = [create(own_gil=True) for _ in range(4)]
            threads = [threading.Thread(target=work, args=(i,)) for i in interps]
            for t in threads:
                t.start()
            # The main interpreter allocates while the four others do.
            mine = [str(i) * 3 for i in range(50_000)]
            if round == 1:
                big = bytearray(10_000_000)  # BIG
            for t in threads:
                t.join()
            for interp in interps:
                destroy(interp)
            assert not failures, failures
            print("round", round, "done", len(mine), flush=True)
        print("main", len(big))
        """
).format(code=ALLOCATING)


def run(args, env=None):
    return subprocess.run(
        args, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=180
    )


def run_started(tmp_path, program, start):
    """The program started in-process: (process, its report or None)."""
    started = tmp_path / "started.py"
    started.write_text(STARTS[start] + program + REPORT_BIG)
    report_path = tmp_path / f"report-{start}.json"
    done = run([sys.executable, str(started)], env={"HEAPSITE_TEST_REPORT": str(report_path)})
    return done, json.loads(report_path.read_text()) if report_path.exists() else None


def run_three_ways(tmp_path, program, start):
    """The program plain, started in-process, and under `heapsite run`:
    (plain, in-process, its report, preloaded, its capture)."""
    plain_script = tmp_path / "plain.py"
    plain_script.write_text(program)
    plain = run([sys.executable, str(plain_script)])

    in_process, report = run_started(tmp_path, program, start)

    capture = tmp_path / "prog.capture"
    preloaded = run(
        [
            sys.executable,
            "-m",
            "heapsite",
            "run",
            "-q",
            "-o",
            str(capture),
            str(plain_script),
        ]
    )
    return plain, in_process, report, preloaded, capture


def capture_line_bytes(capture, filename, lineno):
    """Bytes live at the peak at one line (innermost frame) of a capture."""
    data = json.loads(heapsite._heapsite.render_report(str(capture), "json", 10))
    frames = data["frames"]
    return sum(
        site["peak_bytes"]
        for site in data["sites"]
        if frames[site["stack"][0]]["filename"] == filename
        and frames[site["stack"][0]]["lineno"] == lineno
    )


def line_of(program, marker):
    return next(n for n, text in enumerate(program.splitlines(), 1) if marker in text)


def check_same_and_attributed(tmp_path, program, start):
    plain, in_process, report, preloaded, capture = run_three_ways(tmp_path, program, start)
    assert plain.returncode == 0, plain.stderr
    assert WARNING not in plain.stderr
    for traced in (in_process, preloaded):
        assert (traced.returncode, traced.stdout) == (plain.returncode, plain.stdout), traced.stderr
        # Said once per process.
        assert traced.stderr.count(WARNING) == 1, traced.stderr
    # The main interpreter's bytearray is at its line; nothing of the
    # subinterpreters' code is traced.
    assert report["big_line_bytes"] >= 10_000_000, report
    assert report["subinterpreter_bytes"] == 0, report
    big_line = line_of(program, "# BIG")
    assert capture_line_bytes(capture, str(tmp_path / "plain.py"), big_line) >= 10_000_000


@pytest.mark.parametrize("start", STARTS)
def test_shared_gil_subinterpreter_allocating_then_destroyed(tmp_path, start):
    check_same_and_attributed(tmp_path, SHARED_GIL_PROGRAM, start)


@pytest.mark.skipif(
    sys.version_info < (3, 12),
    reason="subinterpreters with their own GIL exist from CPython 3.12 (PEP 684)",
)
@pytest.mark.parametrize("start", STARTS)
def test_own_gil_subinterpreters_in_parallel_threads(tmp_path, start):
    check_same_and_attributed(tmp_path, OWN_GIL_PROGRAM, start)


API_IN_SUBINTERPRETER = PRELUDE + textwrap.dedent(
    """
    import heapsite
    started = sys.argv[1] == "started"
    if started:
        heapsite.start(frames=16)
    interp = create(own_gil=False)
    run_in(interp, '''
    import heapsite
    for call in (heapsite.snapshot, heapsite.is_tracing, heapsite.traced_memory,
                 heapsite.stop, lambda: heapsite.start(4)):
        try:
            call()
        except RuntimeError as error:
            print("refused:", error)
        else:
            print("answered")
    ''')
    destroy(interp)
    print("main tracing:", heapsite.is_tracing())
    if started:
        # The main interpreter still traces what it allocates (heapsite's
        # own snapshot is not counted: something of the program's must be).
        kept = [bytearray(1000) for _ in range(100)]
        print("main snapshot:", len(heapsite.snapshot().statistics("lineno")) > 0)
    """
)


@pytest.mark.parametrize("main", ["started", "not_started"])
def test_the_api_in_a_subinterpreter_raises_one_clear_error(tmp_path, main):
    script = tmp_path / "api.py"
    script.write_text(API_IN_SUBINTERPRETER)
    done = run([sys.executable, str(script), main])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for line in lines[:5]:
        assert line.startswith("refused: " + API_ERROR), line
    # The main interpreter's tracing was not touched from there.
    if main == "started":
        assert lines[5:] == ["main tracing: True", "main snapshot: True"]
    else:
        assert lines[5:] == ["main tracing: False"]


# A subinterpreter created before start() is not traced either once tracing
# starts: the hooks ask which interpreter calls them on every call.
BEFORE_START = PRELUDE + textwrap.dedent(
    """
    import heapsite
    interp = create(own_gil=False)
    heapsite.start(frames=16)
    for _ in range(3):
        run_in(interp, CODE)
    destroy(interp)
    big = bytearray(10_000_000)  # BIG
    stats = heapsite.snapshot().statistics("lineno")
    print(any(s.size >= 10_000_000 for s in stats),
          sum(s.size for s in stats if any(f.filename == "<subinterpreter>" for f in s.traceback)))
    """
).replace("CODE", repr(ALLOCATING))


def test_a_subinterpreter_created_before_start_is_not_traced(tmp_path):
    script = tmp_path / "before.py"
    script.write_text(BEFORE_START)
    done = run([sys.executable, str(script)])
    assert (done.returncode, done.stdout) == (0, "True 0\n"), done.stderr
    assert done.stderr.count(WARNING) == 1, done.stderr
