"""A scaled-down one-day identification job (issue 5 protocol) through the Gallery API.

A gallery of ``n`` synthetic identities (:mod:`~pyfacematch.bench.synthdata`) is enrolled in an
in-memory :class:`pyfacematch.Gallery` with the default backend (build and self-tuning timed
separately); ``m`` mated probes are generated in chunks, identified top-1 and written as CSV
rows (probe, identity, score) to a file, as the bulk job does; generation time is excluded.
Recall@1 against exact search is measured on a sample of the probes. The same probes (a
prefix) go through a gallery with the ``exact`` backend, the baseline of the speed ratio.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import pyfacematch as pf
from pyfacematch.bench.section import Log, summary_row
from pyfacematch.bench.synthdata import SyntheticIdentities

__all__ = ["measure_day_job", "section_dayjob"]

DAY = 1_000_000


def _run(
    g: Any, chunks: list[tuple[np.ndarray, np.ndarray]], path: str
) -> tuple[float, np.ndarray]:
    """Identify every chunk, write CSV rows; return (seconds, top-1 identity rows)."""
    got = []
    t = 0.0
    with open(path, "w") as f:
        f.write("probe,identity,score\n")
        done = 0
        for p, _ in chunks:
            t0 = time.perf_counter()
            res = g.identify_arrays(p, k=1)
            ids = res.identities[:, 0]
            sc = res.scores[:, 0]
            f.writelines(f"{done + i},{ids[i]},{sc[i]:.6f}\n" for i in range(len(ids)))
            t += time.perf_counter() - t0
            got.append(np.array([-1 if x is None else int(x[2:]) for x in ids]))
            done += len(ids)
    return t, np.concatenate(got)


def measure_day_job(
    n: int,
    m: int,
    *,
    d: int = 512,
    backend: str = "binary",
    exact_probes: int = 8192,
    recall_sample: int = 2048,
    batch: int = 4096,
    seed: int = 0,
    log: Log = print,
) -> dict[str, Any]:
    """Probes/s and recall@1 of a bulk identification job; the exact backend as the baseline."""
    syn = SyntheticIdentities(n, d, seed)
    gx = syn.gallery()
    names = [f"id{i}" for i in range(n)]
    chunks = list(syn.probes(m, seed=7, batch=batch))
    out: dict[str, Any] = {
        "n": n,
        "probes": m,
        "d": d,
        "backend": backend,
        "threads": pf.get_num_threads(),
    }
    fd, path = tempfile.mkstemp(suffix=".csv", prefix="pfm-dayjob-")
    os.close(fd)
    try:
        t0 = time.perf_counter()
        g = pf.Gallery(dim=d, backend=backend, seed=seed)
        g.enroll_many(names, gx)
        out["build_tune_s"] = time.perf_counter() - t0
        out["index"] = {
            k: v for k, v in g.index_info().items() if isinstance(v, (int, float, str, type(None)))
        }
        t, got = _run(g, chunks, path)
        out["search_write_s"] = t
        out["probes_per_s"] = m / t
        out["day_projection_s"] = DAY / out["probes_per_s"]
        truth = np.concatenate([c[1] for c in chunks])
        out["mate_at_rank1"] = float(np.mean(got == truth))
        s = min(recall_sample, m)
        sample, need = [], s  # only the first chunks: no copy of every probe
        for c, _ in chunks:
            if need <= 0:
                break
            sample.append(c[:need])
            need -= len(sample[-1])
        sample = np.concatenate(sample)
        ref = pf.topk(sample, gx, 1)[1][:, 0]
        out["recall1_vs_exact"] = float(np.mean(got[:s] == ref))
        out["recall_sample"] = s
        g.close()
        log(
            f"  {backend}: build+tune {out['build_tune_s']:.1f} s; {m:,} probes in {t:.1f} s = "
            f"{out['probes_per_s']:,.0f} probes/s; recall@1 vs exact {out['recall1_vs_exact']:.4f}"
        )
        # baseline: the exact backend on a prefix of the same probes
        ge = pf.Gallery(dim=d, backend="exact", seed=seed)
        ge.enroll_many(names, gx)
        pre, left = [], min(exact_probes, m)
        for p, ids in chunks:
            if left <= 0:
                break
            pre.append((p[:left], ids[:left]))
            left -= len(pre[-1][0])
        n_pre = sum(len(p) for p, _ in pre)
        te, _ = _run(ge, pre, path)
        ge.close()
        out["exact_probes"] = n_pre
        out["exact_probes_per_s"] = n_pre / te
        out["x_exact"] = out["probes_per_s"] / out["exact_probes_per_s"]
        log(
            f"  exact: {out['exact_probes_per_s']:,.0f} probes/s on {n_pre:,} probes (x{out['x_exact']:.1f})"
        )
    finally:
        os.unlink(path)
    return out


def section_dayjob(cfg: Mapping[str, Any], out: Path, log: Log) -> dict[str, Any]:

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
            summary_row(
                "day job",
                f"{r['probes']:,} probes vs {r['n']:,} ids, '{r['backend']}': probes/s "
                f"(recall@1 {r['recall1_vs_exact']:.3f})",
                r["probes_per_s"],
                "exact backend",
                r["exact_probes_per_s"],
            ),
        ],
    }
