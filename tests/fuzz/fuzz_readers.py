"""Coverage-guided fuzzing of the file readers with atheris (libFuzzer for Python).

Usage (from the repository root, ``pip install -e ".[fuzz]"`` first)::

    python tests/fuzz/fuzz_readers.py npy -max_total_time=300 /tmp/new-npy tests/fuzz/corpus/npy

Targets: npy, npz, csv, jsonl, parquet, keymodel. Any exception other than the package's typed
errors is a crash: libFuzzer stops and writes the input to ``crash-*``. Give a scratch folder
first so new inputs do not land in the repository's seed corpus.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["pyfacematch"]):
    import pyfacematch.core.arrayfile  # noqa: F401
    import pyfacematch.io  # noqa: F401
    import pyfacematch.keys.model  # noqa: F401

import harness  # noqa: E402


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in harness.TARGETS:
        sys.exit(
            f"usage: {sys.argv[0]} {{{'|'.join(harness.TARGETS)}}} [libFuzzer options] [corpus]"
        )
    target = harness.TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
