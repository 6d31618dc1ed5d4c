"""Named benchmark suites (``smoke``, ``quick``, ``full``) and their sections.

Each section measures pyfacematch and its baseline in the same run and returns tables, plots and
summary rows for the report. A section whose dependency is missing (an optional package, a
part of pyfacematch that is not importable) is reported as *skipped* with the reason; a section
that raises is reported as *failed* with the error; neither stops the suite.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SUITES", "SECTIONS", "run_suite", "SkipSection"]

Log = Callable[[str], None]


class SkipSection(Exception):
    """Raised by a section whose dependencies are missing; the message is the reason."""


#: sizes of each suite; ``quick`` < 10 minutes on 2 cores, ``full`` about an hour
SUITES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "scoring": {
            "n": 2000,
            "dims": [64],
            "batches": [1, 16],
            "sizes": [1000, 2000],
            "size_batch": 16,
            "cosine_d": 64,
            "cosine_calls": 5000,
        },
        "keys": {"n": 2000, "n_numpy": 500, "repeat": 1},
        "accuracy": {"n_ids": 600, "n_train": 60},
        "backends": {
            "n": 2000,
            "d": 128,
            "n_probes": 256,
            "single": 20,
            "tune_probes": 100,
            "sweep_points": 3,
            "backends": ("exact", "binary", "hnsw"),
        },
        "dayjob": {
            "n": 2000,
            "m": 2000,
            "d": 128,
            "exact_probes": 500,
            "recall_sample": 500,
            "batch": 500,
        },
    },
    "quick": {
        "scoring": {
            "n": 100_000,
            "dims": [512],
            "batches": [1, 64, 1024],
            "sizes": [10_000, 30_000, 100_000],
            "size_batch": 64,
            "cosine_d": 512,
        },
        "keys": {"n": 100_000, "n_numpy": 10_000, "repeat": 3},
        "accuracy": {"n_ids": 2000, "n_train": 1000},
        "backends": {
            "n": 20_000,
            "d": 512,
            "n_probes": 512,
            "single": 50,
            "tune_probes": 300,
            "sweep_points": 4,
            "hnsw_max_depth": 256,
            "backends": ("exact", "binary", "flat", "hnsw", "ivf", "ivfpq"),
        },
        "dayjob": {
            "n": 50_000,
            "m": 50_000,
            "d": 512,
            "exact_probes": 4096,
            "recall_sample": 2048,
        },
    },
    "full": {
        "scoring": {
            "n": 1_000_000,
            "dims": [512, 128],
            "batches": [1, 64, 1024],
            "sizes": [10_000, 100_000, 300_000, 1_000_000],
            "size_batch": 64,
            "cosine_d": 512,
        },
        "keys": {"n": 500_000, "n_numpy": 20_000, "repeat": 3},
        "accuracy": {"n_ids": 10_000, "n_train": 2000},
        "backends": {
            "n": 200_000,
            "d": 512,
            "n_probes": 2048,
            "single": 200,
            "tune_probes": 1000,
            "sweep_points": 6,
            "hnsw_max_depth": 1024,
            "hnswlib_max": 200_000,
            "backends": ("exact", "binary", "flat", "hnsw", "ivf", "ivfpq"),
        },
        "dayjob": {
            "n": 1_000_000,
            "m": 1_000_000,
            "d": 512,
            "exact_probes": 8192,
            "recall_sample": 4096,
        },
    },
}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _plot(fig: Any, out: Path, stem: str, title: str) -> dict[str, str]:
    from pyfacematch.plots import save_figure

    save_figure(fig, out / stem, ("png", "svg"))
    return {"title": title, "file": f"{stem}.png"}


def _sum(
    section: str,
    measure: str,
    value: Any,
    baseline: str | None = None,
    baseline_value: Any = None,
    ratio: float | None = None,
    ratio_text: str | None = None,
) -> dict[str, Any]:
    if ratio is None and ratio_text is None and baseline_value:
        ratio = value / baseline_value
    if ratio is not None and ratio_text is None:
        ratio_text = f"×{ratio:.3g}"
    return {
        "section": section,
        "measure": measure,
        "value": value,
        "baseline": baseline,
        "baseline_value": baseline_value,
        "ratio": ratio,
        "ratio_text": ratio_text,
    }


# ------------------------------------------------------------------------------------ sections
def _require(module: str, why: str) -> Any:
    """Import ``module`` or skip the section: ``why`` says what is missing ({exc}: the error)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SkipSection(why.format(exc=exc)) from exc


def section_scoring(cfg: Mapping[str, Any], out: Path, log: Log) -> dict[str, Any]:
    faiss = _require("faiss", "faiss is not installed ({exc}): pip install faiss-cpu")
    import pyfacematch as pf
    from pyfacematch.bench import scoring as sc
    from pyfacematch.bench.report import bars_figure
    from pyfacematch.bench.util import median_time, unit_rows
    from pyfacematch.plots import throughput_figure

    skip: tuple[str, ...] = ()
    try:
        import simsimd  # noqa: F401
    except ImportError:
        skip = ("simsimd",)
    n = cfg["n"]
    results, _ = sc.measure_topk(n, list(cfg["dims"]), list(cfg["batches"]), skip, log=log)
    rows = []
    for r in results:
        u = r["us_per_probe"]
        s = r["speedup"]
        rows.append(
            [
                r["d"],
                r["batch"],
                u["pyfacematch"],
                u.get("numpy"),
                u.get("faiss"),
                u.get("simsimd"),
                s.get("numpy"),
                s.get("faiss"),
                s.get("simsimd"),
                f"{r['bandwidth_fraction']:.0%}",
                r["top1_agrees_with_numpy"],
            ]
        )
    calls = sc.cosine_call_ns(cfg["cosine_d"], cfg.get("cosine_calls", 200_000))
    # throughput against gallery size at one batch size
    mb = cfg["size_batch"]
    d = 512 if cfg["cosine_d"] == 512 else cfg["dims"][0]
    series: dict[str, list[float]] = {
        "pyfacematch.topk": [],
        "numpy (matmul + argpartition)": [],
        "FAISS IndexFlatIP": [],
    }
    q = unit_rows(mb, d, 77)
    for size in cfg["sizes"]:
        g = unit_rows(size, d, 78)
        idx = faiss.IndexFlatIP(d)
        idx.add(g)
        rep = 5 if size <= 100_000 else 3
        calls_ = {
            "pyfacematch.topk": lambda g=g: pf.topk(q, g, sc.K),
            "numpy (matmul + argpartition)": lambda g=g: sc.numpy_topk(q, g, sc.K),
            "FAISS IndexFlatIP": lambda idx=idx: idx.search(q, sc.K),
        }
        for k_, fn_ in calls_.items():
            series[k_].append(mb / median_time(fn_, repeat=rep))
        log(f"  N={size:,}: " + ", ".join(f"{k} {v[-1]:,.0f} probes/s" for k, v in series.items()))
    plots = [
        _plot(
            throughput_figure(
                {k: (cfg["sizes"], v) for k, v in series.items()},
                title=f"Exact top-{sc.K} throughput, d = {d}, batches of {mb} probes",
            ),
            out,
            "scoring_throughput",
            f"Exact top-{sc.K}: probes/s against gallery size (d = {d}, batch {mb})",
        ),
    ]
    d0 = cfg["dims"][0]
    sel = [r for r in results if r["d"] == d0]
    engines = ["pyfacematch", "numpy", "faiss", "simsimd"]
    plots.append(
        _plot(
            bars_figure(
                [f"batch {r['batch']}" for r in sel],
                {
                    e: [r["us_per_probe"].get(e, np.nan) for r in sel]
                    for e in engines
                    if any(e in r["us_per_probe"] for r in sel)
                },
                ylabel="µs per probe (log scale, lower is better)",
                title=f"Exact top-{sc.K} over N = {n:,}, d = {d0}: time per probe",
            ),
            out,
            "scoring_us_per_probe",
            f"Time per probe by engine and batch size (N = {n:,}, d = {d0})",
        )
    )
    summary = []
    for r in results:
        if r["d"] == d0:
            summary.append(
                _sum(
                    "scoring",
                    f"top-{sc.K}, N={n:,}, d={d0}, batch {r['batch']}: µs/probe",
                    r["us_per_probe"]["pyfacematch"],
                    "numpy",
                    r["us_per_probe"].get("numpy"),
                    ratio=r["speedup"].get("numpy"),
                )
            )
            if "faiss" in r["speedup"]:
                summary.append(
                    _sum(
                        "scoring",
                        f"top-{sc.K}, N={n:,}, d={d0}, batch {r['batch']}: µs/probe",
                        r["us_per_probe"]["pyfacematch"],
                        "FAISS IndexFlatIP",
                        r["us_per_probe"]["faiss"],
                        ratio=r["speedup"]["faiss"],
                    )
                )
    summary.append(
        _sum(
            "scoring",
            f"1:1 cosine from Python, d={cfg['cosine_d']}: ns/call",
            calls["pyfacematch.cosine"],
            "numpy.dot",
            calls["numpy.dot"],
            ratio=calls["numpy.dot"] / calls["pyfacematch.cosine"],
        )
    )
    headers = [
        "d",
        "batch",
        "pfm µs/probe",
        "numpy µs",
        "faiss µs",
        "simsimd µs",
        "× numpy",
        "× faiss",
        "× simsimd",
        "of read bandwidth",
        "top-1 = numpy",
    ]
    return {
        "description": (
            f"Exact top-{sc.K} of unit float32 templates, gallery N = {n:,}, median time per call divided by "
            "the batch; 'x engine' = engine time / pyfacematch time (>1: pyfacematch faster). numpy = "
            "matmul + argpartition over gallery chunks; FAISS = IndexFlatIP.search; SimSIMD = cdist + "
            "argpartition (batches ≤ 64). Read bandwidth = the larger of numpy sums and the core's streaming read on every core, same run."
        ),
        "data": {
            "topk": results,
            "cosine_ns": calls,
            "throughput": {"sizes": cfg["sizes"], "batch": mb, "d": d, "probes_per_s": series},
        },
        "tables": [
            {"title": f"Top-{sc.K} over N = {n:,}", "headers": headers, "rows": rows},
            {
                "title": f"1:1 cosine(a, b) from Python, d = {cfg['cosine_d']} (ns per call)",
                "headers": ["call", "ns/call", "× vs pyfacematch.cosine"],
                "rows": [[k, v, v / calls["pyfacematch.cosine"]] for k, v in calls.items()],
            },
            {
                "title": f"Throughput against gallery size (probes/s, batch {mb}, d = {d})",
                "headers": ["N", *series.keys(), "× numpy", "× FAISS"],
                "rows": [
                    [
                        s,
                        *[series[k][i] for k in series],
                        series["pyfacematch.topk"][i] / series["numpy (matmul + argpartition)"][i],
                        series["pyfacematch.topk"][i] / series["FAISS IndexFlatIP"][i],
                    ]
                    for i, s in enumerate(cfg["sizes"])
                ],
            },
        ],
        "plots": plots,
        "summary": summary,
    }


def section_keys(cfg: Mapping[str, Any], out: Path, log: Log) -> dict[str, Any]:
    for module in ("pyfacematch.keys", "pyfacematch.keys.synth"):
        _require(module, "landmark keys are not importable: {exc}")
    from pyfacematch.bench.keys import measure_key_speed

    r = measure_key_speed(cfg["n"], cfg["n_numpy"], repeat=cfg.get("repeat", 3), log=log)
    return {
        "description": (
            "`KeyModel.encode` (C++ core: alignment, region features, projection, masks) against the same "
            "pipeline in vectorised numpy, on the same synthetic dense200 2-D faces with random occluders "
            "(none/mask/hand/sunglasses); faces/s, numpy timed on a prefix."
        ),
        "data": r,
        "tables": [
            {
                "title": None,
                "headers": ["engine", "faces", "faces/s", "× numpy"],
                "rows": [
                    [
                        "pyfacematch KeyModel.encode",
                        r["faces"],
                        r["pyfacematch_faces_per_s"],
                        r["x_numpy"],
                    ],
                    ["numpy pipeline", r["faces_numpy"], r["numpy_faces_per_s"], 1.0],
                ],
                "note": f"Key dimension {r['key_dim']}, {r['threads']} threads; largest |key difference| "
                f"between the two: {r['max_abs_key_diff']:.1e}.",
            }
        ],
        "plots": [],
        "summary": [
            _sum(
                "keys",
                f"keys/s ({r['scheme']} 2-D, d={r['key_dim']})",
                r["pyfacematch_faces_per_s"],
                "numpy pipeline",
                r["numpy_faces_per_s"],
            )
        ],
    }


def section_accuracy(cfg: Mapping[str, Any], out: Path, log: Log) -> dict[str, Any]:
    for module in ("pyfacematch.keys", "pyfacematch.keys.synth"):
        _require(module, "landmark keys are not importable: {exc}")
    from pyfacematch.bench.keys import measure_key_accuracy
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
            _plot(
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
            _plot(
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
            _sum(
                "accuracy",
                f"rank-1, {names[occ]} probes (masked cosine)",
                m["rank1"],
                "plain cosine",
                p["rank1"],
                ratio_text=f"{m['rank1'] - p['rank1']:+.3f}",
            )
        )
        summary.append(
            _sum(
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


def section_backends(cfg: Mapping[str, Any], out: Path, log: Log) -> dict[str, Any]:
    _require("faiss", "faiss is not installed ({exc}): pip install faiss-cpu")
    from pyfacematch.bench.backends import measure_backends
    from pyfacematch.bench.report import recall_speed_figure

    kw = {k: v for k, v in cfg.items() if k != "n"}
    r = measure_backends(cfg["n"], log=log, **kw)
    plots = [
        _plot(
            recall_speed_figure(
                r["curves"], r["tuned"], title=f"Recall@1 vs probes/s, N = {r['n']:,}, d = {r['d']}"
            ),
            out,
            "backends_recall_speed",
            "Recall@1 against exact search vs probes/s: Gallery backends (solid, stars = self-tuned), "
            "FAISS without re-rank and hnswlib (dashed)",
        )
    ]
    tuned_rows = [
        [
            t["backend"],
            t["build_tune_s"],
            t["depth"],
            t["bytes_per_id"],
            t["recall1"],
            t["probes_per_s_b1024"],
            t["x_exact"],
            t["probes_per_s_b1"],
        ]
        for t in r["tuned"]
    ]
    curve_rows = [
        [
            eng,
            p["depth"],
            p["recall1"],
            p["probes_per_s"],
            p["probes_per_s"] / r["exact_probes_per_s"] if r.get("exact_probes_per_s") else None,
        ]
        for eng, pts in r["curves"].items()
        for p in pts
    ]
    summary = []
    ex = r.get("exact_probes_per_s")
    for t in r["tuned"]:
        if t["backend"] != "exact":
            summary.append(
                _sum(
                    "backends",
                    f"Gallery '{t['backend']}' N={r['n']:,}: probes/s (recall@1 {t['recall1']:.3f})",
                    t["probes_per_s_b1024"],
                    "Gallery 'exact'",
                    ex,
                )
            )
    for eng, pts in r["curves"].items():
        if eng.startswith("pyfacematch"):
            continue
        good = [p for p in pts if p["recall1"] >= 0.99]
        best = (
            max(good, key=lambda p: p["probes_per_s"])
            if good
            else max(pts, key=lambda p: p["recall1"])
        )
        summary.append(
            _sum(
                "backends",
                f"{eng}: probes/s at {'recall@1 ≥ 0.99' if good else 'its best recall'}"
                f" ({best['recall1']:.3f}, depth {best['depth']})",
                best["probes_per_s"],
                "Gallery 'exact'",
                ex,
            )
        )
    notes = {k: v for k, v in r["skipped"].items()}
    if "hnswlib_build_s" in r:
        notes["hnswlib build (M=32, ef_construction=80)"] = f"{r['hnswlib_build_s']:.1f} s"
    return {
        "description": (
            f"Synthetic gallery (issue 4 protocol): {r['n']:,} identities at d = {r['d']}, one template each; "
            f"{r['n_probes']:,} mated probes (fresh templates, cosine ≈ 0.65 to their mate; the mate is the exact "
            f"top-1 for {r['mate_at_rank1_exact']:.1%} of them). Recall@1 = agreement with exact top-1 "
            "(`pyfacematch.topk`). Gallery rows: built through `Gallery.enroll_many` (in-memory store, index build, "
            "self-tuning to recall@1 ≥ 0.99), searched with `identify_arrays`; ratios against the 'exact' backend "
            "through the same API. Sweeps: the backend's depth set directly (HNSW efSearch, IVF nprobe, binary "
            "shortlist length); FAISS rows search the same index without the exact re-rank."
        ),
        "data": r,
        "tables": [
            {
                "title": "Self-tuned backends (Gallery API)",
                "headers": [
                    "backend",
                    "enroll+build+tune s",
                    "depth",
                    "code bytes/id",
                    "recall@1",
                    "probes/s (batch 1024)",
                    "× exact",
                    "probes/s (batch 1)",
                ],
                "rows": tuned_rows,
            },
            {
                "title": "Recall/speed sweep (batch 1024)",
                "headers": ["engine", "depth", "recall@1", "probes/s", "× Gallery exact"],
                "rows": curve_rows,
            },
        ],
        "plots": plots,
        "summary": summary,
        "notes": notes,
    }


def section_dayjob(cfg: Mapping[str, Any], out: Path, log: Log) -> dict[str, Any]:
    from pyfacematch.bench.dayjob import measure_day_job

    r = measure_day_job(
        cfg["n"], cfg["m"], **{k: v for k, v in cfg.items() if k not in ("n", "m")}, log=log
    )
    return {
        "description": (
            f"A scaled-down day: {r['probes']:,} mated probes against {r['n']:,} synthetic identities (d = {r['d']}), "
            f"default backend '{r['backend']}' through `Gallery.identify_arrays` in chunks, top-1 rows written as "
            "CSV (probe generation excluded). Recall@1 against exact search on a sample; the exact backend on a "
            "prefix of the same probes is the baseline. 'One day' = 1,000,000 probes at the measured rate "
            "(against this gallery size, not a million identities)."
        ),
        "data": r,
        "tables": [
            {
                "title": None,
                "headers": [
                    "backend",
                    "build+tune s",
                    "probes",
                    "search+write s",
                    "probes/s",
                    "× exact",
                    "recall@1 vs exact",
                    "mate at rank 1",
                    "1M probes would take s",
                ],
                "rows": [
                    [
                        r["backend"],
                        r["build_tune_s"],
                        r["probes"],
                        r["search_write_s"],
                        r["probes_per_s"],
                        r["x_exact"],
                        r["recall1_vs_exact"],
                        r["mate_at_rank1"],
                        r["day_projection_s"],
                    ],
                    [
                        "exact",
                        None,
                        r["exact_probes"],
                        r["exact_probes"] / r["exact_probes_per_s"],
                        r["exact_probes_per_s"],
                        1.0,
                        1.0,
                        None,
                        1e6 / r["exact_probes_per_s"],
                    ],
                ],
            }
        ],
        "plots": [],
        "summary": [
            _sum(
                "day job",
                f"{r['probes']:,} probes vs {r['n']:,} ids, '{r['backend']}': probes/s "
                f"(recall@1 {r['recall1_vs_exact']:.3f})",
                r["probes_per_s"],
                "exact backend",
                r["exact_probes_per_s"],
            ),
        ],
    }


#: (key, title, function) in run order
SECTIONS: list[tuple[str, str, Callable[[Mapping[str, Any], Path, Log], dict[str, Any]]]] = [
    ("scoring", "Scoring speed against numpy, FAISS and SimSIMD", section_scoring),
    ("keys", "Landmark keys per second against numpy", section_keys),
    ("backends", "Search backends: recall@1 against probes/s (FAISS, hnswlib)", section_backends),
    (
        "accuracy",
        "Landmark-key accuracy on synthetic faces: plain vs masked cosine",
        section_accuracy,
    ),
    ("dayjob", "A scaled-down one-day job", section_dayjob),
]


def run_suite(
    name: str,
    out_dir: str | Path,
    *,
    log: Log | None = None,
    sections: list[str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run a named suite and write ``out_dir``/results.json, report.md and plots (PNG + SVG).

    Parameters
    ----------
    name : {"smoke", "quick", "full"}
        ``smoke`` takes seconds (for tests), ``quick`` minutes, ``full`` about an hour.
    out_dir : str or path-like
        Report folder (created).
    log : callable or None
        Progress lines (default: print to stderr).
    sections : list of str or None
        Run only these sections (keys of :data:`SECTIONS`); the others are reported as skipped.
    overrides : mapping or None
        Section -> size parameters replacing the suite's.

    Returns
    -------
    dict
        The results written to results.json (plus ``"report"``: the path of report.md).

    Raises
    ------
    InputError
        Unknown suite or section name.
    """
    from pyfacematch.bench.report import write_json, write_report
    from pyfacematch.bench.util import machine
    from pyfacematch.errors import InputError

    if name not in SUITES:
        raise InputError(f"unknown benchmark suite {name!r}: choose one of {', '.join(SUITES)}")
    known = [k for k, _, _ in SECTIONS]
    if sections is not None:
        bad = [s for s in sections if s not in known]
        if bad:
            raise InputError(f"unknown benchmark section(s) {bad}: choose from {', '.join(known)}")
    if log is None:

        def log(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {k: dict(v) for k, v in SUITES[name].items()}
    for k, v in (overrides or {}).items():
        cfg.setdefault(k, {}).update(v)
    t_start = time.perf_counter()
    c_start = time.process_time()
    results: dict[str, Any] = {
        "suite": name,
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": f"pyfacematch bench {name} --out {out}",
        "machine": machine(),
        "platform": platform.platform(),
        "load_average_start": _loadavg(),
        "config": cfg,
        "sections": [],
    }
    log(f"pyfacematch bench: suite {name!r} -> {out}")
    for key, title, fn in SECTIONS:
        sec: dict[str, Any] = {"key": key, "title": title, "status": "ok", "reason": None}
        t0 = time.perf_counter()
        c0 = time.process_time()
        if sections is not None and key not in sections:
            sec.update(status="skipped", reason="not selected")
        else:
            log(f"[{key}] {title}")
            try:
                sec.update(fn(cfg[key], out, log))
            except SkipSection as exc:
                sec.update(status="skipped", reason=str(exc))
            except (ImportError, AttributeError) as exc:
                sec.update(
                    status="skipped",
                    reason=f"a dependency is missing or incomplete: {exc!r}",
                    traceback=traceback.format_exc(),
                )
            except Exception as exc:  # a failing section must not stop the others
                sec.update(
                    status="failed",
                    reason=f"{type(exc).__name__}: {exc}",
                    traceback=traceback.format_exc(),
                )
        sec["seconds"] = time.perf_counter() - t0
        sec["cpu_seconds"] = time.process_time() - c0
        if sec["status"] != "ok":
            log(f"[{key}] {sec['status']}: {sec['reason']}")
        else:
            log(f"[{key}] done in {sec['seconds']:.1f} s")
        results["sections"].append(sec)
    results["wall_s"] = time.perf_counter() - t_start
    results["cpu_s"] = time.process_time() - c_start
    results["load_average_end"] = _loadavg()
    write_json(results, out / "results.json")
    report = write_report(results, out)
    results = json.loads((out / "results.json").read_text())  # plain JSON types, as written
    results["report"] = str(report)
    log(f"pyfacematch bench: wrote {out / 'report.md'} in {results['wall_s']:.0f} s")
    return results
