"""What depends on the interpreter's build rather than on its version."""

import sys

from conftest import run_python


def test_a_free_threaded_interpreter_gets_one_clear_line():
    # No free-threaded CPython can be had here: the import's own check is run
    # against a sysconfig that says the build is one.
    result = run_python(
        """
        import sysconfig
        real = sysconfig.get_config_var
        sysconfig.get_config_var = lambda name: 1 if name == "Py_GIL_DISABLED" else real(name)
        try:
            import heapsite
        except ImportError as e:
            print(e)
        else:
            print("imported")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "heapsite does not support the free-threaded build yet (use a GIL build)\n"
    )
    assert "_heapsite" not in result.stderr


def test_this_interpreter_is_not_refused():
    result = run_python("import heapsite; print(heapsite.is_tracing())")
    assert (result.returncode, result.stdout) == (0, "False\n"), result.stderr
    assert sys.version_info >= (3, 9)
