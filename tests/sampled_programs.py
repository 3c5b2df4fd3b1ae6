"""The opening shared by the sampling tests' programs: run as
`prog.py MODE OUT ...`, MODE "tracemalloc" (the oracle) or a sampling rate
in bytes for heapsite (0: every allocation)."""

import textwrap

START_TRACER = textwrap.dedent(
    """
    import json, sys
    mode, out = sys.argv[1], sys.argv[2]
    if mode == "tracemalloc":
        import tracemalloc
        tracemalloc.start(1)
    else:
        import heapsite
        heapsite.start(1, sample_every=int(mode))
    """
)
