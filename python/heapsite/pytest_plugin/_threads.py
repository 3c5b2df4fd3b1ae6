"""Which call sites belong to the test's own thread (for the pytest plugin).

The engine records Python frames per call site, not thread ids. A site whose
frames pass through a thread's entry point (threading's `_bootstrap` /
`_bootstrap_inner`, which every threading.Thread, ThreadPoolExecutor worker,
Timer and logging QueueListener runs under) was allocated by another thread.
When the test itself runs outside the main thread, only a site whose whole
stack was recorded (shallower than the frame limit) and starts at such an
entry point is taken as another thread's: the test thread's stack under
pytest is deeper than the limit.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from .._snapshot import Frame

    # Whether a site with these frames was allocated by a thread other than the test's.
    Foreign = Callable[[Sequence], bool]

_ENTRY_POINTS = ("_bootstrap", "_bootstrap_inner")
_THREADING = os.sep + "threading.py"


def _is_entry(frame: tuple) -> bool:
    filename, name = frame[0], frame[-1]
    return filename.endswith(_THREADING) and name.rsplit(".", 1)[-1] in _ENTRY_POINTS


def foreign_test(frame_limit: int) -> Foreign:
    """A function frames -> bool: whether a site with these frames (most
    recent first, as (file, line, name) or (file, name) tuples, or Frame
    records) was allocated by a thread other than the one running the test.
    The same function is returned for the same kind of test thread, so what
    it told can be kept."""
    if threading.current_thread() is threading.main_thread():
        return _foreign_to_main
    return _FOREIGN_TO_OTHER.setdefault(frame_limit, _foreign_to_other(frame_limit))


def _foreign_to_main(frames: Sequence) -> bool:
    return any(_is_entry(_astuple(f)) for f in frames)


def _foreign_to_other(frame_limit: int) -> Foreign:
    def foreign(frames: Sequence) -> bool:
        return 0 < len(frames) < frame_limit and _is_entry(_astuple(frames[-1]))

    return foreign


_FOREIGN_TO_OTHER: dict = {}


def _astuple(frame: tuple | Frame) -> tuple:
    if isinstance(frame, tuple):
        return frame
    return (frame.filename, frame.lineno, frame.name)
