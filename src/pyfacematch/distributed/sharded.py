"""``ShardedGallery``: the Gallery methods over shard galleries held open by Dask workers.

Shard ``i`` is pinned to worker ``i mod W`` (any other worker may take it when that one is
gone): the worker opens the shard from its path, checks its SHA-256 once and keeps it open
(:mod:`pyfacematch.distributed.worker`). ``identify`` cuts the probes into batches of at least
``MIN_BATCH`` (default 10 000), sends each batch once per worker (``scatter``), asks each
worker for the top-k per probe over the shards it holds (merged there, with scores and best
template ids), and merges the workers' lists exactly
(:func:`~pyfacematch.distributed.merge.merge_topk`): the ranking, scores and tie-breaks of one
gallery holding everything, when the shards search exactly (``exact`` backend, or shards below
:data:`~pyfacematch.gallery.gallery.SMALL_GALLERY` templates). With an approximate backend each
shard re-ranks its own shortlist exactly, so results can only gain recall over one gallery.

``enroll`` and ``remove`` go to the identity's shard (:func:`~pyfacematch.distributed.shards.shard_of`)
as a task on the shard's worker, which keeps the shard open for writing from its first write on
(its index updated in place, never rebuilt per call); then the manifest is rewritten with the
shard's new SHA-256 (the commit point). That worker searches the same open gallery; any other
reopens the changed shard on its next call. ``purpose`` filters consent in every shard as one
gallery does (the split copies consent records, opt-out tombstones and the default purpose).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from pyfacematch.distributed import worker as W
from pyfacematch.distributed.cluster import ClusterHandle, require_dask, wait_for_workers
from pyfacematch.distributed.merge import merge_topk
from pyfacematch.distributed.shards import ShardManifest, read_manifest, shard_of
from pyfacematch.errors import InputError
from pyfacematch.gallery import Decision, IdentifyArrays, IdentifyResult, VerifyResult
from pyfacematch.gallery.thresholds import Thresholds, accept_top
from pyfacematch.gallery.validation import as_masks, as_templates, check_id

__all__ = ["MIN_BATCH", "ShardedGallery"]

#: Probes per task: per-task overhead (scheduling, a result message) is paid per batch.
MIN_BATCH = 1000


class _ManifestThresholds(Thresholds):
    """The manifest's calibrated thresholds, resolved as a gallery resolves its own."""

    def __init__(self, man: ShardManifest) -> None:
        self._man = man
        self._cache = {}

    def get(self, kind: str) -> Any:
        return self._man.threshold(kind)

    def resolve(self, threshold: object, kind: str) -> tuple[float | None, str, float | None]:
        if threshold is None:
            rec = self._man.threshold(kind)
            if rec is None:
                return None, "none", None
            return float(rec.value), f"calibrated-{kind}", float(rec.target)
        return super().resolve(threshold, kind)


class ShardedGallery:
    """A sharded gallery (see :func:`~pyfacematch.distributed.shards.split_gallery`) on Dask.

    Parameters
    ----------
    manifest : path
        The shard manifest (or its folder).
    client : distributed.Client or ClusterHandle
        Where the work runs; every worker must see the shard files at the manifest's paths.
    batch_size : int
        Probes per task (at least :data:`MIN_BATCH`).
    """

    def __init__(
        self, manifest: str | os.PathLike[str], client: Any, *, batch_size: int = 10_000
    ) -> None:
        require_dask()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise InputError(f"batch_size must be an integer, got {batch_size!r}")
        if batch_size < MIN_BATCH:
            raise InputError(
                f"batch_size must be at least {MIN_BATCH} probes (each task pays a fixed "
                f"scheduling cost), got {batch_size}"
            )
        self.client = client.client if isinstance(client, ClusterHandle) else client
        self.man = read_manifest(manifest)
        self.batch_size = batch_size
        self.dim = self.man.dim
        self.blocks = None if self.man.blocks is None else np.asarray(self.man.blocks, np.int64)
        self._thr = _ManifestThresholds(self.man)

    # ------------------------------------------------------------------ placement
    def _refs(self) -> list[W.ShardRef]:
        return [(s.path, s.sha256) for s in self.man.shards]

    def _workers(self) -> list[str]:
        return wait_for_workers(self.client)

    def _submit(self, fn: Any, shard: int, *args: Any, **kw: Any) -> Any:
        ws = self._workers()
        return self._submit_to(ws[shard % len(ws)], fn, *args, **kw)

    def _submit_to(self, worker: str, fn: Any, *args: Any, **kw: Any) -> Any:
        return self.client.submit(
            fn,
            *args,
            workers=[worker],
            allow_other_workers=True,  # its worker died: run it elsewhere (reopens the shard)
            pure=False,
            **kw,
        )

    def _groups(self) -> list[tuple[str, W.Group]]:
        """The shards each worker holds (shard ``s`` on worker ``s mod W``)."""
        ws = self._workers()
        by: dict[str, W.Group] = {}
        for s, ref in enumerate(self._refs()):
            by.setdefault(ws[s % len(ws)], []).append((s, ref))
        return list(by.items())

    def warm(self) -> list[dict[str, Any]]:
        """Open (and checksum) every shard on its worker now; returns each shard's info."""
        return list(
            self.client.gather(
                [self._submit(W.info_task, i, r) for i, r in enumerate(self._refs())]
            )
        )

    # ------------------------------------------------------------------ search
    def resolve_threshold(
        self, threshold: float | None, kind: str
    ) -> tuple[float | None, str, float | None]:
        """As :meth:`Gallery.resolve_threshold`, from the manifest's calibrated thresholds."""
        return self._thr.resolve(threshold, kind)

    def search_futures(
        self, probes: np.ndarray, masks: np.ndarray | None, k: int, purpose: str | None = None
    ) -> list[Any]:
        """Futures of the top-k of one probe batch: one task per worker, over the shards it
        holds, merged there (the batch is sent once to each worker)."""
        out = []
        for w, grp in self._groups():
            [pf] = self.client.scatter([probes], workers=[w], hash=False)
            mf = None
            if masks is not None:
                [mf] = self.client.scatter([masks], workers=[w], hash=False)
            out.append(self._submit_to(w, W.search_group, grp, pf, mf, k, purpose))
        return out

    def identify_arrays(
        self,
        probes: Any,
        k: int = 1,
        threshold: float | None = None,
        masks: Any = None,
        *,
        purpose: str | None = None,
    ) -> IdentifyArrays:
        """Identify probes against every shard; the same results as one gallery (see module).

        ``purpose``: only identities with current consent for it are candidates, in every shard
        (None: the gallery's default purpose), so the k returned are the best k among them.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        p = as_templates(probes, self.dim, "probes")
        pm = as_masks(masks, p.shape[0], self.blocks, "probe masks")
        thr, src, target = self.resolve_threshold(threshold, "fpir")
        batches = [
            (a, min(a + self.batch_size, p.shape[0])) for a in range(0, p.shape[0], self.batch_size)
        ]
        window = 2 * len(self._workers())  # batches in flight: bounded memory on the workers
        inflight: deque[list[Any]] = deque()
        out_s, out_i, out_t = [], [], []
        for n, (a, b) in enumerate(batches):
            inflight.append(
                self.search_futures(p[a:b], None if pm is None else pm[a:b], int(k), purpose)
            )
            while inflight and (len(inflight) >= window or n == len(batches) - 1):
                s, i, t = merge_topk(self.client.gather(inflight.popleft()), int(k))
                out_s.append(s)
                out_i.append(i)
                out_t.append(t)
        width = min((x.shape[1] for x in out_s), default=0)
        sc = (
            np.concatenate([x[:, :width] for x in out_s]) if out_s else np.zeros((0, 0), np.float32)
        )
        ident = np.concatenate([x[:, :width] for x in out_i]) if out_i else np.empty((0, 0), object)
        tids = (
            np.concatenate([x[:, :width] for x in out_t]) if out_t else np.empty((0, 0), np.int64)
        )
        return IdentifyArrays(ident, sc, accept_top(sc, thr), thr, src, target, tids)

    def identify(
        self,
        probes: Any,
        k: int = 1,
        threshold: float | None = None,
        masks: Any = None,
        *,
        purpose: str | None = None,
    ) -> list[IdentifyResult]:
        """As :meth:`Gallery.identify`."""
        return self.identify_arrays(probes, k, threshold, masks, purpose=purpose).results()

    def verify(
        self,
        identity_id: str,
        probe: Any,
        threshold: float | None = None,
        mask: Any = None,
        *,
        purpose: str | None = None,
    ) -> VerifyResult:
        """1:1 against the identity's shard (:class:`UnknownIdentityError` when not enrolled,
        :class:`NoConsentError` without current consent for ``purpose``)."""
        name = check_id(identity_id)
        thr, src, target = self.resolve_threshold(threshold, "fmr")
        i = shard_of(name, self.man.n_shards)
        r: VerifyResult = self._submit(
            W.verify_in_shard, i, self._refs()[i], name, probe, thr, mask, purpose
        ).result()
        if thr is not None and src != "explicit":  # report where the threshold came from
            return VerifyResult(
                r.identity, r.score, Decision(r.decision.accepted, thr, src, target)
            )
        return r

    # ------------------------------------------------------------------ writes
    def enroll(
        self,
        identity_id: str,
        templates: Any,
        masks: Any = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        on_duplicate: str | None = None,
        consent: str = "granted",
        purpose: str | list[str] | None = None,
    ) -> None:
        """Enroll one identity into its shard, then commit the manifest.

        The shard's worker keeps the shard open for writing after the first write: the next
        enrollment into it updates the open index in place (no reopen, no rebuild); the cost
        left per call is the shard file's checkpoint and SHA-256 for the manifest. ``purpose``:
        the purposes consented to (None: the gallery's default), as :meth:`Gallery.enroll`.
        """
        name = check_id(identity_id)
        t = as_templates(templates, self.dim, "templates")
        mk = as_masks(masks, t.shape[0], self.blocks, "masks")
        i = shard_of(name, self.man.n_shards)
        res = self._submit(
            W.enroll_in_shard,
            i,
            self.man.shards[i].path,
            [name] * t.shape[0],
            t,
            mk,
            None if metadata is None else {name: dict(metadata)},
            on_duplicate,
            consent,
            purpose,
        ).result()
        self._commit(i, res)

    def remove(self, identity_id: str) -> None:
        """Opt-out: erase the identity from its shard, then commit the manifest."""
        name = check_id(identity_id)
        i = shard_of(name, self.man.n_shards)
        res = self._submit(W.remove_from_shard, i, self.man.shards[i].path, name).result()
        self._commit(i, res)

    def _commit(self, i: int, res: W.WriteResult) -> None:
        sha, n_id, n_t, refused = res
        if sha != self.man.shards[i].sha256:
            self.man = self.man.with_shard(i, sha, n_id, n_t)
            self.man.write()
            self._thr = _ManifestThresholds(self.man)
        if refused is not None:  # nothing of the write was done (the shard's state is committed)
            raise refused

    # ------------------------------------------------------------------ listing
    def __len__(self) -> int:
        return sum(s.identities for s in self.man.shards)

    @property
    def n_templates(self) -> int:
        return sum(s.templates for s in self.man.shards)

    def info(self) -> dict[str, Any]:
        """The manifest's view plus each shard's :meth:`Gallery.info` from its worker."""
        shards = self.warm()
        return {
            "manifest": self.man.path,
            "shards": self.man.n_shards,
            "identities": len(self),
            "templates": self.n_templates,
            "dim": self.dim,
            "backend": self.man.backend,
            "workers": len(self._workers()),
            "shard_info": shards,
        }

    def close(self) -> None:
        """Release the shards the workers keep open for writing (their writer locks); workers
        keep their read-only shards for the next caller."""
        if self.client.status == "running":
            self.client.run(W.release_writers)

    def __enter__(self) -> ShardedGallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
