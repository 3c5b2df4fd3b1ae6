"""`python -m heapsite ...` is the `heapsite` command."""

import sys

from .cli import main

sys.exit(main())
