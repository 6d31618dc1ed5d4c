"""The day's identification job in one process and on a Dask LocalCluster, in the same run.

Data: the day-job generator (:func:`~pyfacematch.bench.dayjob.write_day_data`: ``n`` synthetic
identities at d = 512, one template each; ``m`` mated probes) written as ``.npy``, the gallery
enrolled once with the real command. Then, each timed on its own:

1. ``in-process``: ``pyfacematch identify`` in a fresh process (the core's pool on every core;
   gallery opening, interpreter start and writing included; its own peak RSS);
2. for each shard count S (default 2 and 8): ``pyfacematch shard split`` (timed apart), a
   LocalCluster of W single-thread worker processes (each worker's core pool 1 thread; cluster
   start timed apart), shards opened on their workers (timed apart: it is paid once per cluster,
   not per job), then :func:`pyfacematch.distributed.identify_job_cluster` over the shard
   manifest — the same chunks, part files and manifest; the output is compared byte for byte
   and row by row with the in-process output.

Reported per run: wall seconds of the job, probes/s, ratio to the in-process wall (job alone, and
job plus opening the shards, which the in-process wall includes for its gallery), peak RSS of the
in-process command or of each worker process (VmHWM), and the scheduler overhead per probe
batch: (W × wall − Σ task compute seconds on the workers) / tasks, from Dask's task stream — the
time a worker slot is not computing, per task (waiting for work, results travelling, scheduling).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from pyfacematch.bench.dayjob import run_command, write_day_data
from pyfacematch.bench.section import Log

__all__ = ["measure_distributed"]


def _vmhwm_mib() -> float:
    """Peak resident memory of the calling process (VmHWM), MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _rows(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def measure_distributed(
    work: Path,
    n_gal: int,
    n_probes: int,
    d: int = 512,
    *,
    shards: tuple[int, ...] = (2, 8),
    workers: int = 2,
    backend: str = "binary",
    chunk_size: int = 10_000,
    seed: int = 0,
    keep: bool = False,
    log: Log = print,
) -> dict[str, Any]:
    """Run the comparison (see the module); returns the figures."""
    from pyfacematch.distributed import split_gallery
    from pyfacematch.distributed.cluster import connect
    from pyfacematch.distributed.jobs import identify_job_cluster
    from pyfacematch.distributed.worker import cache_stats
    from pyfacematch.jobs import JobOutput, Source

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out: dict[str, Any] = {
        "gallery": n_gal,
        "probes": n_probes,
        "dim": d,
        "backend": backend,
        "workers": workers,
        "chunk_size": chunk_size,
    }
    try:
        t0 = time.perf_counter()
        write_day_data(work, n_gal, n_probes, d, seed)
        log(f"data written in {time.perf_counter() - t0:.1f} s")
        db = work / "people.db"
        wall, rss, rc = run_command(
            ["enroll", "-g", str(db), "-i", str(work / "gallery.npy"), "--backend", backend, "-q"],
            work,
        )
        if rc:
            raise RuntimeError(f"pyfacematch enroll failed (exit {rc})")
        out["enroll"] = {"seconds": round(wall, 2), "peak_mib": round(rss, 1)}
        log(f"enroll {n_gal:,} identities: {wall:.1f} s")
        src = Source(input=str(work / "probes.npy"), chunk_size=chunk_size)

        # in-process: the real command in a fresh process (its own peak memory); it also warms
        # the page cache for the cluster runs
        wall, rss, rc = run_command(
            [
                "identify", "-g", str(db), "-i", str(work / "probes.npy"),
                "-o", str(work / "local.csv"), "--chunk-size", str(chunk_size), "-q",
            ],
            work,
        )  # fmt: skip
        if rc:
            raise RuntimeError(f"pyfacematch identify failed (exit {rc})")
        ref = _rows(work / "local.csv")
        out["in_process"] = {
            "wall_s": round(wall, 2),
            "probes_per_s": round(n_probes / wall, 1),
            "peak_mib": round(rss, 1),
        }
        log(f"in-process: {wall:.1f} s, {n_probes / wall:,.0f} probes/s, peak {rss:.0f} MiB")
        runs = []
        for n_sh in shards:
            r: dict[str, Any] = {"shards": n_sh}
            t0 = time.perf_counter()
            split_gallery(db, work / f"shards{n_sh}", n_sh)
            r["split_s"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            with connect(f"local:{workers}", threads_per_worker=1) as h:
                r["cluster_start_s"] = round(time.perf_counter() - t0, 2)
                base = h.client.run(_vmhwm_mib)  # a worker before it opens any shard
                from pyfacematch.distributed.sharded import ShardedGallery

                t0 = time.perf_counter()
                ShardedGallery(work / f"shards{n_sh}", h).warm()  # open + checksum, once
                r["shards_open_s"] = round(time.perf_counter() - t0, 2)
                name = f"cluster{n_sh}.csv"
                from distributed import get_task_stream

                with get_task_stream(client=h.client) as ts:
                    t0 = time.perf_counter()
                    s = identify_job_cluster(
                        work / f"shards{n_sh}",
                        src,
                        JobOutput(str(work / name), overwrite=True),
                        h,
                        quiet=True,
                    )
                    wall = time.perf_counter() - t0
                compute = sum(
                    ss["stop"] - ss["start"]
                    for t in ts.data
                    for ss in t.get("startstops", ())
                    if ss.get("action") == "compute"
                )
                tasks = int(s["cluster"]["tasks"])
                hwm = h.client.run(_vmhwm_mib)
                stats = h.client.run(cache_stats)
            got = _rows(work / name)
            same = sum(a == b for a, b in zip(got, ref))
            r.update(
                wall_s=round(wall, 2),
                probes_per_s=round(n_probes / wall, 1),
                job_vs_in_process=round(wall / out["in_process"]["wall_s"], 3),
                open_and_job_vs_in_process=round(
                    (wall + r["shards_open_s"]) / out["in_process"]["wall_s"], 3
                ),
                tasks=tasks,
                task_compute_s=round(compute, 2),
                overhead_per_task_ms=round(1000 * (workers * wall - compute) / max(tasks, 1), 1),
                worker_peak_mib=sorted(round(v, 1) for v in hwm.values()),
                worker_base_mib=sorted(round(v, 1) for v in base.values()),
                worker_shards_open=sorted(len(v["open"]) for v in stats.values()),
                byte_identical=got == ref,
                rows_identical=f"{same}/{len(ref)}",
            )
            log(
                f"{n_sh} shards on {workers} workers: {wall:.1f} s "
                f"({r['job_vs_in_process']:.2f}x in-process; with shard opening "
                f"{r['open_and_job_vs_in_process']:.2f}x), {n_probes / wall:,.0f} probes/s, "
                f"worker peak {r['worker_peak_mib']} MiB, overhead "
                f"{r['overhead_per_task_ms']} ms/task, identical rows {r['rows_identical']}"
            )
            runs.append(r)
        out["cluster"] = runs
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return out
