"""Coverage-guided fuzzing of the file readers with atheris (libFuzzer for Python).

Usage (from the repository root, after a regular install: ``pip install ".[fuzz]"``; under an
editable install atheris collects no coverage, because scikit-build-core's editable loader hides
the source files from its import hook, and the script refuses to run)::

    python tests/fuzz/fuzz_readers.py npy -max_total_time=300 /tmp/new-npy tests/fuzz/corpus/npy

Targets: npy, npz, csv, jsonl, parquet, keymodel, gallery (the SQLite database file). Any exception other than the package's typed
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
    import pyfacematch.gallery  # noqa: F401
    import pyfacematch.io  # noqa: F401
    import pyfacematch.keys.model  # noqa: F401

import harness  # noqa: E402


def _check_loader() -> None:
    import pyfacematch

    loader = type(pyfacematch.__spec__.loader).__module__ if pyfacematch.__spec__ else ""
    if "editable" in loader:
        sys.exit(
            "fuzz_readers: pyfacematch is an editable install; atheris would see no coverage. "
            'Use a regular install (pip install ".[fuzz]") in a separate virtual environment.'
        )


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in harness.TARGETS:
        sys.exit(
            f"usage: {sys.argv[0]} {{{'|'.join(harness.TARGETS)}}} [libFuzzer options] [corpus]"
        )
    _check_loader()
    target = harness.TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
