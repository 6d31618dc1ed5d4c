"""Images → templates: throughput, stage shares, accuracy on real photos, score fusion. A thin
entry point over :func:`pyfacematch.bench.embed.measure_embed`.

Usage::

    python bench/embed.py                       # dlib embedder on ../shared/data/faces
    python bench/embed.py --repeat 3 --detector hog --upsample 1
    python bench/embed.py --onnx-model model.onnx [--onnx-config cfg.json]
    python bench/embed.py --onnx-synthetic      # ONNX path with a built linear model (plumbing cost only)
    python bench/embed.py --compare-images 2160 --workers 2   # today's vs the parallel pipeline

What it prints
--------------
1. Throughput end to end (decode → detect → landmarks → align → embed), images
   per second over ``--repeat`` passes of the photo set, and the share of time
   in each stage (from ``Embedder.timings``).
2. Accuracy with the dlib embedder: leave-one-out rank-1; enrol the first
   photo of each person and identify the rest (rank-1); genuine and impostor
   cosine statistics; cosine to the descriptors stored in ``faces_johns.npz``.
3. Score fusion of a landmark score and the embedding score, each alone and
   fused (2-fold cross-validated, folds stratified by person): EER and FNMR
   at FMR = 1%. The landmark score is the cosine of 68-point landmark keys
   from the untrained ``KeyModel.default("ibug68")`` (no labels, so no leakage
   between folds).
4. dlib's descriptor against the same network on onnxruntime, on the chips of
   every photo: minimum cosine and CPU ms per face.
5. Today's pipeline (one process, HOG upsample 1, dlib's descriptor) against
   the new ones in the same run, rounds interleaved: ``onnx_1proc`` (one
   process, upsample "auto", descriptor on onnxruntime) and ``parallel``
   (``ParallelEmbedder``, ``--workers`` processes of it): median images/s,
   CPU ms per image, the speed-ups, the load average (the machine may be
   shared), and each one's rank-1 and cosine to the stored descriptors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pyfacematch.bench.embed import measure_embed
from pyfacematch.bench.util import machine, machine_line, shared_data_dir

DEFAULT_DATA = shared_data_dir(__file__)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with faces_johns.npz")
    ap.add_argument("--repeat", type=int, default=2, help="passes over the photo set")
    ap.add_argument("--detector", choices=("hog", "cnn"), default="hog")
    ap.add_argument("--upsample", type=int, default=1)
    ap.add_argument("--onnx-model", type=Path, help="an ArcFace/SFace-style .onnx file")
    ap.add_argument("--onnx-config", type=Path, help="JSON config for --onnx-model")
    ap.add_argument(
        "--onnx-synthetic", action="store_true", help="time the ONNX path on a built linear model"
    )
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    ap.add_argument(
        "--compare-images",
        type=int,
        default=216,
        help="today's pipeline vs the parallel one over this many images (0: skip)",
    )
    ap.add_argument("--compare-rounds", type=int, default=3, help="interleaved rounds (median)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes of the parallel one")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    if not (args.data / "faces_johns.npz").is_file():
        print(f"no photo set at {args.data}: pass --data", file=sys.stderr)
        return 2
    info = machine()
    print(machine_line(info), file=sys.stderr)
    results = measure_embed(
        args.data,
        repeat=args.repeat,
        detector=args.detector,
        upsample=args.upsample,
        onnx_model=args.onnx_model,
        onnx_config=args.onnx_config,
        onnx_synthetic=args.onnx_synthetic,
        threads=args.threads,
        compare_images=args.compare_images,
        compare_rounds=args.compare_rounds,
        workers=args.workers,
    )
    results["machine"] = info
    text = json.dumps(results, indent=2, default=float)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
