"""`heapsite run`'s launcher: starts the program in a child interpreter (with
heapsite preloaded) and stands in for it towards whoever started heapsite,
so that signals and exit status behave as with a plain `python` run.

- The child runs with the launching interpreter's options (`-X dev`, `-I`,
  `-W ...`), as `python OPTIONS script.py` would.
- SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to the launcher are passed on to
  the program, once. In a terminal the child shares the launcher's process
  group, so Ctrl-C (or Ctrl-\\, a hang-up) reaches both from the terminal and
  is not passed on again; elsewhere the child has a process group of its own,
  so a signal sent to the launcher's group reaches the program only through
  the launcher. Either way the program sees each signal once, but for one
  case: in a terminal, a signal sent with kill() to the whole process group
  (a shell's `kill %1`) reaches it both directly and passed on (a second
  SIGTERM is then ignored by heapsite's handler while it writes the capture).
- The child dies with the launcher (PR_SET_PDEATHSIG), never orphaned.
- The launcher ends as the program did: with its exit status, or killed by
  the same signal.
"""

from __future__ import annotations

import ctypes
import io
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# si_code of a signal the kernel sent, such as the terminal's Ctrl-C (to the
# whole foreground process group); kill() and killpg() give SI_USER.
SI_KERNEL = 0x80
PR_SET_PDEATHSIG = 1


def interpreter_options() -> list:
    """The command-line options of this interpreter, for the child's command:
    what subprocess reproduces, plus -u and every -X option it leaves out
    (int_max_str_digits, warn_default_encoding, ...)."""
    options = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]  # private
    if _unbuffered():
        options.append("-u")
    given = {options[i + 1].split("=", 1)[0] for i, opt in enumerate(options) if opt == "-X"}
    for name, value in sys._xoptions.items():
        if name not in given and name != "dev":  # dev mode is in the flags already
            options += ["-X", name if value is True else f"{name}={value}"]
    return options


def _unbuffered() -> bool:
    """-u has no entry in sys.flags; it shows as stdout's binary layer being
    the raw file itself."""
    stream = sys.__stdout__
    return stream is not None and isinstance(getattr(stream, "buffer", None), io.FileIO)


def _in_terminal_foreground() -> bool:
    """Whether this process is in its controlling terminal's foreground group
    (where the terminal's Ctrl-C lands)."""
    try:
        tty = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False  # no controlling terminal
    try:
        return os.tcgetpgrp(tty) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(tty)


def _child_setup(
    mask: Iterable[int | signal.Signals], launcher: int, own_group: bool
) -> Callable[[], None]:
    """What the child does between fork and exec."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork

    def setup():
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != launcher:  # the launcher died before prctl
            os.kill(os.getpid(), signal.SIGKILL)
        if own_group:
            os.setpgid(0, 0)

    return setup


def run(command: list, env: dict, on_start: Callable[[int], object] | None = None) -> int:
    """Runs `command` as a child, passing signals on, until it ends; returns
    its status as subprocess does (-N: killed by signal N). `on_start` is
    called with the child's pid as soon as it exists."""
    own_group = not _in_terminal_foreground()
    # Blocked here and taken with sigtimedwait, so none is lost between now
    # and the wait, and each comes with who sent it.
    watched = {*FORWARDED, signal.SIGCHLD}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        child = subprocess.Popen(
            command, env=env, preexec_fn=_child_setup(mask, os.getpid(), own_group)
        )
        if on_start is not None:
            on_start(child.pid)
        return _wait_passing_signals(child, watched, own_group)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _wait_passing_signals(child: subprocess.Popen, watched: set, own_group: bool) -> int:
    while True:
        info = signal.sigtimedwait(watched, 0.5)
        if info is not None and info.si_signo != signal.SIGCHLD:
            # From the terminal, the child (in our group) has it already.
            if own_group or info.si_code != SI_KERNEL:
                child.send_signal(info.si_signo)
        status = child.poll()
        if status is not None:
            return status


def end_like(status: int) -> int:
    """The exit status for the launcher of a program that ended with
    `status`; for a program killed by a signal, the launcher is killed by the
    same signal (so the caller sees what a plain run gives), else 128+N."""
    if status >= 0:
        return status
    number = -status
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        signal.signal(number, signal.SIG_DFL)
    except (OSError, ValueError):
        pass  # SIGKILL has no handler to reset
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {number})
    os.kill(os.getpid(), number)
    return 128 + number  # a signal that does not end a process by default
