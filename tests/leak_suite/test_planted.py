"""A suite with planted leaks and clean look-alikes, run by test_pytest_plugin."""

import collections
import ctypes
import dataclasses
import functools
import gc
import itertools
import weakref

import pytest

_GROWING = []
_SEEN = {}
_CALLBACKS = []
_CYCLES = []
_SINGLETON = None
_BOUNDED = collections.deque(maxlen=1)


class Handler:
    def __init__(self):
        self.payload = bytearray(5000)

    def on_event(self):
        return len(self.payload)


class Node:
    def __init__(self):
        self.other = None
        self.data = [0] * 500


def test_leak_module_list():
    _GROWING.append(bytearray(20000))  # PLANTED list


def test_leak_unbounded_dict_cache():
    _SEEN[len(_SEEN)] = "x" * 3000 + str(len(_SEEN))  # PLANTED dict


def test_leak_callback_registry():
    _CALLBACKS.append(Handler().on_event)  # PLANTED callbacks


def test_leak_cycle_from_global():
    a, b = Node(), Node()  # PLANTED cycle
    a.other, b.other = b, a
    _CYCLES.append(a)


def test_leak_c_buffer():
    raw = ctypes.pythonapi.PyMem_RawMalloc
    raw.restype = ctypes.c_void_p
    raw(50000)  # PLANTED c-buffer (never freed)


@functools.lru_cache(maxsize=128)
def _expensive(n):
    return [n] * 1000


def test_clean_warmed_lru_cache():
    assert len(_expensive(7)) == 1000


def test_clean_lazy_singleton():
    global _SINGLETON
    if _SINGLETON is None:
        _SINGLETON = bytearray(100000)
    assert _SINGLETON is not None


def test_clean_import_on_first_call():
    import xml.dom.minidom

    assert xml.dom.minidom.parseString("<a/>").documentElement.tagName == "a"


def test_clean_bounded_cache():
    _BOUNDED.append(bytearray(10000))
    assert len(_BOUNDED) == 1


def test_clean_makes_a_dataclass():
    # New code objects every call (the generated __init__ and __repr__), used
    # and dropped: a profiler that holds code objects would keep them all.
    point = dataclasses.make_dataclass("Point", ["x", "y"])
    assert repr(point(1, 2)) == "Point(x=1, y=2)"


_NAMES = itertools.count()


def test_clean_compiles_under_a_new_name():
    # A template engine's way: new code under a new file name every call,
    # used and dropped. A profiler that keeps the names of the code it saw die
    # would hold one more string per call.
    namespace = {}
    source = "def build():\n    return [0] * 100\n"
    exec(compile(source, f"<generated-{next(_NAMES)}>", "exec"), namespace)
    assert len(namespace["build"]()) == 100


def test_clean_writes_to_tmp_path(tmp_path):
    # tmp_path's teardown reads what the setup report left, and each use
    # leaves a finalizer with the session's tmp_path_factory: pytest's own.
    (tmp_path / "out.txt").write_text("x" * 1000)
    assert (tmp_path / "out.txt").stat().st_size == 1000


_LAST_CYCLE = []


def test_clean_collects_the_last_calls_cycle():
    # Each call drops the cycle the call before made and needs the collector
    # to free it: the check must not keep the collector from older objects.
    if _LAST_CYCLE:
        dropped = weakref.ref(_LAST_CYCLE.pop())
        gc.collect()
        assert dropped() is None
    node = Node()
    node.other = node
    _LAST_CYCLE.append(node)


_PER_PARAM = []


@pytest.mark.parametrize("size", [2000, 30000])
def test_leak_parametrized(size):
    _PER_PARAM.append(bytearray(size))  # PLANTED param


@pytest.mark.parametrize("text", ["a", "bb"])
def test_clean_parametrized(text):
    assert len(_expensive(len(text))) == 1000
    assert bytearray(20000 * len(text))


@pytest.fixture
def fresh_list():
    return []


def test_clean_appends_to_function_fixture(fresh_list):
    # A function-scoped fixture is made anew for every round, as for a call.
    fresh_list.append(bytearray(10000))
    assert len(fresh_list) == 1


class TestInClass:
    registry = []

    def test_leak_method(self):
        self.registry.append(bytearray(8000))  # PLANTED method

    def test_clean_method(self):
        local = [bytearray(8000) for _ in range(3)]
        assert len(local) == 3
