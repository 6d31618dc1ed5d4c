"""Images to templates: throughput, stage shares, accuracy on real photos, score fusion.

The protocol of ``python bench/embed.py`` (its thin entry point):

1. Throughput end to end (decode → detect → landmarks → align → embed), images per second over
   ``repeat`` passes of the photo set, and the share of time in each stage
   (``Embedder.timings``).
2. Accuracy with the dlib embedder: leave-one-out rank-1; enrol the first photo of each person
   and identify the rest (rank-1); genuine and impostor cosine statistics; cosine to the
   descriptors stored in ``faces_johns.npz``.
3. Score fusion of a landmark score and the embedding score, each alone and fused (2-fold
   cross-validated, folds stratified by person): EER and FNMR at FMR = 1 %
   (:mod:`pyfacematch.metrics`). The landmark score is the cosine of 68-point landmark keys from
   the untrained ``KeyModel.default("ibug68")`` (no labels, so no leakage between folds).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "load_photo_set",
    "measure_throughput",
    "landmark_key_scores",
    "rank1_leave_one_out",
    "photo_accuracy",
    "fusion_report",
    "synthetic_onnx_model",
    "measure_embed",
    "compare_pipelines",
    "descriptor_agreement",
    "occlusion_report",
]


def load_photo_set(data: Path) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """Photo paths, person labels and the arrays of ``data``/faces_johns.npz."""
    npz = np.load(data / "faces_johns.npz")
    d = {k: npz[k] for k in npz.files}
    paths = [str(data / "faces" / p.split("/", 1)[1]) for p in d["paths"]]
    return paths, d["labels"], d


def measure_throughput(emb: Any, paths: list[str], repeat: int) -> tuple[dict[str, Any], Any]:
    """Images/s of ``emb.embed`` over ``repeat`` passes (after a warm-up) and its stage shares."""
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


def _run_once(emb: Any, paths: list[str]) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds (this process, or the workers for a ParallelEmbedder), batch."""
    cpu_attr = hasattr(emb, "cpu_seconds")
    c0 = emb.cpu_seconds if cpu_attr else time.process_time()
    t0 = time.perf_counter()
    batch = emb.embed(paths)
    wall = time.perf_counter() - t0
    c1 = emb.cpu_seconds if cpu_attr else time.process_time()
    return wall, c1 - c0, batch


def compare_pipelines(
    paths: list[str], *, n_images: int = 216, rounds: int = 3, workers: int = 2
) -> dict[str, Any]:
    """Today's pipeline against the new ones, in the same run, rounds interleaved.

    ``today``: one :class:`~pyfacematch.embed.dlib.DlibEmbedder` in this process as it ran before
    (HOG with one upsampling, dlib's own descriptor). ``onnx_1proc``: the same in this process
    with ``upsample="auto"`` and the descriptor on onnxruntime. ``parallel``:
    :class:`~pyfacematch.embed.parallel.ParallelEmbedder`, ``workers`` processes of the latter
    (one onnxruntime thread each). Each round embeds the photo set repeated to ``n_images`` with
    each pipeline (order rotating); the report gives the median images/s, the CPU seconds per
    image (user + system of the processes doing the work: robust to other load), the speed-up
    of the medians over ``today`` and the load average before and after (the machine is shared).
    """
    from pyfacematch.embed.dlib import DlibEmbedder
    from pyfacematch.embed.parallel import ParallelEmbedder

    work = (paths * (-(-n_images // len(paths))))[:n_images]
    load0 = os.getloadavg()
    pipes: dict[str, Any] = {
        "today": DlibEmbedder("hog", upsample=1, descriptor="dlib", points=68),
        "onnx_1proc": DlibEmbedder("hog", upsample="auto", descriptor="onnx"),
        "parallel": ParallelEmbedder("dlib", workers=workers, upsample="auto"),
    }
    t0 = time.perf_counter()
    for emb in pipes.values():  # models loaded (and workers started) before timing
        emb.embed(paths[: 2 * workers])
    start_s = time.perf_counter() - t0
    rates: dict[str, list[float]] = {k: [] for k in pipes}
    cpus: dict[str, list[float]] = {k: [] for k in pipes}
    batches: dict[str, Any] = {}
    try:
        for r in range(rounds):
            names = list(pipes)
            names = names[r % len(names) :] + names[: r % len(names)]
            for name in names:
                emb = pipes[name]
                emb.timings.reset()
                wall, cpu, batch = _run_once(emb, work)
                rates[name].append(n_images / wall)
                cpus[name].append(cpu / n_images)
                batches[name] = batch
    finally:
        pipes["parallel"].close()
    out: dict[str, Any] = {
        "n_images": n_images,
        "rounds": rounds,
        "workers": workers,
        "load_average_before": [round(x, 2) for x in load0],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "models_load_and_start_s": start_s,
    }
    for name, emb in pipes.items():
        st = emb.timings
        out[name] = {
            "images_per_s_median": float(np.median(rates[name])),
            "images_per_s_rounds": [round(x, 2) for x in rates[name]],
            "cpu_ms_per_image_median": 1e3 * float(np.median(cpus[name])),
            "stage_ms_per_image_last_round": {
                k: round(1e3 * getattr(st, k) / max(st.images, 1), 2)
                for k in ("load", "detect", "align", "embed")
            },
            "failures": len(batches[name].failures),
        }
    for name in ("onnx_1proc", "parallel"):
        out[f"speedup_{name}_vs_today"] = (
            out[name]["images_per_s_median"] / out["today"]["images_per_s_median"]
        )
        out[f"cpu_ratio_{name}_vs_today"] = (
            out[name]["cpu_ms_per_image_median"] / out["today"]["cpu_ms_per_image_median"]
        )
    out["_templates"] = {k: b.templates() for k, b in batches.items() if not b.failures}
    return out


def descriptor_agreement(paths: list[str]) -> dict[str, Any]:
    """dlib's descriptor and the onnxruntime one on the same chips of every photo: cosine and CPU."""
    from pyfacematch.embed.dlib import DlibEmbedder
    from pyfacematch.embed.images import load_image

    d = DlibEmbedder(descriptor="dlib")
    o = DlibEmbedder(descriptor="onnx", threads=1)
    imgs = [load_image(p) for p in paths]
    chips = [d.align(im, d.detect(im)[0]) for im in imgs]
    o.embed_crops(chips[:2])
    c0 = time.process_time()
    a = d.embed_crops(chips).astype(np.float64)
    c1 = time.process_time()
    b = o.embed_crops(chips).astype(np.float64)
    c2 = time.process_time()
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return {
        "faces": len(chips),
        "cosine_min": float(cos.min()),
        "dlib_cpu_ms_per_face": 1e3 * (c1 - c0) / len(chips),
        "onnx_1thread_cpu_ms_per_face": 1e3 * (c2 - c1) / len(chips),
    }


def occlusion_report(paths: list[str], labels: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Landmark keys of photos with drawn-on occluders: rank-1 with plain and masked cosine.

    Each photo gets a face mask, sunglasses and a hand (:func:`~pyfacematch.embed.occlusion.
    draw_occluder`, random shapes and colours); the occluded photo's 478 points come from the
    MediaPipe landmarker run on it. Probes are the occluded photos, the gallery the clean keys of
    every other photo (leave-one-out), 2-D keys from the untrained ``KeyModel.default("mediapipe478")``.
    Rank-1 with plain cosine over the whole key; with masked cosine, block masks from
    :class:`~pyfacematch.embed.occlusion.OcclusionDetector` on the occluded photo ("detected") and
    from the drawn truth ("perfect flags"). Also the detector's IoU per region on the two people
    held out of its training (John_Salley, John_Savage).
    """
    from pyfacematch.core.scoring import masked_scores
    from pyfacematch.embed.images import load_image
    from pyfacematch.embed.landmarks import create_landmarker, mediapipe_available
    from pyfacematch.embed.occlusion import (
        OcclusionDetector,
        draw_occluder,
        hidden_truth,
        region_pixels,
    )
    from pyfacematch.keys import KeyModel
    from pyfacematch.keys.schemes import get_scheme

    if not mediapipe_available():
        return {"skipped": "the mediapipe extra is not installed"}
    rng = np.random.default_rng(seed)
    scheme = get_scheme("mediapipe478")
    km = KeyModel.default("mediapipe478", dims=2)  # x, y: the guessed depth adds nothing here
    lmk = create_landmarker("mediapipe")
    det = OcclusionDetector()
    imgs = [load_image(p) for p in paths]
    clean = lmk.landmarks(imgs)
    ok = np.array([r.ok for r in clean])
    lm_clean = np.stack([r.landmarks[0] if r.ok else np.zeros((478, 3), np.float32) for r in clean])
    gkeys, gmasks = km.encode(lm_clean[:, :, :2].astype(np.float32))
    full = gmasks.copy()
    held_out = np.isin(labels, ["John_Salley", "John_Savage"])
    out: dict[str, Any] = {}
    iou_p: list[np.ndarray] = []
    iou_t: list[np.ndarray] = []
    for kind in ("mask", "sunglasses", "hand"):
        keys, masks, truth_masks, who = [], [], [], []
        for i, img in enumerate(imgs):
            if not ok[i]:
                continue
            occ, cov = draw_occluder(img, lm_clean[i], scheme, kind, rng)
            r = lmk.landmarks([occ])[0]
            if not r.ok:
                continue  # the landmarker lost the face: a failure to acquire, not scored
            lm = r.landmarks[0][:, :2]
            regions = region_pixels(img.shape[:2], lm, scheme)
            hid = det.hidden_regions(occ, lm, scheme)
            tru = hidden_truth(cov, regions)
            if held_out[i]:
                iou_p.append(hid)
                iou_t.append(tru)
            k, m = km.encode(lm[None].astype(np.float32), (~hid[scheme.point_region])[None])
            _, mt = km.encode(lm[None].astype(np.float32), (~tru[scheme.point_region])[None])
            keys.append(k[0])
            masks.append(m[0])
            truth_masks.append(mt[0])
            who.append(i)
        q = np.stack(keys)
        idx = np.array(who)
        rows: dict[str, float] = {}
        for name, pm in (
            ("plain_cosine", None),
            ("masked_detected", np.array(masks)),
            ("masked_perfect_flags", np.array(truth_masks)),
        ):
            if pm is None:
                s = q.astype(np.float64) @ gkeys.T.astype(np.float64)
            else:
                s = masked_scores(q, gkeys, pm, full, km.blocks).astype(np.float64)
            s = np.nan_to_num(s, nan=-np.inf)
            s[np.arange(len(idx)), idx] = -np.inf  # leave the probe's own clean photo out
            rows[name] = float((labels[s.argmax(1)] == labels[idx]).mean())
        rows["probes"] = len(idx)
        rows["landmarker_lost"] = int(ok.sum() - len(idx))
        out[kind] = rows
    p, t = np.array(iou_p), np.array(iou_t)
    iou = (p & t).sum(0) / np.maximum((p | t).sum(0), 1)
    out["detector_iou_held_out"] = {
        r: (round(float(v), 3), int(n)) for r, v, n in zip(scheme.regions, iou, t.sum(0))
    }
    out["detector_accuracy_held_out"] = float((p == t).mean())
    return out


def landmark_key_scores(landmarks: np.ndarray) -> np.ndarray:
    """Landmark-key scores of the same photos: the untrained ibug68 key model (no labels used, so
    nothing leaks between the fusion folds), cosine of the 68-point keys."""
    from pyfacematch.keys import KeyModel

    keys, _ = KeyModel.default("ibug68").encode(landmarks.astype(np.float32))
    k = keys.astype(np.float64)
    return k @ k.T


def rank1_leave_one_out(s: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out rank-1 rate of a similarity matrix (n, n) over person ``labels``."""
    s = s.copy()
    np.fill_diagonal(s, -np.inf)
    return float((labels[s.argmax(1)] == labels).mean())


def photo_accuracy(t: np.ndarray, labels: np.ndarray, stored: np.ndarray) -> dict[str, float]:
    """Rank-1 (leave-one-out; enrol one photo per person), cosine statistics, cosine to ``stored``."""
    s = t.astype(np.float64) @ t.astype(np.float64).T
    iu = np.triu_indices(len(labels), 1)
    gen = labels[iu[0]] == labels[iu[1]]
    people = list(dict.fromkeys(labels))
    enrol = np.array([int(np.flatnonzero(labels == p)[0]) for p in people])
    probes = np.setdiff1d(np.arange(len(labels)), enrol)
    best = s[np.ix_(probes, enrol)].argmax(1)
    return {
        "loo_rank1": rank1_leave_one_out(s, labels),
        "enrol1_identify_rank1": float((np.array(people)[best] == labels[probes]).mean()),
        "n_probes": int(probes.size),
        "genuine_cos_min": float(s[iu][gen].min()),
        "genuine_cos_mean": float(s[iu][gen].mean()),
        "impostor_cos_mean": float(s[iu][~gen].mean()),
        "impostor_cos_max": float(s[iu][~gen].max()),
        "cos_to_stored_min": float((t.astype(np.float64) * stored).sum(1).min()),
    }


def fusion_report(emb_s: np.ndarray, lm_s: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """EER and FNMR at FMR = 1 % of each score alone and fused (2-fold, folds by person).

    Metrics from :mod:`pyfacematch.metrics` (``eer``, ``fnmr_at_fmr``).
    """
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
    report: dict[str, Any] = {}
    for name, (x, g) in out.items():
        op = fnmr_at_fmr(x[g], x[~g], [0.01])[0]
        report[name] = {
            "eer": eer(x[g], x[~g]).eer,
            "fnmr_at_fmr_1e-2": op.fnmr,
            "n_genuine": int(g.sum()),
            "n_impostor": int((~g).sum()),
        }
    report["rank1_loo_landmarks"] = rank1_leave_one_out(lm_s, labels)
    return report


def synthetic_onnx_model() -> bytes:
    """A linear 112×112×3 → 512 ONNX model: times the ONNX plumbing, not a real network."""
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


def measure_embed(
    data: Path,
    *,
    repeat: int = 2,
    detector: str = "hog",
    upsample: int = 1,
    onnx_model: Path | None = None,
    onnx_config: Path | None = None,
    onnx_synthetic: bool = False,
    threads: int | None = None,
    compare_images: int = 0,
    compare_rounds: int = 3,
    workers: int = 2,
) -> dict[str, Any]:
    """Run the protocol on the photo set in ``data`` (``faces_johns.npz`` + ``faces/``).

    Parameters
    ----------
    data : Path
        Folder holding ``faces_johns.npz``.
    repeat : int
        Passes over the photo set for the throughput.
    detector, upsample :
        dlib detector (``"hog"`` or ``"cnn"``) and its upsampling.
    onnx_model, onnx_config : Path or None
        An ArcFace/SFace-style ``.onnx`` file and its JSON config, measured too when given.
    onnx_synthetic : bool
        Time the ONNX path on :func:`synthetic_onnx_model`.
    threads : int or None
        onnxruntime intra-op threads.
    compare_images, compare_rounds, workers :
        When ``compare_images`` > 0, :func:`compare_pipelines` over that many images.

    Returns
    -------
    dict
        ``dlib_throughput``, ``dlib_accuracy``, ``fusion``, ``onnx_*`` as measured (a key is
        absent when its dependency is; ``dlib`` then says why).
    """
    from pyfacematch.embed.dlib import DlibDetector, DlibEmbedder, dlib_available

    paths, labels, stored = load_photo_set(data)
    results: dict[str, Any] = {"n_photos": len(paths), "cpu_count": os.cpu_count()}

    if dlib_available():
        # 68 landmarks: the stored descriptors' alignment, and the landmark keys of the fusion
        emb = DlibEmbedder(detector, upsample=upsample, descriptor="dlib", points=68)
        tp, batch = measure_throughput(emb, paths, repeat)
        results["dlib_throughput"] = tp
        t = batch.templates()
        if not batch.failures:
            results["dlib_accuracy"] = photo_accuracy(t, labels, stored["embeddings"])
            lm = np.stack([r.faces[0].landmarks for r in batch.images])
            lm_s = landmark_key_scores(lm)
            results["fusion"] = fusion_report(
                t.astype(np.float64) @ t.T.astype(np.float64), lm_s, labels
            )
        else:
            results["dlib_failures"] = [(r.source, r.reason) for r in batch.failures]
        results["descriptor_agreement"] = descriptor_agreement(paths)
        results["occlusion"] = occlusion_report(paths, labels)
        if compare_images > 0:
            cmp = compare_pipelines(
                paths, n_images=compare_images, rounds=compare_rounds, workers=workers
            )
            tmpl = cmp.pop("_templates")
            for name, tm in tmpl.items():
                acc = photo_accuracy(tm[: len(paths)], labels, stored["embeddings"])
                cmp[name]["accuracy"] = {
                    k: acc[k] for k in ("loo_rank1", "enrol1_identify_rank1", "cos_to_stored_min")
                }
            results["compare"] = cmp
    else:
        results["dlib"] = "not installed: pip install 'pyfacematch[dlib]'"

    if onnx_model or onnx_synthetic:
        from pyfacematch.embed.onnx import OnnxEmbedder

        model = onnx_model if onnx_model else synthetic_onnx_model()
        det = DlibDetector(detector, upsample=upsample) if dlib_available() else None
        oemb = OnnxEmbedder(model, config=onnx_config, detector=det, intra_op_threads=threads)
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
            tp, ob = measure_throughput(oemb, paths, repeat)
            results["onnx_throughput"] = tp
        results["onnx_model"] = (
            "synthetic linear 112x112x3 -> 512" if onnx_synthetic else str(model)
        )
        if onnx_model and not ob.failures:
            t = ob.templates()
            results["onnx_accuracy"] = photo_accuracy(t, labels, np.zeros_like(t))
    return results
