"""heapsite's command line.

    heapsite run [-o FILE] [--frames N] [--native] [--follow-fork] [--top N]
                 script.py [args...] | -m module [args...]
    heapsite report FILE [--format text|json|html|pprof] [-o OUT] [--top N]
    heapsite diff OLD NEW [--view peak|total|live] [--top N]
    heapsite preload-path
    heapsite attach PID [--duration 30s] [-o FILE] | detach PID   (docs/attach.md)

`run` starts the program in a new interpreter with heapsite preloaded
(LD_PRELOAD), so it is traced from its first line, memory that C code takes
with malloc or mmap included (--native adds the C frames to its sites). When
the program ends (normally, by sys.exit(), by an uncaught exception or by
os._exit()) its capture is written to FILE and the text report goes to
stderr. The program's arguments, standard streams, the interpreter's options
and exit status pass through unchanged, and signals reach it as they would
without heapsite (see _launcher.py). FILE is written into when it is a
device or a FIFO, replaced whole when it is a regular file (src/output.rs).

`report` renders a capture (or a snapshot file from Snapshot.dump) again,
in any format. Bad input gets one error line and exit status 2.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import stat
import sys
import sysconfig

from . import (
    MAX_FRAMES,
    Snapshot,
    SnapshotFileError,
    __version__,
    _capture,
    _core,
    _format,
    _launcher,
    _preload,
    _serve,
)
from ._snapshot import KEY_TYPES, VIEWS

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import BinaryIO

FORMATS = ("text", "json", "html", "pprof")


def frames_arg(text: str) -> int:
    """--frames as `heapsite run` and `heapsite attach` take it."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--frames takes a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_FRAMES:
        raise argparse.ArgumentTypeError(
            f"--frames must be between 1 and {MAX_FRAMES}, got {value}"
        )
    return value


def _sample_arg(text: str) -> str:
    """--sample SIZE, checked here; the program reads it as HEAPSITE_SAMPLE."""
    try:
        _format.sample_rate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _show_import_system_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--show-import-system",
        action="store_true",
        help="show importlib's frames (by default an import's memory is the importing line's)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heapsite", description="Memory profiler for Python: what uses memory, and where."
    )
    parser.add_argument("--version", action="version", version=f"heapsite {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a script or module and report its memory")
    run.add_argument(
        "-o",
        "--output",
        help="capture file, %%p for the program's pid (default heapsite-<name>.%%p.capture)",
    )
    # Options left unset keep what HEAPSITE_* says, as the preloaded library
    # reads it; given, they take precedence.
    run.add_argument(
        "--frames", type=frames_arg, help="frames per call site (default HEAPSITE_FRAMES, else 16)"
    )
    run.add_argument(
        "--native",
        action="store_true",
        help="native (C) frames in the sites of malloc'd memory (slower)",
    )
    run.add_argument(
        "--follow-fork",
        action="store_true",
        help="forked children write their own capture (<output stem>.<pid>.capture)",
    )
    run.add_argument(
        "--dump-signal",
        metavar="SIG",
        help="on this signal (USR2, SIGUSR1, 12) the program writes a capture of itself "
        "and goes on (default HEAPSITE_DUMP_SIGNAL, else none)",
    )
    run.add_argument(
        "--sample",
        metavar="SIZE",
        type=_sample_arg,
        help="record a sample, one allocation per SIZE bytes on average (512KiB), each "
        "weighted so figures are unbiased estimates; cheap enough to leave on "
        "(default HEAPSITE_SAMPLE, else every allocation)",
    )
    run.add_argument(
        "--http",
        metavar="ADDR",
        help="serve the running program's heap profile at http://ADDR/debug/pprof/heap "
        "for go tool pprof, Parca, Pyroscope (HOST:PORT, or a port for loopback; "
        "default HEAPSITE_HTTP, else none)",
    )
    run.add_argument("--top", type=_positive, default=10, help="rows per table (default 10)")
    _show_import_system_option(run)
    run.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing of heapsite's unless it fails"
    )
    run.add_argument("-m", dest="module", help="run a library module as a script")
    run.add_argument("target", nargs=argparse.REMAINDER, help="script.py [args...]")

    report = commands.add_parser(
        "report", help="render a capture (or snapshot) file; several captures as one"
    )
    report.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="a capture, or several (processes of one program: figures added, "
        "with a per-process breakdown), or a snapshot file",
    )
    report.add_argument("--format", choices=FORMATS, default="text")
    report.add_argument("-o", "--output", help="write the report here (default: stdout)")
    report.add_argument("--top", type=_positive, default=10, help="rows per table (default 10)")
    report.add_argument("--view", choices=VIEWS, default="peak", help="snapshot files only")
    report.add_argument("--key", choices=KEY_TYPES, default="lineno", help="snapshot files only")
    _show_import_system_option(report)

    diff = commands.add_parser("diff", help="per-line change between two captures")
    diff.add_argument("old", help="a capture, or several joined by commas (added up)")
    diff.add_argument("new", help="a capture, or several joined by commas (added up)")
    diff.add_argument("--view", choices=("peak", "total", "live"), default="peak")
    diff.add_argument("--top", type=_positive, default=10)
    _show_import_system_option(diff)

    commands.add_parser("preload-path", help="print the library to put in LD_PRELOAD")
    # Parsed by _attach.py (listed here for --help).
    commands.add_parser("attach", help="start tracing a running Python process")
    commands.add_parser("detach", help="write an attached process's capture, stop tracing")
    return parser


def _error(message: str) -> int:
    print(f"heapsite: error: {message}", file=sys.stderr)
    return 2


def preload_path() -> str:
    return os.path.abspath(_core.PATH)


def _can_preload() -> bool:
    """Preloading hooks Py_BytesMain (or, where the interpreter contains
    libpython and exports its symbols, as Debian's does, the C library's call
    of main); a python that exports no symbols runs in-process (as does any
    with HEAPSITE_IN_PROCESS=1)."""
    if os.environ.get("HEAPSITE_IN_PROCESS", "") not in ("", "0"):
        return False
    return bool(sysconfig.get_config_var("Py_ENABLE_SHARED"))


def _command(args: argparse.Namespace) -> list:
    """The program's command line, with this interpreter's options."""
    python = [sys.executable, *_launcher.interpreter_options()]
    if args.module is not None:
        return [*python, "-m", args.module, *args.target]
    return [*python, *args.target]


def _default_output(args: argparse.Namespace) -> str:
    """Named after the program and its pid (%p: known once it runs)."""
    name = args.module or os.path.splitext(os.path.basename(args.target[0]))[0]
    return f"heapsite-{name}.%p.capture"


def _program_env(args: argparse.Namespace, output: str) -> dict:
    """The program's environment: HEAPSITE_* as inherited, the command
    line's options taking precedence."""
    env = dict(os.environ)
    env["HEAPSITE_OUTPUT"] = output
    if args.frames is not None:
        env["HEAPSITE_FRAMES"] = str(args.frames)
    if args.native:
        env["HEAPSITE_NATIVE"] = "1"
    if args.follow_fork:
        env["HEAPSITE_FOLLOW_FORK"] = "1"
    if args.dump_signal is not None:
        env["HEAPSITE_DUMP_SIGNAL"] = args.dump_signal
    if args.sample is not None:
        env["HEAPSITE_SAMPLE"] = args.sample
    if args.http is not None:
        env["HEAPSITE_HTTP"] = args.http
    return env


class _Capture:
    """Where the program's capture goes (known once it has a pid), and what
    was there before, to tell a stale file from this run's."""

    def __init__(self, template: str):
        self.template = template
        self.path = ""
        self.before: tuple[int, int, int, int, int] | None = None

    def program_started(self, pid: int) -> None:
        self.path = _preload.output_for(self.template, pid)
        self.before = _identity(self.path)


def _run_preloaded(args: argparse.Namespace, env: dict, capture: _Capture) -> int:
    env = dict(env)
    env["LD_PRELOAD"] = " ".join(p for p in (preload_path(), env.get("LD_PRELOAD", "")) if p)
    return _launcher.run(_command(args), env, capture.program_started)


def _run_in_process(args: argparse.Namespace, settings: dict, capture: _Capture) -> int:
    """The fallback for a python without a shared libpython."""
    import runpy
    import traceback

    if settings["native"]:
        print("heapsite: --native needs a python built with --enable-shared", file=sys.stderr)
    capture.program_started(os.getpid())
    output = capture.path
    sys.argv = [args.module, *args.target] if args.module else list(args.target)
    if args.module is None:
        sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
    if settings["tracemalloc"]:
        from . import tracemalloc as drop_in

        drop_in.install()
    import time

    _capture.started_at = time.time()
    _core.start(settings["frames"], settings["sample"])
    _capture.on_sigterm(lambda: _capture.write(output))
    if settings["dump_signal"] is not None:
        _preload.dump_on_signal(settings["dump_signal"], lambda: output)
    _preload.serve_if_asked(settings["http"])
    status = 0
    try:
        if args.module is not None:
            runpy.run_module(args.module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        status = -signal.SIGINT  # plain python ends killed by SIGINT
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        _capture.write(output)
        _core.stop()
    return status


def _identity(path: str) -> tuple[int, int, int, int, int] | None:
    """What tells one file at `path` from another written there later (the
    capture is written beside and renamed over a regular file); None if
    there is nothing there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode)


def _how_it_ended(status: int) -> str:
    return f"killed by signal {-status}" if status < 0 else f"exit status {status}"


def _tell_about_the_capture(args: argparse.Namespace, capture: _Capture) -> bool:
    """Says where the capture went, with the text report (nothing with
    -q); False if the program ended without writing one."""
    output = capture.path
    after = _identity(output) if output else None
    if after is None or after == capture.before:
        return False
    if args.quiet:
        return True
    if not stat.S_ISREG(after[-1]):
        print(
            f"heapsite: the capture went into {output} (not a regular file: no report)",
            file=sys.stderr,
        )
        return True
    text = _core.render_report(output, "text", args.top, args.show_import_system).decode()
    # How to read it again, with the interpreter's own name for heapsite:
    # a user of ./scripts/try-julia has no `heapsite` on PATH.
    again = f"{sys.executable} -m heapsite report {output}"
    print(
        "\n" + text + f"heapsite: capture written to {output}\n"
        f"heapsite: see it in a browser: {again} --format html -o report.html",
        file=sys.stderr,
    )
    return True


def _missing_module(name: str) -> bool:
    """Whether `python -m name` would fail to find the module's top-level
    package (looked up as the program would, from the working directory,
    without importing anything)."""
    import importlib.util

    sys.path.insert(0, os.getcwd())
    try:
        return importlib.util.find_spec(name.partition(".")[0]) is None
    except (ImportError, ValueError):
        return True
    finally:
        sys.path.pop(0)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.module is None and not args.target:
        parser.error("run needs a script (or -m module) to run")
    if args.module is None and not os.path.exists(args.target[0]):
        parser.error(f"no such script: {args.target[0]}")
    if args.module is not None and _missing_module(args.module):
        # As python -m says it, and with its status: nothing was run.
        print(f"{sys.executable}: No module named {args.module}", file=sys.stderr)
        return 1
    template = os.path.abspath(args.output or _default_output(args))
    if os.path.isdir(template):
        parser.error(f"the output {template} is a directory")
    if not os.path.isdir(os.path.dirname(template)):
        parser.error(f"no directory {os.path.dirname(template)} for the output")
    env = _program_env(args, template)
    try:
        settings = _preload.read_settings(env)
    except _preload.SettingError as e:
        return _error(str(e))
    if settings["http"]:
        # --http, or HEAPSITE_HTTP as inherited: either spelling of a bad
        # address is refused before the program runs.
        try:
            _serve.check_address(settings["http"])
        except ValueError as e:
            return _error(f"{'--http' if args.http is not None else 'HEAPSITE_HTTP'}: {e}")
    # Never removed beforehand: it may be a device, a FIFO or a link. A
    # stale capture is told from this run's by its identity.
    capture = _Capture(template)
    if _can_preload():
        status = _run_preloaded(args, env, capture)
    else:
        status = _run_in_process(args, settings, capture)
    if not _tell_about_the_capture(args, capture):
        print(
            f"heapsite: the program ended without a capture ({_how_it_ended(status)})",
            file=sys.stderr,
        )
    return _launcher.end_like(status)


def _to_stdout(data: bytes) -> int:
    """Writes a report to standard output. A reader that stopped reading
    (`heapsite report x | head`) ends heapsite quietly; any other failure
    (a full disk) is one error line."""
    try:
        sys.stdout.flush()
        _write_all(sys.stdout.buffer, data)
        sys.stdout.flush()
        return 0
    except BrokenPipeError:
        _discard_stdout()
        return 1
    except OSError as e:
        _discard_stdout()
        return _error(f"cannot write the report to standard output: {e.strerror or e}")


def _write_all(stream: BinaryIO, data: bytes) -> None:
    """Writes all of `data`: unbuffered (python -u, PYTHONUNBUFFERED), stdout's
    binary layer is the raw file, whose write may take only part of it."""
    view = memoryview(data)
    while view:
        view = view[stream.write(view) or 0 :]


def _discard_stdout() -> None:
    """What is still buffered for stdout would fail again when the
    interpreter flushes it at exit, with a traceback-like message."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # stdout is not a file here (an in-process caller's)


def _emit(args: argparse.Namespace, data: bytes, what: str) -> int:
    """The rendered report to -o FILE, or to stdout."""
    if args.output is None:
        return _to_stdout(data)
    try:
        _core.write_file(args.output, data)
    except OSError as e:
        return _error(str(e))
    print(f"heapsite: {what} written to {args.output}", file=sys.stderr)
    return 0


def _report_snapshot(args: argparse.Namespace, path: str) -> int:
    try:
        snap = Snapshot.load(path)
    except SnapshotFileError as e:
        return _error(str(e))
    except OSError as e:
        return _error(f"cannot read {path}: {e.strerror or e}")
    view = {"live": snap, "peak": snap.peak(), "total": snap.total()}[args.view]
    text = io.StringIO()
    view.top(args.top, key=args.key, file=text)
    return _emit(args, text.getvalue().encode(), "text report")


def _is_snapshot(path: str) -> bool:
    if _capture.is_capture(path):
        return False
    with open(path, "rb") as f:
        return f.read(len(Snapshot.MAGIC)) == Snapshot.MAGIC


def _report(args: argparse.Namespace) -> int:
    for path in args.files:
        try:
            if not _is_snapshot(path):
                continue
        except OSError as e:
            return _error(f"cannot read {path}: {e.strerror or e}")
        if len(args.files) > 1:
            return _error(
                f"{path} is a snapshot file (Snapshot.dump), which renders alone; "
                "several captures of heapsite run render as one"
            )
        if args.format != "text":
            return _error(
                f"{path} is a snapshot file (Snapshot.dump), which renders "
                "as text only; captures of heapsite run render in every format"
            )
        return _report_snapshot(args, path)
    if args.format == "pprof" and args.output is None and sys.stdout.isatty():
        return _error("pprof output is binary: give -o FILE")
    files = args.files[0] if len(args.files) == 1 else args.files
    try:
        data = _core.render_report(files, args.format, args.top, args.show_import_system)
    except ValueError as e:
        return _error(str(e))
    return _emit(args, data, f"{args.format} report")


def _diff(args: argparse.Namespace) -> int:
    try:
        text = _core.render_diff(
            args.old.split(","), args.new.split(","), args.view, args.top, args.show_import_system
        )
    except ValueError as e:
        return _error(str(e))
    return _to_stdout(text.encode())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["attach"], ["detach"]):
        from . import _attach

        return _attach.main(argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args, parser)
    if args.command == "report":
        return _report(args)
    if args.command == "diff":
        return _diff(args)
    print(preload_path())
    return 0


if __name__ == "__main__":
    sys.exit(main())
