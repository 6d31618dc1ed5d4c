"""Landmark-key accuracy on synthetic faces: plain against masked cosine, per probe condition.

Protocol (dense200, 2-D): a key model is fitted on training identities disjoint from everything
else (5 faces each); the gallery holds one clean face per identity; mated probes are another face
of half of them, non-mated probes faces of identities never enrolled. Per probe condition (clean,
mask, hand, sunglasses): *plain* = keys computed ignoring visibility (hidden points as the detector
returned them, displaced), scored with ``pyfacematch.topk``; *masked* = keys from the visible
points with region masks, scored with ``pyfacematch.masked_topk`` (``min_fraction`` 0.3).
Rank-1 identification rate, FNIR at FPIR = 0.01 (:func:`pyfacematch.metrics.fnir_at_fpir`,
max rank 1) and the 1:N DET curve. ``python bench/keys.py accuracy`` prints the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import pyfacematch as pf
from pyfacematch.bench.keys import fit_model
from pyfacematch.bench.section import Log, require, save_plot, summary_row

__all__ = ["CONDITIONS", "search_outcome", "measure_key_accuracy", "section_accuracy"]

CONDITIONS = ("none", "mask", "hand", "sunglasses")


def search_outcome(
    scores: np.ndarray, idx: np.ndarray, truth: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
    """Mate ranks and scores of mated searches, or top scores of non-mated ones.

    Parameters
    ----------
    scores, idx : ndarray, (m, k)
        A top-k result (NaN scores: no candidate).
    truth : ndarray of int, (m,), or None
        Mate of each search; None for non-mated searches.

    Returns
    -------
    (rank, mate_score) : int (m,) with 0 = mate not in the list, float64 (m,) with -inf there;
    or, without ``truth``, the top score of each search, float64 (m,) (-inf: empty list).
    """
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
            rank, mate = search_outcome(ms, mi, truth)
            non_top = search_outcome(ns, ni, None)
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


def section_accuracy(cfg: Mapping[str, Any], out: Path, log: Log) -> dict[str, Any]:
    for module in ("pyfacematch.keys", "pyfacematch.keys.synth"):
        require(module, "landmark keys are not importable: {exc}")
    from pyfacematch.bench.report import bars_figure
    from pyfacematch.plots import det_figure

    r = measure_key_accuracy(cfg["n_ids"], cfg["n_train"], log=log)
    det = r.pop("det")
    names = {"none": "clean", "mask": "surgical mask", "hand": "hand", "sunglasses": "sunglasses"}
    plots = []
    no_curve = []
    for occ, curves in det.items():
        drawable = any(
            bool(np.any((c.fmr > 0) & (c.fnmr > 0) & (c.fmr < 1) & (c.fnmr < 1)))
            for c in curves.values()
        )
        if not drawable:  # no errors at any threshold: nothing to draw on log axes
            no_curve.append(names[occ])
            continue
        plots.append(
            save_plot(
                det_figure(
                    {f"{m} cosine": c for m, c in curves.items()},
                    title=f"1:N DET, {names[occ]} probes ({r['n_identities']:,}-identity gallery)",
                ),
                out,
                f"accuracy_det_{occ}",
                f"DET (FNIR vs FPIR, log axes), {names[occ]} probes: plain vs masked cosine",
            )
        )
    by_ = {(x["probe"], x["scoring"]): x for x in r["rows"]}
    groups = [names[o] for o in det]
    for metric, label, stem in (
        ("rank1", "rank-1 identification rate (higher is better)", "accuracy_rank1"),
        ("fnir_at_fpir_0.01", "FNIR at FPIR = 0.01 (lower is better)", "accuracy_fnir"),
    ):
        plots.append(
            save_plot(
                bars_figure(
                    groups,
                    {
                        f"{m} cosine": [by_[(o, m)][metric] for o in det]
                        for m in ("plain", "masked")
                    },
                    ylabel=label,
                    title=f"{label.split(' (')[0]} by probe condition, {r['n_identities']:,} identities",
                    log=False,
                ),
                out,
                stem,
                f"{label.split(' (')[0]}: plain vs masked cosine for each probe condition",
            )
        )
    rows = [
        [
            names[x["probe"]],
            x["scoring"],
            x["rank1"],
            x["rank10"],
            x["fnir_at_fpir_0.01"],
            f"[{x['fnir_ci95'][0]:.3f}, {x['fnir_ci95'][1]:.3f}]",
            x["shared_fraction"],
            x["failed_to_encode"],
        ]
        for x in r["rows"]
    ]
    summary = []
    by = {(x["probe"], x["scoring"]): x for x in r["rows"]}
    for occ in ("none", "mask", "hand", "sunglasses"):
        p, m = by[(occ, "plain")], by[(occ, "masked")]
        summary.append(
            summary_row(
                "accuracy",
                f"rank-1, {names[occ]} probes (masked cosine)",
                m["rank1"],
                "plain cosine",
                p["rank1"],
                ratio_text=f"{m['rank1'] - p['rank1']:+.3f}",
            )
        )
        summary.append(
            summary_row(
                "accuracy",
                f"FNIR@FPIR=0.01, {names[occ]} probes (masked cosine)",
                m["fnir_at_fpir_0.01"],
                "plain cosine",
                p["fnir_at_fpir_0.01"],
                ratio_text=f"{m['fnir_at_fpir_0.01'] - p['fnir_at_fpir_0.01']:+.3f}",
            )
        )
    notes = {}
    if no_curve:
        notes["DET plots left out"] = (
            f"{', '.join(no_curve)} probes: FNIR is 0 at every FPIR above 0 for both scorings (no errors "
            "to draw on log axes)"
        )
    return {
        "notes": notes,
        "description": (
            f"Synthetic dense200 2-D faces. Key model fitted on {r['n_train_identities']:,} training identities "
            f"(5 faces each, disjoint); gallery: one clean face of each of {r['n_identities']:,} identities; "
            f"{r['rows'][0]['n_mated']:,} mated probes (another face of enrolled identities) and "
            f"{r['rows'][0]['n_non_mated']:,} non-mated probes (identities never enrolled) per condition. "
            "Plain = keys ignoring visibility (hidden points as returned, displaced), `pyfacematch.topk`; masked = "
            f"keys from the visible points + region masks, `pyfacematch.masked_topk` (min_fraction "
            f"{r['min_fraction']}). FNIR at FPIR = 0.01 counts a mate only at rank 1 (95 % Clopper-Pearson interval)."
        ),
        "data": r,
        "tables": [
            {
                "title": None,
                "headers": [
                    "probes",
                    "scoring",
                    "rank-1",
                    "rank-10",
                    "FNIR@FPIR=0.01",
                    "FNIR 95 % CI",
                    "shared dims",
                    "failed to encode",
                ],
                "rows": rows,
            }
        ],
        "plots": plots,
        "summary": summary,
    }
