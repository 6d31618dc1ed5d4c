"""Scoring benchmark: pyfacematch top-k against numpy, FAISS IndexFlatIP and SimSIMD, same run.

Prints one table: gallery N (default 1,000,000) at d = 512 and 128, probe batches of 1, 64, 1024,
top-10, time per probe of each engine and pyfacematch's speed-up over each; the machine's read
bandwidth (the larger of numpy sums and the core's streaming read, on every core) and sgemm GFLOP/s (numpy matmul, BLAS) with pyfacematch's
fraction of each; and the 1:1 ``cosine`` call against ``numpy.dot`` and ``simsimd.cosine``.

    python bench/scoring.py                 # the issue's protocol (needs ~6 GB, a few minutes)
    python bench/scoring.py --n 200000      # smaller gallery
    python bench/scoring.py --json out.json

The measurements are functions (``measure_topk``, ``cosine_call_ns`` …) so that the benchmark suite
(``pyfacematch bench``) runs the same code as this script.
"""

from __future__ import annotations

import argparse
import functools
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import pyfacematch as pf
from pyfacematch.bench.section import Log, require, save_plot, summary_row
from pyfacematch.bench.util import (
    machine,
    machine_line,
    median_time,
    median_times_interleaved,
    table,
    unit_rows,
)

K = 10


def numpy_topk(
    q: np.ndarray, g: np.ndarray, k: int, chunk: int = 131072
) -> tuple[np.ndarray, np.ndarray]:
    """The straightforward numpy way: gallery @ q, argpartition, merged over gallery chunks."""
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for s in range(0, len(g), chunk):
        sc = q @ g[s : s + chunk].T
        part = np.argpartition(-sc, k - 1, axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(sc, part, 1)], 1)
        best_i = np.concatenate([best_i, part + s], 1)
    order = np.argsort(-best_s, axis=1)[:, :k]
    return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)


def simsimd_topk(q: np.ndarray, g: np.ndarray, k: int, chunk: int = 131072) -> np.ndarray:
    """SimSIMD's cdist (cosine distance, all threads) then argpartition, over gallery chunks."""
    import os

    import simsimd

    threads = os.cpu_count() or 1
    best_d = np.full((len(q), 0), np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for s in range(0, len(g), chunk):
        dist = np.asarray(
            simsimd.cdist(q, g[s : s + chunk], metric="cosine", threads=threads), np.float32
        )
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        best_d = np.concatenate([best_d, np.take_along_axis(dist, part, 1)], 1)
        best_i = np.concatenate([best_i, part + s], 1)
    order = np.argsort(best_d, axis=1)[:, :k]
    return np.take_along_axis(best_i, order, 1)


#: The core's read variants (``_core.stream_read(g, variant, d)``): the benchmark quotes the fastest.
READ_VARIANTS = {"one stream": 0, "four streams": 1, "four rows": 2}


def read_calls(g: np.ndarray) -> dict[str, Any]:
    """One call per read variant of the core's ``stream_read`` over ``g`` (every thread, the active
    SIMD level): one stream per part, four streams per part read together, and rows of ``d`` four at
    a time — the one-probe scan's own order, without its arithmetic."""
    from pyfacematch import _core

    d = int(g.shape[1]) if g.ndim == 2 else 0
    return {
        f"read: {name}": functools.partial(_core.stream_read, g, v, d)
        for name, v in READ_VARIANTS.items()
    }


def read_bandwidth(g: np.ndarray, repeat: int = 5) -> dict[str, float]:
    """Bytes/s of reading ``g`` once on every core, several ways; the largest is the ceiling quoted.

    ``numpy``: ``np.add.reduce`` on one slice per thread. ``core …``: the core's ``stream_read``
    variants (:func:`read_calls`), timed in interleaved rounds. A scan that reads four rows at once
    can beat a one-stream read (the lead measured the float32 scan at 77 ms against 98 ms for the
    one-stream read on a quiet machine), so only the maximum over the variants is a ceiling.
    """
    import os

    threads = os.cpu_count() or 1
    parts = np.array_split(g.reshape(-1), threads)

    def run() -> None:
        ts = [threading.Thread(target=np.add.reduce, args=(p,)) for p in parts]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    calls: dict[str, Any] = {"numpy": run, **read_calls(g)}
    times = median_times_interleaved(calls, repeat=repeat, warmup=1)
    out = {name.replace("read: ", "core "): g.nbytes / t for name, t in times.items()}
    out["core"] = max(v for k, v in out.items() if k.startswith("core "))
    out["ceiling"] = max(out.values())
    return out


def compact_exact(g: np.ndarray, kind: str = "int8") -> tuple[Any, float]:
    """The exact compact path's gallery: ``g`` quantised once to ``kind`` with ``g`` attached as the
    float32 source of the exact re-score; returns (matrix, build seconds). Prepared once, like
    FAISS's ``add()``, so its build is reported apart from the search time."""
    import time

    t0 = time.perf_counter()
    c = pf.CompactMatrix.from_float32(g, kind, exact=g)
    return c, time.perf_counter() - t0


def check_exact(
    got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray], what: str
) -> None:
    """Raise unless ``got`` has the same top-k ids as ``want`` and the same scores (numpy's BLAS
    sums in another order: float32 rounding, 1e-5 absolute)."""
    gs, gi = (np.asarray(a) for a in got)
    ws, wi = (np.asarray(a) for a in want)
    if not np.array_equal(gi.reshape(wi.shape), wi):
        raise AssertionError(f"{what}: top-{wi.shape[-1]} ids differ from numpy's exact answer")
    err = float(np.max(np.abs(gs.reshape(ws.shape).astype(np.float64) - ws)))
    if err > 1e-5:
        raise AssertionError(f"{what}: scores differ from numpy's exact answer by {err:.2e}")


def sgemm_flops(d: int, repeat: int = 3) -> float:
    """FLOP/s of numpy's float32 matmul (BLAS, all threads) at the benchmark's shape."""
    a = unit_rows(1024, d, 1)
    b = unit_rows(65536, d, 2)
    t = median_time(lambda: a @ b.T, repeat=repeat)
    return 2.0 * 1024 * 65536 * d / t


def cosine_call_ns(d: int, calls: int = 200_000) -> dict[str, float]:
    """Per-call time of one 1:1 score from Python, on pre-normalised float32 vectors."""
    a, b = unit_rows(2, d, 3)
    n = int(calls)

    def loop(fn: Any) -> float:
        def run() -> None:
            for _ in range(n):
                fn(a, b)

        return median_time(run, repeat=5) / n * 1e9

    out = {"pyfacematch.cosine": loop(pf.cosine), "numpy.dot": loop(np.dot)}
    try:
        import simsimd

        out["simsimd.cosine"] = loop(simsimd.cosine)
    except ImportError:
        pass
    return out


HEADERS = [
    "d",
    "batch",
    "pfm µs",
    "numpy µs",
    "faiss µs",
    "simsimd µs",
    "x numpy",
    "x faiss",
    "x simsimd",
    "of read BW",
    "of best read",
    "of sgemm",
]


def measure_topk(
    n: int,
    dims: list[int],
    batches: list[int],
    skip: tuple[str, ...] = (),
    log: Any = print,
    compact: str | None = "int8",
) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """Time top-10 of each engine at every (d, batch); returns (results, table rows).

    At batch 1 the core's read variants (:func:`read_calls`) take their turn in the same rounds as
    the engines: "of best read" is the fastest variant's median time over pyfacematch's (the scan's
    share of the best read measured alongside it), "of read BW" the same against the ceiling
    measured before (the maximum of numpy's and the core's reads).

    ``compact`` (``"int8"``, ``"bf16"`` or None): at every batch also time the exact compact path — the
    gallery quantised once (build time reported apart, as FAISS's ``add()`` is), scanned, and the
    shortlist re-scored in float32 — as a second pyfacematch row; its top-10 must equal numpy's exact
    answer (ids, and scores to float32 rounding), else the benchmark stops with an error.
    """
    import faiss

    results: list[dict[str, Any]] = []
    rows: list[list[Any]] = []
    for d in dims:
        g = unit_rows(n, d, seed=d)
        bws = read_bandwidth(g)
        bw = bws["ceiling"]
        gf = sgemm_flops(d)
        index = faiss.IndexFlatIP(d)
        index.add(g)
        cm, t_build = (None, 0.0)
        if compact:
            cm, t_build = compact_exact(g, compact)
            log(
                f"  d={d}: {compact} compact copy built in {t_build:.2f} s ({cm.nbytes / 1e6:,.0f} MB)"
            )
        for m in batches:
            q = unit_rows(m, d, seed=1000 + m)
            rep = 7 if m == 1 else (3 if m <= 64 else 1)
            ps, pi = pf.topk(q, g, K)
            agree = None
            engines: dict[str, Any] = {"pyfacematch": lambda q=q, g=g: pf.topk(q, g, K)}
            want = None
            if "numpy" not in skip:
                engines["numpy"] = lambda q=q, g=g: numpy_topk(q, g, K)
                want = numpy_topk(q, g, K)
                agree = float(np.mean(want[1][:, 0] == pi[:, 0]))
            if "faiss" not in skip:
                engines["faiss"] = lambda q=q, index=index: index.search(q, K)
            ckey = f"pyfacematch {compact} exact"
            if m == 1:
                # the core's reads of the same gallery, in the same rounds: the one-probe scan's
                # fraction of the best of them does not depend on what the neighbours did
                engines.update(read_calls(g))
            if cm is not None:
                # the exact answer: numpy's when it runs, else pyfacematch's float32 scan
                ref = want if want is not None else (ps, pi)
                check_exact(pf.topk(q, cm, K), ref, ckey)
                check_exact((ps, pi), ref, "pyfacematch float32")
                engines[ckey] = lambda q=q, cm=cm: pf.topk(q, cm, K)
            # engines take turns within each round (median per engine), so a noisy neighbour
            # slows them alike
            times = median_times_interleaved(engines, repeat=rep, warmup=0 if m > 64 else 1)
            reads = {
                k[len("read: ") :]: times.pop(k) for k in list(times) if k.startswith("read: ")
            }
            t_stream = min(reads.values()) if reads else None
            t_compact = times.pop(ckey, None)
            t_pf = times["pyfacematch"]
            if "simsimd" not in skip and m <= 64:  # cdist at 1024 × 1M runs for minutes
                try:
                    times["simsimd"] = median_time(
                        functools.partial(simsimd_topk, q, g, K), repeat=max(1, rep // 2)
                    )
                except ImportError:
                    pass
            per_probe_us = {e: t / m * 1e6 for e, t in times.items()}
            bw_frac = (g.nbytes / t_pf) / bw  # the gallery is read once per call
            stream_frac = t_stream / t_pf if t_stream is not None else None
            flops_frac = (2.0 * m * n * d / t_pf) / gf
            res: dict[str, Any] = {
                "d": d,
                "n": n,
                "batch": m,
                "k": K,
                "us_per_probe": per_probe_us,
                "speedup": {e: t / t_pf for e, t in times.items() if e != "pyfacematch"},
                "read_bandwidth_GBps": bw / 1e9,
                "sgemm_GFLOPs": gf / 1e9,
                "read_bandwidth_by": {k: v / 1e9 for k, v in bws.items()},
                "pyfacematch_GFLOPs": 2.0 * m * n * d / t_pf / 1e9,
                "bandwidth_fraction": bw_frac,
                "stream_read_ms_same_rounds": t_stream * 1e3 if t_stream is not None else None,
                "read_variants_ms_same_rounds": {k: v * 1e3 for k, v in reads.items()},
                "stream_read_fraction": stream_frac,
                "sgemm_fraction": flops_frac,
                "top1_agrees_with_numpy": agree,
            }
            if t_compact is not None and cm is not None:
                res["compact"] = {
                    "kind": compact,
                    "us_per_probe": t_compact / m * 1e6,
                    "build_s": t_build,
                    "bytes": cm.nbytes,
                    "speedup": {e: t / t_compact for e, t in times.items()},
                    "top10_equals_numpy": True,  # check_exact raised otherwise
                }
            results.append(res)
            rows.append(
                [
                    d,
                    m,
                    per_probe_us["pyfacematch"],
                    *[per_probe_us.get(e, float("nan")) for e in ("numpy", "faiss", "simsimd")],
                    *[
                        times[e] / t_pf if e in times else float("nan")
                        for e in ("numpy", "faiss", "simsimd")
                    ],
                    f"{bw_frac:.0%}",
                    f"{stream_frac:.0%}" if stream_frac is not None else "—",
                    f"{flops_frac:.0%}",
                ]
            )
            if t_compact is not None:
                rows.append(
                    [
                        d,
                        f"{m} {compact}",
                        t_compact / m * 1e6,
                        *[per_probe_us.get(e, float("nan")) for e in ("numpy", "faiss", "simsimd")],
                        *[
                            times[e] / t_compact if e in times else float("nan")
                            for e in ("numpy", "faiss", "simsimd")
                        ],
                        "—",
                        "—",
                        "—",
                    ]
                )
            log(
                f"  d={d} batch={m}: "
                + ", ".join(f"{e} {v:,.1f} µs" for e, v in per_probe_us.items())
                + (f", {ckey} {t_compact * 1e6:,.1f} µs" if t_compact is not None else "")
                + "".join(f", read ({k}) {v * 1e6:,.1f} µs" for k, v in reads.items())
            )
        log(
            f"  d={d}: read bandwidth {bw / 1e9:.1f} GB/s ("
            + ", ".join(
                f"{k} {v / 1e9:.1f}" for k, v in bws.items() if k not in ("core", "ceiling")
            )
            + f"), sgemm {gf / 1e9:.0f} GFLOP/s"
        )
        del g, index, cm  # free the gallery before the next dimension's is built
    return results, rows


def section_scoring(cfg: Mapping[str, Any], out: Path, log: Log) -> dict[str, Any]:
    faiss = require("faiss", "faiss is not installed ({exc}): pip install faiss-cpu")
    import pyfacematch as pf
    from pyfacematch.bench.report import bars_figure
    from pyfacematch.plots import throughput_figure

    skip: tuple[str, ...] = ()
    try:
        import simsimd  # noqa: F401
    except ImportError:
        skip = ("simsimd",)
    n = cfg["n"]
    results, _ = measure_topk(n, list(cfg["dims"]), list(cfg["batches"]), skip, log=log)
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
    calls = cosine_call_ns(cfg["cosine_d"], cfg.get("cosine_calls", 200_000))
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
            "pyfacematch.topk": lambda g=g: pf.topk(q, g, K),
            "numpy (matmul + argpartition)": lambda g=g: numpy_topk(q, g, K),
            "FAISS IndexFlatIP": lambda idx=idx: idx.search(q, K),
        }
        for k_, fn_ in calls_.items():
            series[k_].append(mb / median_time(fn_, repeat=rep))
        log(f"  N={size:,}: " + ", ".join(f"{k} {v[-1]:,.0f} probes/s" for k, v in series.items()))
    plots = [
        save_plot(
            throughput_figure(
                {k: (cfg["sizes"], v) for k, v in series.items()},
                title=f"Exact top-{K} throughput, d = {d}, batches of {mb} probes",
            ),
            out,
            "scoring_throughput",
            f"Exact top-{K}: probes/s against gallery size (d = {d}, batch {mb})",
        ),
    ]
    d0 = cfg["dims"][0]
    sel = [r for r in results if r["d"] == d0]
    engines = ["pyfacematch", "numpy", "faiss", "simsimd"]
    plots.append(
        save_plot(
            bars_figure(
                [f"batch {r['batch']}" for r in sel],
                {
                    e: [r["us_per_probe"].get(e, np.nan) for r in sel]
                    for e in engines
                    if any(e in r["us_per_probe"] for r in sel)
                },
                ylabel="µs per probe (log scale, lower is better)",
                title=f"Exact top-{K} over N = {n:,}, d = {d0}: time per probe",
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
                summary_row(
                    "scoring",
                    f"top-{K}, N={n:,}, d={d0}, batch {r['batch']}: µs/probe",
                    r["us_per_probe"]["pyfacematch"],
                    "numpy",
                    r["us_per_probe"].get("numpy"),
                    ratio=r["speedup"].get("numpy"),
                )
            )
            if "faiss" in r["speedup"]:
                summary.append(
                    summary_row(
                        "scoring",
                        f"top-{K}, N={n:,}, d={d0}, batch {r['batch']}: µs/probe",
                        r["us_per_probe"]["pyfacematch"],
                        "FAISS IndexFlatIP",
                        r["us_per_probe"]["faiss"],
                        ratio=r["speedup"]["faiss"],
                    )
                )
    summary.append(
        summary_row(
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
            f"Exact top-{K} of unit float32 templates, gallery N = {n:,}, median time per call divided by "
            "the batch; 'x engine' = engine time / pyfacematch time (>1: pyfacematch faster). numpy = "
            "matmul + argpartition over gallery chunks; FAISS = IndexFlatIP.search; SimSIMD = cdist + "
            "argpartition (batches ≤ 64). Read bandwidth = the largest of numpy sums and the core's read variants (one stream, four streams, four rows) on every core, same run."
        ),
        "data": {
            "topk": results,
            "cosine_ns": calls,
            "throughput": {"sizes": cfg["sizes"], "batch": mb, "d": d, "probes_per_s": series},
        },
        "tables": [
            {"title": f"Top-{K} over N = {n:,}", "headers": headers, "rows": rows},
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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=1_000_000, help="gallery size (default 1,000,000)")
    ap.add_argument("--dims", type=int, nargs="+", default=[512, 128])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    ap.add_argument("--skip", nargs="*", default=[], help="engines to skip: numpy faiss simsimd")
    ap.add_argument(
        "--compact",
        default="int8",
        choices=["int8", "bf16", "none"],
        help="also time the exact compact path of this kind at every batch (default int8; none: skip)",
    )
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()

    info = machine()
    print(machine_line(info) + f", simsimd {info['simsimd']}")
    results, rows = measure_topk(
        args.n,
        args.dims,
        args.batches,
        tuple(args.skip),
        compact=None if args.compact == "none" else args.compact,
    )
    print()
    print(machine_line(info))  # again above the table: the load average at its end
    print(
        f"top-{K} over N = {args.n:,} unit templates, time per probe (µs, median); 'x' = speed-up of pyfacematch"
    )
    print(table(HEADERS, rows))
    print(
        "'of best read': the fastest of the core's read variants (one stream, four streams, four rows"
        " of d; every thread) in the same rounds, over pyfacematch's time."
    )
    said = set()
    for r in results:
        c = r.get("compact")
        if c and r["d"] not in said:
            said.add(r["d"])
            print(
                f"'<batch> {c['kind']}' rows (d={r['d']}): the exact compact path — {c['kind']} copy "
                f"({c['bytes'] / 1e6:,.0f} MB, built once in {c['build_s']:.2f} s, not timed), scan + "
                "float32 re-score; top-10 ids and scores = numpy's exact answer (checked)"
            )
    calls = cosine_call_ns(512)
    print()
    print(
        "1:1 cosine(a, b) from Python at d = 512 (ns per call, median): "
        + ", ".join(f"{k} {v:.0f}" for k, v in calls.items())
    )
    print(
        "  speed-up: "
        + ", ".join(
            f"x{v / calls['pyfacematch.cosine']:.2f} vs {k}"
            for k, v in calls.items()
            if k != "pyfacematch.cosine"
        )
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "topk": results, "cosine_ns": calls}, f, indent=2)


if __name__ == "__main__":
    main()
