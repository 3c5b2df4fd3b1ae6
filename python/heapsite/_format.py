"""Number formatting shared by every heapsite report."""

from __future__ import annotations


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
    if value < 0:
        raise ValueError(f"cannot parse size {text!r}: sizes are not negative")
    return int(value * _UNITS[unit])
