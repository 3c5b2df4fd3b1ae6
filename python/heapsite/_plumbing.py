"""Frames of the interpreter's import machinery, which reports fold into
the line that imported (the Python side of src/report/plumbing.rs, for
what Python renders: the joined table's lines, the pytest summary)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Sequence

    Frame = tuple[str, int, str]


def is_import_system(frame: Frame) -> bool:
    """Whether a (filename, lineno, function) frame is importlib's."""
    filename, _, function = frame[:3]
    return (
        filename.startswith("<frozen importlib.")
        or filename == "<frozen zipimport>"
        or filename.endswith(("/importlib/_bootstrap.py", "/importlib/_bootstrap_external.py"))
        or (filename.endswith("/importlib/__init__.py") and function == "import_module")
    )


def fold_import_system(frames: Sequence[Frame]) -> list[Frame]:
    """The frames without importlib's; all of them if that is all there is."""
    return [f for f in frames if not is_import_system(f)] or list(frames)
