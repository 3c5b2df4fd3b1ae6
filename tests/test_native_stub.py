"""python/heapsite/_heapsite.pyi, the native module's stub, names what the
module has (every entry of src/lib.rs's METHODS table, its constants and
__version__), no more and no less, and heapsite._core turns each tuple it
answers into a record with names."""

import ast
import os

import heapsite
import heapsite._core as core
from heapsite import _heapsite

STUB = os.path.join(os.path.dirname(os.path.abspath(heapsite.__file__)), "_heapsite.pyi")


def stub_names():
    tree = ast.parse(open(STUB).read())
    functions, constants = {}, set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            functions[node.name] = node
        elif isinstance(node, ast.AnnAssign) and not node.target.id.startswith("_"):
            constants.add(node.target.id)
        elif isinstance(node, ast.AnnAssign) and node.target.id == "__version__":
            constants.add("__version__")
    return functions, constants


def module_names():
    names = {n for n in vars(_heapsite) if not n.startswith("_")} | {"__version__"}
    functions = {n for n in names if callable(getattr(_heapsite, n))}
    return functions, names - functions


def test_the_stub_names_every_function_and_constant_of_the_module():
    functions, constants = stub_names()
    module_functions, module_constants = module_names()
    assert set(functions) == module_functions
    assert constants == module_constants


def documented_arguments(doc: str) -> list:
    """The arguments "name(a, b[, c]) -> ..." names: commas at depth 0 of
    its brackets, an optional argument ("[, c]") counted."""
    doc = doc.replace("[, ", ", ")
    arguments, depth, current = [], 0, ""
    for char in doc[doc.index("(") + 1 :]:
        if char in "([" or char in ")]" and depth:
            depth += 1 if char in "([" else -1
        elif char == ")":
            break
        elif char == "," and not depth:
            arguments.append(current)
            current = ""
            continue
        current += char
    return [a for a in arguments + [current] if a.strip()]


def test_the_stub_takes_what_each_function_takes():
    """Arguments as the docstrings (the METHODS table's) name them: the
    stub's are positional-only, as METH_O and METH_VARARGS take them."""
    functions, _ = stub_names()
    undocumented: dict = {}
    for name, node in functions.items():
        doc = getattr(_heapsite, name).__doc__
        stub_arity = len(node.args.posonlyargs)
        assert not node.args.args and not node.args.kwonlyargs, name
        documented = documented_arguments(doc)
        assert stub_arity == len(documented) + undocumented.get(name, 0), (name, doc)


def test_the_boundary_answers_with_names():
    heapsite.start(4)
    kept = [bytearray(1000) for _ in range(10)]
    memory = core.traced_memory()
    assert memory.current == memory[0] and memory.peak >= memory.current
    site = next(s for s in core.sites() if s.live_bytes >= 10_000)
    assert site.live_count >= 10 and site.frames[0][0] == __file__
    columns = core.site_figures()
    assert len(columns.live_bytes) == len(columns.live_counts) == len(columns.peak_bytes)
    assert len(columns.live_bytes) % 8 == 0
    peak = core.peak_sites(1)[0]
    assert peak.bytes > 0 and core.frames_of(peak.site_id)
    found = core.object_site(kept[0])
    assert found is not None and found.size > 0
    walk = core.heap_walk([kept], [], 0, False)
    row = next(r for r in walk.rows if r.kind_type is bytearray)
    assert (row.tag, row.object_count) == (0, 10) and walk.object_count >= 11
    del kept


def test_the_boundary_has_every_function_of_the_module():
    """heapsite._core is all the package needs of the native module: each
    function passes through unchanged or is wrapped to name its result."""
    module_functions, _ = module_names()
    assert module_functions <= set(core.__all__)
    wrapped = {n for n in module_functions if getattr(core, n) is not getattr(_heapsite, n)}
    assert wrapped == {
        "heap_walk",
        "object_site",
        "peak_sites",
        "rounds_grown",
        "site_figures",
        "site_of",
        "sites",
        "sites_grown",
        "sites_grown_since_mark",
        "timeline_samples",
        "timeline_stop",
        "traced_memory",
    }
