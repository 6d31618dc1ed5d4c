"""What runs on a Dask worker: shards opened from their paths, kept open, and the tasks over them.

Nothing here imports Dask: the task functions are plain functions the scheduler ships by
reference (module and name), with small arguments (paths, checksums, a probe batch, a chunk
number). Each worker process keeps a cache of the galleries it opened (:func:`open_shard`): a
shard's file is checked against its manifest SHA-256 once, then kept open read-only across calls,
so a shard is never shipped through the scheduler and never read twice by one worker. A shard
whose SHA-256 changed (an enroll or remove committed a new manifest) is opened again; a worker
that dies takes its cache with it, and the task that ran there reruns elsewhere and opens the
shard there.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import Any

import numpy as np

from pyfacematch.distributed.shards import ShardInfo, file_sha256, verify_shard
from pyfacematch.errors import ShardChecksumError
from pyfacematch.gallery import Gallery, VerifyResult
from pyfacematch.io import Chunk, Reject
from pyfacematch.jobs import Source, open_reader, templates_of
from pyfacematch.jobs.encode import load_key_model
from pyfacematch.jobs.verify import verify_chunk
from pyfacematch.keys import KeyModel

__all__ = [
    "ShardRef",
    "cache_stats",
    "close_all",
    "enroll_in_shard",
    "fingerprint_task",
    "info_task",
    "job_part",
    "open_shard",
    "read_part",
    "remove_from_shard",
    "search_part",
    "search_shard",
    "verify_in_shard",
    "verify_part",
]

#: (path, sha256 or "") of a shard or gallery file; sha256 "" = a plain gallery, not checked.
ShardRef = tuple[str, str]

_LOCK = threading.Lock()
_GALLERIES: dict[ShardRef, Gallery] = {}
_KEY_MODELS: dict[ShardRef, KeyModel] = {}
_STATS = {"opens": 0, "checksums": 0, "pid": 0}


def _configure_threads() -> None:
    """``PYFACEMATCH_WORKER_THREADS`` (set by :func:`~pyfacematch.distributed.cluster.connect` for
    local clusters; set it in a remote worker's environment): core threads of this process, so W
    worker processes on one machine do not each start a pool as large as the machine."""
    if _STATS["pid"] == os.getpid():
        return
    n = os.environ.get("PYFACEMATCH_WORKER_THREADS")
    if n and n.isdigit() and int(n) >= 1:
        from pyfacematch.core.scoring import set_num_threads

        set_num_threads(int(n))
    _STATS["pid"] = os.getpid()


def open_shard(ref: ShardRef) -> Gallery:
    """The worker's open, read-only gallery of ``ref`` (checked and opened on first use)."""
    path, sha = ref
    with _LOCK:
        _configure_threads()
        g = _GALLERIES.get(ref)
        if g is not None:
            return g
        for old in [r for r in _GALLERIES if r[0] == path]:  # the shard changed: reopen
            _GALLERIES.pop(old).close()
        if sha:
            verify_shard(ShardInfo(path, sha, 0, 0))
            _STATS["checksums"] += 1
        # shard searches are not audited per shard (the shard files are derived copies; no
        # writable open would ever chain a sidecar beside them in): as before, nothing written
        g = Gallery.open(path, read_only=True, audit_searches=False)
        _STATS["opens"] += 1
        _GALLERIES[ref] = g
        return g


def _key_model(ref: ShardRef | None) -> KeyModel | None:
    if ref is None:
        return None
    with _LOCK:
        km = _KEY_MODELS.get(ref)
        if km is None:
            if ref[1] and file_sha256(ref[0]) != ref[1]:
                raise ShardChecksumError(
                    f"key model {ref[0]!r} differs from the one recorded in the shard manifest: "
                    "restore it or split the gallery again"
                )
            km = load_key_model(ref[0])
            assert km is not None
            _KEY_MODELS[ref] = km
        return km


def cache_stats() -> dict[str, Any]:
    """Galleries this worker holds open, how many opens and checksum passes it made, its pid."""
    with _LOCK:
        return {**_STATS, "pid": os.getpid(), "open": sorted(r[0] for r in _GALLERIES)}


def close_all() -> None:
    """Close every gallery this worker holds (tests, shutdown)."""
    with _LOCK:
        for g in _GALLERIES.values():
            g.close()
        _GALLERIES.clear()
        _KEY_MODELS.clear()


# --------------------------------------------------------------------------- gallery calls
def search_shard(
    ref: ShardRef, probes: np.ndarray, masks: np.ndarray | None, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One shard's top-``k`` identities per probe: (scores, identity ids, best template ids)."""
    g = open_shard(ref)
    r = g.identify_arrays(
        probes, k=k, threshold=0.0, masks=masks if g.blocks is not None else None, with_tids=True
    )
    assert r.tids is not None
    return r.scores, r.identities, r.tids


def verify_in_shard(
    ref: ShardRef, identity_id: str, probe: Any, threshold: float | None, mask: Any
) -> VerifyResult:
    return open_shard(ref).verify(identity_id, probe, threshold=threshold, mask=mask)


def _write(path: str, fn: Any) -> tuple[str, int, int]:
    g = Gallery.open(path)  # the writer: takes the shard's lock for the call
    try:
        fn(g)
        g.checkpoint()
        n_id, n_t = len(g), g.n_templates
    finally:
        g.close()
    return file_sha256(path), n_id, n_t


def enroll_in_shard(
    path: str,
    identity_ids: list[str],
    templates: np.ndarray,
    masks: np.ndarray | None,
    metadata: dict[str, Any] | None,
    on_duplicate: str | None,
    consent: str,
) -> tuple[str, int, int]:
    """Enroll into one shard file; returns its new (SHA-256, identities, templates)."""
    return _write(
        path,
        lambda g: g.enroll_many(
            identity_ids,
            templates,
            masks,
            metadata=metadata,
            on_duplicate=on_duplicate,
            consent=consent,
        ),
    )


def remove_from_shard(path: str, identity_id: str) -> tuple[str, int, int]:
    """Remove (opt-out) from one shard file; returns its new (SHA-256, identities, templates)."""
    return _write(path, lambda g: g.remove(identity_id))


def info_task(ref: ShardRef) -> dict[str, Any]:
    g = open_shard(ref)
    return {**g.info(), "index": g.index_info(), "worker_pid": os.getpid()}


def fingerprint_task(
    ref: ShardRef, threshold: float | None, kind: str, identity: str | None = None
) -> dict[str, Any]:
    """What a job records about its gallery, computed where the gallery is already open."""
    from pyfacematch.jobs import gallery_fingerprint

    g = open_shard(ref)
    return {
        "fingerprint": gallery_fingerprint(g),
        "index": g.index_info(),
        "identities": len(g),
        "threshold": g.resolve_threshold(threshold, kind),
        "dim": g.dim,
        "blocks": None if g.blocks is None else g.blocks.tolist(),
        "has_identity": identity is not None and identity in g,
        # the purpose a local job records (a cluster job answers for the gallery's default)
        "purpose": g.default_purpose,
    }


# --------------------------------------------------------------------------- job parts
def _test_delay() -> None:
    """Test hook: ``PYFACEMATCH_TEST_TASK_DELAY=<seconds>`` slows every job task down, so a test
    can kill a worker while tasks are still running (unset in normal use)."""
    d = os.environ.get("PYFACEMATCH_TEST_TASK_DELAY")
    if d:
        time.sleep(float(d))


def _read_chunk(
    g: Gallery, source: Source, index: int, km: KeyModel | None, fields: tuple[str, ...]
) -> tuple[Any, Chunk | None]:
    reader = open_reader(source, gallery=g, key_model=km, fields=fields)
    try:
        it = reader.chunks(skip_chunks=index)
        chunk = next(it, None)
        del it  # the generator's clean-up closes the file
    finally:
        reader.close()
    return reader, chunk


def _stripped(chunk: Chunk) -> Chunk:
    """The chunk without its probe values (what the client needs to write and count it)."""
    return dataclasses.replace(
        chunk, values=np.empty((len(chunk.ids), 0), np.float32), masks=None, visibility=None
    )


def job_part(
    ref: ShardRef,
    source: Source,
    index: int,
    k: int,
    key_model: ShardRef | None,
    with_chunk: bool,
) -> tuple[Chunk | None, list[Reject], np.ndarray, np.ndarray, np.ndarray]:
    """Read chunk ``index`` of the input here and search it in one shard.

    Returns (the chunk without its values when ``with_chunk``, rejects made while encoding,
    scores, identity ids, best template ids) — the probe values never leave the worker.
    """
    g = open_shard(ref)
    km = _key_model(key_model)
    _test_delay()
    reader, chunk = _read_chunk(g, source, index, km, ())
    if chunk is None:
        raise IndexError(f"the input has no chunk {index}")
    chunk, vals, masks, extra = templates_of(chunk, km, reader)
    if len(chunk):
        s, ids, tids = search_shard(ref, vals, masks, k)
    else:
        s = np.empty((0, 0), np.float32)
        ids = np.empty((0, 0), object)
        tids = np.empty((0, 0), np.int64)
    return (_stripped(chunk) if with_chunk else None), extra, s, ids, tids


@dataclasses.dataclass
class ReadPart:
    """A chunk read (and encoded) on a worker, for the shard tasks that search it."""

    chunk: Chunk  # without its values
    values: np.ndarray
    masks: np.ndarray | None
    extra: list[Reject]


def read_part(ref: ShardRef, source: Source, index: int, key_model: ShardRef | None) -> ReadPart:
    """Read chunk ``index`` of the input once (on the worker of one of the shards): the shard
    tasks of the chunk take the result from this worker, not from the client or the scheduler."""
    g = open_shard(ref)  # fixes the dimension and blocks the reader checks
    km = _key_model(key_model)
    _test_delay()
    reader, chunk = _read_chunk(g, source, index, km, ())
    if chunk is None:
        raise IndexError(f"the input has no chunk {index}")
    chunk, vals, masks, extra = templates_of(chunk, km, reader)
    return ReadPart(_stripped(chunk), vals, masks, extra)


def search_part(
    ref: ShardRef, part: ReadPart, k: int, with_chunk: bool
) -> tuple[Chunk | None, list[Reject], np.ndarray, np.ndarray, np.ndarray]:
    """Search a chunk read by :func:`read_part` in one shard; as :func:`job_part` returns."""
    if len(part.chunk):
        s, ids, tids = search_shard(ref, part.values, part.masks, k)
    else:
        s = np.empty((0, 0), np.float32)
        ids = np.empty((0, 0), object)
        tids = np.empty((0, 0), np.int64)
    return (part.chunk if with_chunk else None), part.extra, s, ids, tids


def verify_part(
    ref: ShardRef,
    source: Source,
    index: int,
    identity: str | None,
    claim_field: str,
    threshold: float | None,
    key_model: ShardRef | None,
) -> tuple[Chunk, tuple[Any, list[Reject], dict[str, int]]]:
    """Read chunk ``index`` here and verify it against the worker's gallery (a whole gallery)."""
    g = open_shard(ref)
    km = _key_model(key_model)
    fields = () if identity else (claim_field,)
    reader, chunk = _read_chunk(g, source, index, km, fields)
    if chunk is None:
        raise IndexError(f"the input has no chunk {index}")
    res = verify_chunk(
        g,
        chunk,
        reader,
        identity=identity,
        claim_field=claim_field,
        threshold=threshold,
        key_model=km,
    )
    return _stripped(chunk), res
