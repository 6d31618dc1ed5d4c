"""Ten million on one machine: a thin entry point over :mod:`pyfacematch.bench.tenm`.

Usage::

    python bench/tenm.py --gallery G --n 2000000 --build      # once (enroll, write probes)
    python bench/tenm.py --gallery G --measure                # open, identify, recall, memory
"""

from __future__ import annotations

from pyfacematch.bench.tenm import main

if __name__ == "__main__":
    main()
