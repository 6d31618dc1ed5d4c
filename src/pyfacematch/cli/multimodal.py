"""``pyfacematch multimodal``: photo galleries holding an embedding and a landmark key per person,
decided by the fused score (argument parsing and printing only; see
:mod:`pyfacematch.jobs.multimodal` and :class:`pyfacematch.gallery.multimodal.MultimodalGallery`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

__all__ = ["add_multimodal", "cmd_multimodal"]

_EXAMPLES = """\
examples:
  # fit the fusion and its fused thresholds on labelled photos (people not enrolled)
  pyfacematch multimodal calibrate -g people.mm --images known/ --fmr 0.01 --fpir 0.1
  pyfacematch multimodal enroll -g people.mm --images enroll/      # enroll/<person>/<photo>
  pyfacematch multimodal identify -g people.mm --images probes/ -k 3 -o results.json
  pyfacematch multimodal remove -g people.mm --identity alice      # erased from both
  pyfacematch multimodal info -g people.mm

A multi-modal gallery is a folder: embedding.db (image embeddings), landmarks.db (landmark keys
with region blocks, searched with masked cosine) and fusion.json (fusion weights, thresholds).
Each photo gives a dlib descriptor and a key of MediaPipe's 478 points; the occlusion detector
decides which face regions a mask, a hand or sunglasses hide, and those blocks leave the key's
comparison. Needs the dlib and mediapipe extras.

exit codes:
  0    success
  1    finished, but some photos were rejected (listed on stderr and in the JSON)
  2    usage or input error (no gallery, no fusion fitted yet, unknown identity …)
  3    internal error (a bug: please report it)"""


def add_multimodal(subs: Any) -> None:
    """Register the ``multimodal`` subcommand."""
    p = subs.add_parser(
        "multimodal",
        help="photo galleries of embeddings + 478-point landmark keys, fused decisions",
        description="Enroll and identify people from photos by an image embedding and a "
        "landmark key, fused into one calibrated score.\n\n" + _EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["enroll", "identify", "calibrate", "remove", "info"])
    p.add_argument("-g", "--gallery", required=True, metavar="DIR", help="gallery folder")
    p.add_argument(
        "--images",
        metavar="DIR",
        help="folder of photos (DIR/<person>/<photo> for enroll and calibrate)",
    )
    p.add_argument("--identity", metavar="ID", help="remove: the person to erase")
    p.add_argument("--embedder", default="dlib", help="image embedder (default dlib)")
    p.add_argument(
        "--key-model",
        metavar="NPZ",
        help="landmark key model (KeyModel.save); default: the untrained mediapipe478 model",
    )
    p.add_argument(
        "--landmarker", choices=["mediapipe", "dlib"], help="default: from the key model"
    )
    p.add_argument(
        "--no-occlusion",
        action="store_true",
        help="every key block counts (no occlusion masks from the picture)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="encode the photos in N processes (0: one per core; default 1: in this process)",
    )
    p.add_argument("-k", type=int, default=1, help="identify: candidates per photo")
    p.add_argument("--threshold", type=float, help="on the fused score (default: calibrated)")
    p.add_argument("--fmr", type=float, help="calibrate: 1:1 target on the fused score")
    p.add_argument("--fpir", type=float, help="calibrate: 1:N target on the fused score")
    p.add_argument("--method", choices=["logistic", "zscore"], default="logistic")
    p.add_argument("--purpose", help="consent purpose (enroll: granted; identify: required)")
    p.add_argument("--encrypt", action="store_true", help="new gallery: encrypt both stores")
    p.add_argument("-o", "--output", metavar="PATH", help="identify: write results as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no messages")
    p.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)


def _encoder(args: argparse.Namespace, policy: str) -> Any:
    import os

    from pyfacematch.errors import InputError
    from pyfacematch.jobs.multimodal import ParallelPhotoEncoder, PhotoEncoder

    if args.workers < 0:
        raise InputError(f"--workers must be >= 0 (0: one per core), got {args.workers}")
    workers = args.workers or os.cpu_count() or 1
    if workers > 1:
        if args.key_model is not None and not os.path.exists(args.key_model):
            raise InputError(f"key model {args.key_model!r} does not exist")
        return ParallelPhotoEncoder(
            workers=workers,
            embedder=args.embedder,
            key_model=args.key_model,
            landmarker=args.landmarker,
            occlusion=not args.no_occlusion,
            policy=policy,
        )
    return PhotoEncoder(
        args.embedder,
        args.key_model,
        args.landmarker,
        occlusion=not args.no_occlusion,
        policy=policy,
    )


def _open(args: argparse.Namespace, enc: Any) -> Any:
    from pathlib import Path

    from pyfacematch.errors import InputError
    from pyfacematch.gallery.multimodal import MultimodalGallery

    new = not (Path(args.gallery) / "embedding.db").exists()
    if new and enc is None:
        raise InputError(f"no multi-modal gallery at {args.gallery!r}: enroll or calibrate first")
    opts: dict[str, Any] = {}
    if new:
        opts = {**enc.describe(), "encrypt": True if args.encrypt else None}
    if args.purpose and args.action == "enroll":
        opts["purpose"] = args.purpose
    return MultimodalGallery(args.gallery, **opts)


def _need_images(args: argparse.Namespace) -> str:
    from pyfacematch.errors import InputError

    if not args.images:
        raise InputError(f"multimodal {args.action} needs --images DIR")
    return str(args.images)


def cmd_multimodal(args: argparse.Namespace) -> int:
    """Run one action; print a JSON summary line (identify: the results) to stdout."""
    from pyfacematch.errors import InputError
    from pyfacematch.jobs.multimodal import calibrate_folder, enroll_folder, identify_folder

    out: dict[str, Any]
    if args.action in ("remove", "info"):
        with _open(args, None) as g:
            if args.action == "remove":
                if not args.identity:
                    raise InputError("multimodal remove needs --identity ID")
                g.remove(args.identity)
                out = {"removed": args.identity, "identities": len(g)}
            else:
                out = g.info()
    else:
        folder = _need_images(args)
        enc = _encoder(args, "largest" if args.action == "identify" else "single")
        with contextlib.ExitStack() as stack:
            if hasattr(enc, "close"):  # worker processes stop with the command
                stack.callback(enc.close)
            g = stack.enter_context(_open(args, enc))
            if args.action == "enroll":
                out = enroll_folder(g, folder, enc)
            elif args.action == "calibrate":
                if args.fmr is None and args.fpir is None:
                    raise InputError("multimodal calibrate needs --fmr and/or --fpir")
                out = calibrate_folder(
                    g, folder, enc, fmr=args.fmr, fpir=args.fpir, method=args.method
                )
            else:
                out = identify_folder(
                    g, folder, enc, k=args.k, threshold=args.threshold, purpose=args.purpose
                )
    text = json.dumps(out, indent=1, default=str)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        print(text)
    if not args.quiet and out.get("rejects"):
        for r in out["rejects"]:
            print(f"rejected {r['source']}: {r['reason']}", file=sys.stderr)
    return 1 if out.get("rejects") else 0
