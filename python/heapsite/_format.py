"""Number formatting shared by every heapsite report."""

from __future__ import annotations

import math


def format_size(size: float, sign: bool = False) -> str:
    """A byte count as tracemalloc prints it: '1382 KiB', '+4.5 MiB', '48 B'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 100 and unit != "B":
            return ("%+.1f %s" if sign else "%.1f %s") % (size, unit)
        if abs(size) < 10 * 1024 or unit == "TiB":
            return ("%+.0f %s" if sign else "%.0f %s") % (size, unit)
        size /= 1024
    raise AssertionError("unreachable")


_UNITS = {
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
}


def parse_size(text: str) -> int:
    """'24 MB' -> 24000000, '1.5KiB' -> 1536 (pytest-memray's units)."""
    cleaned = str(text).strip().upper().replace(" ", "")
    number = cleaned.rstrip("KMGTIB")
    unit = cleaned[len(number) :] or "B"
    if unit not in _UNITS or not number:
        raise ValueError(
            f"cannot parse size {text!r}: expected a number and a unit such as '24 MB'"
        )
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"cannot parse size {text!r}: {number!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"cannot parse size {text!r}: {number!r} is not a finite number")
    if value < 0:
        raise ValueError(f"cannot parse size {text!r}: sizes are not negative")
    size = value * _UNITS[unit]
    if 0 < size < 1:
        raise ValueError(f"cannot parse size {text!r}: less than one byte")
    return int(size)


# The largest sampling rate the engine takes (src/py/api.rs).
MAX_SAMPLE_EVERY = 1 << 40


def sample_rate(every: object) -> int:
    """`sample_every` as the engine takes it: bytes between samples on
    average (an int, or a size such as '512 KiB'); 0, '0' or 'off' traces
    every allocation. Raises ValueError (TypeError) naming the problem."""
    if isinstance(every, bool) or not isinstance(every, (int, str)):
        raise TypeError(
            f"sample_every must be a number of bytes or a size such as '512 KiB', "
            f"got {type(every).__name__}"
        )
    if isinstance(every, str) and every.strip().lower() in ("", "0", "off", "no", "false"):
        return 0
    rate = every if isinstance(every, int) else parse_size(every)
    if not 0 <= rate <= MAX_SAMPLE_EVERY:
        raise ValueError(f"sample_every must be between 0 (off) and 1 TiB, got {every!r}")
    return rate
