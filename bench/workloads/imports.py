"""Program start-up: import a set of pure-Python standard-library modules,
drop them and import them again, ROUNDS times.

Each round compiles nothing (the .pyc files are read) but runs every
module's body afresh: its functions and classes are made again, its
regular expressions compiled again, and its body's code object dies when
the import ends. This is what a tracer sees at the start of every program
and of every test process: many new call sites, a new stack for most
allocations, and code objects dying with thousands of sites under them.
Deterministic: the same modules in the same order.

Run as a script: ``python imports.py [rounds]``.
"""

import sys

ROUNDS = 40
MODULES = (
    "argparse",
    "csv",
    "difflib",
    "email.message",
    "fractions",
    "http.client",
    "json",
    "pprint",
    "shlex",
    "statistics",
    "tarfile",
    "textwrap",
    "unittest",
    "xml.dom.minidom",
    "zipfile",
    "configparser",
    "dataclasses",
)


def import_all():
    for name in MODULES:
        __import__(name)


# What a round drops: the packages named above, whole, whoever imported
# them before (a launcher may have: argparse, json), so that every round
# imports the same modules under any launcher. What they import besides
# (re, enum, collections...) stays imported after the first round.
TOPS = {name.partition(".")[0] for name in MODULES}


def main(rounds):
    loaded = 0
    for _ in range(rounds):
        import_all()
        fresh = [name for name in sys.modules if name.partition(".")[0] in TOPS]
        loaded += len(fresh)
        for name in fresh:
            del sys.modules[name]
    print(f"imported {loaded} modules in {rounds} rounds")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS)
