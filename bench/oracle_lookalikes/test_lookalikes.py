"""Clean look-alikes and small planted leaks, to tune bench/leak_oracle.py on.

    PYTHONPATH=bench python -m pytest -p leak_oracle --leak-oracle-out OUT.jsonl \
        bench/oracle_lookalikes

Tests named test_leak_* keep memory every call (or every tenth) and must be
"leaks"; tests named test_clean_* keep nothing per call beyond bounded caches
and one-time allocations, and must be "clean"; tests named test_artifact_*
show growth that is not the test's own leak, which the oracle does count
(their comments say why). bench/oracle_lookalikes/check.py runs this
and says which verdicts are wrong.
"""

import collections
import ctypes
import functools
import itertools
import logging
import re
import warnings

import pytest

_FLOATS = []
_BLOBS = []
_CACHE = {}
_EVERY_OTHER = []
_RING = collections.deque(maxlen=4)
_COUNTER = itertools.count()
_SETTINGS = {}
_TYPES = []
log = logging.getLogger("lookalikes")


class Thing:
    def __init__(self, n):
        self.n = n


def test_leak_a_float_per_call():
    _FLOATS.append(float(next(_COUNTER)) + 0.5)  # 24 bytes and a list slot


def test_leak_a_kilobyte_per_call():
    _BLOBS.append(b"x" * 1000 + str(next(_COUNTER)).encode())


def test_leak_unbounded_cache():
    n = next(_COUNTER)
    _CACHE[n] = Thing(n)


def test_leak_every_other_call():
    n = next(_COUNTER)
    if n % 2:
        _EVERY_OTHER.append(str(n) * 10)


def test_leak_c_buffer():
    raw = ctypes.pythonapi.PyMem_RawMalloc
    raw.restype = ctypes.c_void_p
    raw(200)  # never freed


def test_leak_a_class_per_call():
    _TYPES.append(type(f"T{next(_COUNTER)}", (), {}))


def test_clean_nothing():
    pass


def test_clean_big_temporary():
    data = bytearray(1_000_000)
    assert len(data) == 1_000_000


def test_clean_makes_and_drops_a_class():
    cls = type(f"T{next(_COUNTER)}", (Thing,), {"extra": 1})
    assert cls(1).extra == 1


def test_clean_new_attribute_names():
    # Each name is a new string; the type attribute cache keeps recent ones.
    thing = Thing(1)
    for i in range(20):
        assert getattr(thing, f"missing_{next(_COUNTER)}_{i}", None) is None


def test_clean_regex_same_pattern():
    assert re.match(r"(\d+)-(\w+)", "12-ab").group(2) == "ab"


def test_clean_settings_overwritten():
    _SETTINGS["last"] = Thing(next(_COUNTER))
    _SETTINGS["text"] = "x" * 500 + str(next(_COUNTER))


def test_clean_bounded_ring():
    _RING.append(bytearray(2000))


@functools.lru_cache(maxsize=2)
def _cached(n):
    return bytearray(3000)


def test_clean_small_lru():
    assert len(_cached(next(_COUNTER) % 2)) == 3000


def test_clean_logs_every_call(caplog):
    log.warning("call %d", next(_COUNTER))


def test_clean_warns_every_call():
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"call {next(_COUNTER)}", DeprecationWarning, stacklevel=1)


def test_clean_warns_to_pytest():
    # The same message every call: the module's warning registry keeps it once.
    warnings.warn("the same every call", UserWarning, stacklevel=1)


def test_clean_expected_warning():
    with pytest.warns(UserWarning):
        warnings.warn("expected", UserWarning, stacklevel=1)


def test_clean_tmp_path(tmp_path):
    (tmp_path / "out.txt").write_text("x" * 1000)
    assert (tmp_path / "out.txt").read_text() == "x" * 1000


def test_clean_exception_raised_and_caught():
    with pytest.raises(ValueError):
        int("not a number")


def test_clean_generator_and_closure():
    def make(n):
        return lambda: n

    assert sum(make(i)() for i in range(1000)) == 499500


def test_clean_capsys_print(capsys):
    print("hello" * 20)
    assert "hello" in capsys.readouterr().out


_ONCE = []
_CALLS_SEEN = itertools.count()


def test_clean_one_allocation_mid_run():
    # A lazy one-time allocation that happens in the middle of the measured
    # calls (the 30th call of this test): one step, not growth per call.
    if next(_CALLS_SEEN) == 30:
        _ONCE.append(bytearray(20000))


_SOMETIMES = []


def test_leak_a_kilobyte_every_tenth_call():
    if next(_COUNTER) % 10 == 0:
        _SOMETIMES.append(bytearray(1000))


def test_clean_monkeypatch_every_call(monkeypatch):
    # Each run gets a new monkeypatch, undone at its tear-down.
    monkeypatch.setattr(Thing, "flag", lambda self: True, raising=False)
    assert Thing(1).flag()


_STREAMS = {}


@pytest.fixture
def stream():
    return bytearray(300)


def test_leak_through_a_new_fixture_value(stream):
    # A cache of the code under test keeps each run's new fixture value,
    # as click's stream cache keeps each run's capture stream: only a run
    # with its fixtures set up afresh sees it grow.
    _STREAMS.setdefault(id(stream), stream)


@pytest.fixture(scope="module")
def shared_config(tmp_path_factory):
    return {"dir": tmp_path_factory.mktemp("shared")}


def test_clean_wider_fixtures(shared_config, tmp_path, record_property):
    # Each run's function fixtures leave a finalizer with the wider ones
    # they depend on, and each record_property a user property on the item:
    # pytest's records, not the test's.
    record_property("size", len(str(shared_config["dir"])))
    (tmp_path / "x").write_text("y")


def test_artifact_unique_warning_messages():
    # Python's own: under the "default" action the module's warning registry
    # keeps every distinct message, and pytest resets it only between tests.
    warnings.warn(f"call {next(_COUNTER)}", UserWarning, stacklevel=1)


def test_artifact_code_under_a_new_file_name():
    # tracemalloc's own: it keeps every file name it has seen in a traced
    # frame, so code compiled under a new name each call (and dropped) leaves
    # one name string per call alive while the oracle traces.
    namespace = {}
    exec(compile("def f():\n    return 1\n", f"<gen-{next(_COUNTER)}>", "exec"), namespace)
    assert namespace["f"]() == 1
