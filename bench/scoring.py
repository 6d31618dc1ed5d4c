"""Scoring benchmark (issue 2): pyfacematch top-k vs numpy, FAISS IndexFlatIP and SimSIMD.

    python bench/scoring.py [--n 1000000] [--dims 512 128] [--batches 1 64 1024] [--json out.json]

The code lives in pyfacematch.bench.scoring so that `pyfacematch bench` runs the same measurements.
"""

from pyfacematch.bench.scoring import main

if __name__ == "__main__":
    main()
