"""heapsite.heap(): kinds and sizes as guppy3 (the oracle) counts them."""

import json
import sys
import threading

import heapsite
import pytest
from conftest import run_python
from heapsite._heap import kind_name

# guppy3 3.1.7, the oracle, does not build on CPython 3.15 (its C reads
# PyInterpreterState.executor_list_head, which 3.15 removed); scripts/lib.sh
# installs it on every other version, where these tests must run.
needs_guppy3 = pytest.mark.skipif(
    sys.version_info >= (3, 15), reason="guppy3 (the oracle) does not build on CPython 3.15"
)


class Plain:
    def __init__(self, i):
        self.i = i
        self.name = "p"


class Slotted:
    __slots__ = ("i", "j")

    def __init__(self, i):
        self.i = i
        self.j = -i


class WithDict:
    def __init__(self, i):
        self.i = i
        self.__dict__["extra"] = i  # materialises the instance dict


def build(n=3000):
    return {
        "plain": [Plain(i) for i in range(n)],
        "slotted": [Slotted(i) for i in range(n)],
        "with_dict": [WithDict(i) for i in range(n)],
        "complex": [complex(i, 1) for i in range(n)],
        "tuples": [(i, -i) for i in range(n)],
        "lists": [[i] for i in range(n)],
        "dicts": [{"k": i} for i in range(n)],
        "strings": ["s-%d" % i for i in range(n)],
    }


def heapy_counts(partition):
    """guppy3's table as {kind: (count, size)}."""
    return heapy_counts_text(str(partition.all))


def heapy_counts_text(text):
    """A table in heapy's layout (guppy3's or heapsite's) as {kind: (count, size)}."""
    counts = {}
    for line in text.splitlines()[2:]:
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[0].isdigit():
            counts[fields[7]] = (int(fields[1]), int(fields[3]))
    return counts


def ours(partition):
    return {row.name: (row.count, row.size) for row in partition.rows}


ORACLE_PROGRAM = """
import json, sys
sys.path.insert(0, {tests!r})
import guppy, heapsite
from test_heap import build, heapy_counts, ours
guppy.hpy().heap()  # heapy imports most of itself on first use: do that first
data = build(100_000)
# heapsite first: it creates nothing that lasts, while heapy creates its own
# objects (which it leaves out) and a __dict__ for every plain instance.
mine = ours(heapsite.heap())
theirs = heapy_counts(guppy.hpy().heap())
print(json.dumps({{"mine": mine, "theirs": theirs}}))
"""


@needs_guppy3
def test_counts_and_sizes_agree_with_guppy3():
    import os

    result = run_python(ORACLE_PROGRAM.format(tests=os.path.dirname(__file__)))
    assert result.returncode == 0, result.stderr
    both = json.loads(result.stdout)
    mine, theirs = both["mine"], both["theirs"]
    plain = "test_heap.Plain"
    exact = ["test_heap.Plain", "test_heap.Slotted", "test_heap.WithDict"]
    exact.append("dict of test_heap.WithDict")
    for kind in exact:
        assert mine[kind] == theirs[kind], kind
        assert mine[kind][0] >= 100_000
    # heapy's own work leaves a stray complex or two.
    assert 0 <= theirs["complex"][0] - mine["complex"][0] <= 2
    assert mine["complex"][0] >= 100_000

    # Beyond the dicts heapy creates for plain instances on 3.11+ (heapsite
    # does not: see test_instance_dicts_are_never_created), the totals agree.
    def total(counts):
        return sum(size for kind, (_, size) in counts.items() if kind != "dict of " + plain)

    assert abs(total(mine) - total(theirs)) <= 0.01 * total(theirs)


def test_sizes_are_sys_getsizeof():
    heapsite.start(1)  # while tracing, setrelheap also sees blocks freed since
    heapsite.setrelheap()
    data = build(500)
    values = [v for group in data.values() for v in group]
    expected = {}
    for obj in values + list(data.values()):
        name = kind_name(type(obj))
        count, size = expected.get(name, (0, 0))
        expected[name] = (count + 1, size + sys.getsizeof(obj))
    mine = ours(heapsite.heap())
    heapsite.clearrelheap()
    # (str and the containers also count what the test itself makes meanwhile)
    for name in ("complex", kind_name(Plain), kind_name(Slotted), kind_name(WithDict)):
        assert mine[name] == expected[name], name
    del data, values


def test_instance_dicts_are_never_created():
    heapsite.start(1)
    heapsite.setrelheap()
    plain = [Plain(i) for i in range(1000)]
    first = ours(heapsite.heap())
    second = ours(heapsite.heap())
    heapsite.clearrelheap()
    assert first.get("dict of " + kind_name(Plain)) == second.get("dict of " + kind_name(Plain))
    if sys.version_info >= (3, 11):
        # Attributes live in inline values until something asks for __dict__.
        assert "dict of " + kind_name(Plain) not in second
    del plain


def test_bysite_names_the_line_that_built_the_complex_numbers():
    def build_complex(n):
        zs = []
        for i in range(n):
            zs.append(complex(i, 0.5))  # the line
        return zs

    heapsite.start(1)
    zs = build_complex(200_000)
    line = build_complex.__code__.co_firstlineno + 3
    rows = heapsite.heap().bysite.rows
    mine = [r for r in rows if r.name.startswith(f"complex @ {__file__}:{line} ")]
    assert len(mine) == 1 and mine[0].count == 200_000
    # ...and it is the largest complex row.
    assert next(r for r in rows if r.name.startswith("complex @ ")) is mine[0]
    del zs


def test_table_layout_and_rows():
    heapsite.start(1)
    heapsite.setrelheap()
    data = build(200)
    h = heapsite.heap()
    heapsite.clearrelheap()
    lines = str(h).splitlines()
    assert lines[0] == f"Partition of a set of {h.count} objects. Total size = {h.size} bytes."
    assert lines[1] == " Index  Count   %     Size   % Cumulative  % Kind (class / dict of class)"
    assert len(lines) == 2 + min(10, len(h)) + (1 if len(h) > 10 else 0)
    if len(h) > 10:
        assert lines[-1] == f"<{len(h) - 10} more rows. Type e.g. '_.more' to view.>"
        assert str(h.more).splitlines()[2].split()[0] == "10"
    assert h[0].count == h.rows[0].count and len(h[0]) == 1
    with pytest.raises(IndexError):
        h[len(h)]
    assert [r.size for r in h.rows] == sorted((r.size for r in h.rows), reverse=True)
    del data


EMPTY_RELHEAP_PROGRAM = """
import heapsite
heapsite.start(1)
hp = heapsite.hpy()
hp.setrelheap()
h = hp.heap()
heapsite.clearrelheap()
print(h.count)
print(str(heapsite.Partition([])))
"""


def test_empty_relheap_and_hpy_shim():
    # heapsite's own objects (this Partition too) are left out: nothing is
    # new between setrelheap() and heap(). In a fresh interpreter: in a test
    # worker, threads and garbage other tests left behind make objects of
    # their own meanwhile (CI, 3.9: a type readied by an import of
    # unicodedata during the walk).
    result = run_python(EMPTY_RELHEAP_PROGRAM)
    assert result.returncode == 0, result.stderr
    count, empty = result.stdout.splitlines()
    assert count == "0"
    assert empty == "Partition of a set of 0 objects. Total size = 0 bytes."


def test_heap_while_other_threads_allocate():
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            [dict(a=i) for i in range(100)]

    threads = [threading.Thread(target=churn) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            assert heapsite.heap().count > 1000
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_diff_by_kind():
    before = heapsite.heap()
    extra = [complex(i, 2) for i in range(1000)]
    diff = heapsite.heap().diff(before)
    row = next(r for r in diff.rows if r.name == "complex")
    assert row.count == 1000 and row.size == 1000 * sys.getsizeof(1j)
    del extra


def test_bytype_merges_dicts():
    heapsite.start(1)
    heapsite.setrelheap()
    data = build(300)
    h = heapsite.heap()
    heapsite.clearrelheap()
    by_type = {r.name: r for r in h.bytype.rows}
    dicts = [r for r in h.rows if r.name.startswith("dict ")]
    # 600 new dicts, less any handed out from a free list at the address of
    # one setrelheap() saw (the allocator is not told: heap()'s docstring).
    # On 3.13, in a long pytest worker, 15 of them once.
    assert by_type["dict"].count == sum(r.count for r in dicts) >= 500
    assert h.bytype.count == h.count and h.bytype.size == h.size
    assert str(h.bytype).splitlines()[1].endswith("% Type")
    del data


BYRCS_PROGRAM = """
import json, sys
sys.path.insert(0, {tests!r})
import guppy, heapsite
from test_heap import heapy_counts_text
hp = guppy.hpy()
hp.heap()  # heapy imports most of itself on first use
hp.setrelheap()
heapsite.setrelheap()
zs = [complex(i, 1) for i in range(5000)]
d = {{"a": zs[0], "b": zs[2]}}
t = (zs[1], "x" * 50)
class Holder:
    __slots__ = ("z",)
    def __init__(self, z):
        self.z = z
holders = [Holder(z) for z in zs[3:10]]

def table(text):
    # {{referrer kinds: count}}
    return {{kind: count for kind, (count, _) in heapy_counts_text(text).items()}}

# heapsite first: heapy's result objects would be referrers too.
ours = table(str(heapsite.heap()[0].byrcs.all))
theirs = table(str(hp.heap()[0].byrcs.all))
print(json.dumps({{"theirs": theirs, "ours": ours}}))
"""


@needs_guppy3
def test_byrcs_agrees_with_guppy3():
    import os

    result = run_python(BYRCS_PROGRAM.format(tests=os.path.dirname(__file__)))
    assert result.returncode == 0, result.stderr
    both = json.loads(result.stdout)
    assert both["ours"] == both["theirs"]
    assert both["ours"]["list"] >= 4980
    assert both["ours"]["__main__.Holder, list"] == 7


PATH_PROGRAM = """
import heapsite

class Order:
    pass

class Slot:
    __slots__ = ("z",)

class Registry:
    def __init__(self):
        self.__dict__["items"] = []

_registry = Registry()
for _ in range(42):
    _registry.items.append(Order())
slot = Slot()
slot.z = [Order()]
orphan_holder = []

print(heapsite.path_to_root(_registry.items[41]))
print(heapsite.path_to_root(slot.z[0]))
print(heapsite.path_to_root(object()))
heapsite.start(1)
heapsite.setrelheap()
orphan_holder.append({"deep": (1, Order())})
h = heapsite.heap()
row = [r.name for r in h.rows].index("__main__.Order")
print(h[row].path_to_root())
"""


def test_path_to_root_from_a_running_frame():
    def holder():
        local_only = [bytearray(10)]
        return heapsite.path_to_root(local_only[0])

    path = holder()
    assert path.startswith("<frame of holder at ") and path.endswith(".f_locals['local_only'][0]")


def test_path_to_root():
    result = run_python(PATH_PROGRAM)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "__main__.__dict__['_registry'].__dict__['items'][41]",
        "__main__.__dict__['slot'].z[0]",
        "None",
        "__main__.__dict__['orphan_holder'][0]['deep'][1]",
    ]


def test_path_to_root_names_attributes_of_instances_without_a_dict():
    from dataclasses import dataclass

    @dataclass
    class Record:
        key: int
        tags: list

    class Plain:
        def __init__(self):
            self.payload = [bytearray(3)]

    kept = [Record(1, [bytearray(2)]), Plain()]
    path = heapsite.path_to_root(kept[0].tags)  # not in the assert: pytest would hold it
    # Before 3.11 every instance has its __dict__ from the start: the chain
    # goes through it.
    attribute = ".tags" if sys.version_info >= (3, 11) else ".__dict__['tags']"
    assert path.endswith(".f_locals['kept'][0]" + attribute), path
    if sys.version_info >= (3, 13):  # __static_attributes__
        path = heapsite.path_to_root(kept[1].payload)
        assert path.endswith(".f_locals['kept'][1].payload"), path
    if sys.version_info >= (3, 12):  # values inline: naming them made no __dict__
        assert heapsite._heapsite.instance_dict(kept[0]) is None


def test_heapsites_own_objects_are_left_out():
    first = heapsite.heap()
    second = heapsite.heap()  # `first` and its rows now exist
    assert not [r.name for r in second.rows if "heapsite" in r.name]
    assert first.count > 1000


DELTA_PROGRAM = """
import json, sys
sys.path.insert(0, {tests!r})
import guppy, heapsite
from test_heap import build, heapy_counts, ours
hp = guppy.hpy()
hp.heap()  # heapy imports most of itself on first use
heapsite.start(1)  # so that setrelheap sees blocks freed since
hp.setrelheap()
heapsite.setrelheap()
data = build(3000)
mine = ours(heapsite.heap())
theirs = heapy_counts(hp.heap())
print(json.dumps({{"mine": mine, "theirs": theirs}}))
"""


@needs_guppy3
def test_counts_of_new_objects_agree_with_guppy3():
    import os

    result = run_python(DELTA_PROGRAM.format(tests=os.path.dirname(__file__)))
    assert result.returncode == 0, result.stderr
    both = json.loads(result.stdout)
    mine, theirs = both["mine"], both["theirs"]
    for kind in ["test_heap.Plain", "test_heap.Slotted", "test_heap.WithDict", "complex"]:
        assert mine[kind] == theirs[kind] == [3000, theirs[kind][1]], kind
    assert mine["dict of test_heap.WithDict"] == theirs["dict of test_heap.WithDict"]
    # Containers the program made: exactly those for heapsite; heapy also
    # counts a few temporaries of its own walk (it runs second here).
    assert mine["tuple"][0] == 3000 and 0 <= theirs["tuple"][0] - 3000 <= 30
    assert mine["list"] == theirs["list"]
    assert 0 <= theirs["dict (no owner)"][0] - mine["dict (no owner)"][0] <= 5


def test_julia_example_bysite_names_the_lines_that_built_the_complex_numbers(monkeypatch):
    """The heapy chapter's question, on the README's own example: after the
    two lists are built, which lines made the 2,000,000 complex numbers?"""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "examples", "julia_set.py")
    spec = importlib.util.spec_from_file_location("julia_set", path)
    julia = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(julia)
    seen = {}

    def look_instead_of_computing(maxiter, zs, cs):
        seen["rows"] = heapsite.heap().bysite.rows
        return [0] * len(zs)

    monkeypatch.setattr(julia, "calculate_z_serial_purepython", look_instead_of_computing)
    monkeypatch.setattr(julia, "print", lambda *a, **k: None, raising=False)
    heapsite.start(1)
    with pytest.raises(AssertionError):  # the book's check: our stand-in computes nothing
        julia.calc_pure_python(desired_width=1000, max_iterations=300)
    source = open(path).read().splitlines()
    lines = {i + 1 for i, text in enumerate(source) if "append(complex(" in text}
    complex_rows = [r for r in seen["rows"] if r.name.startswith("complex @ ")]
    by_line = {int(r.name.split(":")[1].split()[0]): r.count for r in complex_rows[:2]}
    assert set(by_line) == lines
    assert sum(by_line.values()) == 2_000_000


UNFROZEN_PROGRAM = """
import gc, json, sys
sys.path.insert(0, {tests!r})
import heapsite
from heapsite._heap import unfrozen_heap, whole_heap
from test_heap import build, ours
gc.collect()
nothing_frozen = build(1000)
same = [ours(unfrozen_heap()), ours(whole_heap())]
del nothing_frozen
old = build(3000)
gc.collect()
gc.freeze()
new = build(2000)
print(json.dumps({{"unfrozen": ours(unfrozen_heap()), "whole": ours(whole_heap()), "same": same}}))
"""


def test_unfrozen_heap_counts_what_was_made_since_the_freeze():
    """The leak check's exact pass walks only what a test made (objects
    older than it frozen): the objects the collector tracks outside the
    frozen set and their strings and numbers, not the old ones they refer
    to; with nothing frozen, the whole heap's figures."""
    import os

    result = run_python(UNFROZEN_PROGRAM.format(tests=os.path.dirname(__file__)))
    assert result.returncode == 0, result.stderr
    both = json.loads(result.stdout)
    unfrozen, whole = both["unfrozen"], both["whole"]
    made = ["test_heap.Plain", "test_heap.Slotted", "test_heap.WithDict", "complex"]
    for kind in [*made, "dict of test_heap.WithDict"]:
        assert whole[kind][0] in (5000, 5001), kind  # a complex constant of the import system
        assert unfrozen[kind][0] == 2000, kind
    # The new strings are reached through the new list that holds them.
    assert 2000 <= unfrozen["str"][0] < whole["str"][0] // 2
    assert sum(c for c, _ in unfrozen.values()) < sum(c for c, _ in whole.values()) // 2
    # (CPython 3.12 keeps its static types' base tuples in the frozen set from
    # the start, and 3.14 a few dozen strings only its static objects hold: a
    # few hundred objects the whole heap reaches and this does not.)
    part, everything = both["same"]
    for kind in [*made, "dict of test_heap.WithDict", "list"]:
        assert part[kind] == everything[kind], kind
    assert 0 <= everything["str"][0] - part["str"][0] <= 0.01 * everything["str"][0]
    total = sum(size for _, size in everything.values())
    assert abs(sum(size for _, size in part.values()) - total) <= 0.01 * total
