"""`python -m runtime.cli ...`: the command without its installed script (runtime/worker/processes.py starts each
worker child so)."""

from __future__ import annotations

import sys

from runtime.cli import main

if __name__ == "__main__":
    sys.exit(main())
