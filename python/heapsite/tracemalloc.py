"""A drop-in for the standard library's `tracemalloc`, on heapsite's engine.

    import heapsite.tracemalloc as tracemalloc     # instead of `import tracemalloc`

    heapsite.tracemalloc.install()   # or: make `import tracemalloc` everywhere
                                     # (third-party code, ResourceWarning's
                                     # "Object allocated at") get this module

This module is the running interpreter's own `Lib/tracemalloc.py`, executed
with heapsite's engine in place of the `_tracemalloc` C module: the same
classes, arguments, defaults, errors and printed text as the standard library
of this Python version. Differences that only the interpreter's built-in
tracer can avoid are listed in heapsite's README.
"""

from __future__ import annotations

import importlib.util
import sys

_ENGINE_IMPORTS = (
    ("from _tracemalloc import *", "from heapsite._tracemalloc import *"),
    (
        "from _tracemalloc import _get_object_traceback, _get_traces",
        "from heapsite._tracemalloc import _get_object_traceback, _get_traces",
    ),
)


def _load_stdlib_source() -> tuple[str, str]:
    spec = importlib.util.find_spec("tracemalloc")
    if spec is None or spec.loader is None or not spec.origin:
        raise ImportError("heapsite.tracemalloc: the standard library's tracemalloc is missing")
    source = spec.loader.get_source("tracemalloc")  # type: ignore[attr-defined]  # a source loader's
    for original, ours in _ENGINE_IMPORTS:
        if original not in source:
            raise ImportError(
                f"heapsite.tracemalloc: {spec.origin} does not import its C half as expected "
                f"({original!r}); this Python version is not supported"
            )
        source = source.replace(original, ours)
    return source, spec.origin


def _populate(namespace: dict) -> None:
    source, origin = _load_stdlib_source()
    exec(compile(source, origin, "exec"), namespace)


def install() -> None:
    """Makes `import tracemalloc` return this module from now on (code that
    imported tracemalloc earlier keeps the module it has)."""
    sys.modules["tracemalloc"] = sys.modules[__name__]


def uninstall() -> None:
    """Puts the standard library's tracemalloc back for later imports."""
    if sys.modules.get("tracemalloc") is sys.modules[__name__]:
        del sys.modules["tracemalloc"]


_populate(globals())
