"""Multi-modal photos: embedding alone, 478-point keys alone and fused, plain and occluded.

The protocol of ``python bench/multimodal.py`` (its thin entry point), on the shared photos
(``faces_johns.npz`` + ``faces/``: 54 photos of 5 people):

1. **Templates.** Every photo goes through :class:`~pyfacematch.jobs.multimodal.PhotoEncoder`
   (dlib descriptor + untrained ``mediapipe478`` 2-D key + occlusion detector) clean, and with
   a drawn-on face mask, sunglasses and a hand (:func:`~pyfacematch.embed.occlusion.
   draw_occluder`, seeded; drawn where the stored 478 points put the face). A photo the
   pipeline cannot encode is a failure to acquire (FTA, ISO/IEC 19795-1) and folds into the
   generalized rates (GFRR).
2. **Comparisons.** Photos are split in two folds, stratified by person (seeded). Within a
   fold, each (occluded or clean) probe photo is compared with the *clean* template of every
   other photo of the fold; the fusion (:class:`~pyfacematch.fusion.ScoreFusion`, logistic) is
   fitted on the clean pairs of the *other* fold, so no comparison is scored by weights fitted
   on its own photos. People are the same in both folds (five people only).
3. **Scores.** ``embedding`` (cosine); ``keys_plain`` (cosine over the whole key);
   ``keys_detected`` (masked cosine, block masks from the occlusion detector on the photo);
   ``keys_perfect`` (masked cosine, masks from the drawn truth: the optimistic synthetic
   figure); ``fused_*`` the fusion of the embedding with each key score. A masked comparison
   with too few common blocks is not comparable: it scores below any threshold.
4. **Metrics** (:mod:`pyfacematch.metrics`): FNMR at FMR = 1e-2 (and 1e-3, flagged
   unsupported: fewer than 3/FMR impostor comparisons), with the FTA folded into GFRR;
   closed-set rank-1; FNIR at FPIR = 0.1 (R = 1) over mated searches (all five people enrolled
   with their clean photos of the fold, the probe's own photo left out) and non-mated searches
   (the probe's own person left out of the gallery), identity score = best template per
   modality, then fused, as :class:`~pyfacematch.gallery.multimodal.MultimodalGallery` scores.

Small data, honest limits: ~1,400 impostor and ~250 genuine comparisons per condition, and the
comparisons are not independent (five people, each photo in many pairs); by the rule of three
no FMR below ~2e-3 and no FPIR below ~0.06 can be shown. Drawn occluders are not real ones.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "accuracy_report",
    "encode_conditions",
    "flag_error_rates",
    "format_table",
    "synthetic_with_detector_flags",
    "throughput_report",
]

#: The two people held out of the occlusion detector's training (see embed.occlusion).
HELD_OUT = ("John_Salley", "John_Savage")

CONDITIONS = ("clean", "mask", "sunglasses", "hand")
SCORES = (
    "embedding",
    "keys_plain",
    "keys_detected",
    "keys_perfect",
    "fused_plain",
    "fused_detected",
    "fused_perfect",
)
_NOT_COMPARABLE = -10.0  # below every similarity and fused score here


def _load(data: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    npz = np.load(data / "faces_johns.npz")
    paths = [str(data / "faces" / p.split("/", 1)[1]) for p in npz["paths"]]
    return paths, npz["labels"], npz["landmarks_mp478"]


def encode_conditions(
    paths: list[str], stored_mp478: np.ndarray, encoder: Any, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Templates of every photo, clean and with each drawn occluder.

    Returns, per condition: ``pos`` (photo indices acquired), ``emb``, ``keys``, ``detected``
    (key masks from the detector), ``perfect`` (key masks from the drawn truth; all blocks for
    clean photos), ``fta`` and the wall seconds of the encoding.
    """
    from pyfacematch.embed.images import load_image
    from pyfacematch.embed.occlusion import draw_occluder, hidden_truth, region_pixels

    km = encoder.key_model
    scheme = encoder.scheme
    rng = np.random.default_rng(seed)
    imgs = [load_image(p) for p in paths]
    full = np.uint64((1 << km.n_blocks) - 1)
    out: dict[str, dict[str, Any]] = {}
    for cond in CONDITIONS:
        covers: list[np.ndarray | None] = []
        if cond == "clean":
            drawn = imgs
            covers = [None] * len(imgs)
        else:
            drawn = []
            for img, lm in zip(imgs, stored_mp478):
                occ, cov = draw_occluder(img, lm, scheme, cond, rng)
                drawn.append(occ)
                covers.append(cov)
        t0 = time.perf_counter()
        t = encoder.encode(drawn)
        wall = time.perf_counter() - t0
        perfect = np.full(t.positions.size, full, np.uint64)
        truths = np.zeros_like(t.hidden)
        for r, p in enumerate(t.positions.tolist()):
            cov = covers[p]
            if cov is None:
                continue
            lm = t.landmarks[r]
            truth = hidden_truth(cov, region_pixels(imgs[p].shape[:2], lm, scheme))
            truths[r] = truth
            vis = ~truth[np.asarray(scheme.point_region)]
            _, m = km.encode(np.ascontiguousarray(lm[None, :, : km.dims], np.float32), vis[None])
            perfect[r] = m[0]
        out[cond] = {
            "pos": t.positions,
            "emb": t.embeddings,
            "keys": t.keys,
            "detected": t.key_masks,
            "perfect": perfect,
            "hidden_detected": t.hidden,
            "hidden_truth": truths,
            "fta": 1.0 - t.positions.size / len(paths),
            "rescued": int(t.rescued.size),
            "seconds": wall,
            "stage_ms_per_image": {
                k: round(1e3 * v / max(len(paths), 1), 2) for k, v in t.seconds.items()
            },
        }
    return out


def _scores(
    probe: dict[str, Any], ref: dict[str, Any], blocks: np.ndarray, n_blocks: int
) -> dict[str, np.ndarray]:
    """(n_probe, n_ref) score matrices of one condition against the clean references."""
    from pyfacematch.core.scoring import masked_scores

    full = np.full(ref["keys"].shape[0], (1 << n_blocks) - 1, np.uint64)
    pfull = np.full(probe["keys"].shape[0], (1 << n_blocks) - 1, np.uint64)
    e = probe["emb"].astype(np.float64) @ ref["emb"].T.astype(np.float64)

    def ms(pm: np.ndarray, rm: np.ndarray) -> np.ndarray:
        return np.asarray(masked_scores(probe["keys"], ref["keys"], pm, rm, blocks), np.float64)

    return {
        "embedding": e,
        "keys_plain": ms(pfull, full),
        "keys_detected": ms(probe["detected"], ref["detected"]),
        "keys_perfect": ms(probe["perfect"], full),
    }


def _folds(labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    part = np.empty(labels.size, np.int64)
    for p in np.unique(labels):
        m = rng.permutation(np.flatnonzero(labels == p))
        part[m] = np.arange(m.size) % 2
    return part


def _identity_level(s: np.ndarray, ref_labels: np.ndarray, people: list[str]) -> np.ndarray:
    """(n_probe, n_people): best score over each person's references (NaN ignored)."""
    out = np.full((s.shape[0], len(people)), np.nan)
    for j, p in enumerate(people):
        cols = s[:, ref_labels == p]
        if cols.shape[1]:
            with np.errstate(invalid="ignore"):
                best = np.where(np.isnan(cols), -np.inf, cols).max(1)
            out[:, j] = np.where(np.isfinite(best), best, np.nan)
    return out


def accuracy_report(
    conds: dict[str, dict[str, Any]], labels: np.ndarray, blocks: np.ndarray, seed: int = 0
) -> dict[str, Any]:
    """The 1:1 and 1:N figures of every condition and score (see the module docstring)."""
    from pyfacematch import metrics
    from pyfacematch.fusion import ScoreFusion, pair_scores

    n_blocks = int(len(blocks) - 1)
    part = _folds(labels, seed)
    clean = conds["clean"]
    people = sorted(set(labels.tolist()))
    # fusion per fold, fitted on the clean pairs of the other fold (keys: detected masks)
    fusions = {}
    for f in (0, 1):
        sel = np.flatnonzero(part[clean["pos"]] != f)
        sub = {k: v[sel] for k, v in clean.items() if isinstance(v, np.ndarray)}
        sc = _scores(sub, sub, blocks, n_blocks)
        kd = np.nan_to_num(sc["keys_detected"], nan=_NOT_COMPARABLE)
        x, gen = pair_scores([sc["embedding"], kd], labels[clean["pos"][sel]])
        fusions[f] = ScoreFusion("logistic").fit(x, gen)
    report: dict[str, Any] = {
        "photos": int(labels.size),
        "people": len(people),
        "fusion_weights": {
            f: fu.weights.tolist() for f, fu in fusions.items() if fu.weights is not None
        },
    }
    for cond, probe in conds.items():
        gen_s: dict[str, list[np.ndarray]] = {k: [] for k in SCORES}
        imp_s: dict[str, list[np.ndarray]] = {k: [] for k in SCORES}
        rank1: dict[str, list[np.ndarray]] = {k: [] for k in SCORES}
        mated_r: dict[str, list[np.ndarray]] = {k: [] for k in SCORES}
        mated_s: dict[str, list[np.ndarray]] = {k: [] for k in SCORES}
        nonmated: dict[str, list[np.ndarray]] = {k: [] for k in SCORES}
        for f in (0, 1):
            pi = np.flatnonzero(part[probe["pos"]] == f)
            ri = np.flatnonzero(part[clean["pos"]] == f)
            pr = {k: v[pi] for k, v in probe.items() if isinstance(v, np.ndarray)}
            rf = {k: v[ri] for k, v in clean.items() if isinstance(v, np.ndarray)}
            sc = _scores(pr, rf, blocks, n_blocks)
            for kind in ("plain", "detected", "perfect"):
                k = np.nan_to_num(sc[f"keys_{kind}"], nan=_NOT_COMPARABLE)
                sc[f"fused_{kind}"] = fusions[f].fuse([sc["embedding"], k])
            plab = labels[pr["pos"]]
            rlab = labels[rf["pos"]]
            same_photo = pr["pos"][:, None] == rf["pos"][None, :]
            gen = (plab[:, None] == rlab[None, :]) & ~same_photo
            imp = plab[:, None] != rlab[None, :]
            for name in SCORES:
                s = np.where(np.isnan(sc[name]), _NOT_COMPARABLE, sc[name])
                gen_s[name].append(s[gen])
                imp_s[name].append(s[imp])
                s_own = np.where(same_photo, np.nan, s)  # never match a photo with itself
                ident = _identity_level(s_own, rlab, people)
                ident = np.where(np.isnan(ident), _NOT_COMPARABLE, ident)
                mate = np.array([people.index(x) for x in plab])
                mate_score = ident[np.arange(len(mate)), mate]
                rank = 1 + (ident > mate_score[:, None]).sum(1)
                rank1[name].append(rank == 1)
                mated_r[name].append(rank)
                mated_s[name].append(mate_score)
                others = ident.copy()
                others[np.arange(len(mate)), mate] = -np.inf  # own person not enrolled
                nonmated[name].append(others.max(1))
        rows: dict[str, Any] = {
            "fta": round(probe["fta"], 4),
            "rescued_by_mesh": probe["rescued"],
            # the rescued photos are those HOG missed: without the rescue they fail to acquire
            "fta_without_rescue": round(probe["fta"] + probe["rescued"] / labels.size, 4),
        }
        for name in SCORES:
            g, i = np.concatenate(gen_s[name]), np.concatenate(imp_s[name])
            ops = metrics.fnmr_at_fmr(g, i, [1e-2, 1e-3], fta=probe["fta"])
            idp = metrics.fnir_at_fpir(
                np.concatenate(mated_r[name]),
                np.concatenate(mated_s[name]),
                np.concatenate(nonmated[name]),
                [0.1],
            )[0]
            rows[name] = {
                "fnmr_at_fmr_1e-2": round(ops[0].fnmr, 4),
                "gfrr_at_fmr_1e-2": round(ops[0].gfrr, 4),
                "fnmr_at_fmr_1e-3": round(ops[1].fnmr, 4),
                "fmr_1e-3_supported": ops[1].supported,
                "rank1": round(float(np.concatenate(rank1[name]).mean()), 4),
                "fnir_at_fpir_0.1": round(idp.fnir, 4),
                "fpir_0.1_supported": idp.supported,
                "n_genuine": int(g.size),
                "n_impostor": int(i.size),
                "n_mated": idp.n_mated,
                "n_non_mated": idp.n_non_mated,
            }
        report[cond] = rows
    return report


def flag_error_rates(
    conds: dict[str, dict[str, Any]], labels: np.ndarray, people: tuple[str, ...] = HELD_OUT
) -> dict[str, dict[str, float]]:
    """Per region of the landmarker's scheme: how often the occlusion detector flags a region
    the drawn occluder hides (``p_flag_hidden``) and one it does not (``p_flag_visible``), over
    every condition, on the photos of ``people`` (held out of the detector's training)."""
    from pyfacematch.keys.schemes import get_scheme

    det, tru = [], []
    for c in conds.values():
        keep = np.isin(labels[c["pos"]], people)
        det.append(c["hidden_detected"][keep])
        tru.append(c["hidden_truth"][keep])
    d, t = np.concatenate(det), np.concatenate(tru)
    regions = get_scheme("mediapipe478").regions
    out = {}
    for j, r in enumerate(regions):
        nh, nv = int(t[:, j].sum()), int((~t[:, j]).sum())
        out[r] = {
            "p_flag_hidden": float(d[t[:, j], j].mean()) if nh else float("nan"),
            "p_flag_visible": float(d[~t[:, j], j].mean()) if nv else float("nan"),
            "n_hidden": nh,
            "n_visible": nv,
        }
    return out


def synthetic_with_detector_flags(
    rates: dict[str, dict[str, float]],
    *,
    n_ids: int = 1000,
    n_train_ids: int = 300,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The synthetic landmark-key benchmark (:mod:`pyfacematch.bench.accuracy`: dense200, 2-D,
    trained key model, one clean gallery face per identity, half mated / half non-mated probes)
    with three kinds of visibility: ``plain`` (none: every point counts), ``perfect`` (the
    synthesiser's own flags, the optimistic figure) and ``detector``: the region flags a real
    detector would give, drawn from the rates measured on real photos (:func:`flag_error_rates`;
    a region counts as hidden when most of its points are, then it is flagged with
    ``p_flag_hidden``, a visible one with ``p_flag_visible``; a region never seen hidden on the
    photos is flagged at the pooled rate). Rank-1 and FNIR at FPIR = 0.01 per occluder."""
    import pyfacematch as pf
    from pyfacematch import metrics
    from pyfacematch.bench.accuracy import search_outcome
    from pyfacematch.bench.keys import fit_model

    rng = np.random.default_rng(seed)
    n_mated = n_non = n_ids // 2
    model, syn, _ = fit_model(n_train_ids, n_ids + n_non + n_train_ids)
    scheme = model.scheme
    pr = np.asarray(scheme.point_region)
    pooled_h = np.nanmean([v["p_flag_hidden"] for v in rates.values()])
    pooled_v = np.nanmean([v["p_flag_visible"] for v in rates.values()])
    ph = np.array([rates.get(r, {}).get("p_flag_hidden", np.nan) for r in scheme.regions])
    pv = np.array([rates.get(r, {}).get("p_flag_visible", np.nan) for r in scheme.regions])
    ph = np.where(np.isnan(ph), pooled_h, ph)
    pv = np.where(np.isnan(pv), pooled_v, pv)
    gal = syn.sample(np.arange(n_ids), seed=200, dims=2)
    gk, gm = model.encode(gal.landmarks, on_error="flag")
    truth = np.arange(n_mated)

    def detector_flags(vis: np.ndarray) -> np.ndarray:
        nreg = len(scheme.regions)
        frac_hidden = np.stack([(~vis[:, pr == j]).mean(1) for j in range(nreg)], axis=1)
        hid = frac_hidden > 0.5
        u = rng.random(hid.shape)
        flag = np.where(hid, u < ph[None, :], u < pv[None, :])
        return ~flag[:, pr]

    rows = []
    for occ in ("none", "mask", "hand", "sunglasses"):
        mated = syn.sample(truth, seed=300, dims=2, occluder=occ)
        non = syn.sample(np.arange(n_ids, n_ids + n_non), seed=400, dims=2, occluder=occ)
        for mode in ("plain", "perfect", "detector"):
            if mode == "plain":
                mv, nv = None, None
            elif mode == "perfect":
                mv, nv = mated.visibility, non.visibility
            else:
                mv, nv = detector_flags(mated.visibility), detector_flags(non.visibility)
            mk, mm = model.encode(mated.landmarks, mv, on_error="flag")
            nk, nm = model.encode(non.landmarks, nv, on_error="flag")
            if mode == "plain":
                ms, mi = pf.topk(mk, gk, 10)
                ns, ni = pf.topk(nk, gk, 1)
            else:
                ms, mi = pf.masked_topk(mk, gk, 10, mm, gm, model.blocks)
                ns, ni = pf.masked_topk(nk, gk, 1, nm, gm, model.blocks)
            rank, mate = search_outcome(ms, mi, truth)
            non_top = search_outcome(ns, ni, None)
            (pt,) = metrics.fnir_at_fpir(rank, mate, non_top, fpir=(0.01,))
            rows.append(
                {
                    "probe": occ,
                    "visibility": mode,
                    "rank1": round(1.0 - metrics.rank_miss_rate(rank, 1), 4),
                    "fnir_at_fpir_0.01": round(pt.fnir, 4),
                    "fpir_supported": pt.supported,
                    "n_mated": int(n_mated),
                    "n_non_mated": int(n_non),
                }
            )
    return rows


def format_table(report: dict[str, Any]) -> str:
    """Markdown table: one row per condition and score."""
    lines = [
        "| condition | score | FNMR @ FMR 1e-2 | GFRR | rank-1 | FNIR @ FPIR 0.1 | FTA "
        "(without rescue) |",
        "|---|---|---|---|---|---|---|",
    ]
    for cond in CONDITIONS:
        r = report.get(cond)
        if r is None:
            continue
        for name in SCORES:
            x = r[name]
            lines.append(
                f"| {cond} | {name} | {x['fnmr_at_fmr_1e-2']:.3f} | {x['gfrr_at_fmr_1e-2']:.3f} "
                f"| {x['rank1']:.3f} | {x['fnir_at_fpir_0.1']:.3f} | {r['fta']:.3f} "
                f"({r['fta_without_rescue']:.3f}) |"
            )
    syn = report.get("synthetic_keys")
    if syn:
        lines += [
            "",
            "| synthetic probe | visibility | rank-1 | FNIR @ FPIR 0.01 |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['probe']} | {r['visibility']} | {r['rank1']:.3f} | {r['fnir_at_fpir_0.01']:.3f} |"
            for r in syn
        ]
    return "\n".join(lines)


def throughput_report(
    paths: list[str], *, n_images: int = 540, rounds: int = 3, workers: int = 2
) -> dict[str, Any]:
    """Images/s of the photo → fused-template path against today's photo → embedding path,
    in the same run, rounds interleaved (medians), plus the load average before and after."""
    from pyfacematch.embed.parallel import ParallelEmbedder
    from pyfacematch.jobs.multimodal import ParallelPhotoEncoder, PhotoEncoder

    work = (paths * (-(-n_images // len(paths))))[:n_images]
    load0 = os.getloadavg()
    pipes: dict[str, Any] = {
        "embedding_parallel": ParallelEmbedder("dlib", workers=workers, upsample="auto"),
        "fused_1proc": PhotoEncoder(policy="largest"),
        "fused_parallel": ParallelPhotoEncoder(workers=workers, policy="largest"),
    }

    def run(name: str, batch: list[str]) -> Any:
        p = pipes[name]
        return p.embed(batch) if name == "embedding_parallel" else p.encode(batch)

    t0 = time.perf_counter()
    warm = (paths * 4)[: 32 * workers]  # several chunks, so every worker loads its models
    for name in pipes:
        run(name, warm)
    start_s = time.perf_counter() - t0
    rates: dict[str, list[float]] = {k: [] for k in pipes}
    try:
        for r in range(rounds):
            names = list(pipes)
            names = names[r % len(names) :] + names[: r % len(names)]
            for name in names:
                t = time.perf_counter()
                run(name, work)
                rates[name].append(n_images / (time.perf_counter() - t))
    finally:
        pipes["embedding_parallel"].close()
        pipes["fused_parallel"].close()
    out: dict[str, Any] = {
        "n_images": n_images,
        "rounds": rounds,
        "workers": workers,
        "cpu": _cpu_name(),
        "load_average_before": [round(x, 2) for x in load0],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "models_load_and_start_s": round(start_s, 2),
    }
    for name in pipes:
        out[name] = {
            "images_per_s_median": round(float(np.median(rates[name])), 2),
            "images_per_s_rounds": [round(x, 2) for x in rates[name]],
        }
    base = out["embedding_parallel"]["images_per_s_median"]
    for name in ("fused_1proc", "fused_parallel"):
        out[f"ratio_{name}_vs_embedding_parallel"] = round(
            out[name]["images_per_s_median"] / base, 3
        )
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def run(
    data: Path, *, seed: int = 0, throughput_images: int = 0, rounds: int = 3
) -> dict[str, Any]:
    """The whole protocol; ``throughput_images`` > 0 adds :func:`throughput_report`."""
    from pyfacematch.jobs.multimodal import PhotoEncoder

    paths, labels, mp478 = _load(data)
    enc = PhotoEncoder(policy="largest")
    conds = encode_conditions(paths, mp478, enc, seed)
    rep = accuracy_report(conds, labels, enc.key_model.blocks, seed)
    rates = flag_error_rates(conds, labels)
    rep["detector_flag_rates_held_out"] = {
        r: {k: (round(v, 3) if isinstance(v, float) else v) for k, v in x.items()}
        for r, x in rates.items()
    }
    rep["synthetic_keys"] = synthetic_with_detector_flags(rates, seed=seed)
    rep["encode_seconds"] = {c: round(v["seconds"], 2) for c, v in conds.items()}
    rep["stage_ms_per_image"] = {c: v["stage_ms_per_image"] for c, v in conds.items()}
    rep["load_average"] = [round(x, 2) for x in os.getloadavg()]
    rep["cpu"] = _cpu_name()
    if throughput_images > 0:
        rep["throughput"] = throughput_report(paths, n_images=throughput_images, rounds=rounds)
    return rep
