"""Multi-modal photos: FNMR at FMR, rank-1 and FNIR at FPIR for the dlib embedding alone, the
478-point landmark keys alone (plain cosine, masked cosine with the occlusion detector's masks,
masked cosine with perfect flags) and fused, on the shared photos clean and with drawn-on masks,
sunglasses and hands; optionally the photo → fused-template throughput against today's photo →
embedding path, in the same run. A thin entry point over :mod:`pyfacematch.bench.multimodal`
(the protocol is in its docstring).

Usage::

    python bench/multimodal.py                          # accuracy on ../shared/data
    nice -n 5 python bench/multimodal.py --throughput-images 540 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pyfacematch.bench.multimodal import format_table, run
from pyfacematch.bench.util import machine, machine_line, shared_data_dir

DEFAULT_DATA = shared_data_dir(__file__)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with faces_johns.npz")
    ap.add_argument("--seed", type=int, default=0, help="occluders and folds")
    ap.add_argument(
        "--throughput-images", type=int, default=0, help="also time this many images (0: skip)"
    )
    ap.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if not (args.data / "faces_johns.npz").is_file():
        print(f"no photo set at {args.data}: pass --data", file=sys.stderr)
        return 2
    info = machine()
    print(machine_line(info), file=sys.stderr)
    rep = run(
        args.data, seed=args.seed, throughput_images=args.throughput_images, rounds=args.rounds
    )
    rep["machine"] = info
    print(format_table(rep))
    text = json.dumps(rep, indent=1, default=float)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
