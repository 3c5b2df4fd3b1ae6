"""SIGTERM in forked children under `heapsite run`: it ends them as it ends
them without heapsite.

heapsite's SIGTERM handler (the capture at a SIGTERM) is a Python handler,
and a Python handler misses a SIGTERM that arrives after the main thread
last checked for signals and before it blocks, or while it runs one long C
call. multiprocessing's Pool.terminate() ends its workers by SIGTERM while
they block on the task queue's lock, which the pool has taken for good: a
worker that missed it was waited for forever (tests/test_torture_held.py's
multiprocessing_pool hung 1 run in 20-40). A child that writes no capture
of its own now gets SIGTERM's default action back at the fork; one that
does (--follow-fork) keeps the handler with a deadline of its own."""

import os
import subprocess
import sys
import textwrap

import pytest

# A child busy in one long C call (sum() over a range never checks for
# signals), signalled once it is surely inside it. Prints how it ended.
BUSY_CHILD = textwrap.dedent(
    """
    import os, signal, sys, time

    def cpu_seconds(pid):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    pid = os.fork()
    if pid == 0:
        sum(range(10**13))
        os._exit(0)
    deadline = time.monotonic() + 20
    while cpu_seconds(pid) < 0.2 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print("ended", os.waitstatus_to_exitcode(status))
            break
        time.sleep(0.01)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print("still running")
    """
)

# The race Pool.terminate() loses: children blocked (or about to block) on
# a multiprocessing lock the parent holds, signalled at once or a little
# later. Without heapsite each one dies; with the handler inherited, about
# 1 in 70-120 lived on (measured: 3, 1 and 4 of 200 at delays 0, 0.5 and
# 2 ms; 5 and 3 of 350, and 2 of 40 with --follow-fork, as written below).
BLOCKED_CHILDREN = textwrap.dedent(
    """
    import multiprocessing, os, signal, sys, time

    runs, wait = int(sys.argv[1]), float(sys.argv[2])
    lived_on = 0
    for i in range(runs):
        lock = multiprocessing.Lock()
        lock.acquire()
        pid = os.fork()
        if pid == 0:
            lock.acquire()  # never released: only the signal ends this
            os._exit(0)
        time.sleep((i % 5) * 0.0005)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == -signal.SIGTERM, status
                break
            time.sleep(0.002)
        else:
            lived_on += 1
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    print("lived on", lived_on, "of", runs)
    """
)


def heapsite_run(tmp_path, script, *args, follow=False):
    command = [sys.executable, "-W", "ignore::DeprecationWarning", "-m", "heapsite", "run", "-q"]
    if follow:
        command.append("--follow-fork")
    command += ["-o", str(tmp_path / "out.capture"), str(script), *map(str, args)]
    env = {**os.environ, "HEAPSITE_KINDS": "0"}
    return subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env
    )


@pytest.mark.parametrize("follow", [False, True], ids=["default", "follow_fork"])
def test_sigterm_ends_a_forked_child_busy_in_a_long_c_call(tmp_path, follow):
    # Deterministic: the child never runs a bytecode again, so heapsite's
    # Python handler can never run there. Without --follow-fork the child has
    # the default action (ended at once); with it, its own deadline ends it
    # after the grace period (2 s), without a capture.
    script = tmp_path / "busy_child.py"
    script.write_text(BUSY_CHILD)
    plain = subprocess.run(
        [sys.executable, str(script), "20"], capture_output=True, text=True, timeout=120
    )
    assert plain.stdout.split() == ["ended", "-15"], plain.stderr
    traced = heapsite_run(tmp_path, script, 20, follow=follow)
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout.split() == ["ended", "-15"], traced.stderr


def test_sigterm_ends_forked_children_blocked_on_a_lock(tmp_path):
    # Probabilistic: before the fix about 1 child in 70-120 lived on, so 350
    # children show it almost always (1 - (119/120)**350 > 0.94; it failed
    # in each of the 3 runs tried).
    script = tmp_path / "blocked_children.py"
    script.write_text(BLOCKED_CHILDREN)
    traced = heapsite_run(tmp_path, script, 350, 3)
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout.split() == ["lived", "on", "0", "of", "350"], traced.stderr


def test_sigterm_ends_forked_children_blocked_on_a_lock_with_follow_fork(tmp_path):
    # With --follow-fork each child keeps heapsite's handler (its capture at
    # SIGTERM); one that misses it is ended by its own deadline: every child
    # ends, within the grace period and some.
    script = tmp_path / "blocked_children.py"
    script.write_text(BLOCKED_CHILDREN)
    traced = heapsite_run(tmp_path, script, 40, 15, follow=True)
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout.split() == ["lived", "on", "0", "of", "40"], traced.stderr
