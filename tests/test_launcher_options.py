"""`python OPTIONS -m heapsite run x.py` runs x.py with OPTIONS, as
`python OPTIONS x.py` would."""

import os
import subprocess
import sys

import pytest

SHOW_OPTIONS = (
    "import sys, tracemalloc\n"
    "print(sys.flags)\n"
    "print(sorted(sys._xoptions.items()))\n"
    "print(sys.warnoptions)\n"
    "print(tracemalloc.is_tracing())\n"
    "print(type(sys.stdout.buffer).__name__)\n"
)


@pytest.mark.parametrize(
    "options",
    [
        ["-X", "dev"],
        ["-I"],
        ["-E", "-s", "-B"],
        ["-O", "-b", "-W", "error::ResourceWarning"],
        ["-X", "tracemalloc=5", "-X", "int_max_str_digits=5000"],
        ["-X", "utf8", "-X", "warn_default_encoding"],
        ["-u"],
    ],
    ids=" ".join,
)
@pytest.mark.parametrize("in_process", ["0", "1"], ids=["preloaded", "in-process"])
def test_the_program_runs_with_the_interpreters_options(tmp_path, options, in_process):
    script = tmp_path / "show.py"
    script.write_text(SHOW_OPTIONS)
    env = {**os.environ, "HEAPSITE_IN_PROCESS": in_process}
    env.pop("PYTHONUNBUFFERED", None)  # would hide whether -u reached the program
    plain = subprocess.run(
        [sys.executable, *options, str(script)], capture_output=True, text=True, timeout=60, env=env
    )
    assert plain.returncode == 0, plain.stderr
    output = tmp_path / "show.capture"
    traced = subprocess.run(
        [sys.executable, *options, "-m", "heapsite", "run", "-q", "-o", str(output), str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert traced.returncode == 0, traced.stderr
    if in_process == "0":
        assert traced.stdout == plain.stdout
    else:  # the launcher is the program's interpreter: only flags can agree
        assert traced.stdout.splitlines()[0] == plain.stdout.splitlines()[0]
    assert output.stat().st_size > 0
