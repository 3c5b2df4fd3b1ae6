"""Sampled tracing: `heapsite.start(sample_every=...)`, `heapsite run --sample`
and HEAPSITE_SAMPLE.

The oracle is the standard tracemalloc run on the same program: each line's
live bytes and blocks, and what it allocated in total, against heapsite's
sampled estimates. The program is built so that each line holds enough
bytes for a fair test: a site's estimate has a relative standard deviation
of about sqrt(rate / bytes) (each sample stands for `rate` bytes): at
64 KiB, 4% for a line of 40 MB, so 10% is 2.5 deviations, and the median
of three runs is taken. tracemalloc keeps no totals; the churning line's
total is known from the program (200,000 strings of one size).
"""

import json
import os
import statistics
import subprocess
import sys
import textwrap

import heapsite
import pytest
from sampled_programs import START_TRACER

RATE = 64 * 1024

PROGRAM = START_TRACER + textwrap.dedent(
    """
    small = [bytearray(100) for _ in range(300_000)]  # SMALL
    medium = [bytes(20_000) for _ in range(2_000)]  # MEDIUM
    big = [bytearray(2_000_000) for _ in range(20)]  # BIG
    for i in range(200_000):
        churn = str(i) * 40  # CHURN
    del churn
    lines = {}
    if mode == "tracemalloc":
        snap = tracemalloc.take_snapshot()
        for stat in snap.statistics("lineno"):
            lines[stat.traceback[0].lineno] = {"live": stat.size, "count": stat.count}
    else:
        snap = heapsite.snapshot()
        for stat in snap.statistics("lineno"):
            lines[stat.traceback[0].lineno] = {"live": stat.size, "count": stat.count}
        totals = {s.traceback[0].lineno: s.size for s in snap.total().statistics("lineno")}
        lines["total_churn"] = totals.get(int(sys.argv[3]), 0)
        lines["rate"] = heapsite.sample_rate()
        lines["stats"] = heapsite.stats()
    json.dump(lines, open(out, "w"))
    """
)


def line_of(marker):
    return next(n for n, text in enumerate(PROGRAM.splitlines(), 1) if f"# {marker}" in text)


def run_program(tmp_path, mode, tag):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    out = tmp_path / f"{tag}.json"
    done = subprocess.run(
        [sys.executable, str(script), mode, str(out), str(line_of("CHURN"))],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    return run_program(tmp_path_factory.mktemp("oracle"), "tracemalloc", "oracle")


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory):
    """heapsite's exact totals, themselves checked against tracemalloc in
    tests/test_oracle_tracemalloc.py (tracemalloc keeps no totals)."""
    return run_program(tmp_path_factory.mktemp("exact"), "0", "exact")


@pytest.fixture(scope="module")
def sampled_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sampled")
    return [run_program(tmp, str(RATE), f"run{i}") for i in range(3)]


@pytest.mark.parametrize("marker", ["SMALL", "MEDIUM", "BIG"])
def test_live_bytes_and_blocks_per_line_agree_with_tracemalloc(oracle, sampled_runs, marker):
    line = str(line_of(marker))
    exact = oracle[line]
    estimates = [run[line] for run in sampled_runs]
    live = statistics.median(e["live"] for e in estimates)
    assert abs(live - exact["live"]) <= 0.10 * exact["live"], (marker, exact, estimates)
    if marker != "BIG":
        # BIG's blocks are 20 buffers and 20 object headers of 56 bytes: a
        # count made half of 1 KB in all cannot be estimated at 64 KiB.
        count = statistics.median(e["count"] for e in estimates)
        assert abs(count - exact["count"]) <= 0.10 * exact["count"], (marker, exact, estimates)


def test_totals_are_estimated_and_a_churning_line_holds_nothing(exact_run, sampled_runs):
    line = str(line_of("CHURN"))
    want = exact_run["total_churn"]
    assert want > 50_000_000, exact_run  # the oracle measured something
    totals = [run["total_churn"] for run in sampled_runs]
    assert abs(statistics.median(totals) - want) <= 0.10 * want, (want, totals)
    # Each sampled string was freed, and taken off its line: at most the
    # last one may still be live (or a sample standing for a few).
    for run in sampled_runs:
        assert run.get(line, {"live": 0})["live"] <= 2 * RATE, run.get(line)


def test_a_sample_is_a_small_fraction_of_the_blocks(oracle, sampled_runs):
    blocks = sum(v["count"] for k, v in oracle.items() if k.isdigit())
    for run in sampled_runs:
        assert run["rate"] == RATE
        # ~140 MB live at 64 KiB: about 2,000 samples, plus the big blocks.
        assert run["stats"]["live_allocations"] < blocks / 50, (run["stats"], blocks)


def test_the_rate_cannot_change_while_tracing():
    heapsite.start(1, sample_every="256 KiB")
    assert heapsite.sample_rate() == 256 * 1024
    with pytest.raises(ValueError, match="stop\\(\\) before"):
        heapsite.start(1, sample_every=0)
    heapsite.start(4)  # the depth may change; the rate stays
    assert (heapsite.traceback_limit(), heapsite.sample_rate()) == (4, 256 * 1024)
    heapsite.stop()
    assert heapsite.sample_rate() == 0
    heapsite.start(1)
    assert heapsite.sample_rate() == 0


@pytest.mark.parametrize(
    "every, error",
    [
        ("lots", ValueError),
        ("-5 KiB", ValueError),
        ("inf", ValueError),
        ("1e400 KiB", ValueError),
        ("nan", ValueError),
        ("0.5", ValueError),
        (-1, ValueError),
        (2**50, ValueError),
        (1.5, TypeError),
        (True, TypeError),
    ],
)
def test_bad_rates_are_refused_and_nothing_starts(every, error):
    with pytest.raises(error, match="sample_every|size"):
        heapsite.start(1, sample_every=every)
    assert not heapsite.is_tracing()


def test_exact_again_after_a_sampled_run():
    heapsite.start(1, sample_every="1 MiB")
    kept = [bytearray(100) for _ in range(1000)]
    heapsite.stop()
    heapsite.start(1)
    again = [bytearray(100) for _ in range(1000)]  # AGAIN
    stats = heapsite.snapshot().statistics("lineno")
    here = [s for s in stats if s.traceback[0].filename == __file__]
    assert max(s.count for s in here) >= 1000, here
    del kept, again


LEAKY_SERVICE = textwrap.dedent(
    """
    import time
    cache = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        for i in range(2000):
            request = {"id": i, "body": "x" * 200, "items": list(range(20))}
        cache.append(bytearray(20_000))  # LEAK
        time.sleep(0.002)
    print("served")
    """
)


def test_heapsite_run_sampled_names_the_leak_first_and_says_it_is_sampled(tmp_path):
    script = tmp_path / "service.py"
    script.write_text(LEAKY_SERVICE)
    capture = tmp_path / "service.capture"
    done = subprocess.run(
        [sys.executable, "-m", "heapsite", "run", "--sample", "256KiB", "-o", str(capture)]
        + [str(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("served"), done.stdout
    said = done.stdout + done.stderr
    assert "sampled, one per 256 KiB allocated on average" in said, said
    data = json.loads(heapsite._heapsite.render_report(str(capture), "json", 10))
    assert data["meta"]["sample_rate"] == 256 * 1024
    frames = data["frames"]
    top = max(data["sites"], key=lambda s: s["live_bytes"])
    leak_line = next(n for n, text in enumerate(LEAKY_SERVICE.splitlines(), 1) if "# LEAK" in text)
    assert frames[top["stack"][0]]["lineno"] == leak_line, (top, frames[top["stack"][0]])


def test_hs_sample_setting_is_checked_like_the_others(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text("print('ran')\n")
    for args, env, value in (
        (["--sample", "lots"], {}, "lots"),
        ([], {"HEAPSITE_SAMPLE": "lots"}, "lots"),
        (["--sample", "inf"], {}, "inf"),
        ([], {"HEAPSITE_SAMPLE": "1e400"}, "1e400"),
        (["--sample", "0.5"], {}, "0.5"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "heapsite", "run", *args, str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env},
        )
        assert done.returncode == 2, (args, env, done)
        assert "ran" not in done.stdout
        # One error line (argparse prints its usage above it), naming the value.
        errors = [line for line in done.stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and value in errors[0].lower(), done.stderr
        assert "Traceback" not in done.stderr, done.stderr


def test_the_pytest_plugin_refuses_to_judge_tests_on_estimates(tmp_path):
    (tmp_path / "test_one.py").write_text("def test_one():\n    assert True\n")
    sampled_pytest = (
        "import heapsite, pytest, sys; heapsite.start(1, sample_every='256 KiB'); "
        "sys.exit(pytest.main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", sampled_pytest, "--heapsite", "-p", "no:cacheprovider"]
        + ["-p", "no:memray", str(tmp_path / "test_one.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 4, (done.stdout, done.stderr)  # pytest's usage error
    assert "--heapsite needs every allocation traced" in done.stderr, done.stderr
