"""The Python half of LD_PRELOAD mode (see src/preload.rs): `begin()` runs
between interpreter start-up and the program's first line, `finish()` when
the program ends (atexit, or os._exit), and writes the capture.

Settings, from the environment:

    HEAPSITE_OUTPUT        capture path, %p standing for the program's pid
                           (default heapsite-%p.capture)
    HEAPSITE_FRAMES        frames per call site, 1..128 (default 16)
    HEAPSITE_MALLOC        0: do not track malloc, mmap & co. (default 1)
    HEAPSITE_NATIVE        1: native (C) frames in the sites of those (default 0)
    HEAPSITE_FOLLOW_FORK   1: forked children write <output stem>.<pid><ext>
    HEAPSITE_INTERVAL      seconds between memory-over-time samples (0.01)
    HEAPSITE_KINDS         0: skip the kinds and joined tables at exit (default 1)
    HEAPSITE_TRACEMALLOC   1: `import tracemalloc` gets heapsite.tracemalloc
    HEAPSITE_VERBOSE       1: say on stderr where the capture went
    HEAPSITE_DUMP_SIGNAL   a signal (USR2, SIGUSR1, 12; 1 for SIGUSR2) on which
                           the running program writes a capture of itself,
                           <output stem>.dump<n><ext> (default: none)
    HEAPSITE_HTTP          HOST:PORT (or a port, for loopback) at which the
                           running program serves /debug/pprof/heap, Go's
                           pprof endpoint (default: none; see heapsite.serve)
    HEAPSITE_SAMPLE        a size (512KiB): record a sample, one allocation per
                           that many bytes on average, weighted so figures are
                           estimates (default: every allocation)

A bad setting is a one-line error on stderr and exit status 2, before the
program runs; but an endpoint that cannot start (HEAPSITE_HTTP names no
address, or its port is taken) is one line on stderr, and the program runs
on without it.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable, Mapping

from . import MAX_FRAMES, _capture, _core, _serve
from . import _own as own_work
from ._format import sample_rate

_settings: dict = {}
_state = {"parent": 0, "done": False}


class SettingError(Exception):
    pass


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = environ.get(name, "").strip().lower()
    if value == "":
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingError(f"{name} must be 1 or 0, got {value!r}")


def _number(
    environ: Mapping[str, str],
    name: str,
    default: float,
    kind: Callable[[str], float],
    low: float,
    high: float,
) -> float:
    text = environ.get(name, "").strip()
    if text == "":
        return default
    try:
        value = kind(text)
    except ValueError:
        raise SettingError(f"{name} must be a number, got {text!r}") from None
    if not low <= value <= high:
        raise SettingError(f"{name} must be between {low} and {high}, got {text}")
    return value


# Signals a dump may not take: they cannot be caught, or already mean
# something to a program and to `heapsite run` (SIGINT and SIGTERM end it,
# with a capture).
_NOT_FOR_DUMPS = {"SIGKILL", "SIGSTOP", "SIGINT", "SIGTERM"}


def _dump_signal(environ: Mapping[str, str], name: str) -> int | None:
    """The signal number HEAPSITE_DUMP_SIGNAL names, or None (no dumps)."""
    import signal

    text = environ.get(name, "").strip()
    if text.lower() in ("", "0", "off", "no", "false"):
        return None
    if text.lower() in ("1", "on", "yes", "true"):
        return int(signal.SIGUSR2)
    try:
        number = signal.Signals(int(text)) if text.isdigit() else None
    except ValueError:
        number = None
    if number is None and not text.isdigit():
        wanted = text.upper() if text.upper().startswith("SIG") else "SIG" + text.upper()
        number = getattr(signal.Signals, wanted, None)
    if number is None or number.name in _NOT_FOR_DUMPS:
        raise SettingError(
            f"{name} must name a signal a program can catch other than SIGINT and SIGTERM "
            f"(USR2, SIGUSR1, 12; 1 for SIGUSR2), got {text!r}"
        )
    return int(number)


DEFAULT_OUTPUT = "heapsite-%p.capture"


def output_for(template: str, pid: int) -> str:
    """The capture path for the program with this pid (%p in the setting)."""
    return template.replace("%p", str(pid))


def read_settings(environ: Mapping[str, str] = os.environ) -> dict:
    """The HEAPSITE_* settings, checked; raises SettingError naming the bad
    one. `heapsite run` checks them the same way before it starts anything."""
    return {
        "output": output_for(environ.get("HEAPSITE_OUTPUT") or DEFAULT_OUTPUT, os.getpid()),
        "frames": _number(environ, "HEAPSITE_FRAMES", 16, int, 1, MAX_FRAMES),
        "malloc": _flag(environ, "HEAPSITE_MALLOC", True),
        "native": _flag(environ, "HEAPSITE_NATIVE", False),
        "follow_fork": _flag(environ, "HEAPSITE_FOLLOW_FORK", False),
        "interval": _number(environ, "HEAPSITE_INTERVAL", 0.01, float, 0.001, 3600.0),
        "kinds": _flag(environ, "HEAPSITE_KINDS", True),
        "tracemalloc": _flag(environ, "HEAPSITE_TRACEMALLOC", False),
        "verbose": _flag(environ, "HEAPSITE_VERBOSE", False),
        "dump_signal": _dump_signal(environ, "HEAPSITE_DUMP_SIGNAL"),
        "sample": _sample(environ, "HEAPSITE_SAMPLE"),
        # Checked as the endpoint starts: a bad one costs the endpoint only.
        "http": environ.get("HEAPSITE_HTTP", "").strip(),
    }


def _sample(environ: Mapping[str, str], name: str) -> int:
    """Bytes between samples HEAPSITE_SAMPLE asks (0: every allocation)."""
    text = environ.get(name, "")
    try:
        return sample_rate(text)
    except ValueError as e:
        raise SettingError(f"{name}: {e}") from None


def child_output(output: str, pid: int) -> str:
    """`prof.capture` -> `prof.<pid>.capture` for a forked child."""
    stem, ext = os.path.splitext(output)
    return f"{stem}.{pid}{ext}"


def begin() -> None:
    try:
        settings = read_settings()
    except SettingError as e:
        sys.stderr.write(f"heapsite: error: {e}\n")
        sys.stderr.flush()
        raise SystemExit(2) from None
    _settings.update(settings)
    _state["parent"] = os.getpid()
    if settings["tracemalloc"]:
        from . import tracemalloc as drop_in

        drop_in.install()
    # What finish() needs is imported now, not counted as the program's.
    import json  # noqa: F401

    from . import _heap  # noqa: F401

    _capture.started_at = __import__("time").time()
    _core.start(settings["frames"], settings["sample"])
    if settings["malloc"]:
        _core.set_native(True)
        _core.set_native_frames(settings["native"])
    _core.timeline_start(settings["interval"])
    _capture.options.update(
        native=settings["malloc"],
        native_frames=settings["malloc"] and settings["native"],
        kinds=settings["kinds"],
    )
    if settings["dump_signal"] is not None:
        dump_on_signal(settings["dump_signal"], _output_here)
    serve_if_asked(settings["http"])
    atexit.register(finish)
    _capture.on_sigterm(finish, in_children=settings["follow_fork"])
    os.register_at_fork(after_in_child=_core.timeline_after_fork)


def serve_if_asked(address: str) -> None:
    """HEAPSITE_HTTP: the pprof endpoint, with one line on stderr saying
    where, or why not (the program runs on either way)."""
    if not address:
        return
    try:
        bound = _serve.serve(address)
    except (ValueError, OSError, RuntimeError) as e:
        sys.stderr.write(f"heapsite: HEAPSITE_HTTP: {e}; no pprof endpoint\n")
        return
    sys.stderr.write(f"heapsite: pprof endpoint at {_serve.url(bound)}\n")


def _output_here() -> str:
    """This process's capture path (a forked child's has its pid)."""
    output: str = _settings["output"]
    pid = os.getpid()
    return output if pid == _state["parent"] else child_output(output, pid)


def dump_on_signal(signum: int, output_here: Callable[[], str]) -> None:
    """HEAPSITE_DUMP_SIGNAL: on `signum`, a capture of the running program
    beside the one at exit (`app.1234.capture` -> `app.1234.dump1.capture`,
    `output_here()` naming the latter); one line on stderr says where, and
    the program goes on. The handler runs, as any Python signal handler,
    in the main thread between two bytecodes: a program inside one long C
    call dumps when it returns."""
    import signal

    def dump(signum: int, _frame: object) -> None:
        if _state["done"] or not _core.is_tracing():
            return
        stem, ext = os.path.splitext(output_here())
        try:
            written = _capture.dump(f"{stem}.dump%n{ext}")
        except Exception as e:  # the program goes on whatever happens here
            sys.stderr.write(f"heapsite: could not write a capture on signal {signum}: {e}\n")
            return
        sys.stderr.write(f"heapsite: capture of the running program written to {written}\n")

    signal.signal(signum, dump)


def finish() -> None:
    """Writes the capture once; in a forked child only with HEAPSITE_FOLLOW_FORK."""
    if _state["done"] or not _settings:
        return
    _state["done"] = True
    _core.preload_finished()
    pid = os.getpid()
    output = _settings["output"]
    if pid != _state["parent"]:
        if not _settings["follow_fork"]:
            return
        output = child_output(output, pid)
    # The timeline's samples and the capture's tables are heapsite's own
    # objects: not in the capture's figures.
    entered = own_work.enter()
    try:
        timeline = _core.timeline_stop()
        if not _core.is_tracing():
            return  # the program stopped heapsite itself
        _core.set_native(False)
        _capture.write(
            output,
            native=_settings["malloc"],
            native_frames=_settings["malloc"] and _settings["native"],
            timeline=timeline,
            kinds=_settings["kinds"],
        )
    except Exception as e:  # the program's exit must not fail because of us
        sys.stderr.write(f"heapsite: could not write the capture {output}: {e}\n")
        return
    finally:
        own_work.leave(entered)
    _say_if_records_were_dropped()
    if _settings["verbose"]:
        sys.stderr.write(f"heapsite: capture written to {output}\n")


def _say_if_records_were_dropped() -> None:
    """One line when heapsite ran out of memory for its own bookkeeping and
    left allocations unrecorded: the capture then undercounts."""
    dropped = _core.stats()["dropped"]
    if dropped:
        sys.stderr.write(
            f"heapsite: {dropped} allocations not recorded: no memory was left "
            "for heapsite's bookkeeping (the capture undercounts)\n"
        )
