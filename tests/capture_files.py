"""Capture and snapshot files made by hand for the tests that feed heapsite
bad ones: a real run's model, changed and wrapped again with a right header
(so the reader gets past the checksum to the content)."""

import json
import os
import stat
import struct
import subprocess
import sys
import zlib

import heapsite
import pytest

CAPTURE_MAGIC = heapsite._heapsite.capture_magic()
CAPTURE_FORMAT = 1
SNAPSHOT_MAGIC = heapsite.Snapshot.MAGIC
PROGRAM = (
    "def build(n):\n"
    "    return [bytearray(100) for _ in range(n)]\n"
    "data = build(2000)\n"
    "more = {i: str(i) for i in range(500)}\n"
)


def capture_around(payload: bytes) -> bytes:
    """A capture file around a compressed payload, its header right."""
    header = struct.pack("<IQI", CAPTURE_FORMAT, len(payload), zlib.crc32(payload))
    return CAPTURE_MAGIC + header + payload


def snapshot_around(payload: bytes) -> bytes:
    return SNAPSHOT_MAGIC + len(payload).to_bytes(8, "little") + payload


def capture_of(document: bytes) -> bytes:
    """A capture file holding this JSON document."""
    return capture_around(zlib.compress(document))


def snapshot_of(document: bytes) -> bytes:
    return snapshot_around(zlib.compress(document))


def real_capture(directory):
    """The capture of a small program run by `heapsite run`."""
    script = directory / "small.py"
    script.write_text(PROGRAM)
    output = directory / "small.capture"
    subprocess.run(
        [sys.executable, "-m", "heapsite", "run", "-q", "-o", str(output), str(script)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return output


def model_of(capture_path) -> dict:
    """A capture's model, as the JSON report gives it without its schema tags."""
    # As recorded: reports fold import-system frames and merge sites.
    document = json.loads(heapsite._heapsite.render_report(str(capture_path), "json", 1, True))
    del document["schema"], document["schema_version"]
    return document


def bomb(inflated_mib: int) -> bytes:
    """A zlib stream of spaces inflating to `inflated_mib` MiB, about a
    thousandth of that in size. Every block after a full flush is the same,
    so it is made by repeating one instead of compressing it all (the
    trailing checksum is wrong, but no reader should get that far)."""
    chunk = b" " * (1 << 20)
    compressor = zlib.compressobj(9)
    first = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    return first + block * (inflated_mib - 1) + compressor.flush()


NULL_DEVICE, FULL_DEVICE = 3, 7  # minor numbers of /dev/null and /dev/full


def memory_device(path, minor: int):
    """A character device node with the numbers of one of /dev/null,
    /dev/full... at `path` (under tmp_path: tests never use the machine's
    own device files)."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except PermissionError:
        pytest.skip("making a device node needs root")
    return path


def with_many_sites(model: dict, count: int = 20_000) -> dict:
    """The model with `count` sites, each its own stack (reports merge sites
    of one stack): the real ones again and again, under a line of their own."""
    frames = list(model["frames"])
    sites = []
    for k in range(count):
        site = dict(model["sites"][k % len(model["sites"])])
        frames.append({"filename": "many.py", "lineno": k + 1, "function": "caller"})
        site["stack"] = [*site["stack"], len(frames) - 1]
        sites.append(site)
    return dict(model, frames=frames, sites=sites)


def line_live(document: dict, filename_end: str, lineno: int) -> int:
    """What the sites allocating at a line (by their innermost frame) still
    held at exit, in a report's JSON document."""
    total = 0
    for site in document["sites"]:
        frame = document["frames"][site["stack"][0]] if site["stack"] else None
        if frame and frame["filename"].endswith(filename_end) and frame["lineno"] == lineno:
            total += site["live_bytes"]
    return total


def report_json(paths) -> dict:
    """The JSON report of a capture, or of several as one."""
    return json.loads(heapsite._heapsite.render_report(paths, "json", 10))
