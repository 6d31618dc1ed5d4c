"""Bulk identify / verify jobs on a Dask cluster: same output, manifest and resume as one process.

The job is :func:`~pyfacematch.jobs.runner.run_job` with its chunks computed on the cluster. The
gallery is a gallery file (every worker may open all of it; one task per chunk, any worker) or a
shard manifest (shard ``s`` pinned to worker ``s mod W``). Per chunk, **one task reads the
chunk once for the whole cluster** (:func:`~pyfacematch.distributed.worker.read_part`, on worker
``i mod W``, so the reading goes round): it parses or slices it, encodes it, and for identify also
checks, normalises and sign-packs it (a :class:`~pyfacematch.index.PreparedProbes`); the probes go
worker to worker, never through the client or the scheduler. Then there is **one task per worker**
that holds shards: it searches each of its shards with those probes and merges their top-k lists
there (:func:`~pyfacematch.distributed.worker.search_chunk`); the client merges the W small results
exactly (:func:`~pyfacematch.distributed.merge.merge_topk`). A verify task routes each claim to
its shard (:func:`~pyfacematch.distributed.shards.shard_of`) and returns rows with their record
numbers, which the client puts back in input order.

The client keeps a window of chunks in flight (two per worker), takes results back **in chunk
order**, and commits each as the local job does (part file, then manifest), so the output is byte
for byte the single-process output and ``--resume`` works the same: the fingerprint is
:func:`~pyfacematch.jobs.common.job_fingerprint` in both, so a job may be started in one process
and resumed on a cluster. A worker that dies mid-job takes its tasks with it; the scheduler
reruns them on another worker (which opens the gallery or shards there) and the job goes on, its
output unchanged.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.distributed import worker as W
from pyfacematch.distributed.cluster import ClusterHandle, require_dask, wait_for_workers
from pyfacematch.distributed.merge import merge_topk
from pyfacematch.distributed.shards import ShardManifest, read_manifest, shard_of
from pyfacematch.errors import InputError
from pyfacematch.io import Chunk, Reject, ResultColumns
from pyfacematch.jobs import JobOutput, JobSpec, Source, open_reader, run_job
from pyfacematch.jobs.common import job_fingerprint, threshold_info
from pyfacematch.jobs.encode import check_key_model, default_threshold, load_key_model
from pyfacematch.jobs.identify import identify_rows

__all__ = ["identify_job_cluster", "verify_job_cluster"]

Result = tuple[ResultColumns, list[Reject], dict[str, int]]

#: Seconds a job reuses the worker list it asked the scheduler for (see ``_ClusterRun.workers``).
WORKERS_TTL = 5.0

#: Each chunk read, checked and prepared once per cluster (one task, workers in turn) and its
#: probes sent to the other workers' tasks. False: each worker's task reads an ``.npy`` chunk
#: itself (the slice, the reader's checks and the preparation paid once per worker): the
#: benchmark's "before" (``bench/cluster_day_job.py --compare-read``).
READ_ONCE = True


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
    """The cluster side of one job: the gallery (file or shards), placement, the in-order window."""

    def __init__(
        self,
        client: Any,
        gallery: str | os.PathLike[str],
        key_model: str | None,
        purpose: str | None,
    ) -> None:
        require_dask()
        self.client = client.client if isinstance(client, ClusterHandle) else client
        self.name = os.fspath(gallery)
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
        self.purpose = purpose
        self.tasks_done = 0
        self.n_workers = 0
        self._ws: list[str] = []
        self._ws_at = 0.0
        self.reads: dict[int, int] = {}  # chunk -> read tasks (counted when it is gathered)
        self.self_read = True  # set per job: may each worker read a chunk itself?

    @property
    def key_model_path(self) -> str | None:
        return None if self.km_ref is None else self.km_ref[0]

    def workers(self) -> list[str]:
        """The workers (waiting for one to join when there are none, e.g. while a killed worker
        is being replaced). Asked of the scheduler at most every ``WORKERS_TTL`` seconds, not
        once per chunk: a task pinned to a worker that died meanwhile runs on another
        (``allow_other_workers``), and a replacement is picked up at the next refresh."""
        now = time.monotonic()
        if self._ws and now - self._ws_at < WORKERS_TTL:
            return self._ws
        ws = wait_for_workers(self.client)
        self.n_workers = len(ws)
        self._ws, self._ws_at = ws, time.monotonic()
        return ws

    def groups(self) -> list[tuple[str | None, W.Group]]:
        """Who searches what for one chunk: (worker or None = any, the shards it holds)."""
        if self.man is None:
            return [(None, [(0, self.refs[0])])]
        ws = self.workers()
        by: dict[str, W.Group] = {}
        for s, ref in enumerate(self.refs):
            by.setdefault(ws[s % len(ws)], []).append((s, ref))
        return list(by.items())

    def submit(self, fn: Any, worker: str | None, *args: Any) -> Any:
        kw: dict[str, Any] = {"pure": False}
        if worker is not None:  # shards stay where they are open; elsewhere if that worker died
            kw.update(workers=[worker], allow_other_workers=True)
        return self.client.submit(fn, *args, **kw)

    def info(self, threshold: float | None, kind: str, identity: str | None) -> dict[str, Any]:
        """The gallery's fingerprint task (on the identity's shard when there is one)."""
        at = 0 if identity is None or self.man is None else shard_of(identity, len(self.refs))
        g = self.groups()[0][0] if self.man is not None else None
        ref = self.refs[at]
        return dict(self.submit(W.fingerprint_task, g, ref, threshold, kind, identity).result())

    def gallery_state(
        self, threshold: float | None, kind: str, identity: str | None = None
    ) -> tuple[tuple[float | None, str, float | None], dict[str, Any], dict[str, Any], _Shape, Any]:
        """(resolved threshold, gallery fingerprint, index info, shape, identity known?)."""
        if self.man is None:
            info = self.info(threshold, kind, identity)
            blocks = None if info["blocks"] is None else np.asarray(info["blocks"], np.int64)
            idx = {**info["index"], "identities": info["identities"]}
            return (
                tuple(info["threshold"]),  # type: ignore[return-value]
                {**info["fingerprint"], "default_purpose": info["purpose"]},
                idx,
                _Shape(int(info["dim"]), blocks),
                info["has_identity"],
            )
        from pyfacematch.distributed.sharded import _ManifestThresholds

        m = self.man
        fp = {
            "gallery": m.path,
            "shards": [s.sha256 for s in m.shards],
            "identities": sum(s.identities for s in m.shards),
            "templates": sum(s.templates for s in m.shards),
            "dim": m.dim,
            "backend": m.backend,
            "default_purpose": m.default_purpose,
        }
        known = None
        if identity is not None:
            known = self.info(None, kind, identity)["has_identity"]
        return (
            _ManifestThresholds(m).resolve(threshold, kind),
            fp,
            {"backend": m.backend, "shards": m.n_shards, "identities": fp["identities"]},
            _Shape(m.dim, None if m.blocks is None else np.asarray(m.blocks, np.int64)),
            known,
        )

    def probes(
        self,
        groups: list[tuple[str | None, W.Group]],
        source: Source,
        i: int,
        fields: Any,
        prepare: bool = False,
    ) -> Any:
        """What the tasks of chunk ``i`` search: read by the one task when there is one, else
        read (and, with ``prepare``, checked, normalised and sign-packed) once by a task on
        worker ``i mod W`` (turn about, so no worker does all the reading) and taken from there
        by the others."""
        if len(groups) == 1 or (self.self_read and not READ_ONCE):
            return (source, i)
        self.reads[i] = 1
        w, grp = groups[i % len(groups)]
        return self.submit(W.read_part, w, grp, source, i, self.km_ref, tuple(fields), prepare)

    def note(self) -> str:
        return f"tasks {self.tasks_done:,} on {self.n_workers} workers"

    def ordered(
        self, n_chunks: int, skip: int, make: Any, window: int | None
    ) -> Iterator[tuple[int, list[Any]]]:
        """``make(i) -> futures`` for chunks ``skip…n_chunks-1``, gathered in order."""
        win = window or max(2, 2 * len(self.workers()))
        inflight: deque[tuple[int, list[Any]]] = deque()
        nxt = skip
        while nxt < n_chunks or inflight:
            while nxt < n_chunks and len(inflight) < win:
                inflight.append((nxt, make(nxt)))
                nxt += 1
            i, futs = inflight.popleft()
            got = self.client.gather(futs)
            self.tasks_done += len(futs) + self.reads.pop(i, 0)
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


def _fingerprint(gallery_fp: dict[str, Any], purpose: str | None) -> tuple[dict[str, Any], str]:
    """The gallery part of a job fingerprint as a local job writes it, and the purpose used."""
    fp = dict(gallery_fp)
    default = fp.pop("default_purpose", None)
    return fp, purpose or default


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
    purpose: str | None = None,
) -> dict[str, Any]:
    """:func:`pyfacematch.jobs.identify_job` on a Dask cluster (see the module).

    ``gallery`` is a gallery file or a shard manifest (file or folder); ``client`` a
    :class:`distributed.Client` or :class:`~pyfacematch.distributed.cluster.ClusterHandle`;
    ``purpose`` filters consent in every shard as one gallery would. The summary adds
    ``cluster`` (workers, shards, tasks).
    """
    if isinstance(k, bool) or int(k) < 1:
        raise InputError(f"--top-k must be >= 1, got {k}")
    k = int(k)
    fmt, rej_path, sum_path = output.resolved()
    run = _ClusterRun(client, gallery, None if key_model is None else os.fspath(key_model), purpose)
    km = load_key_model(run.key_model_path)
    resolved, g_fp, index, shape, _ = run.gallery_state(threshold, "fpir")
    n_id = int(index.pop("identities"))
    g_fp, used_purpose = _fingerprint(g_fp, purpose)
    check_key_model(km, shape)  # type: ignore[arg-type]
    reader = open_reader(source, gallery=shape, key_model=km)  # type: ignore[arg-type]
    try:
        thr, src, target = default_threshold(reader, resolved, "fpir")
        n_chunks = _n_chunks(reader)
        spec = JobSpec(
            "identify",
            output.path,
            fmt,
            rej_path,
            sum_path,
            job_fingerprint(
                source,
                reader,
                key_model=key_model,
                threshold=threshold_info(thr, src, target),
                purpose=used_purpose,
                gallery=g_fp,
                k=k,
            ),
            {
                "threshold": threshold_info(thr, src, target),
                "k": k,
                "input": source.name,
                "index": index,
                "gallery_identities": n_id,
                "cluster": {"workers": len(run.workers()), "shards": len(run.refs)},
            },
        )

        run.self_read = reader.fmt == "npy"

        def make(i: int) -> list[Any]:
            groups = run.groups()
            probes = run.probes(groups, source, i, (), prepare=True)
            return [
                run.submit(W.search_chunk, w, grp, probes, k, run.km_ref, purpose, j == 0)
                for j, (w, grp) in enumerate(groups)
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
                cols, counters = identify_rows(chunk.ids, ids, sc, thr)
                yield chunk, (cols, extra, counters)

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
    purpose: str | None = None,
) -> dict[str, Any]:
    """:func:`pyfacematch.jobs.verify_job` on a Dask cluster, over a gallery file or shards.

    With shards, each claim is verified in the shard that holds the claimed identity; the
    output, rejects and summary are those of the single-process job on one gallery.

    Raises
    ------
    InputError
        ``identity`` not enrolled; see :func:`pyfacematch.jobs.verify_job`.
    """
    fmt, rej_path, sum_path = output.resolved()
    run = _ClusterRun(client, gallery, None if key_model is None else os.fspath(key_model), purpose)
    km = load_key_model(run.key_model_path)
    resolved, g_fp, _, shape, known = run.gallery_state(threshold, "fmr", identity)
    g_fp, used_purpose = _fingerprint(g_fp, purpose)
    if identity is not None and not known:
        raise InputError(f"identity {identity!r} is not enrolled in {os.fspath(gallery)}")
    check_key_model(km, shape)  # type: ignore[arg-type]
    fields = () if identity else (claim_field,)
    reader = open_reader(source, gallery=shape, key_model=km, fields=fields)  # type: ignore[arg-type]
    try:
        thr, src, target = default_threshold(reader, resolved, "fmr")
        n_chunks = _n_chunks(reader)
        spec = JobSpec(
            "verify",
            output.path,
            fmt,
            rej_path,
            sum_path,
            job_fingerprint(
                source,
                reader,
                key_model=key_model,
                threshold=threshold_info(thr, src, target),
                purpose=used_purpose,
                gallery=g_fp,
                claim=identity or f"field:{claim_field}",
            ),
            {
                "threshold": threshold_info(thr, src, target),
                "input": source.name,
                "cluster": {"workers": len(run.workers()), "shards": len(run.refs)},
            },
        )
        n_sh = len(run.refs)
        run.self_read = reader.fmt == "npy"

        def make(i: int) -> list[Any]:
            groups = run.groups()
            probes = run.probes(groups, source, i, fields)
            return [
                run.submit(
                    W.verify_chunk_shards,
                    w,
                    grp,
                    n_sh,
                    probes,
                    identity,
                    claim_field,
                    thr,
                    run.km_ref,
                    purpose,
                    j == 0,
                )
                for j, (w, grp) in enumerate(groups)
            ]

        def results(skip: int) -> Iterator[tuple[Chunk, Result]]:
            for _, parts in run.ordered(n_chunks, skip, make, window):
                chunk, extra = parts[0][0], list(parts[0][1])
                rows = sorted(r for p in parts for r in p[2])
                claims = sorted((r for p in parts for r in p[3]), key=lambda r: r.row)
                if claims and reader.on_error == "stop":  # the first bad record, as in one process
                    raise reader.fail(claims[0])
                cols = ResultColumns(
                    [r[1] for r in rows],
                    np.ones(len(rows), np.int32),
                    [r[2] for r in rows],
                    np.asarray([r[3] for r in rows], np.float32),
                    [r[4] for r in rows],
                )
                yield chunk, (cols, extra + claims, {"matches": sum(p[4] for p in parts)})

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
