"""heapsite's command line.

    heapsite run [--frames N] [-o FILE] [--top N] script.py [args...]
    heapsite run [--frames N] [-o FILE] [--top N] -m module [args...]
    heapsite report FILE [--view peak|live|total] [--key lineno|filename|traceback] [--top N]

`run` traces the program in this interpreter from its first line and, when it
ends (normally, by sys.exit() or by an uncaught exception), prints the call
sites that held the most memory at the peak and those still live at exit, and
writes the snapshot to FILE if asked. The program's arguments, standard
streams and exit status pass through unchanged; the report goes to stderr.

HEAPSITE_TRACEMALLOC=1 in the environment makes the program's own
`import tracemalloc` get heapsite.tracemalloc.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import traceback

from . import MAX_FRAMES, Snapshot, SnapshotFileError, _heapsite, snapshot, start, stop
from ._snapshot import KEY_TYPES, VIEWS


def _frames(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--frames takes a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_FRAMES:
        raise argparse.ArgumentTypeError(
            f"--frames must be between 1 and {MAX_FRAMES}, got {value}"
        )
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heapsite", description="Memory profiler for Python: what uses memory, and where."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a script or module and report its memory")
    run.add_argument("--frames", type=_frames, default=16, help="frames per call site (default 16)")
    run.add_argument("-o", "--output", help="also write the snapshot to this file")
    run.add_argument("--top", type=_positive, default=10, help="rows per table (default 10)")
    run.add_argument("-m", dest="module", help="run a library module as a script")
    run.add_argument("target", nargs=argparse.REMAINDER, help="script.py [args...]")

    report = commands.add_parser("report", help="print a snapshot file written by run -o or dump()")
    report.add_argument("file")
    report.add_argument("--view", choices=VIEWS, default="peak")
    report.add_argument("--key", choices=KEY_TYPES, default="lineno")
    report.add_argument("--top", type=_positive, default=10)
    return parser


def _print_report(snap: Snapshot, limit: int, out) -> None:
    print("", file=out)
    snap.peak().top(limit, file=out)
    print("", file=out)
    snap.top(limit, file=out)


def _run(args, parser) -> int:
    if args.module is None and not args.target:
        parser.error("run needs a script (or -m module) to run")
    if args.module is not None:
        argv = [args.module, *args.target]
    else:
        path = args.target[0]
        if not os.path.exists(path):
            parser.error(f"no such script: {path}")
        argv = list(args.target)
    sys.argv = argv
    if os.environ.get("HEAPSITE_TRACEMALLOC", "") not in ("", "0"):
        # The program's own `import tracemalloc` gets heapsite's drop-in.
        from . import tracemalloc as drop_in

        drop_in.install()
    if args.module is None:
        sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
    status = 0
    # What the report needs is imported now, so that it is not counted as
    # the program's at exit.
    import fnmatch  # noqa: F401
    import linecache  # noqa: F401
    import pkgutil  # noqa: F401  (runpy.run_path imports it)

    start(args.frames)
    try:
        if args.module is not None:
            runpy.run_module(args.module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        status = e.code
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        # heapsite's own frames (the report being made) are not the program's.
        own = os.path.join(os.path.dirname(os.path.abspath(__file__)), "*")
        snap = snapshot().filter(exclude=[own, runpy.__file__, "<frozen runpy>"])
        stop()
        _print_report(snap, args.top, sys.stderr)
        if args.output:
            snap.dump(args.output)
            print(f"\nheapsite: snapshot written to {args.output}", file=sys.stderr)
    return status


def _report(args) -> int:
    try:
        snap = Snapshot.load(args.file)
    except (OSError, SnapshotFileError) as e:
        print(f"heapsite: error: {e}", file=sys.stderr)
        return 2
    view = {"live": snap, "peak": snap.peak(), "total": snap.total()}[args.view]
    view.top(args.top, key=args.key)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args, parser)
    return _report(args)


assert _heapsite  # the native core is importable before anything runs

if __name__ == "__main__":
    sys.exit(main())
