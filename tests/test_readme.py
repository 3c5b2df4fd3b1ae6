"""The README's Python examples run as written."""

import os
import re

import heapsite
import pytest

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")
BLOCKS = re.findall(r"```python\n(.*?)```", open(README).read(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        exec(compile(BLOCKS[index], f"README.md example {index + 1}", "exec"), {})
    finally:
        import heapsite.tracemalloc

        heapsite.tracemalloc.stop()
        heapsite.clearrelheap()
    assert capsys.readouterr().out  # every example prints something


def test_there_are_examples():
    assert len(BLOCKS) >= 3
    assert heapsite.is_tracing() is False
