"""The torture run's programs that must go on behaving exactly as without
heapsite (issue 19: the cases that held, kept so that they keep holding).

Each program runs plain, with heapsite started in-process at 16 frames, and
under `heapsite run` (preloaded, native memory too); stdout and the exit
status must be the plain run's. Every run is bounded by a timeout, and the
programs print only what does not depend on timing or addresses."""

import os
import subprocess
import sys
import textwrap

import pytest

TIMEOUT = 120

# The in-process mode: heapsite started before the program runs as __main__.
IN_PROCESS = (
    "import heapsite, runpy, sys\n"
    "heapsite.start(16)\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)

PROGRAMS = {
    "greenlets_on_one_thread": """
        import greenlet
        def worker(n):
            total = 0
            while n:
                total += len([str(i) for i in range(50)])
                n = main.switch(total)
            return total
        main = greenlet.getcurrent()
        workers = [greenlet.greenlet(worker) for _ in range(20)]
        results = [g.switch(30) for g in workers]
        for _ in range(29):
            results = [g.switch(1) for g in workers]
        results = [g.switch(0) for g in workers]
        print(sum(results))
    """,
    "gevent_in_several_threads": """
        import threading
        import gevent
        def hub_work(out, k):
            def job(i):
                data = []
                for j in range(200):
                    data.append({"i": i, "j": j, "s": "x" * (j % 17)})
                    if j % 20 == 0:
                        gevent.sleep(0)
                return len(data)
            jobs = [gevent.spawn(job, i) for i in range(20)]
            gevent.joinall(jobs)
            out[k] = sum(g.value for g in jobs)
        out = [0] * 4
        threads = [threading.Thread(target=hub_work, args=(out, k)) for k in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(out)
    """,
    "ten_thousand_asyncio_tasks": """
        import asyncio
        async def task(i):
            await asyncio.sleep(0)
            return [i] * 10
        async def main():
            results = await asyncio.gather(*(task(i) for i in range(10_000)))
            return sum(len(r) for r in results)
        print(asyncio.run(main()))
    """,
    "sixteen_threads": """
        import threading
        totals = [0] * 16
        def work(k):
            for i in range(2000):
                totals[k] += len({j: str(j) for j in range(i % 50)})
        threads = [threading.Thread(target=work, args=(k,)) for k in range(16)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(sum(totals))
    """,
    "numpy_and_ctypes_release_the_gil_in_threads": """
        import ctypes, threading
        import numpy as np
        libc = ctypes.CDLL(None)
        out = [0.0] * 4
        def work(k):
            for _ in range(20):
                a = np.arange(100_000, dtype=np.float64) * (k + 1)
                out[k] += float(np.sort(a)[-1])
                libc.usleep(100)
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(out)
    """,
    "fork_from_a_thread": """
        import os, threading
        def child_in_thread(result):
            pid = os.fork()
            if pid == 0:
                data = [bytearray(100) for _ in range(1000)]
                os._exit(len(data) % 256)
            _, status = os.waitpid(pid, 0)
            result.append(os.waitstatus_to_exitcode(status))
        result = []
        t = threading.Thread(target=child_in_thread, args=(result,))
        t.start(); t.join()
        print(result)
    """,
    "multiprocessing_pool": """
        import multiprocessing
        def square(x):
            return [x * x] * 3
        if __name__ == "__main__":
            with multiprocessing.get_context("fork").Pool(2) as pool:
                print(sum(sum(r) for r in pool.map(square, range(200))))
    """,
    "sigalrm_handler_allocating_every_millisecond": """
        import signal, time
        made = []
        def handler(signum, frame):
            made.append([0] * 10)
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
        end = time.monotonic() + 0.3
        churn = 0
        while time.monotonic() < end:
            churn += len(str(list(range(20))))
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        print(len(made) > 10, churn > 0)
    """,
    "deep_recursion": """
        import sys
        # Deep where Python frames do not use the C stack (3.11+).
        depth = 50_000 if sys.version_info >= (3, 11) else 2_000
        sys.setrecursionlimit(depth + 1000)
        def down(n):
            if n == 0:
                return [0]
            return down(n - 1)
        print(len(down(depth)))
    """,
    "tracemalloc_started_by_the_program": """
        import tracemalloc
        tracemalloc.start(5)
        data = [bytearray(1000) for _ in range(1000)]
        current, peak = tracemalloc.get_traced_memory()
        print(current >= 1_000_000, peak >= current)
        tracemalloc.stop()
    """,
    "execv_into_another_python": """
        import os, sys
        print("before", flush=True)
        os.execv(sys.executable, [sys.executable, "-c", "print('after exec')"])
    """,
    "sqlite_workload": """
        import sqlite3
        db = sqlite3.connect(":memory:")
        db.execute("create table t (k integer primary key, v text)")
        db.executemany("insert into t values (?, ?)", ((i, "v" * (i % 30)) for i in range(20_000)))
        print(db.execute("select count(*), sum(length(v)) from t").fetchone())
    """,
    "daemon_threads_at_exit": """
        import threading, time
        def forever():
            keep = []
            while True:
                keep.append(bytearray(64))
                if len(keep) > 1000:
                    keep.clear()
        for _ in range(4):
            threading.Thread(target=forever, daemon=True).start()
        time.sleep(0.2)
        print("main done")
    """,
}

# Environments and flags the program is also run under (plain and traced alike).
VARIANTS = {
    "default": ((), {}),
    "pythonmalloc_malloc": ((), {"PYTHONMALLOC": "malloc"}),
    "pythonmalloc_debug": ((), {"PYTHONMALLOC": "debug"}),
    "dev_mode": (("-X", "dev"), {}),
}
# The allocator variants on a few programs, not all: each run costs seconds.
VARIANT_PROGRAMS = ("sixteen_threads", "sqlite_workload", "ten_thousand_asyncio_tasks")


def cases():
    for name in PROGRAMS:
        yield name, "default"
    for name in VARIANT_PROGRAMS:
        for variant in VARIANTS:
            if variant != "default":
                yield name, variant


def run(argv, env, cwd):
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=TIMEOUT)


@pytest.mark.parametrize("name, variant", list(cases()))
def test_behaves_as_without_heapsite(tmp_path, name, variant):
    flags, extra_env = VARIANTS[variant]
    script = tmp_path / f"{name}.py"
    script.write_text(textwrap.dedent(PROGRAMS[name]))
    env = {**os.environ, **extra_env}
    python = [sys.executable, *flags]
    plain = run([*python, str(script)], env, tmp_path)
    assert plain.returncode == 0, plain.stderr  # the program itself is sound
    traced = {
        "in-process": run([*python, "-c", IN_PROCESS, str(script)], env, tmp_path),
        "heapsite run": run(
            [
                *python,
                "-m",
                "heapsite",
                "run",
                "-q",
                "-o",
                str(tmp_path / "c.capture"),
                str(script),
            ],
            env,
            tmp_path,
        ),
    }
    for mode, result in traced.items():
        assert (result.returncode, result.stdout) == (plain.returncode, plain.stdout), (
            mode,
            result.stderr[-3000:],
        )
