"""Code objects a call site names are not kept alive by heapsite, and a site
whose code object died still reports its file, line and function.

heapsite used to hold a reference to every code object in a site. A program
that compiles and drops code (exec, dataclasses, templates) then kept every
one alive under heapsite and not without it: the observer changed the program.
"""

import gc
import subprocess
import sys
import weakref

import heapsite
import heapsite.tracemalloc as hs_tracemalloc


def compile_function(index, blank_lines=0):
    """A fresh code object per call: `make{index}` allocates a bytearray (no
    free list) on line `blank_lines + 2` of '<generated {index}>'."""
    namespace = {}
    source = "\n" * blank_lines + f"def make{index}(n):\n    return bytearray(n)\n"
    exec(compile(source, f"<generated {index}>", "exec"), namespace)
    return namespace[f"make{index}"]


def sites_in(function_name):
    return [
        frames
        for _, frames, *_ in heapsite._heapsite.sites()
        if frames and frames[0][2] == function_name
    ]


def test_dropped_code_objects_are_freed_while_tracing():
    heapsite.start(16)
    codes, kept = [], []
    for index in range(50):
        function = compile_function(index)
        kept.append(function(100 + index))
        codes.append(weakref.ref(function.__code__))
        del function
    gc.collect()
    heapsite._heapsite.sites()  # lets heapsite drop what new sites held
    gc.collect()
    assert [ref() for ref in codes] == [None] * 50
    assert len(kept) == 50


def test_a_dead_code_objects_site_still_resolves():
    heapsite.start(16)
    function = compile_function(7, blank_lines=3)
    kept = function(1)
    before = sites_in("make7")
    code = weakref.ref(function.__code__)
    del function
    gc.collect()
    after = sites_in("make7")
    assert code() is None
    assert before and after == before
    assert after[0][0] == ("<generated 7>", 5, "make7")
    assert len(kept) == 1


def test_a_new_code_object_at_a_dead_ones_address_gets_its_own_site():
    # Same-sized code objects come back at the same addresses; each one's
    # allocation must still be reported at its own line.
    hs_tracemalloc.start(1)
    addresses, results = set(), []
    for index in range(200):
        function = compile_function(0, blank_lines=index % 7)
        addresses.add(id(function.__code__))
        results.append((index % 7 + 2, function(100 + index)))
        del function
        gc.collect()
    reused = 200 - len(addresses)
    assert reused > 0, "no address was reused: the test proves nothing"
    for line, made in results:
        traceback = hs_tracemalloc.get_object_traceback(made)
        assert (traceback[0].filename, traceback[0].lineno) == ("<generated 0>", line)


def test_sites_sharing_a_dying_frame_all_keep_it():
    # Both allocations run under one line of one caller: their two sites
    # name that frame once, in the frame table, where its code object's
    # death retires it for both (src/engine/frame_table.rs).
    hs_tracemalloc.start(16)
    first, second = compile_function(1), compile_function(2, blank_lines=1)
    namespace = {}
    source = "def call_both(a, b):\n    return [a(10), b(20)]\n"
    exec(compile(source, "<generated both>", "exec"), namespace)
    call_both = namespace["call_both"]
    made = call_both(first, second)
    code = weakref.ref(call_both.__code__)
    del call_both, namespace
    gc.collect()
    assert code() is None
    stacks = [
        [
            (frame.filename, frame.lineno)
            for frame in reversed(hs_tracemalloc.get_object_traceback(m))
        ][:2]
        for m in made
    ]
    assert stacks == [
        [("<generated 1>", 2), ("<generated both>", 2)],
        [("<generated 2>", 3), ("<generated both>", 2)],
    ]
    assert ("<generated both>", 2, "call_both") in sites_in("make1")[0]


def test_code_compiled_and_dropped_all_day_gives_its_site_ids_back():
    # Each round makes sites under a new code object that then dies holding
    # nothing: their ids are given back and reused (src/engine/reuse.rs), so
    # the ids in use stay bounded while births go on.
    hs_tracemalloc.start(16)
    births, ids = heapsite._heapsite.site_count(), heapsite.stats()["sites"]
    for index in range(400):
        function = compile_function(index)
        function(64)  # made and freed
        del function
        gc.collect()
        if index % 50 == 0:
            heapsite._heapsite.sites()  # sweeps happen at API calls
    born = heapsite._heapsite.site_count() - births
    grown = heapsite.stats()["sites"] - ids
    assert born >= 400, born
    assert grown < born / 4, (grown, born)


def compile_caller(blank_lines=0):
    """A fresh `call_each` in '<generated caller>': calls each function it is
    given on line `blank_lines + 4`, and keeps what they return."""
    namespace = {}
    source = "\n" * blank_lines + (
        "def call_each(functions, n):\n"
        "    kept = []\n"
        "    for function in functions:\n"
        "        kept.append(function(n))\n"
        "    return kept\n"
    )
    exec(compile(source, "<generated caller>", "exec"), namespace)
    return namespace["call_each"]


def retire_a_crowded_code_objects_sites():
    """The check below, run by this file as a script."""
    hs_tracemalloc.start(16)
    makers = [compile_function(index) for index in range(3000)]
    caller = compile_caller()
    kept = caller(makers, 64)
    sites = heapsite.stats()["sites"]  # also watches the new sites' code objects
    assert len(kept) > max(512, sites // 8), f"{sites} sites: not crowded, proves nothing"
    code = weakref.ref(caller.__code__)
    del caller
    gc.collect()
    assert code() is None
    # New callers, many at the dead one's address, each reported at its own line.
    later = []
    for index in range(50):
        caller = compile_caller(blank_lines=1 + index % 5)
        later.append((index % 5 + 5, caller(makers[:3], 32 + index)))
        del caller
        gc.collect()
    for index, made in enumerate(kept):
        traceback = hs_tracemalloc.get_object_traceback(made)
        frames = [(frame.filename, frame.lineno) for frame in reversed(traceback)][:2]
        assert frames == [(f"<generated {index}>", 2), ("<generated caller>", 4)], index
    for line, made_list in later:
        for index, made in enumerate(made_list):
            traceback = hs_tracemalloc.get_object_traceback(made)
            frames = [(frame.filename, frame.lineno) for frame in reversed(traceback)][:2]
            assert frames == [(f"<generated {index}>", 2), ("<generated caller>", line)]
    print("checked", len(kept), "sites under one code object of", sites)


def test_a_code_object_under_thousands_of_sites_retires_them_all(tmp_path):
    # A code object in the stack of more sites than heapsite lists for one
    # (src/engine/codes.rs: "crowded" past max(512, an eighth of all sites))
    # has each of them retired by a pass over every site when it dies. In a
    # fresh interpreter: sites outlive tracing, so in a test worker that
    # traced before, "all sites" would count every earlier test's.
    result = subprocess.run(
        [sys.executable, __file__], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("checked 3000 sites"), result.stdout


if __name__ == "__main__":
    retire_a_crowded_code_objects_sites()
