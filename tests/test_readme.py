"""The README's examples run as written and print what the README shows.

Each ```python block is followed by a "Prints" line and a block of what it
prints (on CPython 3.12). Each runs as `example.py` in a fresh interpreter
in a temporary folder, and its output must match the shown one, line by
line, where:
- a line `...` stands for any number of lines, and `...` inside a line
  for any text (what differs between runs or versions: a table's tail);
- runs of spaces are one space (columns widen with the longest name);
- numbers match within 15%, or 10 under 100 (sizes with their units:
  "9561 KiB" matches "10.1 MiB"), so that the sizes of str or code objects
  of another version pass, but a halved count, a sign or a line that is
  not there does not; a line number (`file.py:4`) must be exact.
The text report shown for examples/dataclass_store.py is checked the same
way against a run of it.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import heapsite
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
# A python block, a paragraph starting "Prints", and the block it shows.
EXAMPLES = re.findall(
    r"```python\n((?:(?!```).)*)```\n\nPrints[^`]*?:\n\n```\n((?:(?!```).)*)```", README, re.S
)
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
NUMBER = re.compile(r"(?<![\w.])[+-]?\d+(?:\.\d+)?(?: (?:B|KiB|MiB|GiB)\b)?")
NUMBER_PATTERN = r"([+-]?\d+(?:\.\d+)?)((?: (?:B|KiB|MiB|GiB)\b)?)"


def _pattern(shown: str) -> tuple:
    """A shown line as a regex (numbers and `...` as groups) and, per
    number, whether it must be exact (a line number: `file.py:4`)."""
    pattern, exact = [], []
    for i, piece in enumerate(shown.split("...")):
        if i:
            pattern.append(".*?")
        last = 0
        for m in NUMBER.finditer(piece):
            pattern.append(re.escape(piece[last : m.start()]))
            pattern.append(NUMBER_PATTERN)
            exact.append(piece[: m.start()].endswith(".py:"))
            last = m.end()
        pattern.append(re.escape(piece[last:]))
    return "".join(pattern), exact


def _value(number: str, unit: str) -> float:
    return float(number) * UNITS[unit.strip() or "B"]


def _tolerance(want: float) -> float:
    """How far a number may be from the shown one: 15% (the objects and
    bytes of a heap differ between versions and installs by some modules),
    or 10 for a number under 100 (a table's percent columns move with its
    total); a halved count or size, or a flipped sign, is still far off."""
    return 10.0 if abs(want) < 100 else 0.15 * abs(want)


def line_matches(shown: str, got: str) -> bool:
    # Runs of spaces are one (a table's columns widen with its longest name).
    shown, got = " ".join(shown.split()), " ".join(got.split())
    pattern, exact = _pattern(shown)
    wanted = re.fullmatch(pattern, shown.replace("...", ""))
    found = re.fullmatch(pattern, got)
    if wanted is None or found is None:
        return found is not None and not exact
    for k, must_be_exact in enumerate(exact):
        want = _value(wanted.group(2 * k + 1), wanted.group(2 * k + 2))
        have = _value(found.group(2 * k + 1), found.group(2 * k + 2))
        if must_be_exact and want != have:
            return False
        if abs(want - have) > _tolerance(want):
            return False
    return True


def output_matches(shown: list, got: list) -> bool:
    """Whether the lines `got` match the lines `shown` (see the docstring)."""
    if not shown:
        return not got
    if shown[0] == "...":
        return any(output_matches(shown[1:], got[n:]) for n in range(len(got) + 1))
    return bool(got) and line_matches(shown[0], got[0]) and output_matches(shown[1:], got[1:])


def first_difference(shown: list, got: list) -> str:
    for i, line in enumerate(shown):
        if line == "...":
            return f"(after a `...`: compare from shown line {i + 1})"
        if i >= len(got) or not line_matches(line, got[i]):
            return f"shown line {i + 1}: {line!r}\n   got: {got[i] if i < len(got) else None!r}"
    return f"got {len(got) - len(shown)} more lines"


def run_example(code: str, folder: Path) -> list:
    (folder / "example.py").write_text(code)
    result = subprocess.run(
        [sys.executable, "example.py"],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.replace(f"{folder}{os.sep}", "").splitlines()


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_example_prints_what_the_readme_shows(index, tmp_path):
    code, shown = EXAMPLES[index]
    got = run_example(code, tmp_path)
    shown_lines = shown.splitlines()
    assert output_matches(shown_lines, got), (
        first_difference(shown_lines, got) + "\n\nprinted:\n" + "\n".join(got)
    )


def test_every_python_example_shows_its_output():
    blocks = README.count("```python\n")
    assert blocks >= 4 and len(EXAMPLES) == blocks
    assert heapsite.is_tracing() is False


def test_the_matcher_can_fail():
    shown = ["example.py:4: size=9561 KiB, count=100002, average=98 B", "..."]
    assert output_matches(shown, ["example.py:4: size=10.1 MiB, count=100003, average=106 B"])
    for wrong in (
        "example.py:5: size=9561 KiB, count=100002, average=98 B",  # another line
        "example.py:4: size=4780 KiB, count=100002, average=98 B",  # half the size
        "example.py:4: size=9561 KiB, count=50001, average=98 B",  # half the count
        "example.py:4: size=9561 KiB, count=-100002, average=98 B",  # the sign
    ):
        assert not output_matches(shown, [wrong]), wrong
    assert not output_matches(["a", "b"], ["a"])
    assert output_matches(["a ... c"], ["a 12 b c"])
    assert not output_matches(["a ... c"], ["a 12 b d"])


def test_the_leaking_programs_report_is_the_one_shown(tmp_path):
    """The README's first screen of `heapsite run examples/dataclass_store.py`."""
    block = re.search(r"```\n(What is alive at exit.*?)```", README, re.S).group(1)
    result = subprocess.run(
        [sys.executable, "-m", "heapsite", "run", "-o", "run.capture"]
        + [str(ROOT / "examples" / "dataclass_store.py")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = result.stderr.replace(f"{ROOT}{os.sep}", "")
    # Library paths are shown from their root (`re/_parser.py`), as the report does.
    got = report[report.index("What is alive at exit") :].splitlines()
    shown = block.splitlines()
    if sys.version_info < (3, 12):
        # The README's screen is 3.12's. Before 3.11 instances carry a
        # __dict__ of their own, which leads the table ("dict of
        # __main__.Order"), and generated __init__s have another name; an
        # instance is 56 bytes before 3.12, 48 after. The leak's own row,
        # its size aside, is the same.
        order = next(line for line in shown if "__main__.Order " in line)
        order = re.sub(r"\d+ KiB", "...", order)
        assert any(line_matches(order, line) for line in got), "\n".join(got)
        return
    assert output_matches(shown, got), first_difference(shown, got) + "\n\n" + "\n".join(got)
