"""Images → templates: throughput, stage shares, accuracy on real photos, score fusion.

Usage::

    python bench/embed.py                       # dlib embedder on ../shared/data/faces
    python bench/embed.py --repeat 3 --detector hog --upsample 1
    python bench/embed.py --onnx-model model.onnx [--onnx-config cfg.json]
    python bench/embed.py --onnx-synthetic      # ONNX path with a built linear model (plumbing cost only)

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
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"


def _load_set(data: Path) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    npz = np.load(data / "faces_johns.npz")
    d = {k: npz[k] for k in npz.files}
    paths = [str(data / "faces" / p.split("/", 1)[1]) for p in d["paths"]]
    return paths, d["labels"], d


def _throughput(emb, paths: list[str], repeat: int) -> dict[str, float]:
    emb.embed(paths[:2])  # warm-up (first call pays lazy initialisation)
    emb.timings.reset()
    t0 = time.perf_counter()
    for _ in range(repeat):
        batch = emb.embed(paths)
    wall = time.perf_counter() - t0
    t = emb.timings
    out = {
        "images": t.images,
        "faces": t.faces,
        "wall_s": wall,
        "images_per_s": t.images / wall,
        **{f"share_{k}": v for k, v in t.shares().items()},
        "ms_per_image_detect": 1e3 * t.detect / t.images,
        "ms_per_face_align": 1e3 * t.align / max(t.faces, 1),
        "ms_per_face_embed": 1e3 * t.embed / max(t.faces, 1),
        "failures": len(batch.failures),
    }
    return out, batch


def _landmark_key_scores(landmarks: np.ndarray) -> np.ndarray:
    """Landmark-key scores of the same photos: the untrained ibug68 key model (no labels used, so
    nothing leaks between the fusion folds), cosine of the 68-point keys."""
    from pyfacematch.keys import KeyModel

    keys, _ = KeyModel.default("ibug68").encode(landmarks.astype(np.float32))
    k = keys.astype(np.float64)
    return k @ k.T


def _rank1_loo(s: np.ndarray, labels: np.ndarray) -> float:
    s = s.copy()
    np.fill_diagonal(s, -np.inf)
    return float((labels[s.argmax(1)] == labels).mean())


def _accuracy(t: np.ndarray, labels: np.ndarray, stored: np.ndarray) -> dict[str, float]:
    s = t.astype(np.float64) @ t.astype(np.float64).T
    iu = np.triu_indices(len(labels), 1)
    gen = labels[iu[0]] == labels[iu[1]]
    people = list(dict.fromkeys(labels))
    enrol = np.array([int(np.flatnonzero(labels == p)[0]) for p in people])
    probes = np.setdiff1d(np.arange(len(labels)), enrol)
    best = s[np.ix_(probes, enrol)].argmax(1)
    return {
        "loo_rank1": _rank1_loo(s, labels),
        "enrol1_identify_rank1": float((np.array(people)[best] == labels[probes]).mean()),
        "n_probes": int(probes.size),
        "genuine_cos_min": float(s[iu][gen].min()),
        "genuine_cos_mean": float(s[iu][gen].mean()),
        "impostor_cos_mean": float(s[iu][~gen].mean()),
        "impostor_cos_max": float(s[iu][~gen].max()),
        "cos_to_stored_min": float((t.astype(np.float64) * stored).sum(1).min()),
    }


def _fusion(emb_s: np.ndarray, lm_s: np.ndarray, labels: np.ndarray) -> dict[str, dict]:
    from pyfacematch.fusion import cross_validated_fusion, pair_scores
    from pyfacematch.metrics import eer, fnmr_at_fmr

    out = {}
    # the alone scores over the same within-fold pairs as the fused ones
    rng = np.random.default_rng(0)
    part = np.empty(labels.size, np.int64)
    for p in np.unique(labels):
        m = rng.permutation(np.flatnonzero(labels == p))
        part[m] = np.arange(m.size) % 2
    for name, mats in (("landmarks", [lm_s]), ("embedding", [emb_s])):
        xs, gs = zip(*(pair_scores(mats, labels, np.flatnonzero(part == f)) for f in (0, 1)))
        x, g = np.concatenate(xs)[:, 0], np.concatenate(gs)
        out[name] = (x, g)
    for method in ("zscore", "logistic"):
        out[f"fused_{method}"] = cross_validated_fusion([lm_s, emb_s], labels, method=method)
    report = {}
    for name, (x, g) in out.items():
        op = fnmr_at_fmr(x[g], x[~g], [0.01])[0]
        report[name] = {
            "eer": eer(x[g], x[~g]).eer,
            "fnmr_at_fmr_1e-2": op.fnmr,
            "n_genuine": int(g.sum()),
            "n_impostor": int((~g).sum()),
        }
    report["rank1_loo_landmarks"] = _rank1_loo(lm_s, labels)
    return report


def _synthetic_onnx_model() -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((3 * 112 * 112, 512)) / 100).astype(np.float32)
    x = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 112, 112])
    y = helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", 512])
    g = helper.make_graph(
        [
            helper.make_node("Flatten", ["data"], ["f"], axis=1),
            helper.make_node("MatMul", ["f", "W"], ["emb"]),
        ],
        "linear",
        [x],
        [y],
        [numpy_helper.from_array(w, "W")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m.SerializeToString()


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
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    if not (args.data / "faces_johns.npz").is_file():
        print(f"no photo set at {args.data}: pass --data", file=sys.stderr)
        return 2
    from pyfacematch.embed.dlib import DlibDetector, DlibEmbedder, dlib_available

    paths, labels, stored = _load_set(args.data)
    results: dict[str, object] = {"n_photos": len(paths), "cpu_count": os.cpu_count()}

    if dlib_available():
        emb = DlibEmbedder(args.detector, upsample=args.upsample)
        tp, batch = _throughput(emb, paths, args.repeat)
        results["dlib_throughput"] = tp
        t = batch.templates()
        if not batch.failures:
            results["dlib_accuracy"] = _accuracy(t, labels, stored["embeddings"])
            lm = np.stack([r.faces[0].landmarks for r in batch.images])
            lm_s = _landmark_key_scores(lm)
            results["fusion"] = _fusion(t.astype(np.float64) @ t.T.astype(np.float64), lm_s, labels)
        else:
            results["dlib_failures"] = [(r.source, r.reason) for r in batch.failures]
    else:
        print("dlib not installed: pip install 'pyfacematch[dlib]'", file=sys.stderr)

    if args.onnx_model or args.onnx_synthetic:
        from pyfacematch.embed.onnx import OnnxEmbedder

        model = args.onnx_model if args.onnx_model else _synthetic_onnx_model()
        det = DlibDetector(args.detector, upsample=args.upsample) if dlib_available() else None
        oemb = OnnxEmbedder(
            model, config=args.onnx_config, detector=det, intra_op_threads=args.threads
        )
        if det is None:
            land = list(stored["landmarks"])
            oemb.embed(paths[:2], landmarks=land[:2])
            oemb.timings.reset()
            t0 = time.perf_counter()
            ob = oemb.embed(paths, landmarks=land)
            wall = time.perf_counter() - t0
            results["onnx_throughput_given_landmarks"] = {
                "images_per_s": len(paths) / wall,
                **{f"share_{k}": v for k, v in oemb.timings.shares().items()},
            }
        else:
            tp, ob = _throughput(oemb, paths, args.repeat)
            results["onnx_throughput"] = tp
        results["onnx_model"] = (
            "synthetic linear 112x112x3 -> 512" if args.onnx_synthetic else str(model)
        )
        if args.onnx_model and not ob.failures:
            t = ob.templates()
            results["onnx_accuracy"] = _accuracy(t, labels, np.zeros_like(t))

    text = json.dumps(results, indent=2, default=float)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
