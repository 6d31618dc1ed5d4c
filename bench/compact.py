"""Compact templates at scale: a thin entry point over :mod:`pyfacematch.bench.compact`.

Usage::

    python bench/compact.py --n 1000000          # the issue's 1M × 512
    python bench/compact.py --n 100000 --repeat 5
    python bench/compact.py --gallery /path/g.db --n 1000000   # Gallery reopen: mapped vs rebuilt
"""

from __future__ import annotations

from pyfacematch.bench.compact import main

if __name__ == "__main__":
    main()
