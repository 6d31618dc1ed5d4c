"""A scaled-down one-day identification job (issue 5 protocol) through the Gallery API.

A gallery of ``n`` synthetic identities (:mod:`~pyfacematch.bench.synthdata`) is enrolled in an
in-memory :class:`pyfacematch.Gallery` with the default backend (build and self-tuning timed
separately); ``m`` mated probes are generated in chunks, identified top-1 and written as CSV
rows (probe, identity, score) to a file, as the bulk job does; generation time is excluded.
Recall@1 against exact search is measured on a sample of the probes. The same probes (a
prefix) go through a gallery with the ``exact`` backend, the baseline of the speed ratio.

:func:`measure_cli_day_job` is the end-to-end variant (``python bench/day_job.py``): the same
synthetic data written as ``.npy`` files, then each step a subprocess of the real
``pyfacematch`` command (``enroll``, then ``identify`` per backend: reading, searching and
writing Parquet included), timed with its own peak memory; recall@1 against exact search on a
sample and rank-1 accuracy against the true identities.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import pyfacematch as pf
from pyfacematch.bench.section import Log, summary_row
from pyfacematch.bench.synthdata import SyntheticIdentities
from pyfacematch.gallery import Gallery

__all__ = [
    "add_day_job_args",
    "measure_day_job",
    "section_dayjob",
    "write_day_data",
    "run_command",
    "measure_cli_day_job",
    "backend_batched_rate",
]

DAY = 1_000_000


def add_day_job_args(ap: Any, *, probes: int, gallery: int, work: str) -> None:
    """The options every day's-job benchmark takes (``bench/day_job.py``,
    ``bench/cluster_day_job.py``): sizes, dimension, chunk size, scratch folder, seed, output.

    Parameters
    ----------
    ap : argparse.ArgumentParser
    probes, gallery : int
        Default probe and identity counts.
    work : str
        Default scratch folder (deleted first).
    """
    ap.add_argument("--probes", type=int, default=probes)
    ap.add_argument("--gallery", type=int, default=gallery)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--chunk-size", type=int, default=10_000)
    ap.add_argument("--work", default=work, help="scratch folder (deleted first)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--json", metavar="PATH", help="write the figures here")


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
        g = Gallery(dim=d, backend=backend, seed=seed)
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
        parts, need = [], s  # only the first chunks: no copy of every probe
        for c, _ in chunks:
            if need <= 0:
                break
            parts.append(c[:need])
            need -= len(parts[-1])
        sample = np.concatenate(parts)
        ref = pf.topk(sample, gx, 1)[1][:, 0]
        out["recall1_vs_exact"] = float(np.mean(got[:s] == ref))
        out["recall_sample"] = s
        g.close()
        log(
            f"  {backend}: build+tune {out['build_tune_s']:.1f} s; {m:,} probes in {t:.1f} s = "
            f"{out['probes_per_s']:,.0f} probes/s; recall@1 vs exact {out['recall1_vs_exact']:.4f}"
        )
        # baseline: the exact backend on a prefix of the same probes
        ge = Gallery(dim=d, backend="exact", seed=seed)
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


def write_day_data(work: Path, n_gal: int, n_probes: int, d: int, seed: int) -> np.ndarray:
    """Write ``work``/gallery.npy and probes.npy (the suite's generator); return each probe's identity.

    Parameters
    ----------
    work : Path
        Existing folder.
    n_gal, n_probes, d : int
        Identities (one template each), mated probes, dimension.
    seed : int
        Seed of the identities (probes use ``seed + 1``).

    Returns
    -------
    ndarray, int64 (n_probes,)
        Row of each probe's mate in the gallery.
    """
    ids = SyntheticIdentities(n_gal, d, seed=seed)
    np.save(work / "gallery.npy", ids.gallery())
    pr = np.lib.format.open_memmap(work / "probes.npy", "w+", np.float32, (n_probes, d))
    truth = np.empty(n_probes, np.int64)
    done = 0
    for x, who in ids.probes(n_probes, seed=seed + 1):
        pr[done : done + len(x)] = x
        truth[done : done + len(x)] = who
        done += len(x)
    pr.flush()
    del pr
    return truth


# Runs the real command (``python -m pyfacematch``) and records its own peak RSS (VmHWM of the
# exec'ed process: the rusage of a child also counts the parent's pages inherited before exec).
_WRAP = """
import runpy, sys
hwm_path = sys.argv[1]
sys.argv = ["pyfacematch", *sys.argv[2:]]
rc = 0
try:
    runpy.run_module("pyfacematch", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
finally:
    with open('/proc/self/status') as f:
        hwm = next(x for x in f if x.startswith('VmHWM'))
    with open(hwm_path, 'w') as f:
        f.write(hwm.split()[1])
sys.exit(rc)
"""


def run_command(args: list[str], work: Path) -> tuple[float, float, int]:
    """Run ``pyfacematch ARGS`` in a fresh interpreter; (wall seconds, its peak RSS MiB, exit code)."""
    hwm = work / "hwm.txt"
    env = dict(os.environ, PYTHONSAFEPATH="1")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _WRAP, str(hwm), *args], env=env)
    wall = time.perf_counter() - t0
    try:
        rss = int(hwm.read_text()) / 1024.0  # kB -> MiB
    except (OSError, ValueError):
        rss = float("nan")
    return wall, rss, p.returncode


def backend_batched_rate(
    db: str, backend: str, probes: np.ndarray, n: int, chunk: int = 50_000, warmup: int = 2_000
) -> dict[str, float]:
    """The backend's own batched rate, the day's job's yardstick: ``Gallery.open(db, backend)`` and
    ``identify_arrays(k=1)`` on the first ``n`` probes in chunks of ``chunk`` (one ``warmup`` chunk
    first, untimed; opening not timed). Wall and CPU seconds (``time.process_time``: both threads'
    CPU, which survives a loaded machine) of the searches alone.
    """
    n = min(n, len(probes))
    g = Gallery.open(db, backend=backend)
    try:
        g.identify_arrays(np.ascontiguousarray(probes[: min(warmup, n)], np.float32), k=1)
        wall = cpu = 0.0
        for a in range(0, n, chunk):
            p = np.ascontiguousarray(probes[a : min(n, a + chunk)], np.float32)
            t0, c0 = time.perf_counter(), time.process_time()
            g.identify_arrays(p, k=1)
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
    finally:
        g.close()
    return {
        "probes": n,
        "chunk": chunk,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "probes_per_second": n / wall,
        "probes_per_cpu_second": n / cpu,
    }


def measure_cli_day_job(
    work: Path,
    n_gal: int,
    n_probes: int,
    d: int = 512,
    *,
    backends: tuple[str, ...] = ("binary", "exact", "ivfpq"),
    sample: int = 1000,
    chunk_size: int = 10_000,
    seed: int = 0,
    keep: bool = False,
    log: Log = print,
    rate_probes: int = 100_000,
    rate_chunk: int = 50_000,
    reuse: bool = False,
    prepare_only: bool = False,
) -> dict[str, Any]:
    """A day's identification job through the real command line, step by step.

    Parameters
    ----------
    work : Path
        Scratch folder (deleted first, and afterwards unless ``keep``).
    n_gal, n_probes, d : int
        Identities, mated probes, dimension.
    backends : tuple of str
        First = the backend ``pyfacematch enroll`` builds; each is then built and tuned once
        (``Gallery.open(..., backend=...)``, timed apart) and runs ``pyfacematch identify``.
    sample : int
        Probes checked against exact search.
    chunk_size : int
        ``identify --chunk-size``.
    rate_probes, rate_chunk : int
        After each backend's job, in the same run: its batched rate on the first ``rate_probes``
        probes in chunks of ``rate_chunk`` (:func:`backend_batched_rate`; 0 skips), and the job's
        rate as a share of it (wall, and CPU per probe).
    reuse : bool
        Reuse ``work`` when a previous run with the same sizes, seed and first backend prepared it
        (data, enrolled gallery, exact reference): only the jobs and the rates are run, and the
        folder is kept. Otherwise it is prepared as usual (and kept).
    prepare_only : bool
        Generate and enroll (and mark ``work`` as prepared), then return without identifying.

    Returns
    -------
    dict
        Sizes, ``enroll`` (seconds, peak MiB) and ``backends``: name -> build/tune seconds,
        identify wall seconds, peak MiB, probes/s, recall@1 against exact, rank-1 accuracy.

    Raises
    ------
    subprocess.CalledProcessError
        When a command exits with an error (its own message is on stderr).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    work = Path(work)
    prep = {"gallery": n_gal, "probes": n_probes, "dim": d, "seed": seed, "backend": backends[0]}
    marker = work / "prepared.json"
    reused = False
    if reuse:
        try:
            reused = json.loads(marker.read_text()) == prep
        except (OSError, ValueError):
            reused = False
        keep = True  # a prepared folder is for the next run too
    if not reused:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    out: dict[str, Any] = {
        "gallery": n_gal,
        "probes": n_probes,
        "dim": d,
        "threads": pf.get_num_threads(),
        "simd": pf.simd.info().get("active"),
        "chunk_size": chunk_size,
    }
    log(f"day job: {n_probes:,} probes vs {n_gal:,} identities, d={d}")
    db = str(work / "day.db")
    if reused:
        truth = np.load(work / "truth.npy")
        out["reused"] = str(work)
        out["enroll"] = {"reused": True, "backend": backends[0]}
        log(f"  reusing the data and gallery prepared in {work} (generation and enroll not run)")
    else:
        t = time.perf_counter()
        truth = write_day_data(work, n_gal, n_probes, d, seed)
        np.save(work / "truth.npy", truth)
        out["seconds_generate"] = time.perf_counter() - t
        log(f"  data generated in {out['seconds_generate']:.1f} s")
        wall, rss, code = run_command(
            ["enroll", "-g", db, "-i", str(work / "gallery.npy"), "--backend", backends[0],
             "--chunk-size", "50000", "--quiet"],
            work,
        )  # fmt: skip
        if code != 0:
            raise subprocess.CalledProcessError(code, ["pyfacematch", "enroll", "-g", db])
        out["enroll"] = {"seconds": wall, "peak_rss_mib": rss, "backend": backends[0]}
        log(f"  enroll (SQLite store + {backends[0]} index): {wall:.1f} s, peak {rss:,.0f} MiB")
        marker.write_text(json.dumps(prep))
    if prepare_only:
        out["prepared"] = str(work)
        log(f"  prepared in {work}: run again with --reuse to time the job alone")
        return out

    gal = np.load(work / "gallery.npy", mmap_mode="r")
    probes = np.load(work / "probes.npy", mmap_mode="r")
    rng = np.random.default_rng(seed + 1)
    pick = np.sort(rng.choice(n_probes, min(sample, n_probes), replace=False))
    t = time.perf_counter()
    ref_path = work / f"exact-top1-{sample}.npy"
    if reused and ref_path.exists():
        ref = np.load(ref_path)
    else:
        g_mat = np.ascontiguousarray(gal, np.float32)
        _, ref_idx = pf.topk(np.ascontiguousarray(probes[pick]), g_mat, 1)
        del g_mat
        ref = ref_idx[:, 0]
        np.save(ref_path, ref)
    out["seconds_exact_reference"] = time.perf_counter() - t
    results = {}
    for b in backends:
        t = time.perf_counter()
        g = Gallery.open(db, backend=b)
        info = g.index_info()
        g.close()
        t_build = time.perf_counter() - t
        res = work / f"results-{b}.parquet"
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall, rss, code = run_command(
            ["identify", "-g", db, "-i", str(work / "probes.npy"), "-o", str(res),
             "--chunk-size", str(chunk_size), "--quiet", "--overwrite"],
            work,
        )  # fmt: skip
        if code != 0:
            raise subprocess.CalledProcessError(code, ["pyfacematch", "identify", "-g", db])
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        job_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        rate = backend_batched_rate(db, b, probes, rate_probes, rate_chunk) if rate_probes else None
        summary = json.loads(Path(f"{res}.summary.json").read_text())
        tbl = pq.read_table(res, columns=["probe_id", "rank", "identity"])
        top = tbl.filter(pc.equal(tbl.column("rank"), 1))
        pid = np.asarray(top.column("probe_id").to_numpy(zero_copy_only=False).astype(np.int64))
        ident = np.asarray(top.column("identity").to_numpy(zero_copy_only=False).astype(np.int64))
        got = np.full(n_probes, -1, np.int64)
        got[pid] = ident
        recall = float(np.mean(got[pick] == ref))
        acc = float(np.mean(got == truth))
        results[b] = {
            "index_build_and_tune_seconds": t_build,
            "identify_wall_seconds": wall,
            "identify_peak_rss_mib": rss,
            "probes_per_second_wall": n_probes / wall,
            "probes_per_second_job": summary.get("probes_per_second_this_run"),
            "recall_at_1_vs_exact": recall,
            "rank1_accuracy_vs_truth": acc,
            "exact_rank1_accuracy_on_sample": float(np.mean(ref == truth[pick])),
            "identify_cpu_seconds": job_cpu,
            "backend_batched": rate,
            # the job's rate as a share of the backend's batched rate measured in the same run
            # (issue 14: >= 90%); by wall (whole command: start, open, read, search, write) and by
            # CPU per probe (survives a loaded machine)
            "job_share_of_backend_rate_wall": (n_probes / wall) / rate["probes_per_second"]
            if rate
            else None,
            "job_share_of_backend_rate_search": (summary.get("probes_per_second_this_run") or 0)
            / rate["probes_per_second"]
            if rate
            else None,
            "job_share_of_backend_rate_cpu": (n_probes / job_cpu) / rate["probes_per_cpu_second"]
            if rate and job_cpu > 0
            else None,
            "index": {
                k: info.get(k)
                for k in (
                    "backend",
                    "depth",
                    "measured_recall_at_1",
                    "shortlist",
                    "nprobe",
                    "fallback",
                )
            },
        }
        log(
            f"  {b:7s} index {t_build:7.1f} s | identify {wall:7.1f} s wall, "
            f"{n_probes / wall:8,.0f} probes/s, peak {rss:7,.0f} MiB | recall@1 vs exact "
            f"{recall:.4f} (sample {len(pick)}), rank-1 vs truth {acc:.4f}"
        )
        if rate:
            r_ = results[b]
            log(
                f"  {b:7s} backend batched (Gallery.identify_arrays, {rate['probes']:,} probes in "
                f"chunks of {rate['chunk']:,}, same run): {rate['probes_per_second']:,.0f} probes/s, "
                f"{rate['probes_per_cpu_second']:,.0f} per CPU-s | the job: "
                f"{r_['job_share_of_backend_rate_wall']:.0%} of it by wall (whole command), "
                f"{r_['job_share_of_backend_rate_search']:.0%} by its own search-phase rate, "
                f"{r_['job_share_of_backend_rate_cpu']:.0%} by CPU per probe (target >= 90%)"
            )
    out["backends"] = results
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return out
