"""Frames of the interpreter's import machinery, which reports fold into
the line that imported (the Python side of src/report/plumbing.rs, for
what Python renders: the joined table's lines, the pytest summary)."""

from __future__ import annotations


def is_import_system(frame) -> bool:
    """Whether a (filename, lineno, function) frame is importlib's."""
    filename, _, function = frame[:3]
    return (
        filename.startswith("<frozen importlib.")
        or filename == "<frozen zipimport>"
        or filename.endswith(("/importlib/_bootstrap.py", "/importlib/_bootstrap_external.py"))
        or (filename.endswith("/importlib/__init__.py") and function == "import_module")
    )


def fold_import_system(frames) -> list:
    """The frames without importlib's; all of them if that is all there is."""
    return [f for f in frames if not is_import_system(f)] or list(frames)
