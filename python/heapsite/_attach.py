"""`heapsite attach PID` and `heapsite detach PID`: tracing a Python process
that was started without heapsite (docs/attach.md).

The attacher never runs Python code inside the target by itself. It writes
a session directory (a boot script, a `pending` marker) and has the target's
interpreter run the boot script in its main thread, at a safe point:

- CPython 3.14+: `sys.remote_exec(pid, script)` (PEP 768), the interpreter's
  own interface for this;
- CPython 3.9-3.13: gdb attaches for a moment, maps one page, writes a
  one-line starter into it and schedules it with `Py_AddPendingCall` (no
  Python code, no malloc, no lock of the program's taken in the stopped
  process); the interpreter runs it in the main thread at a safe point and
  the boot script unmaps the page.

The boot script (`_attach_boot.py`) answers in a `status` file, which the
attacher waits for. A target that reaches no safe point in time (its main
thread blocked in C, sleeping, waiting on a lock) is left unchanged: the
attacher cancels the session (`pending` renamed), and a late run does nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time

from . import __version__
from ._format import sample_rate
from .cli import frames_arg

REMOTE_EXEC = (3, 14)  # PEP 768
DEFAULT_TIMEOUT = 10.0
# Once the target has claimed the session, how long heapsite's code in it may
# take (a detach walks the heap and writes the capture).
RUNNING_TIMEOUT = 120.0
GDB_TIMEOUT = 60.0
GDB_TRIES = 5
POLL = 0.01


class AttachError(Exception):
    """Bad input or a refusal: one line, exit status 2."""

    status = 2


class AttachFailed(AttachError):
    """heapsite could not do it (safely): one line, exit status 1."""

    status = 1


# ---- the command line --------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "": 1.0}


def parse_duration(text: str) -> float:
    """'30s', '1.5m', '500ms', '2h' or plain seconds -> seconds (> 0)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|min|m|h|)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"a duration is a number with s, m, h or ms (30s, 2m, 500ms), got {text!r}"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not 0 < seconds <= 366 * 86400:
        raise argparse.ArgumentTypeError(f"a duration must be above 0 and within a year: {text!r}")
    return seconds


def _pid(text: str) -> int:
    try:
        pid = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a pid is a whole number, got {text!r}") from None
    if pid <= 0:
        raise argparse.ArgumentTypeError(f"a pid is a positive number, got {text!r}")
    return pid


def _timeout(text: str) -> float:
    return parse_duration(text)


class _Parser(argparse.ArgumentParser):
    """Errors are one line (heapsite: error: ...), exit status 2."""

    def error(self, message):
        raise AttachError(message)


def _parser(command: str) -> argparse.ArgumentParser:
    parser = _Parser(prog=f"heapsite {command}")
    parser.add_argument("pid", type=_pid, help="the process")
    parser.add_argument(
        "--timeout",
        type=_timeout,
        default=DEFAULT_TIMEOUT,
        help="how long the process may take to reach a safe point (default 10s)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing of heapsite's unless it fails"
    )
    parser.add_argument("--top", type=int, default=10, help="rows per table of the report")
    if command == "attach":
        parser.add_argument(
            "--duration",
            type=parse_duration,
            help="detach after this long (30s, 5m); without it, `heapsite detach PID` ends it",
        )
        parser.add_argument(
            "-o", "--output", help="capture file, %%p for the pid (default heapsite-<pid>.capture)"
        )
        parser.add_argument(
            "--frames", type=frames_arg, default=16, help="frames per call site (default 16)"
        )
        parser.add_argument(
            "--sample",
            metavar="SIZE",
            type=_sample_bytes,
            default=0,
            help="record a sample, one allocation per SIZE bytes on average (512KiB): "
            "cheap enough for a service under load (default: every allocation)",
        )
        parser.add_argument(
            "--no-kinds",
            action="store_true",
            help="skip the heap walk (object kinds) when the capture is written",
        )
    return parser


def _sample_bytes(text: str) -> int:
    """--sample SIZE as bytes (0: every allocation)."""
    try:
        return sample_rate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list) -> int:
    """`heapsite attach ...` / `heapsite detach ...` (argv[0] is the command)."""
    import signal

    command = argv[0]
    # SIGTERM is handled as Ctrl-C: a session under way is cancelled or
    # finished, and a --duration ends with the detach, not with tracing left on.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        args = _parser(command).parse_args(argv[1:])
        if command == "attach":
            return attach(args)
        return detach(args)
    except AttachError as e:
        print(f"heapsite: error: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print("heapsite: error: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---- the target -----------------------------------------------------------


class Target:
    def __init__(self, pid: int, version: tuple, exe: str, uid: int, gid: int):
        self.pid, self.version, self.exe, self.uid, self.gid = pid, version, exe, uid, gid

    @property
    def minor(self) -> str:
        return "%d.%d" % self.version


def _read(path: str, pid: int) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        raise AttachError(f"no process with pid {pid}") from None
    except PermissionError:
        raise AttachError(
            f"permission denied for process {pid}: run heapsite as its user or as root"
        ) from None


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _field(pattern: str, status: str, pid: int) -> str:
    """A field of /proc/PID/status, or an AttachError naming what is odd."""
    found = re.search(pattern, status, re.M)
    if found is None:
        raise AttachError(f"cannot read the owner of process {pid} from /proc/{pid}/status")
    return found.group(1)


def inspect(pid: int) -> Target:
    """The process, checked: it exists, heapsite may debug it, it runs the
    CPython this heapsite is built for. Raises AttachError naming the problem."""
    if pid == os.getpid():
        raise AttachError("heapsite cannot attach to itself")
    if not os.path.exists(f"/proc/{pid}"):
        raise AttachError(f"no process with pid {pid}")
    if not _alive(pid):
        raise AttachError(f"process {pid} has ended")
    status = _read(f"/proc/{pid}/status", pid)
    uid = int(_field(r"^Uid:\s+\d+\s+(\d+)", status, pid))
    gid = int(_field(r"^Gid:\s+\d+\s+(\d+)", status, pid))
    if os.geteuid() not in (0, uid):
        raise AttachError(
            f"permission denied for process {pid}: it runs as uid {uid}; "
            "run heapsite as that user or as root"
        )
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except FileNotFoundError:
        raise AttachError(f"process {pid} is not a Python process (a kernel thread)") from None
    except PermissionError:
        raise AttachError(
            f"permission denied for process {pid}: run heapsite as its user or as root"
        ) from None
    maps = _read(f"/proc/{pid}/maps", pid)
    found = re.search(r"/libpython(\d+)\.(\d+)(t?)d?\.so", maps)
    if found is None:
        name = os.path.basename(exe.replace(" (deleted)", ""))
        found = re.fullmatch(r"python(\d+)\.(\d+)(t?)d?", name)
    if found is None:
        if re.fullmatch(r"python\d?", os.path.basename(exe)):
            raise AttachError(f"cannot tell which CPython process {pid} runs ({exe})")
        raise AttachError(f"process {pid} is not a Python process ({exe})")
    version = (int(found.group(1)), int(found.group(2)))
    minor = "%d.%d" % version
    if found.group(3):
        raise AttachError(
            f"process {pid} runs the free-threaded build of CPython {minor}, "
            "which heapsite does not support"
        )
    own = "%d.%d" % sys.version_info[:2]
    if version != tuple(sys.version_info[:2]):
        raise AttachError(
            f"process {pid} runs CPython {minor}, this heapsite is built for {own}: "
            f"run python{minor} -m heapsite with heapsite installed for {minor}"
        )
    try:
        same = os.stat(f"/proc/{pid}/ns/mnt").st_ino == os.stat("/proc/self/ns/mnt").st_ino
    except OSError:
        same = True
    if not same:
        raise AttachError(
            f"process {pid} sees other files (another mount namespace, a container): "
            "run heapsite attach inside it"
        )
    return Target(pid, version, exe, uid, gid)


# ---- a session: the files the boot script reads and answers in ---------------


def _package_dir() -> str:
    return os.path.dirname(os.path.abspath(__file__))


def _boot_source(session: dict) -> str:
    with open(os.path.join(_package_dir(), "_attach_boot.py")) as f:
        source = f.read()
    line = "SESSION: dict = {}  # filled in by the attacher"
    if line not in source:
        raise AttachFailed("heapsite's boot script is damaged (reinstall heapsite)")
    return source.replace(line, f"SESSION = {session!r}")


def starter(boot: str, page: str = "0") -> str:
    """The statement the interpreter runs: the boot script, in a namespace
    of its own; nothing escapes it (names, exceptions, open files). When
    heapsite is imported already, what follows is heapsite's own work from
    the start (not in the capture); the boot script ends it."""
    own = os.path.join(_package_dir(), "_attach_boot.py")
    enter = (
        "(lambda o: bool(o) and o.enter())"
        "(getattr(__import__('sys').modules.get('heapsite'), '_own', None))"
    )
    read = f"(lambda f: (f.read(), f.close())[0])(b.open({boot!r}, 'rb'))"
    return (
        "# heapsite attach (heapsite/_attach.py)\n"
        "try:\n"
        f"    (lambda b, e: b.exec(b.compile({read}, {own!r}, 'exec'), "
        "{'__name__': '__heapsite_attach__', '__builtins__': b, "
        f"'PAGE': {page}, 'ENTERED': e}}))(__import__('builtins'), {enter})\n"
        "except BaseException:\n"
        "    pass\n"
    )


class Session:
    def __init__(
        self, target: Target, action: str, timeout: float, options: dict | None = None
    ) -> None:
        self.target = target
        self.dir = tempfile.mkdtemp(prefix=f"heapsite-{action}-{target.pid}-")
        self.boot = os.path.join(self.dir, "boot.py")
        self.script = os.path.join(self.dir, "start.py")
        session = {
            "dir": self.dir,
            "action": action,
            "version": list(target.version),
            "package": _package_dir(),
            "options": options or {},
            # Past this, a run does nothing even if not cancelled: when the
            # attacher is killed, nobody waits for it. Later than any wait.
            "deadline": time.time() + timeout + GDB_TRIES * (GDB_TIMEOUT + 1) + 10,
        }
        self._write(self.boot, _boot_source(session))
        self._write(self.script, starter(self.boot))
        self._write(os.path.join(self.dir, "pending"), "")
        if os.geteuid() == 0 and target.uid != 0:
            # The target reads the scripts and renames and writes in here.
            for path in (self.dir, self.boot, self.script, os.path.join(self.dir, "pending")):
                os.chown(path, target.uid, target.gid)

    @staticmethod
    def _write(path: str, text: str) -> None:
        with open(path, "w") as f:
            f.write(text)

    def status(self):
        try:
            with open(os.path.join(self.dir, "status")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def cancel(self) -> bool:
        """True if the target had not claimed the session (it never will)."""
        try:
            os.rename(os.path.join(self.dir, "pending"), os.path.join(self.dir, "cancelled"))
            return True
        except OSError:
            return False

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def wait(self, timeout: float) -> dict:
        """The boot script's answer. A target that did not claim the session
        in `timeout` seconds is left alone (the session cancelled)."""
        pid = self.target.pid
        deadline = time.monotonic() + timeout
        claimed = False
        while True:
            answer = self.status()
            if answer is not None:
                self.remove()
                return answer
            if not _alive(pid):
                self.remove()
                raise AttachFailed(f"process {pid} ended before heapsite's code ran in it")
            if time.monotonic() > deadline:
                if not claimed and self.cancel():
                    # Kept: a late run finds it cancelled, and does nothing.
                    raise AttachFailed(
                        f"process {pid} reached no safe point in {timeout:g}s (its main thread "
                        "is blocked in C code, sleeping or waiting): nothing was changed"
                    )
                if claimed:
                    raise AttachFailed(
                        f"heapsite's code in process {pid} has not answered in {timeout:g}s"
                    )
                claimed = True  # it is running now: give it time to finish
                deadline = time.monotonic() + RUNNING_TIMEOUT
                timeout = RUNNING_TIMEOUT
            time.sleep(POLL)


# ---- injection -----------------------------------------------------------


def _inject(session: Session) -> None:
    if session.target.version >= REMOTE_EXEC:
        _remote_exec(session)
    else:
        _gdb(session)


def _remote_exec(session: Session) -> None:
    pid = session.target.pid
    try:
        sys.remote_exec(pid, session.script)  # type: ignore[attr-defined]  # 3.14+
    except PermissionError as e:
        raise AttachError(
            f"permission denied to debug process {pid}: {e} "
            "(ptrace is needed: same user or root, /proc/sys/kernel/yama/ptrace_scope)"
        ) from None
    except (RuntimeError, OSError, ValueError) as e:
        text = " ".join(str(e).split())
        if "disable" in text.lower() or "not enabled" in text.lower():
            raise AttachError(
                f"process {pid} does not allow remote debugging "
                "(started with -X disable-remote-debug or PYTHON_DISABLE_REMOTE_DEBUG)"
            ) from None
        raise AttachFailed(f"sys.remote_exec into process {pid} failed: {text}") from None


# The gdb script: run in gdb's own Python, against the stopped process.
_GDB_SCRIPT = r"""
import gdb, json
config = json.load(open(CONFIG))
# A call into the stopped main thread must not need a lock it may hold: it
# may not be queueing or running pending calls (their lock), finalizing,
# forking, exiting or in the dynamic loader. The other threads run during
# the call (scheduler-locking off), so a lock they hold is released.
RISKY = ("pendingcall", "pending_call", "finaliz", "fork", "_dl_", "dl_open", "dlopen", "exit")

def say(word, detail=""):
    print("HEAPSITE-%s %s" % (word, " ".join(str(detail).split())), flush=True)

def stack(thread):
    thread.switch()
    names = []
    frame = gdb.newest_frame()
    while frame is not None and len(names) < 200:
        names.append(frame.name() or "")
        frame = frame.older()
    return names

def main():
    inferior = gdb.selected_inferior()
    threads = [t for t in inferior.threads() if t.ptid[1] == inferior.pid]
    if not threads:
        return say("FAILED", "its main thread has ended")
    try:
        names = stack(threads[0])
    except gdb.error as e:
        return say("BUSY", "cannot read the main thread's stack: %s" % e)
    risky = [n for n in names if any(word in n.lower() for word in RISKY)]
    if risky:
        return say("BUSY", risky[0])
    if int(gdb.parse_and_eval("(int)Py_IsInitialized()")) == 0:
        return say("FAILED", "its interpreter is not running (starting or exiting)")
    page = int(gdb.parse_and_eval("(long)mmap(0, 4096, 3, 0x22, -1, 0)"))
    if page <= 0 or page % 4096:
        return say("FAILED", "mmap failed in the process")
    text = config["starter"].replace("PAGE_ADDRESS", str(page)).encode() + b"\0"
    inferior.write_memory(page, text)
    queued = int(gdb.parse_and_eval(
        "(int)Py_AddPendingCall((void*)PyRun_SimpleString, (void*)%d)" % page))
    if queued != 0:
        gdb.parse_and_eval("(int)munmap((void*)%d, 4096)" % page)
        return say("BUSY", "its queue of pending calls is full")
    say("OK", hex(page))

try:
    main()
except Exception as e:
    say("FAILED", e)
"""


def _gdb_path() -> str:
    """HEAPSITE_GDB when set (a gdb other than the system's: see
    _GDB_CANNOT_CALL), else gdb on PATH, else /usr/bin/gdb; "" if none."""
    chosen = os.environ.get("HEAPSITE_GDB")
    if chosen:
        return chosen
    found = shutil.which("gdb") or ("/usr/bin/gdb" if os.access("/usr/bin/gdb", os.X_OK) else "")
    return found


# What gdb 13 says when it cannot write a thread's registers back after a
# call (CPUs with AMX under recent kernels; gdb 14 sizes the XSAVE area from
# CPUID): the call is what injection needs, so name the way out.
_GDB_CANNOT_CALL = "extended state"


def _gdb(session: Session) -> None:
    pid = session.target.pid
    gdb = _gdb_path()
    if not gdb:
        raise AttachError(
            f"attaching to CPython {session.target.minor} needs gdb, which is not installed "
            "(CPython 3.14+ needs no debugger)"
        )
    if not os.access(gdb, os.X_OK):
        raise AttachError(f"HEAPSITE_GDB names {gdb}, which is not an executable file")
    tracer = re.search(r"^TracerPid:\s+(\d+)", _read(f"/proc/{pid}/status", pid), re.M)
    if tracer and tracer.group(1) != "0":
        raise AttachError(f"process {pid} is being debugged (by pid {tracer.group(1)})")
    config = os.path.join(session.dir, "gdb.json")
    script = os.path.join(session.dir, "gdb-inject.py")
    with open(config, "w") as f:
        json.dump({"starter": starter(session.boot, "PAGE_ADDRESS")}, f)
    with open(script, "w") as f:
        f.write(f"CONFIG = {config!r}\n" + _GDB_SCRIPT)
    command = [
        gdb,
        "-p",
        str(pid),
        "-batch",
        "-nx",
        "-q",
        "-iex",
        "set debuginfod enabled off",
        "-iex",
        "set auto-load off",
        *_gdb_index_cache(),
        "-ex",
        "set confirm off",
        # The stopped thread may be in Rust code (heapsite's hooks): the
        # expressions below are C.
        "-ex",
        "set language c",
        "-x",
        script,
    ]
    last = ""
    for attempt in range(GDB_TRIES):
        if attempt:
            time.sleep(0.1 * attempt)
        word, detail = _run_gdb(command, pid)
        if word == "OK":
            return
        last = detail
        if word != "BUSY":
            break
    if "ptrace" in last.lower() or "not permitted" in last.lower():
        raise AttachError(f"permission denied to debug process {pid}: {last}")
    if _GDB_CANNOT_CALL in last:
        raise AttachFailed(
            f"{gdb} cannot call functions in a process on this machine ({last.rstrip('.')}; "
            "gdb before 14 on CPUs with AMX): nothing was changed in process "
            f"{pid}; name gdb 14 or newer in HEAPSITE_GDB"
        )
    raise AttachFailed(f"gdb could not schedule heapsite's code in process {pid}: {last}")


def _gdb_index_cache() -> list:
    """gdb's index of the symbols, kept between runs: the process is stopped
    while gdb reads them (about half the time of a first read). In a
    directory of the user's own under $TMPDIR, or none."""
    path = os.path.join(tempfile.gettempdir(), f"heapsite-gdb-index-{os.geteuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return []
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        return []  # not ours alone: read the symbols afresh
    return [
        "-iex",
        f"set index-cache directory {path}",
        "-iex",
        "set index-cache enabled on",
    ]


def _run_gdb(command: list, pid: int) -> tuple:
    try:
        # A session of its own: the terminal's Ctrl-C must not reach gdb in
        # the middle of a call in the stopped process.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as e:
        return "FAILED", f"cannot run gdb: {e}"
    try:
        try:
            out, err = process.communicate(timeout=GDB_TIMEOUT)
        except KeyboardInterrupt:
            process.communicate(timeout=GDB_TIMEOUT)  # gdb finishes and detaches
            raise
    except subprocess.TimeoutExpired:
        # SIGTERM: gdb detaches from the process as it quits.
        process.terminate()
        try:
            out, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        return "FAILED", f"gdb did not finish in {GDB_TIMEOUT:g}s"
    for line in out.splitlines():
        if line.startswith("HEAPSITE-"):
            word, _, detail = line[len("HEAPSITE-") :].partition(" ")
            return word, detail
    lines = [line for line in err.splitlines() if line.strip()]
    detail = next((line for line in lines if "ptrace" in line.lower()), lines[-1] if lines else "")
    return "FAILED", detail or f"gdb ended with status {process.returncode}"


# ---- the commands ----------------------------------------------------------


def _output_path(args: argparse.Namespace, pid: int) -> str:
    template = args.output or "heapsite-%p.capture"
    path = os.path.abspath(template.replace("%p", str(pid)))
    if os.path.isdir(path):
        raise AttachError(f"the output {path} is a directory")
    if not os.path.isdir(os.path.dirname(path)):
        raise AttachError(f"no directory {os.path.dirname(path)} for the output")
    return path


def _run_session(target: Target, action: str, timeout: float, options: dict | None = None) -> dict:
    session = Session(target, action, timeout, options)
    try:
        _inject(session)
    except KeyboardInterrupt:
        pass  # the code may be scheduled: cancelled below, the session kept
    except BaseException:
        session.remove()
        raise
    else:
        try:
            return session.wait(timeout)
        except KeyboardInterrupt:
            pass
    # Ctrl-C (or SIGTERM) on heapsite while the process had not answered.
    if session.cancel():
        raise AttachFailed(f"interrupted: nothing was changed in process {target.pid}")
    raise AttachFailed(
        f"interrupted while heapsite's code ran in process {target.pid}: "
        f"it may be attached (heapsite detach {target.pid} ends it)"
    )


def attach(args: argparse.Namespace) -> int:
    target = inspect(args.pid)
    output = _output_path(args, target.pid)
    options = {
        "output": output,
        "frames": args.frames,
        "kinds": not args.no_kinds,
        "sample": args.sample,
    }
    answer = _run_session(target, "attach", args.timeout, options)
    if not answer.get("ok"):
        raise AttachError(answer.get("message") or "the process refused")
    if args.duration is None:
        if not args.quiet:
            print(
                f"heapsite: attached to process {target.pid} (CPython {target.minor}); "
                f"`heapsite detach {target.pid}` writes the capture to {output}",
                file=sys.stderr,
            )
        return 0
    before = _identity(output)
    try:
        if not args.quiet:
            print(
                f"heapsite: attached to process {target.pid} (CPython {target.minor}) "
                f"for {args.duration:g}s",
                file=sys.stderr,
                flush=True,
            )
        deadline = time.monotonic() + args.duration
        while time.monotonic() < deadline and _alive(target.pid):
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM ends the duration early: detach now
    if not _alive(target.pid):
        if _identity(output) not in (None, before):
            _tell(args, output, f"process {target.pid} ended; its capture was written at exit")
            return 0
        raise AttachFailed(f"process {target.pid} ended without writing a capture")
    return _detach(target, args)


def detach(args: argparse.Namespace) -> int:
    return _detach(inspect(args.pid), args)


def _detach(target: Target, args: argparse.Namespace) -> int:
    answer = _run_session(target, "detach", args.timeout)
    if not answer.get("ok"):
        raise AttachError(answer.get("message") or "the process refused")
    _tell(args, answer["output"], f"detached from process {target.pid}")
    return 0


def _identity(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _tell(args: argparse.Namespace, output: str, what: str) -> None:
    if args.quiet:
        return
    try:
        regular = stat.S_ISREG(os.stat(output).st_mode)
    except OSError:
        regular = False
    text = ""
    if regular:
        from . import _core

        try:
            text = "\n" + _core.render_report(output, "text", max(args.top, 1)).decode()
        except (ValueError, OSError):
            text = ""
    print(f"{text}heapsite: {what}; capture written to {output}", file=sys.stderr)


__all__ = ["main", "inspect", "parse_duration", "starter", "__version__"]
