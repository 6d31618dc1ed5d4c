"""Gallery search backends against FAISS and hnswlib: recall@1 against probes/s, same run.

Data: :class:`~pyfacematch.bench.synthdata.SyntheticIdentities` (issue 4 protocol). Every
:class:`pyfacematch.Gallery` backend is built through the public API (``enroll_many`` into an
in-memory gallery: store, index build and self-tuning to recall@1 ≥ 0.99), then searched with
``identify_arrays``. Recall@1 is measured against exact search (``pyfacematch.topk``) on the
same probes. In the same run, for the approximate backends, their search depth is swept to draw
a recall-vs-speed curve, and the same FAISS indexes are searched on their own (no exact
re-rank), together with ``faiss.IndexBinaryFlat`` + the core's re-rank and hnswlib.

The depth sweep sets the backend's depth directly (``Gallery._backend.set_depth``): the public
API only exposes the self-tuned point.
"""

from __future__ import annotations

import functools
import gc
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

import pyfacematch as pf
from pyfacematch.bench.section import Log, require, save_plot, summary_row
from pyfacematch.bench.synthdata import SyntheticIdentities
from pyfacematch.gallery import Gallery

__all__ = [
    "measure_backends",
    "backends_tables",
    "measure_real_codes",
    "rate",
    "section_backends",
]


def _identify_top1(g: Any, p: np.ndarray) -> Any:
    return g.identify_arrays(p, k=1)


def rate(
    fn: Callable[[np.ndarray], Any], probes: np.ndarray, batch: int, limit: int | None = None
) -> float:
    """Probes per second of ``fn`` over ``probes`` in batches of ``batch`` (after one warm-up batch).

    Each full batch is timed on its own and the rate is ``batch / median time``: on a shared
    machine a neighbour's burst then moves one sample instead of the whole figure.
    """
    n = probes.shape[0] if limit is None else min(limit, probes.shape[0])
    fn(probes[: min(batch, n)])
    if n < batch:
        t0 = time.perf_counter()
        fn(probes[:n])
        return n / (time.perf_counter() - t0)
    times = []
    for s in range(0, n - batch + 1, batch):
        t0 = time.perf_counter()
        fn(probes[s : s + batch])
        times.append(time.perf_counter() - t0)
    return batch / float(np.median(times))


def _sweep(ladder: list[int], tuned: int | None, max_points: int, cap: int | None) -> list[int]:
    lad = sorted(
        {int(x) for x in ladder if cap is None or x <= cap} | ({int(tuned)} if tuned else set())
    )
    if len(lad) <= max_points:
        return lad
    idx = np.unique(np.round(np.linspace(0, len(lad) - 1, max_points)).astype(int))
    out = {lad[i] for i in idx}
    if tuned:
        out.add(int(tuned))
    return sorted(out)


def measure_backends(
    n: int,
    d: int = 512,
    *,
    backends: tuple[str, ...] = ("exact", "binary", "flat", "hnsw", "ivf", "ivfpq"),
    n_probes: int = 1024,
    single: int = 100,
    sweep_points: int = 6,
    hnsw_max_depth: int = 1024,
    hnswlib_max: int = 200_000,
    tune_probes: int = 1000,
    tune_similarity: float | None = None,
    hnswlib: bool = True,
    seed: int = 0,
    log: Log = print,
) -> dict[str, Any]:
    """Build every backend on the same gallery and measure recall@1 against probes/s.

    Parameters
    ----------
    n, d : int
        Gallery identities and template dimension.
    backends : tuple of str
        Gallery backends to measure (``exact`` is the baseline of the ratios).
    n_probes : int
        Mated probes; timed in batches of 1024 (``single`` of them one at a time).
    sweep_points : int
        Depths per approximate backend in the recall/speed sweep.
    hnsw_max_depth : int
        Largest HNSW ``efSearch`` in the sweep.
    hnswlib_max : int
        hnswlib is built on at most this many identities (skipped beyond).
    tune_probes : int
        ``Gallery(tune_probes=...)``.
    tune_similarity : float or None
        ``Gallery(tune_similarity=...)``: cosine of the self-tuning probes (None: the Gallery
        default; the protocol's genuine cosine is about 0.65).
    hnswlib : bool
        Measure hnswlib too (when installed).
    seed : int
        Seed of the synthetic data and of the Gallery.

    Returns
    -------
    dict
        ``"tuned"``: one row per backend at its self-tuned point; ``"curves"``: engine ->
        list of {depth, recall1, probes_per_s}; ``"skipped"``: engine -> reason;
        ``"exact_probes_per_s"``: the baseline.
    """
    import faiss

    syn = SyntheticIdentities(n, d, seed)
    t0 = time.perf_counter()
    gal_x = syn.gallery()
    probes, truth = syn.mated_probes(n_probes, seed=1)
    log(f"  data: {n:,} × {d} gallery, {n_probes} mated probes ({time.perf_counter() - t0:.1f} s)")
    ref = pf.topk(probes, gal_x, 1)[1][:, 0]
    names = [f"id{i}" for i in range(n)]
    out: dict[str, Any] = {
        "n": n,
        "d": d,
        "n_probes": n_probes,
        "mate_at_rank1_exact": float(np.mean(ref == truth)),
        "tuned": [],
        "curves": {},
        "skipped": {},
    }

    def recall_of_rows(rows: np.ndarray) -> float:
        return float(np.mean(rows == ref))

    def recall_of_names(idents: np.ndarray) -> float:
        rows = np.array([-1 if x is None else int(x[2:]) for x in idents[:, 0]])
        return recall_of_rows(rows)

    sweep_p = probes[: min(n_probes, 1024)]
    ref_s = ref[: len(sweep_p)]

    def sweep(name: str, g: Any) -> None:
        """The approximate backend's depth sweep (and plain FAISS on its index), in place."""
        b = g._backend
        if not b.approximate or not b.active:
            return
        tuned = b.depth
        ladder = b.depth_ladder(g._m) if name != "binary" else [1, 2, 4, 8, 16, 32, 64, 128]
        depths = _sweep(ladder, tuned, sweep_points, hnsw_max_depth if name == "hnsw" else None)
        curve, plain = [], []
        index = getattr(b, "index", None)
        for dep in depths:
            b.set_depth(dep)
            got = g.identify_arrays(sweep_p, k=1).identities
            rows = np.array([-1 if x is None else int(x[2:]) for x in got[:, 0]])
            curve.append(
                {
                    "depth": dep,
                    "recall1": float(np.mean(rows == ref_s)),
                    "probes_per_s": rate(functools.partial(_identify_top1, g), sweep_p, 1024),
                }
            )
            if index is not None:

                def fs(p: np.ndarray, index: Any = index) -> np.ndarray:
                    return index.search(p, 1)[1]

                lab = g._m.rows_of_tids(fs(sweep_p))[:, 0]
                plain.append(
                    {
                        "depth": dep,
                        "recall1": float(np.mean(lab == ref_s)),
                        "probes_per_s": rate(fs, sweep_p, 1024),
                    }
                )
        b.set_depth(tuned)
        out["curves"][f"pyfacematch {name}"] = curve
        if plain:
            out["curves"][f"FAISS {name} (no re-rank)"] = plain
        log(
            f"  {name} sweep: "
            + ", ".join(
                f"{c['depth']}: {c['recall1']:.3f}@{c['probes_per_s']:,.0f}/s" for c in curve
            )
        )

    def faiss_flat() -> None:
        """FAISS IndexFlatIP on its own: the exact baseline of FAISS (built once the
        flat gallery is closed, so the two 4-byte copies are never held together)."""
        idx = faiss.IndexFlatIP(d)
        idx.add(gal_x)
        lab = idx.search(sweep_p, 1)[1][:, 0]
        out["curves"]["FAISS IndexFlatIP"] = [
            {
                "depth": None,
                "recall1": float(np.mean(lab == ref_s)),
                "probes_per_s": rate(lambda p: idx.search(p, 1), sweep_p, 1024),
            }
        ]

    def binary_vs_faiss(g: Any) -> None:
        """FAISS IndexBinaryFlat and the core's hamming_topk on the binary backend's codes,
        each + the exact re-rank."""
        bb = g._backend
        codes = bb.codes(g._m.n)
        bidx = faiss.IndexBinaryFlat(codes.shape[1] * 8)
        bidx.add(codes)
        view = g._m.view
        lengths = sorted({1, 4, 16, 64, int(bb.depth)})
        curve: list[dict[str, Any]] = []
        core: list[dict[str, Any]] = []
        for c in lengths:

            def fb(p: np.ndarray, c: int = c) -> np.ndarray:
                _, cand = bidx.search(pf.pack_signs(p, center=bb.center), c)
                return pf.rerank(p, view, cand, 1)[1]

            def cb(p: np.ndarray, c: int = c) -> np.ndarray:
                _, cand = pf.hamming_topk(pf.pack_signs(p, center=bb.center), codes, c)
                return pf.rerank(p, view, cand, 1)[1]

            for fn, dest in ((fb, curve), (cb, core)):
                rows = fn(sweep_p)[:, 0]
                dest.append(
                    {
                        "depth": c,
                        "recall1": float(np.mean(rows == ref_s)),
                        "probes_per_s": rate(fn, sweep_p, 1024),
                    }
                )
        out["curves"]["pyfacematch hamming_topk + re-rank (no Gallery)"] = core
        out["curves"]["FAISS IndexBinaryFlat + re-rank"] = curve

    for name in backends:
        t0 = time.perf_counter()
        try:
            kw: dict[str, Any] = (
                {} if tune_similarity is None else {"tune_similarity": tune_similarity}
            )
            g = Gallery(dim=d, backend=name, tune_probes=tune_probes, seed=seed, **kw)
            g.enroll_many(names, gal_x)
        except ImportError as exc:  # pragma: no cover - faiss missing
            out["skipped"][name] = f"not importable: {exc}"
            continue
        t_build = time.perf_counter() - t0
        info = g.index_info()

        def api(p: np.ndarray, g: Any = g) -> Any:
            return g.identify_arrays(p, k=1)

        rec = recall_of_names(api(probes).identities)
        ps = rate(api, probes, 1024)
        ps1 = rate(api, probes, 1, single)
        share = None
        b = g._backend
        if b.approximate and b.active:  # time of the exact re-rank within a search
            p = probes[:1024]
            t0 = time.perf_counter()
            cand = b.shortlist(g._m, p, 1)
            t1 = time.perf_counter()
            pf.rerank(p, g._m.view, cand, 1)
            share = (time.perf_counter() - t1) / (time.perf_counter() - t0)
        row = {
            "backend": name,
            "build_tune_s": t_build,
            "depth": info.get("depth"),
            "tuned_recall_sample": info.get("measured_recall_at_1"),
            "bytes_per_id": float(g._backend.code_bytes_per_template()),
            "probes_per_s_b1": ps1,
            "probes_per_s_b1024": ps,
            "recall1": rec,
            "rerank_share": share,
            "search": info.get("search"),
        }
        out["tuned"].append(row)
        log(
            f"  {name}: enroll+build+tune {t_build:.1f} s, depth {row['depth']}, "
            f"recall@1 {rec:.4f}, {ps:,.0f} probes/s (batch 1024), {ps1:,.0f} probes/s (batch 1)"
        )
        # One gallery at a time (issue 14: at 1M, holding every backend's float32 copy and index
        # until the end peaked at 13.7 GB): its sweeps now, then it is closed and freed.
        sweep(name, g)
        if name == "binary":
            binary_vs_faiss(g)
        g.close()
        del g, b, api
        gc.collect()
        if name == "flat":
            faiss_flat()

    base = next((r for r in out["tuned"] if r["backend"] == "exact"), None)
    out["exact_probes_per_s"] = base["probes_per_s_b1024"] if base else None
    for r in out["tuned"]:
        r["x_exact"] = r["probes_per_s_b1024"] / base["probes_per_s_b1024"] if base else None

    try:
        if not hnswlib:
            raise ImportError("not requested")
        import hnswlib as hnswlib_mod
    except ImportError as exc:
        out["skipped"]["hnswlib"] = (
            "not requested"
            if not hnswlib
            else f"hnswlib not installed ({exc}); pip install hnswlib"
        )
    else:
        if n > hnswlib_max:
            out["skipped"]["hnswlib"] = f"gallery of {n:,} above hnswlib_max={hnswlib_max:,}"
        else:
            t0 = time.perf_counter()
            h = hnswlib_mod.Index(space="ip", dim=d)
            h.init_index(max_elements=n, M=32, ef_construction=80, random_seed=1)
            h.add_items(gal_x, np.arange(n), num_threads=os.cpu_count() or 1)
            out["hnswlib_build_s"] = time.perf_counter() - t0
            curve = []
            for ef in _sweep([16, 32, 64, 128, 256, 512, 1024], None, sweep_points, hnsw_max_depth):
                h.set_ef(ef)
                rows = h.knn_query(sweep_p, k=1)[0][:, 0].astype(np.int64)
                curve.append(
                    {
                        "depth": ef,
                        "recall1": float(np.mean(rows == ref_s)),
                        "probes_per_s": rate(lambda p: h.knn_query(p, k=1), sweep_p, 1024),
                    }
                )
            out["curves"]["hnswlib M=32"] = curve
            log(
                f"  hnswlib: build {out['hnswlib_build_s']:.1f} s; "
                + ", ".join(
                    f"ef {c['depth']}: {c['recall1']:.3f}@{c['probes_per_s']:,.0f}/s" for c in curve
                )
            )
            del h
    return out


def backends_tables(r: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The report tables of :func:`measure_backends`'s result: tuned backends, then the sweep."""
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
            "" if t.get("rerank_share") is None else f"{t['rerank_share']:.0%}",
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
    return [
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
                "re-rank share",
            ],
            "rows": tuned_rows,
        },
        {
            "title": "Recall/speed sweep (batch 1024)",
            "headers": ["engine", "depth", "recall@1", "probes/s", "× Gallery exact"],
            "rows": curve_rows,
        },
    ]


def section_backends(cfg: Mapping[str, Any], out: Path, log: Log) -> dict[str, Any]:
    require("faiss", "faiss is not installed ({exc}): pip install faiss-cpu")
    from pyfacematch.bench.report import recall_speed_figure

    kw = {k: v for k, v in cfg.items() if k != "n"}
    r = measure_backends(cfg["n"], log=log, **kw)
    plots = [
        save_plot(
            recall_speed_figure(
                r["curves"], r["tuned"], title=f"Recall@1 vs probes/s, N = {r['n']:,}, d = {r['d']}"
            ),
            out,
            "backends_recall_speed",
            "Recall@1 against exact search vs probes/s: Gallery backends (solid, stars = self-tuned), "
            "FAISS without re-rank and hnswlib (dashed)",
        )
    ]
    summary = []
    ex = r.get("exact_probes_per_s")
    for t in r["tuned"]:
        if t["backend"] != "exact":
            summary.append(
                summary_row(
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
            summary_row(
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
        "tables": backends_tables(r),
        "plots": plots,
        "summary": summary,
        "notes": notes,
    }


def measure_real_codes(
    embeddings: np.ndarray, lengths: tuple[int, ...] = (1, 2, 4, 8)
) -> dict[str, dict[int, float]]:
    """1-bit codes + exact re-rank on real embeddings: leave-one-out agreement with exact top-1.

    A check that sign codes still rank well on a model whose embeddings are not centred.

    Parameters
    ----------
    embeddings : ndarray, (n, d)
        Unit embeddings (e.g. the dlib descriptors of ``faces_johns.npz``).
    lengths : tuple of int
        Shortlist lengths ``C`` of the Hamming scan before the re-rank.

    Returns
    -------
    dict
        ``{"centred on gallery mean" | "no centring": {C: recall@1}}``.
    """
    e = np.ascontiguousarray(embeddings, np.float32)
    n = e.shape[0]
    cos = e @ e.T
    np.fill_diagonal(cos, -np.inf)
    ref = cos.argmax(1)
    out: dict[str, dict[int, float]] = {}
    for label, center in (("centred on gallery mean", e.mean(0)), ("no centring", None)):
        codes = pf.pack_signs(e, center=center)
        out[label] = {}
        for c in lengths:
            hits = 0
            for i in range(n):
                keep = np.r_[0:i, i + 1 : n]
                _, cand = pf.hamming_topk(codes[i], np.ascontiguousarray(codes[keep]), c)
                _, top = pf.rerank(e[i], np.ascontiguousarray(e[keep]), cand, 1)
                hits += int(keep[top[0]] == ref[i])
            out[label][c] = hits / n
    return out
