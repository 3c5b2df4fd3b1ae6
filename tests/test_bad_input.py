"""Bad input: a clear exception naming the problem, tracing state unchanged."""

import os
import zlib

import heapsite
import pytest


@pytest.mark.parametrize(
    "frames, error, text",
    [
        (0, ValueError, "frames must be between 1 and 128, got 0"),
        (100000, ValueError, "frames must be between 1 and 128, got 100000"),
        (-3, ValueError, "got -3"),
        ("3", TypeError, "frames must be an int, got str"),
        (True, TypeError, "frames must be an int, got bool"),
        (2.5, TypeError, "got float"),
    ],
)
def test_bad_frames(frames, error, text):
    heapsite.start(5)
    with pytest.raises(error, match=text):
        heapsite.start(frames)
    assert heapsite.is_tracing()
    assert heapsite.traceback_limit() == 5
    heapsite.stop()
    with pytest.raises(error, match=text):
        heapsite.start(frames)
    assert not heapsite.is_tracing()


def test_native_core_checks_too():
    from heapsite import _heapsite

    with pytest.raises(ValueError, match="between 1 and 128"):
        _heapsite.start(0, 0)
    with pytest.raises(ValueError, match="between 1 and 128"):
        _heapsite.start(2**70, 0)
    with pytest.raises(TypeError):
        _heapsite.start(None, 0)
    with pytest.raises(ValueError, match="sample_every must be 0"):
        _heapsite.start(1, -1)
    with pytest.raises(ValueError, match="sample_every must be 0"):
        _heapsite.start(1, 2**70)
    with pytest.raises(TypeError, match="sample_every must be an int"):
        _heapsite.start(1, "512KiB")
    with pytest.raises(TypeError, match="takes frames and sample_every"):
        _heapsite.start(1)
    assert not heapsite.is_tracing()


def test_wrong_statistics_key():
    heapsite.start(1)
    snap = heapsite.snapshot()
    with pytest.raises(ValueError, match="unknown key_type: 'line'"):
        snap.statistics("line")
    with pytest.raises(ValueError, match="cumulative mode cannot"):
        snap.statistics("traceback", cumulative=True)
    with pytest.raises(TypeError, match="expects a Snapshot"):
        snap.compare_to("not a snapshot")
    assert heapsite.is_tracing()


def test_snapshot_needs_tracing():
    with pytest.raises(RuntimeError, match="call heapsite.start"):
        heapsite.snapshot()


def good_file(tmp_path):
    heapsite.start(1)
    data = [str(i) for i in range(1000)]
    path = tmp_path / "good.heapsite"
    heapsite.snapshot().dump(path)
    del data
    return path


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "truncated or corrupt"),
        (lambda b: b[:10], "not a heapsite snapshot"),
        (lambda b: b"", "not a heapsite snapshot"),
        (lambda b: b'{"format": "heapsite-snapshot"}', "not a heapsite snapshot"),
        (lambda b: os.urandom(4096), "not a heapsite snapshot"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), "corrupt"),
        (
            lambda b: (
                b[:18] + b[18:26] + zlib.compress(b'{"format":"heapsite-snapshot","version":99}')
            ),
            "truncated or corrupt",
        ),
    ],
)
def test_damaged_or_foreign_files(tmp_path, damage, message):
    path = good_file(tmp_path)
    data = path.read_bytes()
    bad = tmp_path / "bad.heapsite"
    bad.write_bytes(damage(data))
    with pytest.raises(heapsite.SnapshotFileError, match=message) as info:
        heapsite.Snapshot.load(bad)
    assert str(bad) in str(info.value)
    assert "\n" not in str(info.value)
    assert heapsite.is_tracing()
    # The good file is still good.
    assert heapsite.Snapshot.load(path).statistics("lineno")


def test_future_version_is_named(tmp_path):
    payload = zlib.compress(b'{"format":"heapsite-snapshot","version":99}')
    bad = tmp_path / "future.heapsite"
    bad.write_bytes(heapsite.Snapshot.MAGIC + len(payload).to_bytes(8, "little") + payload)
    with pytest.raises(heapsite.SnapshotFileError, match="version 99 is not supported"):
        heapsite.Snapshot.load(bad)


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        heapsite.Snapshot.load("/nonexistent/heapsite.snap")
