"""The pprof endpoint (`heapsite run --http`, HEAPSITE_HTTP,
heapsite.serve()), read by a real client: `go tool pprof`, Debian's
golang-go (scripts/test-all installs it; without it these tests fail, they
do not skip). The oracle is the program itself, which keeps a known amount
at a known line, and heapsite's own capture of it at exit."""

import collections
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
from heapsite.cli import preload_path

MIB = 1024 * 1024
KEPT_LINE = 9  # the bytearray line of PROGRAM
PROGRAM = """\
import ctypes, os, sys, time

kept = []
new_sites = []


def keep_twenty_mib():
    for _ in range(20):
        kept.append(bytearray(1024 * 1024))


keep_twenty_mib()
# A C call that keeps the GIL, and says so from inside it: said before it,
# a program slow to get there (a busy machine) would give the GIL to the
# server, which would name the new site. Imported before for the same
# reason: an import's file reads let go of the GIL.
c_system = ctypes.PyDLL(None).system
print("ready", flush=True)
deadline = time.monotonic() + 60
while not os.path.exists("stop") and time.monotonic() < deadline:
    time.sleep(0.05)
    print("tick", time.monotonic(), flush=True)
    if os.path.exists("hold-gil"):
        os.remove("hold-gil")
        new_sites.append([n for n in range(1000)])  # named in no scrape yet
        c_system(b"echo holding; sleep 5")
sys.exit(3)
"""
ENDPOINT = re.compile(r"heapsite: pprof endpoint at (http://(\S+)/debug/pprof/heap)")


def go_env(tmp_path):
    """What `go tool pprof` needs, with everything it writes under tmp_path."""
    if shutil.which("go") is None:
        pytest.fail("go is not installed: apt-get install golang-go (scripts/test-all does)")
    home = tmp_path / "go-home"
    home.mkdir(exist_ok=True)
    return {
        **os.environ,
        "HOME": str(home),
        "GOCACHE": str(home / "cache"),
        "PPROF_TMPDIR": str(home / "pprof"),
        "GOFLAGS": "",
    }


Profile = collections.namedtuple("Profile", "types shown samples")


def pprof_raw(tmp_path, url, timeout=60):
    """`go tool pprof -raw URL`, parsed: the sample type names, the type
    shown first, and the samples as [(values, [file:line of each location,
    leaf first])]."""
    done = subprocess.run(
        ["go", "tool", "pprof", "-raw", url],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=go_env(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    start = lines.index("Samples:")
    types = [t.split("/")[0] for t in lines[start + 1].split()]
    shown = next(t.split("/")[0] for t in lines[start + 1].split() if "[dflt]" in t)
    samples = []
    for line in lines[start + 2 :]:
        if not re.match(r"\s*\d", line):
            break
        values, locations = line.split(":", 1)
        samples.append(([int(v) for v in values.split()], [int(n) for n in locations.split()]))
    where = {}
    for line in lines[lines.index("Locations") + 1 :]:
        found = re.match(r"\s*(\d+): 0x[0-9a-f]+ M=\d+ (.*) s=\d+", line)
        if not found:
            break
        where[int(found.group(1))] = found.group(2).strip()
    return Profile(types, shown, [(values, [where[n] for n in locs]) for values, locs in samples])


def inuse_at(types, samples, place):
    """inuse_space of the samples whose allocating frame is `place`."""
    index = types.index("inuse_space")
    return sum(values[index] for values, stack in samples if stack and stack[0].endswith(place))


class Program:
    """PROGRAM running under heapsite with its endpoint; its stdout read as
    it comes (ticks, with when they were read)."""

    def __init__(self, tmp_path, command, env=None):
        self.dir = tmp_path
        (tmp_path / "prog.py").write_text(PROGRAM)
        self.process = subprocess.Popen(
            command,
            cwd=tmp_path,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout, self.stderr = [], []
        self.ready = threading.Event()
        self.holding = threading.Event()
        self.url = None
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self):
        for line in self.process.stdout:
            self.stdout.append((time.monotonic(), line))
            if line.startswith("ready"):
                self.ready.set()
            if line.startswith("holding"):
                self.holding.set()

    def _read_stderr(self):
        for line in self.process.stderr:
            self.stderr.append(line)
            found = ENDPOINT.search(line)
            if found:
                self.url, self.address = found.group(1), found.group(2)

    def wait_ready(self):
        assert self.ready.wait(60), "".join(self.stderr)
        deadline = time.monotonic() + 30
        while self.url is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.url, "".join(self.stderr)
        return self

    def ticks_since(self, moment):
        return sum(1 for at, line in self.stdout if at > moment and line.startswith("tick"))

    def finish(self, within=30):
        """Asks the program to end; its exit status (it must end in time)."""
        asked = time.monotonic()
        (self.dir / "stop").write_text("")
        try:
            status = self.process.wait(within)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the program did not end in {within} s: {''.join(self.stderr)}")
        return status, time.monotonic() - asked

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def programs():
    started = []
    yield started
    for program in started:
        program.kill()


def heapsite_run(*options):
    return [sys.executable, "-m", "heapsite", "run", *options, "prog.py"]


@pytest.mark.parametrize("in_process", ["0", "1"], ids=["preloaded", "in-process"])
def test_go_pprof_reads_the_live_heap_at_its_line(tmp_path, programs, in_process):
    capture = tmp_path / "prog.capture"
    program = Program(
        tmp_path,
        heapsite_run("-q", "-o", str(capture), "--http", "127.0.0.1:0"),
        env={"HEAPSITE_IN_PROCESS": in_process},
    )
    programs.append(program.wait_ready())
    types, shown, samples = pprof_raw(tmp_path, program.url)
    assert types == ["alloc_objects", "alloc_space", "inuse_objects", "inuse_space"]
    assert shown == "inuse_space"
    served = inuse_at(types, samples, f"prog.py:{KEPT_LINE}")
    # Go's /debug/pprof/allocs too (Parca's and Alloy's memory scrapes).
    allocs_types, allocs_shown, allocs = pprof_raw(
        tmp_path, program.url.replace("/heap", "/allocs")
    )
    assert allocs_types == types and allocs_shown == "alloc_space"
    assert inuse_at(types, allocs, f"prog.py:{KEPT_LINE}") >= 20 * MIB
    # 20 bytearrays of 1 MiB and their object headers.
    assert 20 * MIB <= served <= 20 * MIB * 1.01, served
    status, _ = program.finish()
    assert status == 3, "".join(program.stderr)
    # heapsite's own capture at exit: the same memory, at the peak (held
    # to the end; run in-process, the program's globals die before it).
    report = subprocess.run(
        [sys.executable, "-m", "heapsite", "report", "--format", "json", str(capture)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    model = json.loads(report.stdout)
    at_line = [
        site["peak_bytes"]
        for site in model["sites"]
        if site["stack"]
        and model["frames"][site["stack"][0]]["filename"].endswith("prog.py")
        and model["frames"][site["stack"][0]]["lineno"] == KEPT_LINE
    ]
    assert at_line and abs(sum(at_line) - served) <= 0.001 * served, (at_line, served)


def test_heapsite_http_in_the_environment_serves_too(tmp_path, programs):
    program = Program(tmp_path, heapsite_run("-q"), env={"HEAPSITE_HTTP": "127.0.0.1:0"})
    programs.append(program.wait_ready())
    types, _, samples = pprof_raw(tmp_path, program.url)
    assert inuse_at(types, samples, f"prog.py:{KEPT_LINE}") >= 20 * MIB
    assert program.finish()[0] == 3


API_PROGRAM = """\
import heapsite, socket, sys
heapsite.start(8)
kept = [bytearray(1024 * 1024) for _ in range(20)]
address = heapsite.serve("127.0.0.1:0")
print(address, flush=True)
try:
    heapsite.serve("127.0.0.1:0")
except RuntimeError as e:
    print("twice:", e, flush=True)
sys.stdin.readline()  # the test scrapes meanwhile
print("stopped", heapsite.stop_serving(), heapsite.stop_serving(), flush=True)
host, port = address.rsplit(":", 1)
try:
    socket.create_connection((host, int(port)), timeout=5)
    print("still listening")
except OSError:
    print("closed")
"""


def test_the_python_api_serves_stops_and_refuses_twice(tmp_path):
    (tmp_path / "api.py").write_text(API_PROGRAM)
    process = subprocess.Popen(
        [sys.executable, "api.py"],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        address = process.stdout.readline().strip()
        assert address.startswith("127.0.0.1:"), process.stderr.read()
        assert "already serves" in process.stdout.readline()
        types, _, samples = pprof_raw(tmp_path, f"http://{address}/debug/pprof/heap")
        assert 20 * MIB <= inuse_at(types, samples, "api.py:3") <= 20.2 * MIB
        out, err = process.communicate("\n", timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert out.split() == ["stopped", "True", "False", "closed"], out


def test_the_api_says_what_is_wrong(tmp_path):
    code = """
import heapsite, socket
try:
    heapsite.serve("127.0.0.1:0")
except RuntimeError as e:
    print("RuntimeError", e)
heapsite.start(1)
taken = socket.socket()
taken.bind(("127.0.0.1", 0))
taken.listen()
for address in ["nonsense", "127.0.0.1:99999", "%s:%d" % taken.getsockname()]:
    try:
        heapsite.serve(address)
    except (ValueError, OSError) as e:
        print(type(e).__name__, e)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("RuntimeError heapsite must be tracing"), lines
    assert lines[1].startswith('ValueError bad HTTP address "nonsense"'), lines
    assert lines[2].startswith('ValueError bad HTTP address "127.0.0.1:99999"'), lines
    assert lines[3].startswith("OSError cannot listen on 127.0.0.1:"), lines
    assert "in use" in lines[3], lines


def test_loopback_unless_an_address_is_given(tmp_path, programs):
    import heapsite

    assert heapsite._serve.DEFAULT_ADDRESS == "127.0.0.1:6060"
    import inspect

    assert inspect.signature(heapsite.serve).parameters["address"].default == "127.0.0.1:6060"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # A port alone: loopback.
    program = Program(tmp_path, heapsite_run("-q", "--http", str(port)))
    programs.append(program.wait_ready())
    assert program.address == f"127.0.0.1:{port}"
    assert program.finish()[0] == 3


def test_a_bad_http_option_is_one_line_and_status_2(tmp_path):
    (tmp_path / "prog.py").write_text("print('ran')\n")
    done = subprocess.run(
        heapsite_run("--http", "no-port-here"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "ran" not in done.stdout
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith('heapsite: error: --http: bad HTTP address "no-port-here"')


def test_a_bad_environment_setting_is_refused_by_heapsite_run_as_the_option(tmp_path):
    (tmp_path / "prog.py").write_text("print('ran')\n")
    done = subprocess.run(
        heapsite_run("-q"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "HEAPSITE_HTTP": "no-port-here"},
    )
    assert done.returncode == 2
    assert "ran" not in done.stdout
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith('heapsite: error: HEAPSITE_HTTP: bad HTTP address "no-port-here"')


# heapsite run refuses a malformed address before the program runs (above);
# a port in use is found only as the program binds it, and a program
# preloaded without the launcher has nobody to refuse it.
@pytest.mark.parametrize(
    "launcher, setting",
    [("heapsite run", "taken"), ("LD_PRELOAD", "taken"), ("LD_PRELOAD", "no-port-here")],
)
def test_a_setting_found_bad_in_the_program_costs_the_endpoint_only(tmp_path, setting, launcher):
    (tmp_path / "prog.py").write_text("print('ran')\n")
    if launcher == "heapsite run":
        command = heapsite_run("-q")
        preload = {}
    else:
        command = [sys.executable, "prog.py"]
        preload = {"LD_PRELOAD": preload_path(), "HEAPSITE_OUTPUT": "out.capture"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if setting == "taken":
            setting = "127.0.0.1:%d" % taken.getsockname()[1]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env={**os.environ, **preload, "HEAPSITE_HTTP": setting},
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ran\n"
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("heapsite: HEAPSITE_HTTP: "), lines
    assert lines[0].endswith("; no pprof endpoint")


def raw_exchange(address, data, read=True):
    """Sends `data`, returns what comes back until the server closes."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as client:
        try:
            client.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (and closed) before all of it was read
        if not read:
            return b""
        answer = b""
        try:
            while chunk := client.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def test_slow_and_malformed_clients_cost_the_program_nothing(tmp_path, programs):
    program = Program(tmp_path, heapsite_run("-q", "--http", "127.0.0.1:0"))
    programs.append(program.wait_ready())
    host, port = program.address.rsplit(":", 1)
    began = time.monotonic()
    # Clients that connect and send nothing, or half a request, and stay.
    idle = [socket.create_connection((host, int(port))) for _ in range(3)]
    idle[1].sendall(b"GET /debug/pprof/heap HTTP/1.1\r\nHost: x")
    # One that asks for the profile and never reads it.
    greedy = socket.socket()
    greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    greedy.connect((host, int(port)))
    greedy.sendall(b"GET /debug/pprof/heap HTTP/1.1\r\n\r\n")
    try:
        # Garbage, an oversized head, a wrong path and method: each a 4xx.
        assert raw_exchange(program.address, b"\x00\xff\x13garbage\r\n\r\n").startswith(
            b"HTTP/1.1 400"
        )
        huge = raw_exchange(program.address, b"GET / HTTP/1.1\r\nX: " + b"a" * 100_000)
        assert huge == b"" or huge.startswith(b"HTTP/1.1 431"), huge[:100]
        assert raw_exchange(program.address, b"GET /nothing HTTP/1.1\r\n\r\n").startswith(
            b"HTTP/1.1 404"
        )
        assert raw_exchange(program.address, b"POST /debug/pprof/heap HTTP/1.1\r\n\r\n").startswith(
            b"HTTP/1.1 405"
        )
        index = raw_exchange(program.address, b"GET /debug/pprof/ HTTP/1.1\r\n\r\n")
        assert index.startswith(b"HTTP/1.1 200") and b"heap" in index
        # The program went on all along (a tick every 50 ms).
        assert program.ticks_since(began) >= 10 * (time.monotonic() - began) - 10
        # A good client after them (Go's ?gc=1 ignored) gets the profile.
        types, _, samples = pprof_raw(tmp_path, program.url + "?gc=1")
        assert inuse_at(types, samples, f"prog.py:{KEPT_LINE}") >= 20 * MIB
        # And the program ends on time, with its own status, slow clients or not.
        status, took = program.finish()
        assert status == 3, "".join(program.stderr)
        assert took < 10, took
    finally:
        for client in [*idle, greedy]:
            client.close()


def test_a_scrape_while_the_program_holds_the_gil_does_not_wait_for_it(tmp_path, programs):
    program = Program(tmp_path, heapsite_run("-q", "--http", "127.0.0.1:0"))
    programs.append(program.wait_ready())
    pprof_raw(tmp_path, program.url)  # every site so far named
    (tmp_path / "hold-gil").write_text("")
    assert program.holding.wait(30)
    path = "/" + program.url.split("/", 3)[3]
    asked = time.monotonic()
    answer = raw_exchange(program.address, f"GET {path} HTTP/1.1\r\n\r\n".encode())
    took = time.monotonic() - asked
    # The program holds the GIL for 5 s; the server waits 1 s for names.
    assert took < 3, took
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    (tmp_path / "held.pb.gz").write_bytes(body)
    types, _, samples = pprof_raw(tmp_path, str(tmp_path / "held.pb.gz"))
    # Known sites keep their names; the new one waits for a later scrape.
    assert inuse_at(types, samples, f"prog.py:{KEPT_LINE}") >= 20 * MIB
    names = [stack[0] for _, stack in samples if stack]
    assert any("site not named yet" in name for name in names), names
    assert program.finish()[0] == 3


def test_scrapes_until_the_program_exits_never_hang_it(tmp_path, programs):
    program = Program(tmp_path, heapsite_run("-q", "--http", "127.0.0.1:0"))
    programs.append(program.wait_ready())
    host, port = program.address.rsplit(":", 1)
    stop = threading.Event()

    def scrape_forever():
        while not stop.is_set():
            try:
                raw_exchange(program.address, b"GET /debug/pprof/heap HTTP/1.1\r\n\r\n")
            except OSError:
                time.sleep(0.01)

    scrapers = [threading.Thread(target=scrape_forever, daemon=True) for _ in range(2)]
    for scraper in scrapers:
        scraper.start()
    time.sleep(1)
    try:
        status, took = program.finish()
    finally:
        stop.set()
    assert status == 3, "".join(program.stderr)
    assert took < 10
    assert not any("Traceback" in line or "Fatal" in line for line in program.stderr), (
        program.stderr
    )


FORK_PROGRAM = """\
import os, socket, sys, time, warnings
import heapsite

warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads
heapsite.start(1)
address = heapsite.serve("127.0.0.1:0")
host, port = address.rsplit(":", 1)
child = os.fork()
if child == 0:
    time.sleep(3)  # a worker that outlives the parent's endpoint
    os._exit(0)
heapsite.stop_serving()
try:
    socket.create_connection((host, int(port)), timeout=2).close()
    print("still listening", flush=True)
except OSError:
    print("closed", flush=True)
try:
    print("serves again at", heapsite.serve(address) == address, flush=True)
except OSError as e:
    print("cannot serve again:", e, flush=True)
os.waitpid(child, 0)
"""


def test_a_forked_child_does_not_keep_the_port(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", FORK_PROGRAM],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["closed", "serves again at True"], done
