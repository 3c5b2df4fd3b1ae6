"""The pprof endpoint (src/serve/): `/debug/pprof/heap` of the running
program in Go's convention, for `go tool pprof URL` and for Parca and
Pyroscope scrapers. The native core serves it from threads of its own,
reading the counters without the GIL; this module starts and stops it, and
stops it before the interpreter finalises (`atexit` callbacks run before
that), after which the core never takes the GIL again.

`heapsite.serve()` is its public face; `HEAPSITE_HTTP` and `heapsite run
--http` start it through `_preload`.
"""

from __future__ import annotations

import atexit
import sys

from . import _capture, _core
from . import _own as own_work

DEFAULT_ADDRESS = "127.0.0.1:6060"
_state = {"stop_at_exit": False}


def check_address(address: str) -> str:
    """The address `address` names (`6060` and `:6060` mean loopback);
    ValueError, one line, if it names none."""
    return _core.http_address(address)


def serve(address: str = DEFAULT_ADDRESS) -> str:
    """Starts the endpoint; returns the address it listens on ("host:port",
    the port chosen by the system for port 0)."""
    if not _core.is_tracing():
        raise RuntimeError(
            "heapsite must be tracing to serve its pprof endpoint: call heapsite.start() first"
        )
    # What starting allocates (the run's JSON, the prefix) is heapsite's own.
    entered = own_work.enter()
    try:
        run_json, own_prefix = _run_json(), _capture._own_prefix()
    finally:
        own_work.leave(entered)
    bound = _core.http_serve(address, run_json, own_prefix)
    if not _state["stop_at_exit"]:
        atexit.register(stop)
        _state["stop_at_exit"] = True
    return bound


def _run_json() -> str:
    """The run's facts the endpoint states in each profile (`model::Run`;
    its figures are read at each scrape)."""
    import json

    run = {
        "argv": list(sys.argv),
        "started": _capture.started_at,
        "duration": 0.0,
        "native": bool(_capture.options.get("native", False)),
        "native_frames": bool(_capture.options.get("native_frames", False)),
        "peak_bytes": 0,
        "live_bytes": 0,
    }
    return json.dumps(run)


def stop() -> bool:
    """Stops the endpoint; False if it was not serving."""
    return _core.http_stop()


def url(address: str) -> str:
    """What `go tool pprof` is given for an endpoint at `address`."""
    return f"http://{address}/debug/pprof/heap"
