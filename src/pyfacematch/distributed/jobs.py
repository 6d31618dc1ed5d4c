"""Bulk identify / verify jobs on a Dask cluster: same output, manifest and resume as one process.

The job is :func:`~pyfacematch.jobs.runner.run_job` with its chunks computed on the cluster: the
task of chunk ``i`` runs on a worker that reads chunk ``i`` of the input itself (an npy slice, a
Parquet row range: the probes never pass through the client or the scheduler), searches its
gallery (kept open by the worker, :mod:`pyfacematch.distributed.worker`) and returns only the
result rows' material (ids, scores, best template ids). The client keeps a window of chunks in
flight (two per worker), takes results back **in chunk order**, and commits each as the local job
does (part file, then manifest), so the output is byte for byte the single-process output and
``--resume`` works the same (a job may even be started on one and resumed on the other: the
fingerprints are the same for a gallery file).

The gallery is a gallery file (every worker opens all of it; tasks go to any worker) or a shard
manifest (shard ``s`` pinned to worker ``s mod W``; each chunk is read once by one task and searched by
one task per shard, merged exactly by :func:`~pyfacematch.distributed.merge.merge_topk`). A worker that dies mid-job takes
its tasks with it; the scheduler reruns them on another worker (which opens the gallery or shard
there) and the job goes on, its output unchanged.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.distributed import worker as W
from pyfacematch.distributed.cluster import ClusterHandle, require_dask
from pyfacematch.distributed.merge import merge_topk
from pyfacematch.distributed.shards import ShardManifest, read_manifest
from pyfacematch.errors import InputError
from pyfacematch.io import Chunk, Reject, ResultColumns
from pyfacematch.jobs import JobOutput, JobSpec, Source, open_reader, result_columns, run_job
from pyfacematch.jobs.common import threshold_info
from pyfacematch.jobs.encode import check_key_model, input_fingerprint, load_key_model
from pyfacematch.jobs.runner import file_fingerprint

__all__ = ["identify_job_cluster", "verify_job_cluster"]

Result = tuple[ResultColumns, list[Reject], dict[str, int]]


@dataclass
class _Shape:
    """What a reader needs of a gallery it never opens here: dimension and region blocks."""

    dim: int
    blocks: np.ndarray | None


def _is_manifest(gallery: str | os.PathLike[str]) -> bool:
    """A shard folder or a manifest file (``.json``), not a gallery file."""
    p = Path(gallery)
    return p.is_dir() or p.name.endswith(".json")


class _ClusterRun:
    """The cluster side of one job: gallery refs, placement, the in-order window of chunks."""

    def __init__(self, client: Any, gallery: str | os.PathLike[str], key_model: str | None) -> None:
        require_dask()
        self.client = client.client if isinstance(client, ClusterHandle) else client
        self.man: ShardManifest | None = None
        if _is_manifest(gallery):
            self.man = read_manifest(gallery)
            self.refs: list[W.ShardRef] = [(s.path, s.sha256) for s in self.man.shards]
        else:
            p = os.path.abspath(os.fspath(gallery))
            if not os.path.isfile(p):
                raise InputError(
                    f"gallery {os.fspath(gallery)!r} does not exist: create it with "
                    f"`pyfacematch enroll -g {os.fspath(gallery)} -i …`"
                )
            self.refs = [(p, "")]
        self.km_ref: W.ShardRef | None = None
        if key_model is not None:
            self.km_ref = (os.path.abspath(key_model), "")
        elif self.man is not None and self.man.key_model is not None:
            self.km_ref = (self.man.key_model["path"], self.man.key_model["sha256"])
        self.tasks_done = 0
        self.tasks_total = 0

    @property
    def tasks_per_chunk(self) -> int:
        """A read task and one task per shard; one task for a whole gallery."""
        return 1 if len(self.refs) == 1 else len(self.refs) + 1

    @property
    def key_model_path(self) -> str | None:
        return None if self.km_ref is None else self.km_ref[0]

    def workers(self) -> list[str]:
        ws = sorted(self.client.scheduler_info().get("workers", {}))
        if not ws:
            raise InputError("the Dask cluster has no workers")
        return ws

    def submit(self, fn: Any, shard: int | None, *args: Any) -> Any:
        kw: dict[str, Any] = {"pure": False}
        if shard is not None and len(self.refs) > 1:  # a shard stays where it is open
            ws = self.workers()
            kw.update(workers=[ws[shard % len(ws)]], allow_other_workers=True)
        return self.client.submit(fn, *args, **kw)

    def note(self) -> str:
        return f"tasks {self.tasks_done:,}/{self.tasks_total:,} on {len(self.workers())} workers"

    def ordered(
        self, n_chunks: int, skip: int, make: Any, window: int | None
    ) -> Iterator[tuple[int, list[Any]]]:
        """``make(i) -> futures`` for chunks ``skip…n_chunks-1``, gathered in order."""
        win = window or max(2, 2 * len(self.workers()))
        inflight: deque[tuple[int, list[Any]]] = deque()
        nxt = skip
        per_chunk = self.tasks_per_chunk
        self.tasks_total = self.tasks_done + (n_chunks - skip) * per_chunk
        while nxt < n_chunks or inflight:
            while nxt < n_chunks and len(inflight) < win:
                inflight.append((nxt, make(nxt)))
                nxt += 1
            i, futs = inflight.popleft()
            got = self.client.gather(futs)
            self.tasks_done += per_chunk
            yield i, got


def _not_local(chunk: Chunk) -> Result:
    raise AssertionError("a cluster job's chunks are processed by its results stream")


def _n_chunks(reader: Any) -> int:
    total = reader.count_records()
    if total is None:
        raise InputError(
            "a job on a cluster reads its input on the workers: give a file (npy, Parquet, CSV, "
            "JSONL), not standard input"
        )
    return math.ceil(total / reader.chunk_size)


def identify_job_cluster(
    gallery: str | os.PathLike[str],
    source: Source,
    output: JobOutput,
    client: Any,
    *,
    k: int = 1,
    threshold: float | None = None,
    key_model: str | os.PathLike[str] | None = None,
    quiet: bool = False,
    window: int | None = None,
) -> dict[str, Any]:
    """:func:`pyfacematch.jobs.identify_job` on a Dask cluster (see the module).

    ``gallery`` is a gallery file or a shard manifest (file or folder); ``client`` a
    :class:`distributed.Client` or :class:`~pyfacematch.distributed.cluster.ClusterHandle`.
    The summary adds ``cluster`` (workers, shards, tasks).
    """
    if isinstance(k, bool) or int(k) < 1:
        raise InputError(f"--top-k must be >= 1, got {k}")
    k = int(k)
    fmt, rej_path, sum_path = output.resolved()
    run = _ClusterRun(client, gallery, None if key_model is None else os.fspath(key_model))
    km = load_key_model(run.key_model_path)
    if run.man is None:
        info = run.submit(W.fingerprint_task, None, run.refs[0], threshold, "fpir").result()
        thr, src, target = info["threshold"]
        g_fp = {"purpose": info["purpose"], **info["fingerprint"]}
        index, n_id = info["index"], info["identities"]
        blocks = None if info["blocks"] is None else np.asarray(info["blocks"], np.int64)
        shape = _Shape(int(info["dim"]), blocks)
    else:
        from pyfacematch.distributed.sharded import _ManifestThresholds

        m = run.man
        thr, src, target = _ManifestThresholds(m).resolve(threshold, "fpir")
        g_fp = {
            "gallery": m.path,
            "shards": [s.sha256 for s in m.shards],
            "identities": sum(s.identities for s in m.shards),
            "templates": sum(s.templates for s in m.shards),
            "dim": m.dim,
            "backend": m.backend,
        }
        index = {"backend": m.backend, "shards": m.n_shards}
        n_id = int(g_fp["identities"])
        shape = _Shape(m.dim, None if m.blocks is None else np.asarray(m.blocks, np.int64))
    check_key_model(km, shape)  # type: ignore[arg-type]
    reader = open_reader(source, gallery=shape, key_model=km)  # type: ignore[arg-type]
    try:
        n_chunks = _n_chunks(reader)
        spec = JobSpec(
            "identify",
            output.path,
            fmt,
            rej_path,
            sum_path,
            {
                "input": input_fingerprint(source, reader),
                "input_format": reader.fmt,
                "id_field": source.id_field,
                "key_model": None if key_model is None else file_fingerprint(str(key_model)),
                "k": k,
                "threshold": threshold_info(thr, src, target),
                **g_fp,
            },
            {
                "threshold": threshold_info(thr, src, target),
                "k": k,
                "input": source.name,
                "index": index,
                "gallery_identities": n_id,
                "cluster": {"workers": len(run.workers()), "shards": len(run.refs)},
            },
        )

        def make(i: int) -> list[Any]:
            if len(run.refs) == 1:  # a whole gallery: read and search in one task, any worker
                return [run.submit(W.job_part, None, run.refs[0], source, i, k, run.km_ref, True)]
            # shards: the chunk is read once, on the worker of shard i mod S; each shard's task
            # takes it from there (worker to worker), the client only gets the results
            at = i % len(run.refs)
            part = run.submit(W.read_part, at, run.refs[at], source, i, run.km_ref)
            return [
                run.submit(W.search_part, s, ref, part, k, s == 0) for s, ref in enumerate(run.refs)
            ]

        def results(skip: int) -> Iterator[tuple[Chunk, Result]]:
            for _, parts in run.ordered(n_chunks, skip, make, window):
                chunk, extra = parts[0][0], parts[0][1]
                if len(parts) == 1:
                    sc, ids = parts[0][2], parts[0][3]
                else:
                    sc, ids, _ = merge_topk([(p[2], p[3], p[4]) for p in parts], k)
                if not len(chunk):
                    sc, ids = np.empty((0, k)), np.empty((0, k), object)
                cols = result_columns(chunk.ids, ids, sc, thr)
                matches = 0
                if thr is not None and sc.shape[1]:
                    top = np.nan_to_num(sc[:, 0].astype(np.float64), nan=-np.inf)
                    matches = int((top >= thr).sum())
                yield chunk, (cols, extra, {"matches": matches})

        summary = run_job(
            spec,
            reader,
            _not_local,
            resume=output.resume,
            overwrite=output.overwrite,
            quiet=quiet,
            log_interval=output.log_interval,
            results=results,
            progress_note=run.note,
        )
    finally:
        reader.close()
    summary["cluster"] = {**summary.get("cluster", {}), "tasks": run.tasks_done}
    return summary


def verify_job_cluster(
    gallery: str | os.PathLike[str],
    source: Source,
    output: JobOutput,
    client: Any,
    *,
    identity: str | None = None,
    claim_field: str = "claim",
    threshold: float | None = None,
    key_model: str | os.PathLike[str] | None = None,
    quiet: bool = False,
    window: int | None = None,
) -> dict[str, Any]:
    """:func:`pyfacematch.jobs.verify_job` on a Dask cluster, over a gallery file.

    Raises
    ------
    InputError
        A shard manifest (1:1 claims would have to be routed per probe: merge the shards, or use
        :meth:`ShardedGallery.verify`); see :func:`pyfacematch.jobs.verify_job`.
    """
    fmt, rej_path, sum_path = output.resolved()
    run = _ClusterRun(client, gallery, None if key_model is None else os.fspath(key_model))
    if run.man is not None:
        raise InputError(
            "verify --cluster takes a gallery file, not a shard manifest: run identify on the "
            "shards, or use ShardedGallery.verify, or `pyfacematch shard merge` first"
        )
    km = load_key_model(run.key_model_path)
    info = run.submit(W.fingerprint_task, None, run.refs[0], threshold, "fmr", identity).result()
    thr, src, target = info["threshold"]
    if identity is not None and not info["has_identity"]:
        raise InputError(f"identity {identity!r} is not enrolled in {os.fspath(gallery)}")
    blocks = None if info["blocks"] is None else np.asarray(info["blocks"], np.int64)
    shape = _Shape(int(info["dim"]), blocks)
    check_key_model(km, shape)  # type: ignore[arg-type]
    fields = () if identity else (claim_field,)
    reader = open_reader(source, gallery=shape, key_model=km, fields=fields)  # type: ignore[arg-type]
    try:
        n_chunks = _n_chunks(reader)
        spec = JobSpec(
            "verify",
            output.path,
            fmt,
            rej_path,
            sum_path,
            {
                "input": input_fingerprint(source, reader),
                "input_format": reader.fmt,
                "id_field": source.id_field,
                "claim": identity or f"field:{claim_field}",
                "key_model": None if key_model is None else file_fingerprint(str(key_model)),
                "threshold": threshold_info(thr, src, target),
                "purpose": info["purpose"],
                **info["fingerprint"],
            },
            {
                "threshold": threshold_info(thr, src, target),
                "input": source.name,
                "cluster": {"workers": len(run.workers()), "shards": 1},
            },
        )

        def make(i: int) -> list[Any]:
            return [
                run.submit(
                    W.verify_part,
                    None,
                    run.refs[0],
                    source,
                    i,
                    identity,
                    claim_field,
                    thr,
                    run.km_ref,
                )
            ]

        def results(skip: int) -> Iterator[tuple[Chunk, Result]]:
            for _, parts in run.ordered(n_chunks, skip, make, window):
                yield parts[0]

        summary = run_job(
            spec,
            reader,
            _not_local,
            resume=output.resume,
            overwrite=output.overwrite,
            quiet=quiet,
            log_interval=output.log_interval,
            results=results,
            progress_note=run.note,
        )
    finally:
        reader.close()
    summary["cluster"] = {**summary.get("cluster", {}), "tasks": run.tasks_done}
    return summary
