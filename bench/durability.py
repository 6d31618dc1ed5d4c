"""Durability harness: random SIGKILLs, two writers, a reader during remove (issue 12).

The protocol lives in :mod:`pyfacematch.bench.durability` (kill cycles, checks, table) and
:mod:`pyfacematch.bench.contention` (two-writer and reader-during-remove scenarios); this
script only runs it. Exit status 1 when any promise is broken (the table lists each one).

Usage::

    python bench/durability.py --cycles 1000 --backend binary
    python bench/durability.py --cycles 200 --backend hnsw --folder /tmp/dur-hnsw
    python bench/durability.py --cycles 30 --max-delay 0.4 --no-scenarios   # a quick look
"""

from __future__ import annotations

from pyfacematch.bench.durability import main

if __name__ == "__main__":
    raise SystemExit(main())
