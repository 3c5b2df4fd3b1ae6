"""The line of each allocation, where heapsite reads a code object's line
table from where its last read stopped (src/engine/frames.c, "lines"):
forward through a long module body as it runs, back and forth through one
function in any order, and between code objects that share nothing. The
lines are known by construction: each allocation is on a line of its own."""

import random

import heapsite.tracemalloc as hs_tracemalloc

STATEMENTS = 800


def line_of(made):
    traceback = hs_tracemalloc.get_object_traceback(made)
    assert traceback is not None, "not traced"
    return traceback[-1].filename, traceback[-1].lineno


def test_each_statement_of_a_long_module_body_has_its_own_line():
    # Line k allocates bytearray(k): the body runs forward, one new site a line.
    source = "kept = []\n" + "".join(
        f"kept.append(bytearray({k}))\n" for k in range(2, 2 + STATEMENTS)
    )
    namespace = {}
    hs_tracemalloc.start(1)
    exec(compile(source, "<long body>", "exec"), namespace)
    kept = namespace["kept"]
    assert len(kept) == STATEMENTS
    wrong = [
        (len(made), line_of(made)) for made in kept if line_of(made) != ("<long body>", len(made))
    ]
    assert wrong == [], wrong[:5]


def test_one_function_read_in_any_order_gives_each_branch_its_line():
    # pick(k) allocates on line k + 2 of '<branches>'; called in a shuffled
    # order, each new site's line is read back or forth from the last one.
    branches = "".join(f"    if k == {k}:\n        return bytearray({k} + 1)\n" for k in range(400))
    source = "def pick(k):\n" + branches
    namespace = {}
    exec(compile(source, "<branches>", "exec"), namespace)
    pick = namespace["pick"]
    order = list(range(400))
    random.Random(7).shuffle(order)
    hs_tracemalloc.start(1)
    made = [(k, pick(k)) for k in order]
    wrong = [(k, line_of(m)) for k, m in made if line_of(m) != ("<branches>", 2 * k + 3)]
    assert wrong == [], wrong[:5]


def test_many_code_objects_in_turn_keep_their_own_lines():
    # 300 functions (more than the cursors, which several then share), each
    # with two allocating lines, called round-robin: every read moves to
    # another code object.
    namespace = {}
    for index in range(300):
        body = "    if second:\n        return bytearray(2)\n    return bytearray(1)\n"
        source = "\n" * index + f"def f{index}(second):\n" + body
        exec(compile(source, f"<f{index}>", "exec"), namespace)
    functions = [namespace[f"f{index}"] for index in range(300)]
    hs_tracemalloc.start(1)
    made = [
        (index, second, f(second)) for second in (True, False) for index, f in enumerate(functions)
    ]
    expected = {True: 3, False: 4}
    wrong = [
        (index, second, line_of(m))
        for index, second, m in made
        if line_of(m) != (f"<f{index}>", index + expected[second])
    ]
    assert wrong == [], wrong[:5]
