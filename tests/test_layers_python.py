"""scripts/check-layers-python: the package's imports go down its layers
(docs/design.md, "Python package layers"), and the checker fails on one that
goes up, run on a copy of the package with a wrong-direction import planted."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CHECKER = os.path.join(ROOT, "scripts", "check-layers-python")
PACKAGE = os.path.join(ROOT, "python", "heapsite")


def check(package: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, CHECKER, package], capture_output=True, text=True, timeout=60
    )


def copy_of_the_package(tmp_path) -> str:
    copy = str(tmp_path / "heapsite")
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return copy


def plant(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(f"\n\ndef _planted():\n    {line}\n")


def test_the_package_keeps_its_layers():
    result = check(PACKAGE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_a_copy_passes_as_the_package_does(tmp_path):
    result = check(copy_of_the_package(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "module, line, says",
    [
        # the core reaching up to a front (inside a function counts too)
        (
            "_heap.py",
            "from .cli import main",
            "_heap (core) imports heapsite.cli (fronts)",
        ),
        ("_snapshot.py", "import heapsite.pytest_plugin", "imports heapsite.pytest_plugin"),
        # the core reaching up to the public API
        ("_own.py", "from . import start", "heapsite._own (core) imports heapsite.__init__ (api)"),
        # the native module from anywhere but the boundary
        ("_joined.py", "from . import _heapsite", "only the boundary layer may"),
        ("cli.py", "from heapsite._heapsite import start", "only the boundary layer may"),
        # the boundary reaching up
        (
            "_core.py",
            "from . import _own",
            "_core (boundary) imports heapsite._own (core)",
        ),
        # two fronts, each on its own
        ("pytest_plugin/_sites.py", "from .. import cli", "pytest_plugin and cli are separate"),
    ],
)
def test_an_import_in_the_wrong_direction_fails(tmp_path, module, line, says):
    copy = copy_of_the_package(tmp_path)
    plant(os.path.join(copy, module), line)
    result = check(copy)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert says in lines[0]
    path = lines[0].split(":", 1)[0]
    assert os.path.samefile(path, os.path.join(copy, module)), lines[0]


def test_a_module_in_no_layer_fails(tmp_path):
    copy = copy_of_the_package(tmp_path)
    with open(os.path.join(copy, "_new.py"), "w") as f:
        f.write("from . import _core\n")
    result = check(copy)
    assert result.returncode == 1
    assert "_new is in no layer" in result.stdout
