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

from pyfacematch.distributed.merge import merge_topk
from pyfacematch.distributed.shards import ShardInfo, file_sha256, shard_of, verify_shard
from pyfacematch.errors import PyFaceMatchError, ShardChecksumError
from pyfacematch.gallery import Gallery, VerifyResult
from pyfacematch.index import PreparedProbes
from pyfacematch.io import Chunk, Reject
from pyfacematch.jobs import Source, open_reader, templates_of
from pyfacematch.jobs.encode import load_key_model
from pyfacematch.jobs.verify import verify_chunk
from pyfacematch.keys import KeyModel

__all__ = [
    "Group",
    "Part",
    "Probes",
    "ReadPart",
    "ShardRef",
    "VerifyRow",
    "WriteResult",
    "cache_stats",
    "close_all",
    "enroll_in_shard",
    "fingerprint_task",
    "info_task",
    "open_shard",
    "phase_stats",
    "read_part",
    "release_writers",
    "remove_from_shard",
    "search_chunk",
    "search_group",
    "search_shard",
    "set_writer_idle",
    "verify_chunk_shards",
    "verify_in_shard",
]

#: (path, sha256 or "") of a shard or gallery file; sha256 "" = a plain gallery, not checked.
ShardRef = tuple[str, str]

#: A write's outcome: the shard's new (SHA-256, identities, templates) and the typed error that
#: refused the write, if any (the state is committed to the manifest before it is raised).
WriteResult = tuple[str, int, int, "PyFaceMatchError | None"]

_LOCK = threading.Lock()
_GALLERIES: dict[ShardRef, Gallery] = {}
_KEY_MODELS: dict[ShardRef, KeyModel] = {}
_WRITERS: dict[str, Gallery] = {}  # path -> this worker's writable gallery of that shard
_BUSY: dict[str, int] = {}  # path -> writes in progress through its writer
_LAST_WRITE: dict[str, float] = {}  # path -> when its last write ended (monotonic)
_WRITTEN: dict[str, str] = {}  # path -> the SHA-256 this worker computed after its last write

#: Seconds a worker keeps a shard open for writing after its last write (then it is closed and
#: its writer lock released, so another process, e.g. ``shard merge`` or another client's
#: ShardedGallery, can write it). A burst of single enrollments reuses the open writer.
WRITER_IDLE = 10.0
_STATS = {"opens": 0, "writer_opens": 0, "checksums": 0, "chunks_read": 0, "pid": 0}

#: CPU seconds (this worker's task threads) per phase of the job tasks: ``read`` (the chunk
#: read and checked by the reader), ``encode`` (key model), ``prepare`` (checked, normalised,
#: sign-packed once per task), ``search`` (every shard's scan and re-rank), ``merge`` (the
#: worker's shards' top-k lists) and ``tasks`` (whole task bodies). The process's CPU beyond
#: ``tasks`` is Dask's own (event loop, transfers, heartbeats). See :func:`phase_stats`.
_PHASES: dict[str, float] = {}


class _Phase:
    """Adds the calling thread's CPU time of a block to ``_PHASES[name]``."""

    __slots__ = ("name", "t0")

    def __init__(self, name: str) -> None:
        self.name = name
        self.t0 = 0.0

    def __enter__(self) -> None:
        self.t0 = time.thread_time()

    def __exit__(self, *exc: object) -> None:
        dt = time.thread_time() - self.t0
        with _LOCK:
            _PHASES[self.name] = _PHASES.get(self.name, 0.0) + dt


def phase_stats(reset: bool = False) -> dict[str, float]:
    """CPU seconds per task phase in this worker process (see ``_PHASES``), and ``process``: the
    process's CPU seconds (user + system, every thread). ``reset`` zeroes the phases after
    reading them."""
    import resource

    u = resource.getrusage(resource.RUSAGE_SELF)
    with _LOCK:
        out = {**_PHASES, "process": u.ru_utime + u.ru_stime}
        if reset:
            _PHASES.clear()
    return out


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
            was = _GALLERIES.pop(old)
            if was not in _WRITERS.values():
                was.close()
        if sha and _WRITTEN.get(path) != sha:  # not the SHA-256 this worker just wrote
            verify_shard(ShardInfo(path, sha, 0, 0))
            _STATS["checksums"] += 1
        # searches are audited as in any read-only gallery: a sidecar file beside the shard
        # (the shard file itself, whose SHA-256 the manifest records, does not change), chained
        # into the shard's audit trail by its next writable open (an enroll or remove, `shard
        # merge`, or Gallery.audit_flush())
        g = Gallery.open(path, read_only=True)
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
    """Galleries this worker holds open, how many opens and checksum passes it made, input
    chunks it read, its pid."""
    with _LOCK:
        return {**_STATS, "pid": os.getpid(), "open": sorted(r[0] for r in _GALLERIES)}


def close_all() -> None:
    """Close every gallery this worker holds (tests, shutdown)."""
    release_writers()
    with _LOCK:
        for g in _GALLERIES.values():
            g.close()
        _GALLERIES.clear()
        _KEY_MODELS.clear()
        _WRITTEN.clear()


# --------------------------------------------------------------------------- gallery calls
def search_shard(
    ref: ShardRef,
    probes: np.ndarray | PreparedProbes,
    masks: np.ndarray | None,
    k: int,
    purpose: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One shard's top-``k`` identities per probe: (scores, identity ids, best template ids),
    among the identities with current consent for ``purpose`` (None: the shard's default).
    ``probes`` may be prepared once for several shards (then ``masks`` is None: they carry
    theirs)."""
    g = open_shard(ref)
    prepared = isinstance(probes, PreparedProbes)
    r = g.identify_arrays(
        probes,
        k=k,
        threshold=0.0,
        masks=masks if g.blocks is not None and not prepared else None,
        purpose=purpose,
        with_tids=True,
    )
    assert r.tids is not None
    return r.scores, r.identities, r.tids


def verify_in_shard(
    ref: ShardRef,
    identity_id: str,
    probe: Any,
    threshold: float | None,
    mask: Any,
    purpose: str | None = None,
) -> VerifyResult:
    return open_shard(ref).verify(
        identity_id, probe, threshold=threshold, mask=mask, purpose=purpose
    )


def _write(path: str, fn: Any) -> WriteResult:
    """Run ``fn`` on this worker's writable gallery of the shard ``path``; its new state (and
    the typed error that refused the write, if one did: the client commits the state first).

    The writer is opened once (it holds the shard's writer lock while this worker keeps it) and
    kept while writes keep coming: the next enrollment or removal into the shard within
    :data:`WRITER_IDLE` seconds uses the same gallery object, its index updated in place, so a
    single enrollment neither reopens the shard nor rebuilds its index; after that idle time the
    writer is closed and its lock released (:func:`_release_if_idle`). Each write ends with a
    checkpoint (the WAL copied into the file), so the SHA-256 returned, which the client commits
    to the manifest, is the committed shard's. Searches never go through the writer (its search
    records would change the shard file between committed writes): they use a read-only
    gallery, reopened after a write without a second checksum pass.
    """
    with _LOCK:
        _configure_threads()
        g = _WRITERS.get(path)
        if g is None:
            # searches through the writer would not be audited (see above): there are none
            g = Gallery.open(path, audit_searches=False)
            _WRITERS[path] = g
            _STATS["writer_opens"] += 1
        _BUSY[path] = _BUSY.get(path, 0) + 1
    try:
        refused: PyFaceMatchError | None = None
        try:
            fn(g)
        except PyFaceMatchError as exc:
            # a refused write changed no identity, but the writable open chained the search
            # records of the read-only galleries' sidecars into the shard: the file changed, so
            # its new SHA-256 is committed too, then the refusal is raised on the client
            refused = exc
        g.audit_checkpoint()  # the signed audit head close() would add: closing changes no byte
        g.checkpoint()
        sha = file_sha256(path)
        with _LOCK:  # the read-only galleries of the old file go; the next search reopens
            _WRITTEN[path] = sha
            for old in [r for r in _GALLERIES if r[0] == path]:
                _GALLERIES.pop(old).close()
        return sha, len(g), g.n_templates, refused
    finally:
        with _LOCK:
            _BUSY[path] -= 1
            _LAST_WRITE[path] = time.monotonic()
        t = threading.Timer(WRITER_IDLE, _release_if_idle, (path,))
        t.daemon = True
        t.start()


def _release_if_idle(path: str) -> None:
    """Close the writer of ``path`` if no write used it for :data:`WRITER_IDLE` seconds."""
    with _LOCK:
        g = _WRITERS.get(path)
        idle = time.monotonic() - _LAST_WRITE.get(path, 0.0)
        if g is None or _BUSY.get(path) or idle < WRITER_IDLE * 0.99:
            return  # in use, or written again since: that write's timer decides
        del _WRITERS[path]
        g.close()


def set_writer_idle(seconds: float) -> float:
    """Set :data:`WRITER_IDLE` in this worker process (``client.run(set_writer_idle, s)``);
    returns the previous value."""
    global WRITER_IDLE
    old, WRITER_IDLE = WRITER_IDLE, float(seconds)
    return old


def release_writers() -> int:
    """Close the writable shards this worker keeps (their locks go); returns how many."""
    with _LOCK:
        gone = [(p, g) for p, g in _WRITERS.items() if not _BUSY.get(p)]
        for p, g in gone:
            del _WRITERS[p]
            g.close()
    return len(gone)


def enroll_in_shard(
    path: str,
    identity_ids: list[str],
    templates: np.ndarray,
    masks: np.ndarray | None,
    metadata: dict[str, Any] | None,
    on_duplicate: str | None,
    consent: str,
    purpose: str | list[str] | None = None,
) -> WriteResult:
    """Enroll into one shard file; returns its new (SHA-256, identities, templates, refusal)."""
    return _write(
        path,
        lambda g: g.enroll_many(
            identity_ids,
            templates,
            masks,
            metadata=metadata,
            on_duplicate=on_duplicate,
            consent=consent,
            purpose=purpose,
        ),
    )


def remove_from_shard(path: str, identity_id: str) -> WriteResult:
    """Remove (opt-out) from one shard file; returns its new (SHA-256, identities, templates,
    refusal)."""
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
        # the purpose a job without one answers for (and records in its fingerprint)
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


#: Shards one task searches: (shard number, ref) of the shards pinned to one worker.
Group = list[tuple[int, ShardRef]]

#: What a task returns for a chunk: (the chunk without its values when asked, rejects made while
#: encoding, scores (M, k'), identity ids (M, k'), best template ids (M, k')).
Part = tuple[Chunk | None, list[Reject], np.ndarray, np.ndarray, np.ndarray]


def _encoded_chunk(
    group: Group, source: Source, index: int, key_model: ShardRef | None, fields: tuple[str, ...]
) -> tuple[Chunk, np.ndarray, np.ndarray | None, list[Reject]]:
    """Chunk ``index`` of the input, read here and encoded once for every shard of ``group``."""
    g = open_shard(group[0][1])  # fixes the dimension and blocks the reader checks
    km = _key_model(key_model)
    _test_delay()
    with _Phase("read"):
        reader, chunk = _read_chunk(g, source, index, km, fields)
    with _LOCK:
        _STATS["chunks_read"] += 1
    if chunk is None:
        raise IndexError(f"the input has no chunk {index}")
    with _Phase("encode"):
        chunk, vals, masks, extra = templates_of(chunk, km, reader)
    return chunk, vals, masks, extra


@dataclasses.dataclass
class ReadPart:
    """A chunk read and encoded on one worker, for tasks on other workers to search."""

    chunk: Chunk  # without its values
    values: np.ndarray | PreparedProbes  # prepared (checked, normalised, packed) to identify
    masks: np.ndarray | None  # None when ``values`` is prepared (it carries them)
    extra: list[Reject]


#: Where a task's probes come from: ``(source, chunk number)``, read by the task itself (an npy
#: slice costs less than shipping it), or a :class:`ReadPart` another task read once (text,
#: Parquet and image inputs, whose parsing or embedding should not be repeated per worker).
Probes = tuple[Source, int] | ReadPart


def read_part(
    group: Group,
    source: Source,
    index: int,
    key_model: ShardRef | None,
    fields: tuple[str, ...] = (),
    prepare: bool = False,
) -> ReadPart:
    """Read and encode chunk ``index`` once (on the worker of ``group``): the other workers'
    tasks of the chunk take it from this worker, not from the client or the scheduler.

    ``prepare`` (identify): also check, normalise and sign-pack the probes once
    (:meth:`Gallery.prepare_probes` of the group's first shard), so no worker repeats it: the
    :class:`~pyfacematch.index.PreparedProbes` travels with its codes. Verify tasks take the
    values as read (each claim's gallery checks its own probe, as in one process)."""
    with _Phase("tasks"):
        return _read_part(group, source, index, key_model, fields, prepare)


def _read_part(
    group: Group,
    source: Source,
    index: int,
    key_model: ShardRef | None,
    fields: tuple[str, ...],
    prepare: bool,
) -> ReadPart:
    chunk, vals, masks, extra = _encoded_chunk(group, source, index, key_model, fields)
    if prepare and len(vals):
        first = open_shard(group[0][1])
        with _Phase("prepare"):
            prep = first.prepare_probes(vals, masks if first.blocks is not None else None)
        return ReadPart(_stripped(chunk), prep, None, extra)
    return ReadPart(_stripped(chunk), vals, masks, extra)


def _probes(
    group: Group,
    probes: Probes,
    key_model: ShardRef | None,
    fields: tuple[str, ...],
    prepare: bool = False,
) -> ReadPart:
    if isinstance(probes, ReadPart):
        return probes
    return _read_part(group, probes[0], probes[1], key_model, fields, prepare)


def search_chunk(
    group: Group,
    probes: Probes,
    k: int,
    key_model: ShardRef | None,
    purpose: str | None,
    with_chunk: bool,
) -> Part:
    """Search one chunk of the input in every shard of ``group``.

    The chunk is read here (``probes = (source, index)``: an npy slice, nothing of it passes
    through the client, the scheduler or another worker) or comes from :func:`read_part`; it is
    encoded and checked once, then searched in each of this worker's shards, whose top-``k``
    lists are merged here (:func:`~pyfacematch.distributed.merge.merge_topk`): one task and one
    small result per worker and chunk, however many shards the worker holds. The probe values
    never go back to the client.
    """
    with _Phase("tasks"):
        p = _probes(group, probes, key_model, (), prepare=True)
        s, ids, tids = search_group(group, p.values, p.masks, k, purpose)
        return (p.chunk if with_chunk else None), p.extra, s, ids, tids


def search_group(
    group: Group,
    probes: np.ndarray | PreparedProbes,
    masks: np.ndarray | None,
    k: int,
    purpose: str | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-``k`` of the shards of ``group`` per probe, merged here (as :func:`search_shard`
    returns): one result per worker however many shards it holds. ``probes`` may come prepared
    (by :func:`read_part` on another worker: then ``masks`` is None)."""
    if not len(probes):
        m = len(probes)
        return np.empty((m, 0), np.float32), np.empty((m, 0), object), np.empty((m, 0), np.int64)
    # checked, normalised (and, for shards sharing the split's binary centre, sign-packed) once
    # for all the shards this worker holds, not once per shard; once per chunk in all when the
    # chunk was read and prepared by one task for every worker
    if isinstance(probes, PreparedProbes):
        prep = probes
    else:
        first = open_shard(group[0][1])
        with _Phase("prepare"):
            prep = first.prepare_probes(probes, masks if first.blocks is not None else None)
    with _Phase("search"):
        parts = [search_shard(ref, prep, None, k, purpose) for _, ref in group]
    if len(parts) == 1:
        return parts[0]
    with _Phase("merge"):
        return merge_topk(parts, k)


class _Collect:
    """A reader as :func:`verify_chunk` sees it, collecting rejects instead of stopping: with
    shards, the client stops at the first bad record of the whole chunk, as one process does."""

    on_error = "skip"

    def fail(self, rej: Reject) -> Exception:  # pragma: no cover - never called in skip mode
        raise AssertionError("a shard's verify collects its rejects")


#: A verified probe: (record number, probe id, claimed identity, score, decision).
VerifyRow = tuple[int, str, str | None, float, str | None]


def verify_chunk_shards(
    group: Group,
    n_shards: int,
    probes: Probes,
    identity: str | None,
    claim_field: str,
    threshold: float | None,
    key_model: ShardRef | None,
    purpose: str | None,
    with_chunk: bool,
) -> tuple[Chunk | None, list[Reject], list[VerifyRow], list[Reject], int]:
    """Verify the probes of one chunk whose claim lives in ``group``'s shards.

    A claim goes to shard :func:`~pyfacematch.distributed.shards.shard_of` (a missing claim to
    shard 0, which rejects it). Returns (the chunk without values when ``with_chunk``, encoding
    rejects, verified rows, claim rejects (unknown, missing, no consent), matches); rows and
    rejects carry their record numbers so the client puts every shard's answers back in input
    order.
    """
    fields = () if identity else (claim_field,)
    p = _probes(group, probes, key_model, fields)
    vals = p.values
    assert not isinstance(vals, PreparedProbes)  # verify reads are never prepared (read_part)
    chunk = p.chunk
    rows: list[VerifyRow] = []
    claim_rejects: list[Reject] = []
    matches = 0
    claims = [identity or chunk.fields[claim_field][i] for i in range(len(chunk))]
    home = [0 if c is None else shard_of(c, n_shards) for c in claims]
    for s, ref in group:
        idx = [i for i, h in enumerate(home) if h == s]
        if not idx:
            continue
        sub = dataclasses.replace(
            chunk,
            ids=[chunk.ids[i] for i in idx],
            rows=chunk.rows[idx],
            values=vals[idx],
            masks=None if p.masks is None else p.masks[idx],
            visibility=None,
            fields={claim_field: [claims[i] for i in idx]},
        )
        cols, rej, counters = verify_chunk(
            open_shard(ref),
            sub,
            _Collect(),
            identity=identity,
            claim_field=claim_field,
            threshold=threshold,
            purpose=purpose,
        )
        gone = {r.row for r in rej}
        kept = [int(r) for r in sub.rows if int(r) not in gone]
        for j, row in enumerate(kept):
            rows.append(
                (
                    row,
                    cols.probe_id[j],
                    cols.identity[j],
                    float(cols.score[j]),
                    cols.decision[j],
                )
            )
        claim_rejects += rej
        matches += counters["matches"]
    return (chunk if with_chunk else None), p.extra, rows, claim_rejects, matches
