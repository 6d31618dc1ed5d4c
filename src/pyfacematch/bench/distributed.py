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

The machine is shared, so the runs are interleaved (``rounds`` times: in-process, then each
cluster) and each cluster run is compared with the in-process run just before it; medians are
reported. Beside wall time, CPU seconds (user + system: the in-process command's, against the
workers' plus this process's, which hosts the client and the scheduler) say whether the cluster
adds work or only waits: CPU time is far less sensitive to other people's load than wall time.

Before the runs, one chunk is searched in this process on one core thread in the whole gallery
and in all its shards as one worker holding them searches them (``search_cost_<S>_shards``): the
CPU sharding itself adds, before any coordination (what does not shrink with a shard: the probe
check and normalisation and the sign packing, done once per worker, and each shard's scan
admission and shortlist re-rank, sized to its share of the whole gallery's).

Reported per run: wall seconds, probes/s, CPU seconds, ratios to the in-process run, peak RSS of
the in-process command or of each worker process (VmHWM, and before it opened a shard), and the
overhead per task: (W × wall − Σ task compute seconds on the workers) / tasks, from Dask's task
stream — the time a worker slot is not computing, per task (waiting for work, results
travelling, scheduling).
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from pyfacematch.bench.dayjob import run_command, write_day_data
from pyfacematch.bench.section import Log
from pyfacematch.errors import InputError

__all__ = ["measure_distributed", "prepare_data", "time_jobs"]


def _vmhwm_mib() -> float:
    """Peak resident memory of the calling process (VmHWM), MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _rows(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def _cpu(who: int) -> float:
    u = resource.getrusage(who)
    return u.ru_utime + u.ru_stime


def _worker_cpu() -> float:
    return _cpu(resource.RUSAGE_SELF)


def _load() -> list[float]:
    """The machine's load averages (1, 5, 15 min): figures on a shared machine carry them."""
    return [round(x, 2) for x in os.getloadavg()]


def _median(xs: list[float]) -> float:
    return round(float(statistics.median(xs)), 3)


def _cluster_run(
    work: Path, runs_dir: Path, n_sh: int, workers: int, src: Any, n_probes: int, job: Any
) -> dict[str, Any]:
    """One cluster job over ``work/shards<n_sh>`` on a fresh LocalCluster; its figures."""
    from distributed import get_task_stream

    from pyfacematch.distributed.cluster import connect
    from pyfacematch.distributed.sharded import ShardedGallery
    from pyfacematch.distributed.worker import cache_stats, phase_stats
    from pyfacematch.jobs import JobOutput

    r: dict[str, Any] = {"shards": n_sh}
    t0 = time.perf_counter()
    with connect(f"local:{workers}", threads_per_worker=1) as h:
        r["cluster_start_s"] = round(time.perf_counter() - t0, 2)
        base = h.client.run(_vmhwm_mib)  # a worker before it opens any shard
        t0 = time.perf_counter()
        ShardedGallery(work / f"shards{n_sh}", h).warm()  # open + checksum, once per cluster
        r["shards_open_s"] = round(time.perf_counter() - t0, 2)
        h.client.run(phase_stats, True)
        w0 = h.client.run(_worker_cpu)
        c0 = _cpu(resource.RUSAGE_SELF)
        with get_task_stream(client=h.client) as ts:
            t0 = time.perf_counter()
            s = job(
                work / f"shards{n_sh}",
                src,
                JobOutput(str(runs_dir / f"cluster{n_sh}.csv"), overwrite=True),
                h,
                quiet=True,
            )
            wall = time.perf_counter() - t0
        c1 = _cpu(resource.RUSAGE_SELF)
        w1 = h.client.run(_worker_cpu)
        phases = h.client.run(phase_stats)
        compute = sum(
            ss["stop"] - ss["start"]
            for t in ts.data
            for ss in t.get("startstops", ())
            if ss.get("action") == "compute"
        )
        tasks = int(s["cluster"]["tasks"])
        hwm = h.client.run(_vmhwm_mib)
        stats = h.client.run(cache_stats)
    cpu_w = sum(w1[k] - w0[k] for k in w1 if k in w0)
    ph: dict[str, float] = {}
    for v in phases.values():
        for name, sec in v.items():
            if name != "process":
                ph[name] = ph.get(name, 0.0) + sec
    ph["dask"] = cpu_w - ph.get("tasks", 0.0)  # the workers' CPU outside task bodies
    r.update(
        wall_s=round(wall, 2),
        probes_per_s=round(n_probes / wall, 1),
        cpu_workers_s=round(cpu_w, 2),
        cpu_client_s=round(c1 - c0, 2),
        cpu_total_s=round(cpu_w + c1 - c0, 2),
        tasks=tasks,
        task_compute_s=round(compute, 2),
        overhead_per_task_ms=round(1000 * (workers * wall - compute) / max(tasks, 1), 1),
        worker_peak_mib=sorted(round(v, 1) for v in hwm.values()),
        worker_base_mib=sorted(round(v, 1) for v in base.values()),
        worker_shards_open=sorted(len(v["open"]) for v in stats.values()),
        worker_phase_cpu_s={k: round(v, 2) for k, v in sorted(ph.items())},
    )
    return r


def _search_cost(
    db: Path, shard_dir: Path, probes_file: Path, chunk_size: int, reps: int = 3
) -> dict[str, Any]:
    """CPU seconds per phase of one probe chunk (the first), in this process on one core thread:
    as the in-process job does it (the whole gallery) and as the cluster does it over the shards
    (read, checked and prepared once; each shard searched; the top-k lists merged). Phases:
    ``read`` (the npy slice and the reader's checks), ``prepare`` (the gallery's check and
    normalisation, and the sign codes on the binary centre), ``search`` (scan + exact
    re-rank; whole gallery, or every shard one after another), ``merge`` (the shards' top-k
    lists), ``rows`` (result rows and their CSV text). Medians of ``reps``; the whole gallery is
    closed before the shards open (at 1M identities both at once would double this process's
    memory). What the cluster adds beyond this is coordination."""
    from pyfacematch.core.scoring import get_num_threads, set_num_threads
    from pyfacematch.distributed import read_manifest
    from pyfacematch.distributed.merge import merge_topk
    from pyfacematch.distributed.worker import close_all, open_shard
    from pyfacematch.gallery import Gallery
    from pyfacematch.io.results import result_bytes
    from pyfacematch.jobs import Source, open_reader
    from pyfacematch.jobs.identify import identify_rows

    def timed(fn: Any) -> tuple[float, Any]:
        got = fn()  # warm: pages of the files mapped, first-use allocations
        xs = []
        for _ in range(reps):
            c0 = _cpu(resource.RUSAGE_SELF)
            got = fn()
            xs.append(_cpu(resource.RUSAGE_SELF) - c0)
        return float(statistics.median(xs)), got

    def phases(g: Gallery, searchers: list[Gallery]) -> dict[str, float]:
        src = Source(input=str(probes_file), chunk_size=chunk_size)

        def read() -> Any:
            rd = open_reader(src, gallery=g)
            it = rd.chunks()
            ch = next(it)
            del it
            rd.close()
            return ch

        out: dict[str, float] = {}
        out["read"], ch = timed(read)
        out["prepare"], prep = timed(lambda: g.prepare_probes(ch.values))
        res: list[Any] = []

        def search() -> None:
            res.clear()
            for sg in searchers:
                r = sg.identify_arrays(prep, k=1, threshold=0.0, with_tids=True)
                res.append((r.scores, r.identities, r.tids))

        out["search"], _ = timed(search)
        if len(res) > 1:
            out["merge"], merged = timed(lambda: merge_topk(res, 1))
        else:
            out["merge"], merged = 0.0, res[0]
        out["rows"], _ = timed(
            lambda: result_bytes("csv", identify_rows(ch.ids, merged[1], merged[0], 0.5)[0])
        )
        out["total"] = sum(out.values())
        return {k: round(v, 4) for k, v in out.items()}

    threads = get_num_threads()
    set_num_threads(1)
    try:
        whole = Gallery.open(db, read_only=True)
        try:
            one = phases(whole, [whole])
        finally:
            whole.close()
        man = read_manifest(shard_dir)
        try:
            gs = [open_shard((s.path, s.sha256)) for s in man.shards]
            many = phases(gs[0], gs)
        finally:
            close_all()
    finally:
        set_num_threads(threads)
    return {
        "probes": chunk_size,
        "whole_cpu_s": one,
        "shards_cpu_s": many,
        "shards_vs_whole": round(many["total"] / one["total"], 3),
        "search_shards_vs_whole": round(many["search"] / one["search"], 3),
    }


DATA_FILE = "data.json"


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}


def _write_json(path: Path, d: dict[str, Any]) -> None:
    import json

    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(d, indent=2) + "\n")
    os.replace(tmp, path)


def prepare_data(
    data: Path,
    n_gal: int,
    n_probes: int,
    d: int = 512,
    *,
    shards: tuple[int, ...] = (2, 8),
    backend: str = "binary",
    seed: int = 0,
    log: Log = print,
) -> dict[str, Any]:
    """Build (or finish building) the benchmark's data in ``data``: ``gallery.npy`` and
    ``probes.npy``, the gallery ``people.db`` enrolled with the real command, and its shards
    ``shards<S>/`` for each S. Each step is recorded in ``data/data.json`` when it is complete, so
    an interrupted preparation resumes at the step it was in and a later run reuses everything
    (the quiet-machine run then only times the jobs). Returns the record (sizes and each step's
    seconds, peak memory and load average).

    Raises
    ------
    InputError
        ``data`` holds data of other sizes, dimension, seed or backend.
    RuntimeError
        ``pyfacematch enroll`` failed.
    """
    from pyfacematch.distributed import split_gallery

    data.mkdir(parents=True, exist_ok=True)
    spec = {"gallery": n_gal, "probes": n_probes, "dim": d, "seed": seed, "backend": backend}
    rec = _read_json(data / DATA_FILE)
    have = {k: rec.get(k) for k in spec}
    if rec and have != spec:
        raise InputError(
            f"{os.fspath(data)!r} holds data for {have}, not {spec}: "
            "pass the same sizes, or another --data folder"
        )
    rec = {**spec, "steps": dict(rec.get("steps", {}))}
    steps: dict[str, Any] = rec["steps"]

    def done(step: str, **fig: Any) -> None:
        steps[step] = {**fig, "load": _load()}
        _write_json(data / DATA_FILE, rec)

    if "data" not in steps:
        t0 = time.perf_counter()
        write_day_data(data, n_gal, n_probes, d, seed)
        done("data", seconds=round(time.perf_counter() - t0, 2))
        log(f"data written in {steps['data']['seconds']:.1f} s (load average {_load()})")
    db = data / "people.db"
    if "enroll" not in steps:
        for f in data.glob("people.db*"):  # an interrupted enrollment: start it again
            shutil.rmtree(f) if f.is_dir() else f.unlink()
        wall, rss, rc = run_command(
            ["enroll", "-g", str(db), "-i", str(data / "gallery.npy"), "--backend", backend, "-q"],
            data,
        )
        if rc:
            raise RuntimeError(f"pyfacematch enroll failed (exit {rc})")
        done("enroll", seconds=round(wall, 2), peak_mib=round(rss, 1))
        log(f"enroll {n_gal:,} identities: {wall:.1f} s, peak {rss:.0f} MiB (load {_load()})")
    for n_sh in shards:
        step = f"split_{n_sh}"
        if step not in steps:
            t0 = time.perf_counter()
            split_gallery(db, data / f"shards{n_sh}", n_sh, overwrite=True)
            done(step, seconds=round(time.perf_counter() - t0, 2), peak_mib=round(_vmhwm_mib(), 1))
            log(f"split into {n_sh} shards: {steps[step]['seconds']:.1f} s (load {_load()})")
    return rec


def time_jobs(
    data: Path,
    n_probes: int,
    *,
    shards: tuple[int, ...] = (2, 8),
    workers: int = 2,
    chunk_size: int = 10_000,
    rounds: int = 2,
    search_cost: bool = True,
    compare_read: bool = False,
    log: Log = print,
) -> dict[str, Any]:
    """Time the in-process job and the cluster jobs over the prepared ``data``
    (:func:`prepare_data`), interleaved ``rounds`` times; outputs go to ``data/runs/`` and each
    cluster output is compared byte for byte with the in-process one. ``compare_read``: each
    cluster run is preceded by one where every worker reads each chunk itself
    (``distributed.jobs.READ_ONCE = False``, the code before), for a same-run comparison."""
    from pyfacematch.distributed import jobs as _jobs
    from pyfacematch.distributed.jobs import identify_job_cluster
    from pyfacematch.jobs import Source

    db = data / "people.db"
    runs_dir = data / "runs"
    runs_dir.mkdir(exist_ok=True)
    out: dict[str, Any] = {"load_at_start": _load()}
    src = Source(input=str(data / "probes.npy"), chunk_size=chunk_size)
    for n_sh in shards if search_cost else ():
        cost = _search_cost(db, data / f"shards{n_sh}", data / "probes.npy", chunk_size)
        out[f"search_cost_{n_sh}_shards"] = cost
        log(
            f"one chunk of {cost['probes']:,} probes on one core thread, CPU s per phase: whole "
            f"gallery {cost['whole_cpu_s']}, its {n_sh} shards one after another "
            f"{cost['shards_cpu_s']} ({cost['shards_vs_whole']:.3f}x in all, search "
            f"{cost['search_shards_vs_whole']:.3f}x: sharding's own cost, before any "
            f"coordination; load {_load()})"
        )
    ref: list[bytes] | None = None
    local_runs: list[dict[str, Any]] = []
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in shards}
    before: dict[int, list[dict[str, Any]]] = {n: [] for n in shards}
    for rnd in range(rounds):  # interleaved: the machine is shared, its load drifts
        # in-process: the real command in a fresh process (its own peak memory and CPU time)
        c0 = _cpu(resource.RUSAGE_CHILDREN)
        wall, rss, rc = run_command(
            [
                "identify", "-g", str(db), "-i", str(data / "probes.npy"),
                "-o", str(runs_dir / "local.csv"), "--chunk-size", str(chunk_size), "-q",
                "--overwrite",
            ],
            runs_dir,
        )  # fmt: skip
        if rc:
            raise RuntimeError(f"pyfacematch identify failed (exit {rc})")
        cpu = _cpu(resource.RUSAGE_CHILDREN) - c0
        ref = ref or _rows(runs_dir / "local.csv")
        ld = _load()
        local_runs.append(
            {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_mib": rss, "load": ld}
        )
        log(
            f"[{rnd}] in-process: {wall:.1f} s wall ({n_probes / wall:,.0f} probes/s), "
            f"{cpu:.1f} s CPU, peak {rss:.0f} MiB (load average {ld})"
        )
        for n_sh, once in [
            (n, o) for n in shards for o in ((False, True) if compare_read else (True,))
        ]:
            _jobs.READ_ONCE = once
            try:
                r = _cluster_run(data, runs_dir, n_sh, workers, src, n_probes, identify_job_cluster)
            finally:
                _jobs.READ_ONCE = True
            r["read_once"] = once
            got = _rows(runs_dir / f"cluster{n_sh}.csv")
            r["byte_identical"] = got == ref
            r["rows_identical"] = f"{sum(a == b for a, b in zip(got, ref))}/{len(ref)}"
            r["wall_vs_in_process"] = round(r["wall_s"] / wall, 3)
            r["cpu_vs_in_process"] = round(r["cpu_total_s"] / cpu, 3)
            r["load"] = _load()
            log(
                f"[{rnd}] {n_sh} shards on {workers} workers"
                f"{'' if once else ' (each worker reads every chunk: the old way)'}: "
                f"{r['wall_s']:.1f} s wall "
                f"({r['probes_per_s']:,.0f} probes/s, {r['wall_vs_in_process']:.2f}x the "
                f"in-process run before it), CPU {r['cpu_total_s']:.1f} s "
                f"({r['cpu_vs_in_process']:.2f}x; workers {r['cpu_workers_s']:.1f}, "
                f"client+scheduler {r['cpu_client_s']:.1f}), worker peak "
                f"{r['worker_peak_mib']} MiB (before opening {r['worker_base_mib']}), overhead "
                f"{r['overhead_per_task_ms']} ms/task, worker CPU by phase "
                f"{r['worker_phase_cpu_s']}, identical rows {r['rows_identical']} "
                f"(load average {r['load']})"
            )
            (runs if once else before)[n_sh].append(r)
    out["load_at_end"] = _load()
    out["in_process"] = {
        "runs": local_runs,
        "median_wall_s": _median([x["wall_s"] for x in local_runs]),
        "median_cpu_s": _median([x["cpu_s"] for x in local_runs]),
        "probes_per_s": round(n_probes / _median([x["wall_s"] for x in local_runs]), 1),
    }
    out["cluster"] = [
        {
            "shards": n,
            "runs": rs,
            "median_wall_s": _median([x["wall_s"] for x in rs]),
            "median_wall_vs_in_process": _median([x["wall_vs_in_process"] for x in rs]),
            "median_cpu_vs_in_process": _median([x["cpu_vs_in_process"] for x in rs]),
            "probes_per_s": round(n_probes / _median([x["wall_s"] for x in rs]), 1),
            "all_byte_identical": all(x["byte_identical"] for x in rs),
        }
        for n, rs in runs.items()
    ]
    if compare_read:
        out["cluster_each_worker_reads"] = [
            {
                "shards": n,
                "runs": rs,
                "median_wall_s": _median([x["wall_s"] for x in rs]),
                "median_cpu_vs_in_process": _median([x["cpu_vs_in_process"] for x in rs]),
            }
            for n, rs in before.items()
        ]
    return out


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
    rounds: int = 2,
    seed: int = 0,
    keep: bool = False,
    search_cost: bool = True,
    reuse: bool = False,
    prepare_only: bool = False,
    compare_read: bool = False,
    log: Log = print,
) -> dict[str, Any]:
    """Run the comparison (see the module); returns the figures. ``search_cost=False`` skips
    the one-chunk CPU comparison (minutes at 1M identities). ``reuse``: ``work`` is a data
    folder kept across runs (:func:`prepare_data` finishes what is missing, nothing is deleted);
    otherwise ``work`` is scratch, emptied first and deleted afterwards unless ``keep``.
    ``prepare_only``: build the data and stop."""
    if not reuse:
        shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {
        "gallery": n_gal,
        "probes": n_probes,
        "dim": d,
        "backend": backend,
        "workers": workers,
        "chunk_size": chunk_size,
        "data": os.fspath(work),
    }
    try:
        rec = prepare_data(
            work, n_gal, n_probes, d, shards=shards, backend=backend, seed=seed, log=log
        )
        out["preparation"] = rec["steps"]
        if not prepare_only:
            out.update(
                time_jobs(
                    work,
                    n_probes,
                    shards=shards,
                    workers=workers,
                    chunk_size=chunk_size,
                    rounds=rounds,
                    search_cost=search_cost,
                    compare_read=compare_read,
                    log=log,
                )
            )
    finally:
        if not keep and not reuse:
            shutil.rmtree(work, ignore_errors=True)
    return out
