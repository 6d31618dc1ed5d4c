"""A small photo job through the command line, against face_recognition's two-folder CLI.

A thin entry point over :func:`pyfacematch.bench.cli_photos.main` (what it measures and how it
keeps the comparison fair is written there)::

    python bench/cli_photos.py [--data ../shared/data] [--rounds 5] [--face-recognition PATH]
"""

from __future__ import annotations

from pyfacematch.bench.cli_photos import main
from pyfacematch.bench.util import shared_data_dir

if __name__ == "__main__":
    main(default_data=shared_data_dir(__file__))
