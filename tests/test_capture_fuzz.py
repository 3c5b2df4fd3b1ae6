"""Fuzzing the capture reader through the CLI: a real capture, damaged in
many ways (random bytes, truncations, bit flips in the file and in its JSON
wrapped again with a right checksum), rendered in every format. Each exits 0
(still a valid capture) or 2 with one error line, never a traceback."""

import json
import random
import subprocess
import sys

import pytest
from capture_files import capture_of, model_of, real_capture
from heapsite import cli

FORMATS = ("text", "json", "html", "pprof")
SEED = 19


def _flip_bits(data: bytes, rng: random.Random, flips: int) -> bytes:
    damaged = bytearray(data)
    for _ in range(flips):
        at = rng.randrange(len(damaged))
        damaged[at] ^= 1 << rng.randrange(8)
    return bytes(damaged)


def _edit_json(text: bytes, rng: random.Random) -> bytes:
    """One edit of the JSON: a bit flip, a span dropped or repeated, a
    character replaced by one of JSON's own."""
    at = rng.randrange(len(text))
    span = rng.randrange(1, 40)
    edit = rng.randrange(4)
    if edit == 0:
        return _flip_bits(text, rng, 1)
    if edit == 1:
        return text[:at] + text[at + span :]
    if edit == 2:
        return text[:at] + text[at : at + span] * 2 + text[at + span :]
    return text[:at] + rng.choice(b'{}[],:"-019eE.').to_bytes(1, "little") + text[at + 1 :]


def variants(good: bytes, document: bytes) -> dict:
    """Damaged captures by name, the same ones every run (a fixed seed)."""
    rng = random.Random(SEED)
    out = {}
    for i in range(20):
        out[f"random{i}"] = rng.randbytes(rng.randrange(0, 2000))
    for i in range(40):
        out[f"cut{i}"] = good[: rng.randrange(len(good))]
    for i in range(40):
        out[f"flip{i}"] = _flip_bits(good, rng, rng.randrange(1, 4))
    for i in range(80):
        out[f"json{i}"] = capture_of(_edit_json(document, rng))
    return out


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    capture = real_capture(directory)
    document = json.dumps(model_of(capture)).encode()
    files = {}
    for name, data in variants(capture.read_bytes(), document).items():
        files[name] = directory / f"{name}.capture"
        files[name].write_bytes(data)
    return files


def test_every_damaged_capture_exits_0_or_2_with_one_line(damaged, tmp_path, capsys):
    outcomes = {0: 0, 2: 0}
    for name, path in damaged.items():
        for fmt in FORMATS:
            out = tmp_path / f"report.{fmt}"
            status = cli.main(["report", str(path), "--format", fmt, "-o", str(out)])
            stderr = capsys.readouterr().err
            assert status in (0, 2), (name, fmt, stderr)
            if status == 2:
                lines = stderr.splitlines()
                assert len(lines) == 1 and lines[0].startswith("heapsite: error: "), (name, stderr)
                assert not out.exists(), name
            else:
                assert out.stat().st_size > 0, name
                out.unlink()
            outcomes[status] += 1
    # The damage reaches past the checksum: some files still render, most do not.
    assert outcomes[0] > 0 and outcomes[2] > len(damaged), outcomes


@pytest.mark.parametrize("name", ["random3", "cut7", "flip5", "json11", "json42"])
def test_damaged_captures_in_a_real_process(damaged, name):
    for fmt in FORMATS:
        result = subprocess.run(
            [sys.executable, "-m", "heapsite", "report", str(damaged[name]), "--format", fmt],
            capture_output=True,
            timeout=60,
        )
        assert result.returncode in (0, 2), result.stderr
        assert b"Traceback" not in result.stderr
        assert len(result.stderr.splitlines()) == (result.returncode == 2)
