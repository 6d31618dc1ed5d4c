"""Landmark keys: encode speed against a vectorised numpy pipeline, and synthetic accuracy.

Same protocol as the script ``bench/keys.py`` of the landmark-keys work (dense200, 2-D):

* **speed** — ``KeyModel.encode`` (C++ core, threads) on ``n`` synthetic faces with random
  occluders against :func:`numpy_encode`, the same pipeline in vectorised numpy (alignment and
  features in float64 from :mod:`pyfacematch.geometry`'s references, projection in float32),
  measured in the same run on the same faces; their keys are compared.
* **accuracy** — a key model is fitted on training identities disjoint from everything else;
  the gallery holds one clean face per identity; mated probes are another face of half of them,
  non-mated probes faces of identities never enrolled. Per probe condition (clean, mask, hand,
  sunglasses): *plain* = keys computed ignoring visibility (hidden points as the detector
  returned them, displaced), scored with ``pyfacematch.topk``; *masked* = keys from the visible
  points with region masks, scored with ``pyfacematch.masked_topk`` (``min_fraction`` 0.3).
  Rank-1 identification rate, FNIR at FPIR = 0.01 (:func:`pyfacematch.metrics.fnir_at_fpir`,
  max rank 1) and the 1:N DET curve.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

import pyfacematch as pf

__all__ = ["numpy_encode", "fit_model", "measure_key_speed", "measure_key_accuracy"]

Log = Callable[[str], None]
SCHEME = "dense200"
CONDITIONS = ("none", "mask", "hand", "sunglasses")


def numpy_encode(model: Any, x: np.ndarray, vis: np.ndarray | None) -> np.ndarray:
    """``KeyModel.encode``'s pipeline in vectorised numpy; float32 (n, d) keys."""
    from pyfacematch.keys.geometry import align_reference, features_reference

    s = model.scheme
    al, _ = align_reference(x, vis, s.mean_shape[:, : model.dims])
    f = (features_reference(al, vis, model.layout, model.mu) - model.mu).astype(np.float32)
    keys = np.zeros((len(x), model.dim), np.float32)
    lay = model.layout
    for b in range(lay.n_blocks):
        kb = f[:, lay.offsets[b] : lay.offsets[b + 1]] @ model.w_blocks[b]
        if vis is not None:
            ok = vis[:, s.region_points(b)].sum(1) >= lay.block_min_visible[b]
            kb *= ok[:, None]
        keys[:, model.blocks[b] : model.blocks[b + 1]] = kb
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    return keys


def fit_model(n_train_ids: int, n_total_ids: int, seed: int = 0) -> tuple[Any, Any, float]:
    """A dense200 2-D key model fitted on ``n_train_ids`` identities (5 faces each).

    The training identities are the last ``n_train_ids`` of a synthesizer of ``n_total_ids``;
    returns (model, synthesizer, fit seconds).
    """
    from pyfacematch.keys import KeyModel
    from pyfacematch.keys.synth import FaceSynthesizer

    syn = FaceSynthesizer(SCHEME, n_total_ids, seed=seed)
    ids = np.repeat(np.arange(n_total_ids - n_train_ids, n_total_ids), 5)
    tr = syn.sample(ids, seed=100, dims=2, occluder="none")
    t0 = time.perf_counter()
    model = KeyModel.fit(tr.landmarks, tr.identities, scheme=SCHEME, dim=128)
    return model, syn, time.perf_counter() - t0


def measure_key_speed(n: int, n_numpy: int, *, repeat: int = 3, log: Log = print) -> dict[str, Any]:
    """Faces per second of ``KeyModel.encode`` and of :func:`numpy_encode` on the same faces."""
    model, syn, _ = fit_model(300, 1300)
    f = syn.sample(np.arange(n) % 1000, seed=1, dims=2, occluder="random")
    model.encode(f.landmarks[:1000], f.visibility[:1000], on_error="flag")
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        model.encode(f.landmarks, f.visibility, on_error="flag")
        best = min(best, time.perf_counter() - t0)
    m = min(n, n_numpy)
    ok = np.ones(m, bool)
    k, mk, st = model.encode(f.landmarks[:m], f.visibility[:m], on_error="flag", return_status=True)
    ok = st == 0
    t0 = time.perf_counter()
    ref = numpy_encode(model, f.landmarks[:m][ok], f.visibility[:m][ok])
    t_np = time.perf_counter() - t0
    err = float(np.abs(k[ok] - ref).max()) if ok.any() else float("nan")
    out = {
        "scheme": SCHEME,
        "dims": 2,
        "key_dim": model.dim,
        "threads": pf.get_num_threads(),
        "faces": n,
        "faces_numpy": int(ok.sum()),
        "pyfacematch_faces_per_s": n / best,
        "numpy_faces_per_s": int(ok.sum()) / t_np,
        "max_abs_key_diff": err,
    }
    out["x_numpy"] = out["pyfacematch_faces_per_s"] / out["numpy_faces_per_s"]
    log(
        f"  encode {SCHEME} 2-D d={model.dim}: pyfacematch {out['pyfacematch_faces_per_s']:,.0f} faces/s, "
        f"numpy {out['numpy_faces_per_s']:,.0f} faces/s (x{out['x_numpy']:.1f}), max |diff| {err:.1e}"
    )
    return out


def _search_outcome(
    scores: np.ndarray, idx: np.ndarray, truth: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
    s = np.where(np.isnan(scores), -np.inf, scores)
    if truth is None:
        return s[:, 0].astype(np.float64)
    hit = idx == truth[:, None]
    rank = np.where(hit.any(1), hit.argmax(1) + 1, 0)
    mate = np.where(rank > 0, s[np.arange(len(s)), np.maximum(rank - 1, 0)], -np.inf)
    return rank, mate.astype(np.float64)


def measure_key_accuracy(
    n_ids: int, n_train_ids: int, *, k: int = 10, min_fraction: float = 0.3, log: Log = print
) -> dict[str, Any]:
    """Rank-1 and FNIR@FPIR=0.01 of plain vs masked cosine for each probe condition.

    Returns a dict with ``"rows"`` (one per condition × scoring) and ``"det"``
    (condition -> scoring -> :class:`~pyfacematch.metrics.ErrorCurve`, not JSON; removed by the
    suite after plotting).
    """
    from pyfacematch import metrics

    n_mated = n_ids // 2
    n_non = n_ids // 2
    # identities: 0..n_ids-1 enrolled, n_ids..n_ids+n_non-1 never enrolled, then training ones
    total = n_ids + n_non + n_train_ids
    model, syn, t_fit = fit_model(n_train_ids, total)
    log(f"  key model fitted on {n_train_ids} identities × 5 faces in {t_fit:.1f} s: {model}")
    gal = syn.sample(np.arange(n_ids), seed=200, dims=2)
    gk, gm = model.encode(gal.landmarks, on_error="flag")
    truth = np.arange(n_mated)
    sizes = np.diff(model.blocks)
    rows: list[dict[str, Any]] = []
    det: dict[str, dict[str, Any]] = {}
    for occ in CONDITIONS:
        mated = syn.sample(truth, seed=300, dims=2, occluder=occ)
        non = syn.sample(np.arange(n_ids, n_ids + n_non), seed=400, dims=2, occluder=occ)
        det[occ] = {}
        for mode in ("plain", "masked"):
            if mode == "plain":
                mk, mm, mst = model.encode(mated.landmarks, on_error="flag", return_status=True)
                nk, _, _ = model.encode(non.landmarks, on_error="flag", return_status=True)
                ms, mi = pf.topk(mk, gk, k)
                ns, ni = pf.topk(nk, gk, 1)
                frac = 1.0
            else:
                mk, mm, mst = model.encode(
                    mated.landmarks, mated.visibility, on_error="flag", return_status=True
                )
                nk, nmask = model.encode(non.landmarks, non.visibility, on_error="flag")
                ms, mi = pf.masked_topk(mk, gk, k, mm, gm, model.blocks, min_fraction=min_fraction)
                ns, ni = pf.masked_topk(
                    nk, gk, 1, nmask, gm, model.blocks, min_fraction=min_fraction
                )
                bits = (
                    (mm[:, None] >> np.arange(model.n_blocks, dtype=np.uint64)) & np.uint64(1)
                ).astype(bool)
                frac = float((bits * sizes).sum(1).mean() / model.dim)
            rank, mate = _search_outcome(ms, mi, truth)
            non_top = _search_outcome(ns, ni, None)
            (pt,) = metrics.fnir_at_fpir(rank, mate, non_top, fpir=(0.01,))
            curve = metrics.identification_det_curve(rank, mate, non_top)
            det[occ][mode] = curve
            rows.append(
                {
                    "probe": occ,
                    "scoring": mode,
                    "rank1": 1.0 - metrics.rank_miss_rate(rank, 1),
                    f"rank{k}": 1.0 - metrics.rank_miss_rate(rank, k),
                    "fnir_at_fpir_0.01": pt.fnir,
                    "fnir_ci95": [pt.fnir_ci.low, pt.fnir_ci.high],
                    "threshold": pt.threshold,
                    "fpir_supported": pt.supported,
                    "shared_fraction": frac,
                    "failed_to_encode": int((mst != 0).sum()),
                    "n_mated": int(len(truth)),
                    "n_non_mated": int(n_non),
                }
            )
            r = rows[-1]
            log(
                f"  {occ:<10} {mode:<6} rank-1 {r['rank1']:.4f}  FNIR@FPIR=0.01 {r['fnir_at_fpir_0.01']:.4f}"
                f"  shared {frac:.2f}"
            )
    return {
        "n_identities": n_ids,
        "n_train_identities": n_train_ids,
        "key_dim": model.dim,
        "blocks": model.n_blocks,
        "fit_s": t_fit,
        "min_fraction": min_fraction,
        "rows": rows,
        "det": det,
    }
