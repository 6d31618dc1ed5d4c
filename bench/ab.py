"""A/B speed check of two installed versions by CPU time, or of the batch kernels in this one:
a thin entry point over :mod:`pyfacematch.bench.ab`.

    python bench/ab.py --a /work/venv-kern3-old/bin/python --b /work/venv-kern3/bin/python --n 100000
    python bench/ab.py --kernels --n 262144 --batch 1024
"""

import sys

from pyfacematch.bench.ab import main

if __name__ == "__main__":
    sys.exit(main())
