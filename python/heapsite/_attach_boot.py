"""The boot script of `heapsite attach`: run inside the traced process, in
its main thread at a safe point, in a namespace of its own (never the
program's `__main__`). The attacher writes a copy of this file into the
session directory with SESSION filled in; the interpreter runs that copy.

It claims the session (renaming `pending` to `claimed`: an attacher that
timed out renames it to `cancelled` first, and a late run then does
nothing; so does a run after the session's deadline, when the attacher was
killed before it could cancel), checks the interpreter, imports heapsite from the attacher's
package directory without touching sys.path, calls heapsite._attached and
writes its answer to `status` (whole, by rename). It never raises: an
exception escaping a pending call or a remote script would be reported in
the program. PAGE, when not 0, is the page gdb wrote the one-line starter
into (Python < 3.14): unmapped at the end.
"""

SESSION: dict = {}  # filled in by the attacher
# Whether this thread is inside heapsite's own work (its allocations not the
# program's): the starter enters it when heapsite is imported already.
_OWN = {"entered": globals().get("ENTERED", False), "module": None}


def _main():
    import os
    import sys
    import time

    directory = SESSION["dir"]
    if time.time() > SESSION["deadline"]:
        return  # the attacher is gone (killed) or gave up long ago: do nothing
    try:
        os.rename(os.path.join(directory, "pending"), os.path.join(directory, "claimed"))
    except OSError:
        return  # the attacher gave up (timed out) or this ran twice: do nothing

    def answer(ok, message, **extra):
        import json

        status = dict(extra, ok=ok, message=message, pid=os.getpid())
        part = os.path.join(directory, "status.part")
        with open(part, "w") as f:
            json.dump(status, f)
        os.replace(part, os.path.join(directory, "status"))

    interrupted = False
    try:
        expected = tuple(SESSION["version"])
        if sys.version_info[:2] != expected:
            answer(
                False,
                "process %d runs CPython %d.%d, this heapsite is built for %d.%d"
                % ((os.getpid(),) + tuple(sys.version_info[:2]) + expected),
            )
            return
        package = SESSION["package"]
        heapsite = sys.modules.get("heapsite")
        if heapsite is None:
            import importlib.util

            spec = importlib.util.spec_from_file_location(
                "heapsite",
                os.path.join(package, "__init__.py"),
                submodule_search_locations=[package],
            )
            assert spec is not None and spec.loader is not None  # a file that exists
            heapsite = importlib.util.module_from_spec(spec)
            sys.modules["heapsite"] = heapsite
            try:
                spec.loader.exec_module(heapsite)
            except BaseException:
                for name in [
                    n for n in sys.modules if n == "heapsite" or n.startswith("heapsite.")
                ]:
                    del sys.modules[name]
                raise
        elif os.path.dirname(os.path.abspath(heapsite.__file__ or "")) != package:
            answer(
                False,
                "process %d has its own heapsite (%s): attach with that one"
                % (os.getpid(), os.path.dirname(heapsite.__file__ or "?")),
            )
            return
        from heapsite import _attached, _own

        _OWN["module"] = _own
        if not _OWN["entered"]:
            _OWN["entered"] = _own.enter()
        try:
            if SESSION["action"] == "attach":
                options = SESSION["options"]
                message = _attached.begin(
                    options["output"],
                    options["frames"],
                    options["kinds"],
                    options.get("sample", 0),
                )
                answer(True, message)
            else:
                output = _attached.end()
                answer(True, "capture written", output=output)
        except _attached.Refused as e:
            answer(False, str(e))
    except KeyboardInterrupt:
        interrupted = True
        answer(False, "interrupted by SIGINT in the program")
    except BaseException as e:
        try:
            answer(False, "%s: %s" % (type(e).__name__, e))
        except BaseException:
            pass
    finally:
        if interrupted:
            # The program's Ctrl-C reached heapsite's code: deliver it again.
            import signal

            signal.raise_signal(signal.SIGINT)


def _leave_own_work():
    if _OWN["entered"]:
        try:
            import sys

            (_OWN["module"] or sys.modules["heapsite"]._own).leave(True)
        except BaseException:
            pass


def _unmap_page():
    """gdb's page held the starter's text, read before this runs."""
    page = globals().get("PAGE", 0)  # given by gdb's starter
    if not page:
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        libc.munmap(page, 4096)
    except BaseException:
        pass


if SESSION:
    try:
        _main()
    except BaseException:
        pass
    finally:
        _unmap_page()
        _leave_own_work()
