"""``python -m pyfacematch``: the command line."""

from __future__ import annotations

from pyfacematch.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
