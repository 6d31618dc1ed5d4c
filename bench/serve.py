"""Load benchmark of ``pyfacematch serve`` over loopback (issue 16).

The protocol lives in :mod:`pyfacematch.bench.serve`; this script only runs it.

Usage::

    python bench/serve.py --n 100000 --dim 512 --clients 64 --seconds 10
    python bench/serve.py --n 1000000 --dim 512 --seconds 10 --folder /tmp/pfm-bench-serve
"""

from __future__ import annotations

from pyfacematch.bench.serve import main

if __name__ == "__main__":
    raise SystemExit(main())
