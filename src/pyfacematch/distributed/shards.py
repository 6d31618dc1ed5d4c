"""Sharded galleries on disk: split a gallery into N shard galleries, merge them back, the manifest.

A shard is an ordinary gallery file. Identities are placed by a stable hash of their id
(:func:`shard_of`: the first 8 bytes of SHA-256 of the UTF-8 id, big-endian, modulo N), so an
identity and all its templates live in one shard, the same one on every machine and Python version
(Python's own ``hash()`` is salted per process). Each shard keeps the source's template ids, so
ties between equal scores break the same way as in the source gallery (the lower template id wins,
see :mod:`pyfacematch.distributed.sharded`).

The manifest (``manifest.json`` in the shard folder, written last and atomically: the commit
point) names every shard file with its SHA-256 and counts, the gallery's dimension, region blocks
and backend, the calibrated thresholds, and the key model file (copied beside the shards, with its
SHA-256) so all of it travels together. A shard whose SHA-256 differs is refused naming the file
(:class:`~pyfacematch.errors.ShardChecksumError`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.errors import (
    GalleryLockedError,
    InputError,
    ShardChecksumError,
    ShardManifestError,
)
from pyfacematch.gallery import Gallery
from pyfacematch.gallery import atomic as _fileio
from pyfacematch.gallery import consent as consent_store
from pyfacematch.gallery.auditsidecar import sidecar_files
from pyfacematch.gallery.calibration import ThresholdRecord
from pyfacematch.gallery.store import Store
from pyfacematch.security.consent import ConsentRecord

__all__ = [
    "MANIFEST_NAME",
    "ShardInfo",
    "ShardManifest",
    "file_sha256",
    "merge_shards",
    "read_manifest",
    "shard_of",
    "shard_shortlist",
    "split_gallery",
    "verify_shard",
]

log = logging.getLogger("pyfacematch.distributed")

MANIFEST_NAME = "manifest.json"
FORMAT = "pyfacematch-shards"
VERSION = 1
PLACEMENT = "sha256(utf-8 id)[:8] big-endian mod shards"


def shard_of(identity_id: str, n_shards: int) -> int:
    """The shard of an identity: stable across processes, machines and Python versions."""
    h = hashlib.sha256(identity_id.encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") % int(n_shards)


def file_sha256(path: str | os.PathLike[str], bufsize: int = 1 << 22) -> str:
    """SHA-256 (hex) of a file, read in 4 MiB blocks (bounded memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(bufsize)
            if not b:
                return h.hexdigest()
            h.update(b)


@dataclass(frozen=True)
class ShardInfo:
    """One shard of a manifest: its file (absolute here), SHA-256 and counts."""

    path: str
    sha256: str
    identities: int
    templates: int


@dataclass(frozen=True)
class ShardManifest:
    """A sharded gallery as described by its manifest file.

    Attributes
    ----------
    path : str
        The manifest file (absolute).
    shards : tuple of ShardInfo
    dim : int
    blocks : list of int or None
    backend : str
    thresholds : dict
        ``{"fmr": ThresholdRecord fields or None, "fpir": …}`` copied from the source.
    key_model : dict or None
        ``{"path": absolute file, "sha256": …}`` of the key model that travels with the shards.
    max_tid : int
        Highest template id at split time (shards' id sequences start above it).
    default_purpose : str or None
        The source gallery's default purpose (each shard holds it too): what searches that name
        no purpose filter consent on.
    """

    path: str
    shards: tuple[ShardInfo, ...]
    dim: int
    blocks: list[int] | None
    backend: str
    thresholds: dict[str, dict[str, Any] | None]
    key_model: dict[str, str] | None
    max_tid: int
    default_purpose: str | None = None

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    def shard_for(self, identity_id: str) -> int:
        """Index of the shard that holds (or would hold) ``identity_id``."""
        return shard_of(identity_id, self.n_shards)

    def threshold(self, kind: str) -> ThresholdRecord | None:
        d = self.thresholds.get(kind)
        return None if d is None else ThresholdRecord(**d)

    def with_shard(self, i: int, sha256: str, identities: int, templates: int) -> ShardManifest:
        """The manifest after shard ``i`` changed (enroll or remove): write it with :func:`write`."""
        s = list(self.shards)
        s[i] = ShardInfo(s[i].path, sha256, identities, templates)
        return dataclasses.replace(self, shards=tuple(s))

    def to_json(self) -> dict[str, Any]:
        base = Path(self.path).parent
        km = None
        if self.key_model is not None:
            km = {
                "file": os.path.relpath(self.key_model["path"], base),
                "sha256": self.key_model["sha256"],
            }
        return {
            "format": FORMAT,
            "version": VERSION,
            "placement": PLACEMENT,
            "dim": self.dim,
            "blocks": self.blocks,
            "backend": self.backend,
            "max_tid": self.max_tid,
            "default_purpose": self.default_purpose,
            "thresholds": self.thresholds,
            "key_model": km,
            "shards": [
                {
                    "file": os.path.relpath(s.path, base),
                    "sha256": s.sha256,
                    "identities": s.identities,
                    "templates": s.templates,
                }
                for s in self.shards
            ],
        }

    def write(self) -> None:
        """Write the manifest atomically (temporary file, fsync, rename)."""
        data = json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"
        _fileio.atomic_write(self.path, data.encode())


def _manifest_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p / MANIFEST_NAME if p.is_dir() else p


def read_manifest(path: str | os.PathLike[str]) -> ShardManifest:
    """Read a shard manifest (the file, or the folder that holds ``manifest.json``).

    Raises
    ------
    ShardManifestError
        Missing, not JSON, another format or version, or missing fields.
    """
    p = _manifest_path(path).absolute()
    try:
        with open(p, encoding="utf-8") as fh:
            d = json.load(fh)
    except FileNotFoundError:
        raise ShardManifestError(
            f"no shard manifest at {os.fspath(p)!r}: make one with "
            "`pyfacematch shard split -g GALLERY --shards N -o FOLDER`"
        ) from None
    except (OSError, ValueError) as exc:
        raise ShardManifestError(f"cannot read shard manifest {os.fspath(p)!r}: {exc}") from exc
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ShardManifestError(f"{os.fspath(p)!r} is not a pyfacematch shard manifest")
    if d.get("version") != VERSION:
        raise ShardManifestError(
            f"shard manifest {os.fspath(p)!r} has version {d.get('version')!r}; this pyfacematch "
            f"reads version {VERSION}: upgrade pyfacematch"
        )
    base = p.parent
    try:
        shards = tuple(
            ShardInfo(
                os.fspath(base / s["file"]),
                str(s["sha256"]),
                int(s["identities"]),
                int(s["templates"]),
            )
            for s in d["shards"]
        )
        km = d.get("key_model")
        return ShardManifest(
            os.fspath(p),
            shards,
            int(d["dim"]),
            None if d.get("blocks") is None else [int(x) for x in d["blocks"]],
            str(d["backend"]),
            dict(d.get("thresholds") or {}),
            None
            if km is None
            else {"path": os.fspath(base / km["file"]), "sha256": str(km["sha256"])},
            int(d.get("max_tid", 0)),
            None if d.get("default_purpose") is None else str(d["default_purpose"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ShardManifestError(
            f"shard manifest {os.fspath(p)!r} is incomplete ({type(exc).__name__}: {exc})"
        ) from exc


def verify_shard(info: ShardInfo) -> None:
    """Refuse a shard whose file is missing or whose SHA-256 is not the manifest's."""
    try:
        got = file_sha256(info.path)
    except FileNotFoundError:
        raise ShardChecksumError(
            f"shard file {info.path!r} is missing: restore it, or split the gallery again"
        ) from None
    if got != info.sha256:
        raise ShardChecksumError(
            f"shard file {info.path!r} is corrupted or was changed outside pyfacematch: its "
            f"SHA-256 is {got[:16]}…, the manifest says {info.sha256[:16]}…; restore it from a "
            "backup or split the gallery again (refused)"
        )


def _threshold_json(rec: ThresholdRecord | None) -> dict[str, Any] | None:
    return None if rec is None else dataclasses.asdict(rec)


def _group(names: Iterable[str]) -> dict[str, list[int]]:
    """Rows of each identity, identities in the order of their first row."""
    groups: dict[str, list[int]] = {}
    for r, n in enumerate(names):
        groups.setdefault(n, []).append(r)
    return groups


@dataclass
class _ConsentState:
    """What a gallery's store holds about consent besides the identities' rows."""

    default_purpose: str | None
    salt: str | None  # the tombstones' HMAC key: shared, so every shard checks the same hashes
    records: list[ConsentRecord]  # consent per identity and purpose (enrolled or not yet)
    tombstones: list[tuple[str, float]]  # opt-outs: (hash, when)


def _consent_state(store: Store) -> _ConsentState:
    salt, tombs = consent_store.load_tombstones(store)
    return _ConsentState(
        store.get_meta_opt(consent_store.DEFAULT_PURPOSE_KEY),
        salt,
        consent_store.load_records(store),
        tombs,
    )


def _put_consent_state(st: Store, cs: _ConsentState, here: Any) -> None:
    """Write ``cs`` into a new shard (or merged) store: the default purpose, the salt and every
    tombstone (an opted-out id must stay refused whichever shard it would go to), and the consent
    records of the identities ``here(name)`` places in this store."""
    if cs.default_purpose is not None:
        st.set_meta(consent_store.DEFAULT_PURPOSE_KEY, cs.default_purpose)
    consent_store.ensure_tables(st)
    with st.transaction() as c:
        if cs.salt is not None:
            consent_store.put_tombstones(c, cs.salt, cs.tombstones)
        for rec in cs.records:
            if here(rec.identity):
                consent_store.put_in(c, rec)


#: Standard deviations of margin in a shard's shortlist over its expected share (see below).
SHORTLIST_MARGIN_SD = 4.0


def shard_shortlist(depth: int, shards: int) -> int:
    """The exactly re-ranked shortlist (or admission rank) of each of ``shards`` shards of a gallery whose shortlist
    is ``depth`` (binary backend), so that the merged answer is the one gallery's.

    With the source's centre every template keeps its binary code, so a row's Hamming rank in
    its shard is the number of rows ahead of it globally that hash to the same shard: for a row
    of global rank ``r < depth``, Binomial(r, 1/shards), at most Binomial(depth - 1, 1/shards).
    The shard's shortlist is the mean of that plus ``SHORTLIST_MARGIN_SD`` standard deviations
    (at most ``depth``): a row the whole gallery would re-rank exactly is outside its shard's
    shortlist with probability < 1e-4 even at the last rank, and the row that decides a
    probe's answer is nearly always near the top (the depth is tuned at twice the rank 99% of
    probes need). The shards re-rank about as many rows in all as the one gallery instead of
    ``shards`` times as many. The first plane's admission rank (``scan_depth``: a row is read
    whole when its first-plane distance is within the running ``scan_depth``-th best) is sized
    the same way: the rows ahead of a row in its shard are those ahead of it globally that hash
    there.
    """
    if shards <= 1:
        return int(depth)
    q = 1.0 / shards
    need = depth * q + SHORTLIST_MARGIN_SD * math.sqrt(depth * q * (1.0 - q))
    return max(1, min(int(depth), int(math.ceil(need))))


def _shared_binary_tuning(
    src: dict[str, Any] | None, matrix: np.ndarray, shards: int
) -> dict[str, Any] | None:
    """The binary tuning every shard starts from: the source's centre (so a probe's code is the
    same in every shard: a worker packs it once, and Hamming ranks are the source's) and, when
    the source was tuned, its admission depth and its shortlist sized per shard
    (:func:`shard_shortlist`). A source without a stored plain centre (never tuned, or sealed by
    encryption) gives the mean of its templates, and the shards tune their depths themselves."""
    if not len(matrix):
        return None
    if src is not None and src.get("center") is not None and src.get("depth"):
        out: dict[str, Any] = {"center": [float(v) for v in src["center"]]}
        out["depth"] = shard_shortlist(int(src["depth"]), shards)
        if src.get("scan_depth"):  # the first plane's admission rank: the same argument
            out["scan_depth"] = shard_shortlist(int(src["scan_depth"]), shards)
        if src.get("measured_recall") is not None:
            out["measured_recall"] = float(src["measured_recall"])
        return out
    center = np.asarray(matrix, np.float32).mean(axis=0, dtype=np.float64).astype(np.float32)
    return {"center": [float(v) for v in center]}


def _seal(path: Path, backend: str) -> tuple[str, int, int]:
    """Open a freshly written shard once as a gallery (build, tune and checkpoint its index)."""
    g = Gallery.open(path, backend=backend)
    try:
        g.checkpoint()
        n_id, n_t = len(g), g.n_templates
    finally:
        g.close()
    return file_sha256(path), n_id, n_t


def split_gallery(
    gallery: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    shards: int,
    *,
    key_model: str | os.PathLike[str] | None = None,
    backend: str | None = None,
    overwrite: bool = False,
) -> ShardManifest:
    """Split the gallery file ``gallery`` into ``shards`` shard galleries in ``out_dir``.

    Each identity goes, with all its templates, metadata and consent state, to shard
    :func:`shard_of`; template ids are kept. Calibrated thresholds are copied into every shard
    and the manifest; ``key_model`` (a ``KeyModel.save`` file) is copied beside them.

    Raises
    ------
    InputError
        ``shards < 1``; the output folder already holds a sharded gallery (without ``overwrite``).
    GalleryFileError
        The source is not a readable gallery.
    """
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise InputError(f"--shards must be a positive integer, got {shards!r}")
    src = Path(gallery)
    if not src.is_file():
        raise InputError(f"gallery {os.fspath(src)!r} does not exist")
    out = Path(out_dir).absolute()
    man_path = out / MANIFEST_NAME
    if man_path.exists() or any(out.glob("shard-*.db")):
        if not overwrite:
            raise InputError(
                f"{os.fspath(out)!r} already holds a sharded gallery: pass --overwrite to replace "
                "it, or choose another folder"
            )
        man_path.unlink(missing_ok=True)
        for f in out.glob("shard-*.db*"):
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    out.mkdir(parents=True, exist_ok=True)
    store = Store(src)
    try:
        tids, names, matrix, masks = store.load_all()
        dim, blocks = store.dim, store.blocks
        thresholds = {k: _threshold_json(store.get_threshold(k)) for k in ("fmr", "fpir")}
        try:
            stored_backend = store.get_meta("backend")
        except Exception:  # an old file without the key: the default
            stored_backend = None
        records = {n: store.identity_record(n) for n in _group(names)}
        src_tuning = store.get_params("tuning:binary")
        cstate = _consent_state(store)
    finally:
        store.close()
    be = backend or stored_backend or "binary"
    shared = _shared_binary_tuning(
        src_tuning if be == (stored_backend or "binary") else None, matrix, shards
    )
    max_tid = int(tids.max()) if tids.size else 0
    per_shard: list[list[tuple[str, list[int]]]] = [[] for _ in range(shards)]
    for name, rows in _group(names).items():
        per_shard[shard_of(name, shards)].append((name, rows))
    infos: list[ShardInfo] = []
    for i, members in enumerate(per_shard):
        path = out / f"shard-{i:03d}.db"
        st = Store(path, dim=dim, blocks=blocks)
        try:
            by_consent: dict[str, list[tuple[str, list[int]]]] = {}
            for name, rows in members:
                by_consent.setdefault(records[name]["consent"], []).append((name, rows))
            for consent, group in by_consent.items():
                items = [
                    (
                        name,
                        matrix[rows],
                        None if masks is None else masks[rows],
                        records[name]["metadata"],
                    )
                    for name, rows in group
                ]
                st.insert_identities(
                    items,
                    on_duplicate="refuse",
                    consent=consent,
                    tids=[tids[rows] for _, rows in group],
                )
            for rec in thresholds.values():
                if rec is not None:
                    st.set_threshold(ThresholdRecord(**rec))
            st.set_meta("backend", be)
            if be == "binary" and shared is not None:
                n_t = sum(len(rows) for _, rows in members)
                st.set_params(
                    "tuning:binary",
                    shared if "depth" not in shared else {**shared, "tuned_size": n_t},
                )
            _put_consent_state(st, cstate, lambda name, i=i: shard_of(name, shards) == i)
            with st.transaction() as c:  # ids enrolled later go above every split id
                c.execute(
                    "INSERT OR REPLACE INTO sqlite_sequence(name, seq) VALUES ('templates', ?)",
                    (max_tid,),
                )
        finally:
            st.close()
        sha, n_id, n_t = _seal(path, be)
        infos.append(ShardInfo(os.fspath(path), sha, n_id, n_t))
    km = None
    if key_model is not None:
        if not os.path.isfile(key_model):
            raise InputError(f"key model {os.fspath(key_model)!r} does not exist")
        dest = out / "key_model.npz"
        shutil.copyfile(key_model, dest)
        km = {"path": os.fspath(dest), "sha256": file_sha256(dest)}
    man = ShardManifest(
        os.fspath(man_path),
        tuple(infos),
        int(dim),
        None if blocks is None else [int(x) for x in np.asarray(blocks).tolist()],
        be,
        thresholds,
        km,
        max_tid,
        cstate.default_purpose,
    )
    man.write()
    _fileio.fsync_dir(out)
    return man


def _import_search_records(man: ShardManifest) -> ShardManifest:
    """Chain the search records still waiting in each shard's audit sidecars (the read-only
    searches of the workers, :mod:`pyfacematch.gallery.auditsidecar`) into the shard's own audit
    trail, so none is left behind in a sidecar when the shards are merged (and perhaps deleted).
    A writable open imports them; the shard file changes, so its new SHA-256 is committed to
    the manifest, as an enrollment's is. Shards without sidecars are not touched."""
    changed = False
    for i, s in enumerate(man.shards):
        if not sidecar_files(Path(s.path)):
            continue
        try:
            g = Gallery.open(s.path)  # the writable open chains the sidecars in
        except GalleryLockedError:
            # a writer holds the shard (e.g. a worker's kept writer, for WRITER_IDLE seconds):
            # its records stay in the sidecars, chained in by the shard's next writable open
            log.warning(
                "shard %s is open for writing elsewhere: its waiting search records stay in "
                "its audit sidecars until its next writable open",
                s.path,
            )
            continue
        try:
            g.audit_checkpoint()  # the signed head close() would add: closing changes no byte
            g.checkpoint()
            n_id, n_t = len(g), g.n_templates
        finally:
            g.close()
        man = man.with_shard(i, file_sha256(s.path), n_id, n_t)
        changed = True
    if changed:
        man.write()
    return man


def merge_shards(
    manifest: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Merge the shards of ``manifest`` back into one gallery file ``output``.

    Every shard is checked against its SHA-256 first; template ids are kept, so the merged
    gallery answers exactly as the source did. Search records still waiting in a shard's audit
    sidecars are chained into that shard's trail first (its new SHA-256 committed to the
    manifest). Returns counts.
    """
    man = read_manifest(manifest)
    for s in man.shards:
        verify_shard(s)
    out = Path(output)
    if out.exists() and not overwrite:
        raise InputError(f"output {os.fspath(out)!r} exists: pass --overwrite to replace it")
    man = _import_search_records(man)
    if out.exists():
        out.unlink()
    rows: list[tuple[int, str, np.ndarray, int | None]] = []
    recs: dict[str, dict[str, Any]] = {}
    cstate = _ConsentState(man.default_purpose, None, [], [])
    for s in man.shards:
        st = Store(s.path)
        try:
            part = _consent_state(st)
            cstate.records.extend(part.records)
            cstate.tombstones.extend(part.tombstones)
            cstate.salt = cstate.salt or part.salt
            tids, names, matrix, masks = st.load_all()
            for j, n in enumerate(names):
                rows.append((int(tids[j]), n, matrix[j], None if masks is None else int(masks[j])))
                if n not in recs:
                    recs[n] = st.identity_record(n)
        finally:
            st.close()
    rows.sort(key=lambda r: r[0])  # the source's order
    blocks = None if man.blocks is None else np.asarray(man.blocks, np.int64)
    st = Store(out, dim=man.dim, blocks=blocks)
    try:
        by_consent: dict[str, list[tuple[str, list[int]]]] = {}
        for name, idx in _group(r[1] for r in rows).items():
            by_consent.setdefault(recs[name]["consent"], []).append((name, idx))
        for consent, group in by_consent.items():  # ids are explicit: insert order is free
            st.insert_identities(
                [
                    (
                        name,
                        np.stack([rows[i][2] for i in idx]),
                        None
                        if man.blocks is None
                        else np.asarray([rows[i][3] for i in idx], np.uint64),
                        recs[name]["metadata"],
                    )
                    for name, idx in group
                ],
                on_duplicate="refuse",
                consent=consent,
                tids=[np.asarray([rows[i][0] for i in idx], np.int64) for _, idx in group],
            )
        for kind in ("fmr", "fpir"):
            rec = man.threshold(kind)
            if rec is not None:
                st.set_threshold(rec)
        st.set_meta("backend", man.backend)
        _put_consent_state(st, cstate, lambda name: True)
    finally:
        st.close()
    _, n_id, n_t = _seal(out, man.backend)
    return {"output": os.fspath(out), "identities": n_id, "templates": n_t, "shards": man.n_shards}
