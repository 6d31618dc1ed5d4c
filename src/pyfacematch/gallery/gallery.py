"""Galleries: enroll, identify (1:N), verify (1:1) and opt out.

A :class:`Gallery` keeps enrolled identities with one or more templates each.
The SQLite store (:mod:`pyfacematch.gallery.store`) is the source of truth; the
in-memory copy is a contiguous float32 matrix plus a search backend
(:mod:`pyfacematch.index`) derived from it. Every search is a backend
shortlist re-ranked exactly (masked cosine when the gallery has region
blocks), then fused per identity by the best template score.

Where things live: result types in :mod:`.results`, input checks in
:mod:`.validation`, the search pipeline in :mod:`.search`, tuning in
:mod:`.tuning`, thresholds in :mod:`.thresholds`, checkpoint files in
:mod:`.checkpoints` (authenticated with the key of :mod:`.secret`), erasure
completion in :mod:`.erasure`, locks in :mod:`.locking`. This module holds
the public class and its state.

Concurrency: a readers–writer lock lets any number of identify/verify calls
run together (the core releases the GIL) while enroll/remove are exclusive
for the short time they update memory; store commits are serialised by a
separate writer mutex and happen *before* the memory update, so a search sees
each enrollment or removal entirely or not at all.

Example
-------
>>> g = Gallery(dim=512)                       # in memory
>>> g.enroll("alice", templates)               # (T, 512) float32
>>> res = g.identify(probes, k=5)              # list of IdentifyResult
>>> g.remove("alice")                          # opt-out: erased everywhere
>>> g = Gallery.open("people.db", dim=512)     # on disk (SQLite + index files)
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, MutableSequence, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from pyfacematch.core import scoring
from pyfacematch.errors import (
    DimensionError,
    GalleryClosedError,
    GalleryFileError,
    GalleryReadOnlyError,
    InputError,
    NoConsentError,
    UnknownIdentityError,
)
from pyfacematch.gallery import audit as audit_store
from pyfacematch.gallery import cancelable as cancel_store
from pyfacematch.gallery import consent as consent_store
from pyfacematch.gallery import encryption
from pyfacematch.gallery.auditsidecar import SidecarWriter, import_sidecars
from pyfacematch.gallery.calibration import ThresholdRecord, calibrate_threshold, pair_scores
from pyfacematch.gallery.checkpoints import CheckpointFiles
from pyfacematch.gallery.erasure import SCRUB_PENDING_KEY, WalEraser, check_scrub_mode
from pyfacematch.gallery.filemodes import refuse_shared_writes, refuse_unsafe_folder, sqlite_files
from pyfacematch.gallery.locking import RWLock, WriterLock, lock_path_for
from pyfacematch.gallery.quarantine import QuarantinedTemplate
from pyfacematch.gallery.results import (
    Candidate,
    Decision,
    IdentifyArrays,
    IdentifyResult,
    VerifyResult,
)
from pyfacematch.gallery.search import SiblingExpander, approx_search, exact_search, fuse
from pyfacematch.gallery.secret import KeyProvider, key_provider_for
from pyfacematch.gallery.servingfiles import SERVING_KEY, ServingFiles
from pyfacematch.gallery.slots import NameSlots, SlotNames, SlotTids
from pyfacematch.gallery.store import Store, check_new_layout, clean_marker_path, digest_tids
from pyfacematch.gallery.thresholds import Thresholds, accept_top
from pyfacematch.gallery.trust_api import TrustMethods
from pyfacematch.gallery.tuning import make_tuning_probes, run_tuning, tuning_similarity
from pyfacematch.gallery.validation import (
    as_masks,
    as_templates,
    check_backend_options,
    check_duplicate_option,
    check_id,
    check_id_list,
    check_json,
    check_min_fraction,
    check_tune_probes,
    count_rows,
    encodable,
)
from pyfacematch.index import (
    DEFAULT_BACKEND,
    Backend,
    TemplateMatrix,
    exact_topk,
    make_backend,
)
from pyfacematch.index.prepared import PreparedProbes
from pyfacematch.security.consent import ConsentView, check_purpose

__all__ = [
    "SMALL_GALLERY",
    "Candidate",
    "Decision",
    "Gallery",
    "IdentifyArrays",
    "IdentifyResult",
    "ThresholdRecord",
    "VerifyResult",
]

log = logging.getLogger("pyfacematch.gallery")

#: Below this many templates every backend searches exactly (faster and exact).
SMALL_GALLERY = 256


def _in_range(
    v: Any, lo: float, hi: float, low_open: bool = False, high_open: bool = False
) -> bool:
    """``v`` is a finite real number within [lo, hi] (ends excluded when open)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return False
    f = float(v)
    return (lo < f if low_open else lo <= f) and (f < hi if high_open else f <= hi)


def _gallery_files(db: Path) -> list[Path]:
    """The database, its companions, lock and key files, the index folder and its files."""
    out = [*sqlite_files(db), clean_marker_path(db), lock_path_for(db)]
    out += [db.with_name(db.name + s) for s in (".key", ".audit.key")]
    idx = db.with_name(db.name + ".index")
    if idx.is_dir() and not idx.is_symlink():
        out.append(idx)
        with contextlib.suppress(OSError):
            out += sorted(idx.iterdir())
    return out


_F = TypeVar("_F", bound=Callable[..., Any])


def _consistent_read(fn: _F) -> _F:
    """Read-only gallery on a mapped serving folder: redo a search when the writer committed a
    change while it ran. The writer commits the store before it moves rows in the folder, so a
    search that overlapped such a move sees a new ``data_version`` at its end, and is redone on
    the reloaded rows instead of scoring a moved row under its old owner."""

    @functools.wraps(fn)
    def run(self: Gallery, *args: Any, **kwargs: Any) -> Any:
        redo = getattr(self._acting, "redo", False)
        try:
            while True:
                out = fn(self, *args, **kwargs)
                if not (self.read_only and self._m.mapped) or self._closed:
                    return out
                if self._store.data_version() == self._data_version:
                    return out
                self._acting.redo = True  # one request, one audit record: not again
        finally:
            self._acting.redo = redo

    return run  # type: ignore[return-value]


#: Store meta key: the backend options of the last writable open (JSON), reused by a reopen
#: that gives none.
BACKEND_OPTIONS_KEY = "backend_options"


# --------------------------------------------------------------------------- gallery
class Gallery(TrustMethods):
    """A gallery of enrolled identities, in memory or on disk.

    Parameters
    ----------
    dim : int or None
        Template dimension; required for a new gallery, checked when opening.
    path : str or os.PathLike or None
        SQLite file (created if missing); None keeps everything in memory.
        Index checkpoints go to the folder ``<path>.index``.
    backend : str or None
        ``"binary"`` (default), ``"exact"``, ``"flat"``, ``"hnsw"``, ``"ivf"``
        or ``"ivfpq"`` (see :mod:`pyfacematch.index`). None: the one stored in
        the file, else the default.
    blocks : array_like of int, (B+1,), or None
        Region-block offsets for masked templates (fixed at creation).
    on_duplicate : {"refuse", "append"}
        Default for enrolling an id that is already enrolled.
    recall_target : float
        Recall@1 against exact search that approximate backends tune for.
    tune_similarity : float or None
        Cosine between a tuning probe and the template it was made from:
        tuning probes are gallery templates plus isotropic noise of that
        strength. None (default): measured on the gallery's own genuine pairs
        (5th percentile of the cosine between two templates of one identity,
        when at least 50 identities have two templates), else 0.5 (below
        the usual genuine scores of face embeddings, i.e. conservative).
    tune_probes : int
        Size of the tuning sample.
    min_fraction : float
        Masked scoring: minimum share of dimensions two templates must share
        (default :data:`pyfacematch.scoring.DEFAULT_MIN_FRACTION`, 0.3).
    seed : int
        Seed of the tuning sample.
    integrity_check : bool
        Check the file when opening it: SQLite's ``quick_check`` (a full
        ``integrity_check`` after a crash) and a crash-left WAL (see
        :class:`~pyfacematch.gallery.store.Store`). Template rows are always
        checked; bad ones are quarantined (:attr:`quarantined`).
    backend_options : mapping or None
        Keyword options of the backend (e.g. ``hnsw_m``, ``rerank_store``). A writable
        open records them in the file; None reuses the recorded ones when the backend is
        the stored one (so a plain reopen matches its serving folder and checkpoint).
    read_only : bool
        Open an existing gallery file for searching only: no lock is taken,
        the database is never written (search records go to an audit sidecar
        file, see ``audit_searches``), and before answering the gallery reloads itself
        when another process has committed a change (SQLite ``data_version``
        and the store generation), so it never returns a removed identity
        after the writer's ``remove()`` has returned.
    key_provider : KeyProvider or None
        Source of the secret that authenticates index checkpoint files
        (default: ``PYFACEMATCH_GALLERY_KEY`` if set, else the key file
        ``<path>.key``, created with mode 0600). See :mod:`.secret`. For an
        encrypted gallery it is also the master key that wraps the data key.
    encrypt : bool or None
        Encrypt templates, masks and index checkpoints at rest (AES-256-GCM,
        envelope keys; see :mod:`pyfacematch.security.envelope`). Chosen when
        the gallery is created; None (default) keeps what the file is (a new
        gallery is then unencrypted, and opening an unencrypted file gallery
        logs a warning once). No effect on an in-memory gallery.
    purpose : str or None
        Default purpose of the gallery, recorded when it is created (or the
        first time it is given): :meth:`enroll` grants consent for it unless
        told otherwise, and :meth:`identify` / :meth:`verify` search for it
        when the request names none. A gallery without one (the default) does
        not filter requests that name no purpose.
    actor : str or None
        Who uses this gallery object, recorded in the audit trail with each
        change and search (identify/verify may name another per call).
    audit_searches : bool
        Record identify and verify calls in the audit trail (batched, off the
        search path). Changes (enroll, remove, consent, keys) are always
        recorded. Read-only galleries never write the database: their search
        records go to a sidecar file beside it, chained into the trail by the
        next writable open (:mod:`.auditsidecar`).
    cancelable : bool or None
        Store and search templates through a keyed random orthonormal
        transform (:mod:`pyfacematch.security.cancelable`): scores unchanged,
        templates unlinkable to other galleries, revocable with
        :meth:`revoke_templates`. Chosen at creation; None keeps what the
        file is. :meth:`templates` then returns transformed templates.
    erasure_scrub : str
        When a removal's ``VACUUM`` scrub runs (SQLite leaves stale copies of
        moved rows in pages; see :mod:`pyfacematch.gallery.erasure`):
        ``"immediate"`` inside :meth:`remove`, ``"background"`` within
        ``erasure_delay`` seconds in a background thread (removals meanwhile
        share one scrub), ``"auto"`` (default) immediate while the file is at
        most 8 MiB, background above. :meth:`close`, :meth:`checkpoint` and
        :meth:`complete_erasure` finish it at once.
    erasure_delay : float
        Background scrubs start at most this many seconds after the first
        removal that owes one (later if the previous scrub's spacing, four
        times its duration, asks for it).
    serving : bool or None
        Keep a memory-mapped serving folder beside the file (``<db>.index/serving``:
        float32 rows, compact rows, codes, ids; :mod:`.servingfiles`) so a reopened
        gallery maps it instead of rebuilding from the store. Stored in the file;
        None keeps what the file says. Refused for encrypted galleries (the folder
        is not encrypted).

    Raises
    ------
    GalleryFileError, GalleryLockedError, KeyFileError, FormatVersionError, DimensionError,
    InputError
        Invalid options are refused before any file is created or written.

    Notes
    -----
    One writer per gallery file: a writable file gallery holds an exclusive
    OS lock on ``<path>.lock`` until :meth:`close` (released by the OS if the
    process dies); a second writer gets :class:`GalleryLockedError`.
    """

    def __init__(
        self,
        dim: int | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        backend: str | None = None,
        blocks: Any = None,
        on_duplicate: str = "refuse",
        recall_target: float = 0.99,
        tune_similarity: float | None = None,
        tune_probes: int = 1000,
        min_fraction: float = scoring.DEFAULT_MIN_FRACTION,
        seed: int = 0,
        integrity_check: bool = True,
        backend_options: Mapping[str, Any] | None = None,
        read_only: bool = False,
        key_provider: KeyProvider | None = None,
        encrypt: bool | None = None,
        purpose: str | None = None,
        actor: str | None = None,
        cancelable: bool | None = None,
        audit_searches: bool = True,
        erasure_scrub: str = "auto",
        erasure_delay: float = 2.0,
        serving: bool | None = None,
    ) -> None:
        # every option is checked before the store creates or touches a file
        if serving is not None and not isinstance(serving, bool):
            raise InputError(f"serving must be True, False or None, got {serving!r}")
        if serving and path is None:
            raise InputError(
                "serving=True needs a gallery file (path=...): an in-memory gallery has no "
                "serving folder"
            )
        check_duplicate_option(on_duplicate)
        check_scrub_mode(erasure_scrub)
        if not _in_range(erasure_delay, 0.0, 86400.0):
            raise InputError(
                f"erasure_delay must be a number of seconds in [0, 86400], got {erasure_delay!r}"
            )
        self._scrub_mode = erasure_scrub
        if not _in_range(recall_target, 0.0, 1.0, low_open=True):
            raise InputError(f"recall_target must be a number in (0, 1], got {recall_target!r}")
        if tune_similarity is not None and not _in_range(tune_similarity, 0.0, 1.0, True, True):
            raise InputError(f"tune_similarity must be a number in (0, 1), got {tune_similarity!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {seed!r}")
        opts = check_backend_options(backend_options)
        if purpose is not None:
            check_purpose(purpose)
        self.on_duplicate = on_duplicate
        self.recall_target = float(recall_target)
        self.tune_similarity = None if tune_similarity is None else float(tune_similarity)
        self._tune_sim_used: tuple[float, str] = (0.5, "default")
        self.tune_probes = tune_probes
        self.min_fraction = min_fraction
        self._seed = int(seed)
        early: Backend | None = None
        if backend is not None:  # an unknown name or bad option is refused before any file
            early = make_backend(backend, **opts)
        self.read_only = bool(read_only)
        self._tuning_error: str | None = None
        self._lock: WriterLock | None = None
        if path is not None and self.read_only and not Path(path).is_file():
            raise GalleryFileError(
                f"cannot open {os.fspath(path)!r} read-only: no gallery file there "
                "(read-only opens never create one)"
            )
        if path is not None:  # before any file is read or created
            refuse_unsafe_folder(path, _gallery_files(Path(path)))
        new_file = path is not None and not Path(path).exists()
        if path is not None and not new_file:  # before the lock or SQLite touch anything
            refuse_shared_writes(_gallery_files(Path(path)))
        if path is not None and not self.read_only:
            if not Path(path).exists():  # a bad layout leaves no file, not even the lock
                check_new_layout(dim, blocks)
            self._lock = WriterLock(path)
            self._lock.acquire()
        try:
            self._store = Store(path, dim=dim, blocks=blocks, integrity_check=integrity_check)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        self.path = self._store.path
        self.dim = self._store.dim
        self.blocks = self._store.blocks
        self._rw = RWLock()
        self._wmutex = threading.RLock()
        # acting_as(actor) sets this thread's actor only: writes, searches and calibrations of
        # other threads (and background threads) keep their own
        self._acting = threading.local()
        self._close_lock = threading.Lock()
        self._closed = False
        self._thr = Thresholds(self._store)
        self._eraser: WalEraser | None = None
        self._ring: encryption.KeyRing | None = None
        try:
            if not self.read_only:
                self._store.begin_writes()  # a crash from here on leaves no clean-close marker
            keys = None
            if self.path is not None:
                keys = key_provider or key_provider_for(self.path)
                # an encrypted gallery without its key is refused before anything is created
                self._ring = encryption.open_ring(
                    self._store,
                    keys,
                    encrypt=encrypt,
                    new_file=new_file,
                    writable=not self.read_only,
                )
                if not self.read_only:
                    keys.key(create=True)  # made at creation; refused if others can read it
            self._keys = keys
            self._xf, self._xf_secret = cancel_store.open_transform(
                self._store,
                self._ring,
                keys,
                cancelable=cancelable,
                new_file=new_file or self.path is None,
                writable=not self.read_only,
            )
            self.actor = actor
            self.audit_searches = bool(audit_searches)
            self._init_audit()
            self._init_consent(purpose)
            self._ckpt = CheckpointFiles(
                self._store, self.index_dir, keys, writable=not self.read_only
            )
            if self.path is not None and not self.read_only:
                self._eraser = WalEraser(
                    self.path,
                    self._sweep_index,
                    self._store.vacuum_if_owed,
                    mode=erasure_scrub,
                    max_delay=float(erasure_delay),
                )
            self._sf = self._serving_files(serving, keys)
            stored = None
            with contextlib.suppress(GalleryFileError):
                stored = self._store.get_meta("backend")
            name = backend or stored or DEFAULT_BACKEND
            if backend_options is None and name == stored:
                # the options the gallery was last opened with for writing (e.g. its re-rank
                # store): reopening without them would not match its index or serving folder
                kept = self._stored_backend_options(name)
                if kept:
                    early, opts = make_backend(name, **kept), kept
            self._backend: Backend = early or make_backend(name, **opts)
            self._backend_opts: dict[str, Any] = dict(opts)  # recorded in the serving manifest
            if name != stored and not self.read_only:
                self._store.set_meta("backend", name)
            if not self.read_only and self.path is not None:
                self._keep_backend_options(name, opts)
            self._data_version = self._store.data_version()
            self._ckpt_file: str | None = None
            self._load()
            if not self.read_only and self.path is not None:
                self._sweep_index()  # crash leftovers: temporary and stale checkpoint files
            if self._eraser is not None and self._store.get_meta_opt(SCRUB_PENDING_KEY) is not None:
                self._eraser.erase()  # a removal committed before a crash still owes its scrub
        except BaseException:
            self._store.close()
            if self._lock is not None:
                self._lock.release()
            raise

    def _stored_backend_options(self, name: str) -> dict[str, Any]:
        """Backend options recorded in the store for backend ``name`` ({} if none or unusable)."""
        raw = self._store.get_meta_opt(BACKEND_OPTIONS_KEY)
        if raw is None:
            return {}
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict) or rec.get("backend") != name:
                return {}
            kept = check_backend_options(rec.get("options"))
            make_backend(name, **kept)  # refused by the backend: not used
            return kept
        except Exception as exc:  # derived data: a bad record is ignored, never a failed open
            log.warning("stored backend options not used (%s): defaults apply", exc)
            return {}

    def _keep_backend_options(self, name: str, opts: Mapping[str, Any]) -> None:
        """Record the options of a writable open so that a plain reopen uses them too."""
        try:
            raw = json.dumps({"backend": name, "options": dict(opts)}, sort_keys=True)
        except (TypeError, ValueError):
            return  # not JSON (never the case for the built-in backends): not recorded
        if self._store.get_meta_opt(BACKEND_OPTIONS_KEY) != raw:
            self._store.set_meta(BACKEND_OPTIONS_KEY, raw)

    def _serving_files(self, serving: bool | None, keys: KeyProvider | None) -> ServingFiles | None:
        """The serving folder of a file gallery that keeps one (``serving``, else as stored)."""
        if self.path is None or keys is None:
            return None
        stored = self._store.get_meta_opt(SERVING_KEY)
        enabled = stored == "1" if serving is None else serving
        if enabled and self._ring is not None:
            raise InputError(
                f"gallery {os.fspath(self.path)!r} is encrypted at rest and a serving folder's "
                "files are not: open it without serving=True (it is then rebuilt from the "
                "encrypted store at each open)"
            )
        assert self.index_dir is not None
        sf = ServingFiles(
            self.index_dir, keys, self._store.get_meta("uuid"), writable=not self.read_only
        )
        if serving is not None and not self.read_only and stored != ("1" if serving else "0"):
            self._store.set_meta(SERVING_KEY, "1" if serving else "0")
        if not enabled:
            if stored == "1":
                sf.drop()  # turned off: its files hold templates
            return None
        return sf

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        dim: int | None = None,
        backend: str | None = None,
        **options: Any,
    ) -> Gallery:
        """Open (or create) the gallery stored at ``path``; see :class:`Gallery`."""
        return cls(dim, path=path, backend=backend, **options)

    @property
    def tune_probes(self) -> int:
        """Size of the tuning sample (a positive integer; checked when set)."""
        return self._tune_probes

    @tune_probes.setter
    def tune_probes(self, v: int) -> None:
        self._tune_probes = check_tune_probes(v)

    @property
    def min_fraction(self) -> float:
        """Masked scoring: minimum share of dimensions shared, in [0, 1] (checked when set)."""
        return self._min_fraction

    @min_fraction.setter
    def min_fraction(self, v: float) -> None:
        self._min_fraction = check_min_fraction(v)

    @property
    def quarantined(self) -> list[QuarantinedTemplate]:
        """Template rows of the file that failed their checks at load and are never searched.

        Each names its template id, identity and the reason (see
        :mod:`pyfacematch.gallery.quarantine`); ``remove()`` of the identity
        deletes them. Empty for a healthy gallery.
        """
        return list(self._store.quarantined)

    # ------------------------------------------------------------------ loading
    @property
    def index_dir(self) -> Path | None:
        """Folder of index checkpoint files (None for an in-memory gallery)."""
        return None if self.path is None else self.path.with_name(self.path.name + ".index")

    def _load(self) -> None:
        self._slot_layout = getattr(self, "_slot_layout", 0) + 1  # consent masks are per layout
        self._loaded_generation = self._store.generation
        if self._load_mapped():
            return
        tids, names, matrix, masks = self._store.load_all()
        self._m = TemplateMatrix(self.dim, masked=self.blocks is not None, capacity=len(tids))
        owner = self._load_slots(tids, names)
        self._m.append(matrix, tids, owner, masks)
        self._siblings.invalidate()
        self._load_index()
        if self._sf is not None and self._sf.writable:
            self._serving_write()

    def _load_slots(
        self, tids: np.ndarray, names: Sequence[Any], distinct: bool = False
    ) -> np.ndarray:
        """Identity slots in template-id order; returns the slot of each template.

        ``distinct``: the names are known to be distinct (one template per identity), so the
        name → slot dict is built at its first use instead of now."""
        self._slot_names: MutableSequence[str | None] = []
        self._name_to_slot: MutableMapping[str, int] = {}
        self._slot_tids: MutableMapping[int, list[int]] = {}
        self._siblings = SiblingExpander()  # invalidated whenever rows move
        first: MutableMapping[str, int] = (
            NameSlots(names) if distinct else dict(zip(names, range(len(names))))
        )
        if distinct or len(first) == len(names):  # one template per identity: no per-row loop
            self._slot_names = names if isinstance(names, SlotNames) else list(names)
            self._name_to_slot = first
            self._slot_tids = SlotTids(np.asarray(tids, np.int64))  # no list per identity
            self._max_templates = 1
            self._n_identities = len(names)
            return np.arange(len(names), dtype=np.int64)
        owner = np.empty(len(tids), np.int64)
        for i, name in enumerate(names):
            slot = self._name_to_slot.get(name)
            if slot is None:
                slot = self._new_slot(name)
            owner[i] = slot
            self._slot_tids[slot].append(int(tids[i]))
        self._max_templates = max((len(v) for v in self._slot_tids.values()), default=1)
        self._n_identities = len(self._name_to_slot)
        return owner

    def _load_mapped(self) -> bool:
        """Open from the serving folder when it matches the store (see :mod:`.servingfiles`):
        map its files instead of reading every template and rebuilding. False: not used.

        The store is asked only for its generation (the manifest must record it) and for counts
        its indexes answer (:meth:`Store.row_facts`); the row → template id, identity and mask
        mapping comes from the folder, whose manifest is authenticated under the gallery key."""
        sf_files = self._sf
        if sf_files is None:
            return False
        try:
            facts = self._store.row_facts()
        except GalleryFileError as exc:  # the full read below says what is wrong, if anything
            sf_files.reject(f"the store's template list cannot be read ({exc})")
            return False
        sf = sf_files.open(self._backend, self._loaded_generation, self.dim, facts)
        if sf is None:
            return False
        try:  # read and checked block by block in one pass (the rest: background, below)
            fids = sf.read_verified("ids").astype(np.int64, copy=False)
            at = sf.read_verified("label_at")
            blob = sf.read_labels()
            masks = None
            if self.blocks is not None:
                if "masks" not in sf.arrays:
                    raise GalleryFileError("it holds no masks and the gallery has region blocks")
                masks = sf.read_verified("masks").view(np.uint64)
            codes = sf.read_verified("codes") if "codes" in sf.arrays else None
            # mapped only in read-only galleries: a writer changes the files in place before
            # its backend applies the same change to its own copy
            compact = self._folder_compact(
                sf, mapped=self._backend.name == "binary" and self.read_only
            )
        except (GalleryFileError, OSError) as exc:
            sf_files.reject(str(exc), failed=bool(sf.failures))
            return False
        why = self._mapped_rows_wrong(fids, at, blob, facts)
        if why is not None:
            sf_files.reject(why)
            return False
        order = None if fids.size < 2 or bool((np.diff(fids) > 0).all()) else np.argsort(fids)
        tids = fids if order is None else fids[order]
        if order is not None and not bool((np.diff(tids) > 0).all()):
            sf_files.reject("its template ids repeat")
            return False
        at_slot = at if order is None else at[order]  # slots in template-id order, as the store
        names = SlotNames(blob, at_slot)
        one_each = bool((sf.manifest.get("meta") or {}).get("one_per_identity"))
        owner_by_tid = self._load_slots(tids, names, distinct=one_each)
        if order is None:
            owner = owner_by_tid
        else:
            owner = np.empty_like(owner_by_tid)
            owner[order] = owner_by_tid
        self._m = TemplateMatrix.from_mapped(
            sf.float32, fids, owner, masks, masked=self.blocks is not None
        )
        self._siblings.invalidate()
        b = self._backend
        meta = sf.manifest.get("meta") or {}
        if "options" in meta and meta["options"] != json.loads(
            json.dumps(self._backend_opts, sort_keys=True)
        ):
            sf_files.reject(
                f"it was built with backend options {meta['options']!r}, the gallery is open "
                f"with {self._backend_opts!r}"
            )
            return False
        params: dict[str, Any] = self._store.get_params(self._tuning_key()) or {}
        if not params and isinstance(meta.get("params"), dict):
            params = meta["params"]  # the tuned state recorded with the folder (authenticated)
        if params:
            b.load_params(params)
        adopted = False
        if not b.checkpointable:
            try:
                if b.name == "binary" and not sf_files.check_center(b):
                    raise ValueError("the codes were packed with another centre")
                b.adopt(self._m, {"codes": codes, "compact": compact})
                adopted = True
            except (ValueError, KeyError) as exc:
                sf_files.reject(f"{exc}; the index is rebuilt from its float32 rows")
        if sf_files.folder is sf:
            sf.verify_in_background()  # what was mapped, not read: compact rows, float32
        if not adopted:
            self._load_index()  # from the mapped rows (checkpoint, or rebuild) and tune if due
            if self._sf is not None and self._sf.writable and self._sf.folder is None:
                self._serving_write()
            return True
        tuned = b.tuned_size
        if b.approximate and (not tuned or not (tuned / 2 <= self._m.n <= 2 * tuned)):
            self._tune()
        return True

    @staticmethod
    def _mapped_rows_wrong(
        fids: np.ndarray, at: np.ndarray, blob: bytes, facts: dict[str, int]
    ) -> str | None:
        """Why the folder's ids and labels cannot be the store's rows (None: they can)."""
        n = int(fids.shape[0])
        if n != facts["templates"]:
            return f"it holds {n} rows, the store {facts['templates']} templates"
        if n and (int(fids.min()) < 0 or int(fids.max()) != facts["max_tid"]):
            return "its template ids differ from the store's"
        if at.shape != (n, 2) or (
            n and (int(at[:, 1].min()) < 1 or int((at[:, 0] + at[:, 1]).max()) > len(blob))
        ):
            return "its row → identity labels are out of bounds"
        try:
            blob.decode("utf-8")
        except UnicodeDecodeError:
            return "its identity labels are not UTF-8"
        return None

    @staticmethod
    def _folder_compact(sf: Any, mapped: bool) -> dict[str, Any]:
        """The folder's compact arrays: mapped (read-only ``binary`` galleries re-rank a few rows
        of them; checked by the background pass) or read and checked now (``exact`` scans every
        row; a writer changes its own copy)."""
        out: dict[str, Any] = {}
        for k, v in sf.arrays.items():
            if k.startswith("compact_") and v.shape[0] == sf.n:
                out[k[len("compact_") :]] = v if mapped else sf.read_verified(k)
        return out

    def wait_verified(self) -> bool:
        """Wait for the serving folder's background checksum pass (if one runs).

        Returns True when the answers from here on come from verified files only (or the
        gallery does not use a serving folder); False when the pass failed (the gallery then
        rebuilds from the store at its next call and its answers are verified again).
        """
        f = None if self._sf is None else self._sf.folder
        if f is None:
            return True
        f.wait_verified()
        return f.verified

    def _serving_write(self) -> None:
        """Write the serving folder afresh (writable galleries; never raises: logged)."""
        sf = self._sf
        if sf is None or not sf.writable:
            return
        try:
            if self._m.n == 0:
                sf.drop()
                return
            sf.write(
                self._m,
                self._backend,
                self._store.generation,
                self._row_names(0, self._m.n),
                self._row_facts(),
            )
            self._m.attach(sf.folder.float32)  # type: ignore[union-attr]
        except (OSError, GalleryFileError, InputError) as exc:
            self._serving_failed(exc)

    def _row_names(self, first: int, last: int) -> list[str]:
        """The identity of rows ``first … last - 1`` (what the serving folder labels them)."""
        names = self._slot_names
        return [str(names[o]) for o in self._m.owner[first:last].tolist()]

    def _row_facts(self) -> dict[str, Any]:
        """What a serving folder records of the rows (:meth:`Store.row_facts` at reopen)."""
        n = self._m.n
        try:  # the options and tuned state the folder's rows were built with (self-describing)
            options: Any = json.loads(json.dumps(self._backend_opts, sort_keys=True))
            params: Any = json.loads(json.dumps(self._backend.params()))
        except (TypeError, ValueError):
            options = params = None
        return {
            "templates": n,
            "identities": int(self._n_identities),
            "max_tid": int(self._m.tids[:n].max()) if n else -1,
            "one_per_identity": self._max_templates <= 1,
            "options": options,
            "params": params,
        }

    def _serving_failed(self, exc: BaseException) -> None:
        """A folder update failed: delete it (it may hold removed rows) and keep rows in memory."""
        log.warning(
            "serving folder could not be updated (%s): deleted; it is written again at the next "
            "open (nothing enrolled was lost: the store is the truth)",
            exc,
        )
        if self._m.mapped:
            self._m.unmap()
        if self._sf is not None:
            self._sf.drop()

    def _serving_check(self) -> None:
        """Searches: a background checksum failure of the float32 file → rebuild from the store."""
        sf = self._sf
        f = None if sf is None else sf.folder
        if f is None or not f.failures:
            return
        with self._wmutex:
            if sf is None or sf.folder is not f:
                return
            sf.reject(f"checksum failure: {', '.join(f.failures[:3])}", failed=True)
            sf.drop()
            with self._rw.write():
                self._load()

    def _init_audit(self) -> None:
        if not self.read_only:
            audit_store.ensure_chain(self._store)
        akeys = audit_store.audit_key_provider(self.path)
        sidecar = None
        if self.read_only and self.path is not None and self.audit_searches:
            sidecar = SidecarWriter(self.path, self._store.get_meta("uuid"), akeys)
        self._audit = audit_store.AuditTrail(
            self._store, akeys, writable=not self.read_only, sidecar=sidecar
        )
        if not self.read_only:
            trail = self._audit

            def hook(c: Any, action: str, identity: str | None, detail: str) -> None:
                trail.append_in(c, action, identity, detail, actor=self._current_actor())

            def hook_many(c: Any, records: list[tuple[str, str | None, str]]) -> None:
                actor, ts = self._current_actor(), time.time()
                trail.append_many_in(c, [(ts, actor, a, i, d) for a, i, d in records])

            self._store.audit_hook = hook
            self._store.audit_many_hook = hook_many
            if self.path is not None:  # read-only galleries' searches join the chain
                import_sidecars(self._store, trail, self.path)

    def _audit_search(self, action: str, actor: str | None, detail: dict[str, Any]) -> None:
        if self.audit_searches and not getattr(self._acting, "redo", False):
            self._audit.queue(actor if actor is not None else self._current_actor(), action, detail)

    def _current_actor(self) -> str | None:
        """The actor of this thread: its innermost ``acting_as`` block, else the gallery's."""
        a = getattr(self._acting, "actor", None)
        return a if a is not None else self.actor

    def _init_consent(self, purpose: str | None) -> None:
        if not self.read_only:
            consent_store.ensure_tables(self._store)
        stored = self._store.get_meta_opt(consent_store.DEFAULT_PURPOSE_KEY)
        if purpose is not None and stored is not None and purpose != stored:
            raise InputError(
                f"gallery {os.fspath(self.path or ':memory:')!r} has default purpose "
                f"{stored!r}, not {purpose!r}: open it without purpose= or with purpose={stored!r}"
            )
        if purpose is not None and stored is None and not self.read_only:
            self._store.set_meta(consent_store.DEFAULT_PURPOSE_KEY, purpose)
            stored = purpose
        self.default_purpose: str | None = stored
        self._consent = ConsentView(consent_store.load_records(self._store))

    def _new_slot(self, name: str) -> int:
        slot = len(self._slot_names)
        self._slot_names.append(name)
        self._name_to_slot[name] = slot
        self._slot_tids[slot] = []
        return slot

    def _tuning_key(self) -> str:
        return f"tuning:{self._backend.name}"

    def _load_index(self) -> None:
        b = self._backend
        # malformed or non-finite parameters come back as None: re-tuned below, never used
        key = self._tuning_key()
        params: dict[str, Any] = (
            encryption.open_params(self._ring, key, self._store.get_params(key)) or {}
        )
        loaded = False
        if params and not b.checkpointable:
            b.load_params(
                params
            )  # rebuilt from the templates with the tuned state (binary: its centre)
        if b.checkpointable and self.path is not None:
            loaded = self._load_checkpoint()
        if not loaded:
            b.rebuild(self._m)
        if params and b.checkpointable:
            b.load_params(params)
        tuned = b.tuned_size
        if b.approximate and (not tuned or not (tuned / 2 <= self._m.n <= 2 * tuned)):
            self._tune()

    def _load_checkpoint(self) -> bool:
        b = self._backend
        self._ckpt_file = None
        got = self._ckpt.read(b.name, self._m, self.dim)
        if got is None:
            return False
        rec, data = got
        why = None
        if self._ring is not None:
            plain = self._ring.open_blob(data, self._ckpt_context(rec.backend, rec.generation))
            if plain is None:
                self._ckpt.reject(rec.file, "it cannot be decrypted with the gallery's data key")
                return False
            data = plain
        params = encryption.open_params(self._ring, self._ckpt_params_context(rec), rec.params)
        if params is None:
            self._ckpt.reject(rec.file, "its sealed parameters cannot be opened")
            return False
        try:
            b.load_params(params)
            b.deserialize(data, self._m)
            if b.size != self._m.n:
                why = "index holds a different number of templates"
        except MemoryError:  # e.g. an absurd nlist
            why = "FAISS ran out of memory reading it (implausible parameters)"
        except Exception as exc:  # FAISS refused bytes that passed the MAC
            why = f"FAISS could not read it ({type(exc).__name__}: {exc})"
        if why is not None:
            self._ckpt.reject(rec.file, why)
            return False
        self._ckpt_file = rec.file
        return True

    def _sweep_index(self) -> None:
        """Delete temporary and stale checkpoint files (writable galleries only)."""
        with self._wmutex:
            recorded = self._store.checkpoint_files()
            keep = {f for f in recorded if f == self._ckpt_file}
            if recorded and not keep:  # records of files not in use: forget them (a write)
                with contextlib.suppress(GalleryFileError):
                    self._store.delete_checkpoints()
            self._ckpt.sweep(keep)
            if self._sf is not None:
                self._sf.sweep()

    def _refresh(self) -> None:
        """Read-only galleries: reload when another connection committed a change."""
        self._serving_check()
        if not self.read_only or self._closed:
            return
        with self._wmutex:
            dv = self._store.data_version()
            if dv == self._data_version:
                return
            self._data_version = dv
            self._thr.clear()
            self._consent = ConsentView(consent_store.load_records(self._store))
            if self._store.generation == self._loaded_generation:
                return  # thresholds, tuning or checkpoint records only
            if self._ring is None and self._keys is not None:
                # encrypted in place by the writer meanwhile: its key ring opens the rows
                # (a missing or wrong key raises here, never a silently empty gallery)
                if self._store.get_meta_opt(encryption.META_KEY) is not None:
                    self._ring = encryption.open_ring(
                        self._store, self._keys, encrypt=None, new_file=False, writable=False
                    )
            with self._rw.write():
                self._load()

    # ------------------------------------------------------------------ validation
    def _templates(self, x: Any, what: str) -> np.ndarray:
        return as_templates(x, self.dim, what)

    def _masks(self, masks: Any, n: int, what: str) -> np.ndarray | None:
        return as_masks(masks, n, self.blocks, what)

    def prepare_probes(self, probes: Any, masks: Any = None) -> PreparedProbes:
        """Check and normalise a probe batch once, for :meth:`identify_arrays` of this gallery
        and of any other of the same dimension and region blocks (e.g. the shards one Dask
        worker holds: each would otherwise repeat the check, the normalisation and, for shards
        sharing the binary centre, the sign packing).

        Parameters
        ----------
        probes : array_like, (M, d) or (d,)
        masks : array_like of uint64, (M,), or None
            Probe block masks (galleries with blocks).

        Returns
        -------
        PreparedProbes
            Pass it as ``probes`` (and no ``masks``) to :meth:`identify_arrays`.
        """
        self._check_open()
        p = self._templates(probes, "probes")
        prep = PreparedProbes(p, self._masks(masks, p.shape[0], "probe masks"), self.blocks)
        if self._xf is None and self._backend.active:  # e.g. the binary codes, packed now
            with self._rw.read():
                self._backend.prepare(prep)
        return prep

    def _prepared(self, prep: PreparedProbes, masks: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """The probes and masks of ``prep`` if they fit this gallery (typed errors otherwise)."""
        if masks is not None:
            raise InputError(
                "prepared probes carry their masks: pass masks to prepare_probes(), not here"
            )
        if prep.dim != self.dim:
            raise DimensionError(
                f"expected probes of dimension {self.dim} (this gallery), got {prep.dim}: were "
                "they prepared by a gallery of another key model?"
            )
        if not prep.same_blocks(self.blocks):
            raise InputError(
                "these probes were prepared by a gallery with other region blocks: prepare them "
                "with this gallery (Gallery.prepare_probes)"
            )
        return prep.values, prep.masks

    def _check_open(self) -> None:
        if self._closed:
            where = "memory" if self.path is None else repr(os.fspath(self.path))
            raise GalleryClosedError(
                f"gallery {where} is closed: nothing was done; open it again to use it"
            )

    def _check_writable(self, what: str) -> None:
        self._check_open()
        if self.read_only:
            raise GalleryReadOnlyError(
                f"{what}: gallery {os.fspath(self.path or '')!r} was opened read-only; open it "
                "without read_only=True (one writer at a time) to change it"
            )

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
        purpose: str | Sequence[str] | None = None,
        consent_source: str = "enroll",
        consent_expires: float | None = None,
    ) -> None:
        """Enroll an identity with one or more templates (one transaction).

        Parameters
        ----------
        identity_id : str
        templates : array_like, (T, d) or (d,)
            Normalised here (float32).
        masks : array_like of uint64, (T,), or None
            Valid-block bitmask of each template (galleries with blocks only;
            None = every block valid).
        metadata : mapping or None
            JSON-serialisable, stored with the identity (no biometric data).
        on_duplicate : {"refuse", "append"} or None
            Override of the gallery's default for an id already enrolled.
        consent : str
            Consent state recorded with the identity (free text, kept for
            compatibility; purposes below are what searches filter on).
        purpose : str, sequence of str, or None
            Purposes the person consented to, recorded with the enrollment
            (time, ``consent_source``, ``consent_expires``) in the same
            transaction. None: the gallery's default purpose, if any.
        consent_source : str
            Where the consent comes from (a form id, a screen …).
        consent_expires : float or None
            Expiry of that consent (seconds since the epoch); None: none.

        Raises
        ------
        DuplicateIdentityError, DimensionError, NonFiniteError, ZeroVectorError, InputError
        ConsentError
            The id opted out earlier (tombstone) and no new consent was recorded.
        """
        self.enroll_many(
            [identity_id] * count_rows(templates),
            templates,
            masks,
            metadata=None if metadata is None else {identity_id: metadata},
            on_duplicate=on_duplicate,
            consent=consent,
            purpose=purpose,
            consent_source=consent_source,
            consent_expires=consent_expires,
        )

    def enroll_many(
        self,
        identity_ids: Sequence[str],
        templates: Any,
        masks: Any = None,
        *,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
        on_duplicate: str | None = None,
        consent: str = "granted",
        purpose: str | Sequence[str] | None = None,
        consent_source: str = "enroll",
        consent_expires: float | None = None,
    ) -> None:
        """Enroll many templates in one transaction (all or nothing).

        Parameters
        ----------
        identity_ids : sequence of str, length N
            Identity of each template row; repeated ids get several templates.
        templates : array_like, (N, d)
        masks : array_like of uint64, (N,), or None
        metadata : mapping id -> mapping, or None
        on_duplicate, consent, purpose, consent_source, consent_expires
            As in :meth:`enroll`.
        """
        self._check_writable("enroll")
        od = self.on_duplicate if on_duplicate is None else on_duplicate
        check_duplicate_option(od)
        if not isinstance(consent, str) or not consent:
            raise InputError(f"consent must be a non-empty string, got {consent!r}")
        encodable(consent, "consent")
        ids = check_id_list(identity_ids)
        t = self._templates(templates, "templates")
        if len(ids) != t.shape[0]:
            raise DimensionError(
                f"{len(ids)} identity ids for {t.shape[0]} template rows: give one id per row"
            )
        mk = self._masks(masks, t.shape[0], "masks")
        if self._xf is not None:  # cancelable: only the transformed template is ever stored
            t = self._xf.apply(t)
        groups: dict[str, list[int]] = {}
        for r, i in enumerate(ids):
            groups.setdefault(i, []).append(r)
        items = []
        for name, rows in groups.items():
            meta = None if metadata is None else metadata.get(name)
            if meta is not None:
                check_json(meta)
            items.append((name, t[rows], None if mk is None else mk[rows], meta))
        grants = self._enroll_grants(list(groups), purpose, consent_source, consent_expires)

        def in_txn(c: Any) -> None:
            # consent implied by an enrollment never lifts an opt-out: grant_consent() does
            consent_store.refuse_tombstoned(c, list(groups))
            for g in grants:
                consent_store.put_in(c, g)

        with self._wmutex:
            self._check_open()  # close() may have run while this call waited for the mutex
            tid_lists, _ = self._store.insert_identities(
                items, on_duplicate=od, consent=consent, in_txn=in_txn
            )
            for g in grants:
                self._consent.put(g)
            with self._rw.write():
                first = self._m.n
                owners = []
                for (name, _tm, _mm, _meta), tids in zip(items, tid_lists):
                    slot = self._name_to_slot.get(name)
                    if slot is None:
                        slot = self._new_slot(name)
                        self._n_identities += 1
                    owners.append(np.full(len(tids), slot, np.int64))
                    self._slot_tids[slot].extend(int(x) for x in tids)
                    self._max_templates = max(self._max_templates, len(self._slot_tids[slot]))
                if items:  # one append and one index update for the whole call
                    new_rows = np.concatenate([it[1] for it in items])
                    if self._m.mapped:  # the float32 rows go to the mapped file
                        self._serving_stage(new_rows)
                    mm = None if mk is None else np.concatenate([it[2] for it in items])
                    added = self._m.append(
                        new_rows,
                        np.concatenate([np.asarray(x, np.int64) for x in tid_lists]),
                        np.concatenate(owners),
                        mm,
                    )
                    self._siblings.invalidate()
                    self._backend.add(self._m, added)
                self._maintain()
                self._serving_after_append(first)

    def remove(self, identity_id: str) -> None:
        """Opt-out: erase an identity from the store, memory and index files.

        All or nothing from the caller's view. If the delete cannot be
        committed, nothing changed and :class:`GalleryFileError` says so. Once
        it is committed (``secure_delete`` zeroes the rows), memory is updated
        so no search returns the identity again, every index checkpoint and
        temporary file is deleted (they may hold its templates), and the WAL is
        truncated so no old page image keeps them; if another connection holds
        a read transaction, the truncation is retried in the background until
        it succeeds (``info()["erasure"]``, a log line) and ``remove()`` still
        returns normally.

        Raises
        ------
        UnknownIdentityError
            The identity is not enrolled (nothing changed).
        GalleryFileError
            The delete could not be committed (nothing changed; retry).
        GalleryReadOnlyError
            The gallery was opened read-only.
        """
        self._remove(check_id(identity_id), tombstone=False)

    def _remove(self, name: str, *, tombstone: bool) -> None:
        self._check_writable("remove")

        def in_txn(c: Any) -> None:
            consent_store.erase_in(c, name, tombstone=tombstone)

        with self._wmutex:
            self._check_open()  # close() may have run while this call waited for the mutex
            try:
                tids, _ = self._store.delete_identity(
                    name, truncate_wal=self._eraser is None, in_txn=in_txn
                )
            except UnknownIdentityError:
                raise
            except GalleryFileError as exc:
                raise GalleryFileError(
                    f"remove({name!r}) was not committed, nothing changed and {name!r} is still "
                    f"enrolled: {exc}"
                ) from exc
            # committed: from here on nothing may leave the person searchable
            self._consent.drop(name)
            try:
                with self._rw.write():
                    slot = self._name_to_slot.pop(name, None)
                    if slot is not None:
                        self._slot_tids.pop(slot, None)
                        self._slot_names[slot] = None
                        self._n_identities -= 1
                    moves = self._m.remove_tids(tids)
                    self._serving_after_remove(moves)
                    self._siblings.invalidate()
                    self._backend.remove(self._m, tids, moves)
                    self._maintain()
                    self._serving_after_maintain()
            except Exception:
                log.exception("updating memory after a removal failed: reloading from the store")
                with self._rw.write():
                    self._load()
            self._drop_checkpoints()
            if self._eraser is not None:
                self._eraser.erase()

    def _serving_stage(self, rows: np.ndarray) -> None:
        try:
            self._sf.stage_float32(self._m, rows)  # type: ignore[union-attr]
        except (OSError, GalleryFileError) as exc:
            self._serving_failed(exc)

    def _serving_after_append(self, first: int) -> None:
        """Commit appended rows to the serving folder (or rewrite it when the codes moved)."""
        sf = self._sf
        if sf is None or not sf.writable:
            return
        try:
            if sf.folder is None or not self._m.mapped:
                self._serving_write()
            elif self._m.n > first or not sf.check_center(self._backend):
                sf.commit_append(
                    self._m,
                    self._backend,
                    first,
                    self._store.generation,
                    self._row_names(first, self._m.n),
                    self._row_facts(),
                    # re-centred on growth: every code moved (only the codes are written again)
                    recode=not sf.check_center(self._backend),
                )
        except (OSError, GalleryFileError, InputError) as exc:
            self._serving_failed(exc)

    def _serving_after_remove(self, moves: list[tuple[int, int]]) -> None:
        """Mirror a removal in the serving folder: the removed rows are overwritten at once."""
        sf = self._sf
        if sf is None or not sf.writable or sf.folder is None:
            return
        try:
            sf.commit_moves(
                self._m, moves, self._backend, self._store.generation, self._row_facts()
            )
        except (OSError, GalleryFileError, InputError) as exc:
            self._serving_failed(exc)

    def _serving_after_maintain(self) -> None:
        """After a removal has reached the backend (and maintenance ran): write the folder afresh
        when its zeroed tail is due for compaction or the codes were re-centred. Never before
        the backend followed the moves: the rewrite takes codes and compact rows from it."""
        sf = self._sf
        if sf is None or not sf.writable or sf.folder is None:
            return
        try:
            if sf.slack_due(self._m.n) or not sf.check_center(self._backend):
                self._serving_write()  # compaction: reclaim the zeroed tail
        except (OSError, GalleryFileError, InputError) as exc:
            self._serving_failed(exc)

    def _drop_checkpoints(self) -> None:
        """Delete every checkpoint and temporary file (never raises: problems are logged)."""
        self._ckpt_file = None
        try:
            self._ckpt.drop()
        except (GalleryFileError, OSError) as exc:
            log.warning("could not delete the index checkpoint files: %s", exc)

    def _maintain(self) -> None:
        """Rebuild / retrain / retune when due (caller holds the write lock)."""
        b = self._backend
        if b.maintenance_due(self._m):
            b.rebuild(self._m)
            self._tune()
            return
        if b.approximate and b.active and self._m.n >= 2 * max(b.tuned_size, SMALL_GALLERY // 2):
            b.refresh(self._m)
            self._tune()

    # ------------------------------------------------------------------ tuning
    def _tune(self) -> None:
        b = self._backend
        n = self._m.n
        if not b.approximate or not b.active or n < SMALL_GALLERY:
            return
        rng = np.random.default_rng(self._seed + n)
        s = min(self.tune_probes, n)
        sim, self._tune_sim_used = tuning_similarity(self.tune_similarity, self._slot_tids, self._m)
        probes = make_tuning_probes(self._m, s, sim, rng)
        pm = self._masks(None, s, "masks")
        run_tuning(b, self._m, probes, pm, self._exact, self._approx, self.recall_target)
        if self.read_only:
            return
        try:
            key = self._tuning_key()
            self._store.set_params(key, encryption.seal_params(self._ring, key, b.params()))
            self._tuning_error = None
        except Exception as exc:  # reported, not swallowed: a reopened gallery would re-tune
            self._tuning_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "%s backend: tuned parameters could not be saved (%s); a reopened gallery "
                "re-tunes and may answer differently — see Gallery.info()['tuning_error']",
                b.name,
                self._tuning_error,
            )

    # ------------------------------------------------------------------ search
    def _exact(
        self, probes: np.ndarray, k: int, pm: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        return exact_search(self._m, probes, k, pm, self.blocks, self.min_fraction, self._backend)

    def _approx(
        self,
        probes: np.ndarray,
        k: int,
        pm: np.ndarray | None,
        prepared: PreparedProbes | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        sib = self._siblings if self._max_templates > 1 else None
        return approx_search(
            self._backend, self._m, probes, k, pm, self.blocks, self.min_fraction, sib, prepared
        )

    def _search_rows(
        self,
        probes: np.ndarray,
        k: int,
        pm: np.ndarray | None,
        prepared: PreparedProbes | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        b = self._backend
        if not b.approximate and b.name == "exact" or not b.active or self._m.n < SMALL_GALLERY:
            return self._exact(probes, k, pm)
        return self._approx(probes, k, pm, prepared)

    def _search_allowed(
        self,
        p: np.ndarray,
        k: int,
        pm: np.ndarray | None,
        allowed: np.ndarray,
        prepared: PreparedProbes | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top rows among consenting identities only: (scores (M, K), slots (M, K), template
        rows (M, K)), -1 padded.

        Few consenting identities (at most 1/8 of the rows): an exact scan of
        their rows alone. Otherwise the usual search, widened (×4 at a time)
        until every probe has ``k`` consenting identities or the whole gallery
        was searched, so the result is the best ``k`` among them, not what is
        left of an unfiltered top-k.
        """
        m = self._m
        n = m.n
        owner = m.owner[:n]
        row_ok = allowed[owner]
        na = int(row_ok.sum())
        mt = max(1, self._max_templates)
        if na == 0:
            empty = np.zeros((p.shape[0], 0), np.int64)
            return np.zeros((p.shape[0], 0), np.float32), empty, empty
        if na * 8 <= n:
            rows_a = np.flatnonzero(row_ok)
            sub = np.ascontiguousarray(m.data[rows_a])
            sub_m = None if m.masks is None else np.ascontiguousarray(m.masks[rows_a])
            sc, r = exact_topk(p, sub, min(na, k * mt), pm, sub_m, self.blocks, self.min_fraction)
            rows = np.where(r >= 0, rows_a[np.maximum(r, 0)], -1)
            return sc, np.where(rows >= 0, owner[np.maximum(rows, 0)], -1), rows
        kt = min(n, k * mt)
        while True:
            sc, rows = self._search_rows(p, kt, pm, prepared)
            slots = np.where(rows >= 0, owner[np.maximum(rows, 0)], -1)
            ok = (slots >= 0) & allowed[np.maximum(slots, 0)]
            order = np.argsort(~ok, axis=1, kind="stable")
            ok = np.take_along_axis(ok, order, 1)
            sc = np.where(ok, np.take_along_axis(sc, order, 1), np.nan).astype(np.float32)
            slots = np.where(ok, np.take_along_axis(slots, order, 1), -1)
            rows = np.where(ok, np.take_along_axis(rows, order, 1), -1)
            if kt >= n:
                return sc, slots, rows
            _, fs = fuse(sc, slots, k)
            if fs.shape[1] >= k and bool((fs[:, k - 1] >= 0).all()):
                return sc, slots, rows
            kt = min(n, kt * 4)

    def resolve_threshold(
        self, threshold: float | None, kind: str
    ) -> tuple[float | None, str, float | None]:
        """The threshold a decision will use: (value, source, target).

        ``threshold`` when given (source ``"explicit"``), else the calibrated
        ``kind`` (``"fmr"`` or ``"fpir"``) threshold stored in the gallery
        (source ``"calibrated-<kind>"``, with its target rate), else
        ``(None, "none", None)``.
        """
        return self._thr.resolve(threshold, kind)

    @_consistent_read
    def identify_arrays(
        self,
        probes: Any,
        k: int = 1,
        threshold: float | None = None,
        masks: Any = None,
        *,
        purpose: str | None = None,
        actor: str | None = None,
        with_tids: bool = False,
        actor_rows: Sequence[tuple[str | None, int]] | None = None,
    ) -> IdentifyArrays:
        """Identify a batch of probes; results as arrays (for bulk jobs).

        Parameters
        ----------
        probes : array_like, (M, d) or (d,), or PreparedProbes
            Probes, or probes checked once by :meth:`prepare_probes` (of this gallery or of one
            with the same dimension and blocks; their masks then come with them).
        k : int
            Identities per probe (fewer when the gallery holds fewer).
        threshold : float or None
            Accept the top candidate when its score >= threshold. None: the
            calibrated FPIR threshold stored in the gallery, if any.
        masks : array_like of uint64, (M,), or None
            Probe block masks (galleries with blocks).
        purpose : str or None
            Purpose of the request: only identities with current (granted,
            unexpired) consent for it are considered, inside the search, so
            the k returned are the best k among them. None: the gallery's
            default purpose; no filtering when the gallery has none.
        actor : str or None
            Who asks, for the audit trail (default: the gallery's ``actor``).
            The trail records the count of probes, k, the purpose and the
            identities accepted above threshold, never a template.
        with_tids : bool
            Also return each candidate's best template id (``IdentifyArrays.tids``), the
            tie-break key a sharded search merges on.
        actor_rows : sequence of (actor, rows) or None
            Probes of several callers scored in one call (a service's batch): consecutive
            runs of ``rows`` probes each asked by ``actor``, covering every probe in order
            (``actor`` is then not given). Each run gets its own audit record naming its actor,
            its probe count and the identities accepted for its probes only.

        Returns
        -------
        IdentifyArrays
        """
        self._check_open()
        self._refresh()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        prep = probes if isinstance(probes, PreparedProbes) else None
        if prep is not None:  # checked and normalised once for several galleries (shards)
            p, pm = self._prepared(prep, masks)
        else:
            p = self._templates(probes, "probes")
            pm = self._masks(masks, p.shape[0], "probe masks")
        if self._xf is not None:  # once per probe batch
            p = self._xf.apply(p)
            prep = None  # its codes are those of the untransformed probes
        thr, src, target = self.resolve_threshold(threshold, "fpir")
        m_rows = p.shape[0]
        runs = self._actor_runs(actor_rows, actor, m_rows)
        with self._rw.read():
            n = self._m.n
            rows = np.full((m_rows, 0), -1, np.int64)
            if n == 0:
                slots = np.full((m_rows, 0), -1, np.int64)
                sc = np.zeros((m_rows, 0), np.float32)
            else:
                allowed = self._allowed(purpose)
                if allowed is not None and int(allowed.sum()) >= self._n_identities:
                    allowed = None  # every enrolled identity consents: nothing to filter
                if allowed is None:
                    kt = min(n, int(k) * max(1, self._max_templates))
                    sc, rows = self._search_rows(p, kt, pm, prep)
                    slots = np.where(rows >= 0, self._m.owner[np.maximum(rows, 0)], -1)
                else:
                    sc, slots, rows = self._search_allowed(p, int(k), pm, allowed, prep)
            names = self._slot_names
            if self._max_templates == 1:  # one template per identity: nothing to fuse
                ids_sc, ids_slot = sc[:, : int(k)], slots[:, : int(k)]
            else:
                ids_sc, ids_slot = fuse(sc, slots, int(k))
            ident = np.empty(ids_slot.shape, object)
            flat = ids_slot.ravel()
            ident.ravel()[:] = [None if s < 0 else names[s] for s in flat.tolist()]
            best_tids = None
            if with_tids and rows.shape[1] == 0:
                best_tids = np.full(ids_slot.shape, -1, np.int64)
            elif with_tids:  # the first (best-ranked) template row of each fused candidate
                first = np.argmax(slots[:, None, :] == ids_slot[:, :, None], axis=2)
                best = np.take_along_axis(rows, first, 1)
                best_tids = np.where(ids_slot >= 0, self._m.tids[np.maximum(best, 0)], -1)
        acc = accept_top(ids_sc, thr)
        start = 0
        for who, n_rows in runs:
            end = start + n_rows
            sl_acc = None if acc is None else acc[start:end]
            self._audit_search(
                "identify",
                who,
                {
                    "probes": int(n_rows),
                    "k": int(k),
                    "purpose": purpose or self.default_purpose,
                    "accepted": []
                    if sl_acc is None or ident.size == 0
                    else sorted(
                        {str(x) for x in ident[start:end][sl_acc, 0].tolist() if x is not None}
                    ),
                },
            )
            start = end
        return IdentifyArrays(ident, ids_sc, acc, thr, src, target, best_tids)

    @staticmethod
    def _actor_runs(
        actor_rows: Sequence[tuple[str | None, int]] | None, actor: str | None, m_rows: int
    ) -> list[tuple[str | None, int]]:
        """The audit runs of an identify call: ``actor_rows`` checked, else one run of all."""
        if actor_rows is None:
            return [(actor, m_rows)]
        if actor is not None:
            raise InputError("give actor= or actor_rows=, not both")
        runs = [(a, r) for a, r in actor_rows]
        if (
            any(
                isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1
                for _, r in runs
            )
            or sum(int(r) for _, r in runs) != m_rows
        ):
            raise InputError(
                f"actor_rows must be (actor, rows) runs of >= 1 row covering the {m_rows} "
                f"probes in order, got {[r for _, r in runs]}"
            )
        return [(a, int(r)) for a, r in runs]

    def identify(
        self,
        probes: Any,
        k: int = 1,
        threshold: float | None = None,
        masks: Any = None,
        *,
        purpose: str | None = None,
        actor: str | None = None,
    ) -> list[IdentifyResult]:
        """Identify probes (1:N): ranked identities fused by best template score.

        Same parameters as :meth:`identify_arrays`; returns one
        :class:`IdentifyResult` per probe.
        """
        return self.identify_arrays(
            probes, k, threshold, masks, purpose=purpose, actor=actor
        ).results()

    @_consistent_read
    def verify(
        self,
        identity_id: str,
        probe: Any,
        threshold: float | None = None,
        mask: Any = None,
        *,
        purpose: str | None = None,
        actor: str | None = None,
    ) -> VerifyResult:
        """Compare a probe with one identity (1:1): best score over its templates.

        Parameters
        ----------
        identity_id : str
        probe : array_like, (d,)
        threshold : float or None
            None: the calibrated FMR threshold stored in the gallery, if any.
        mask : int or None
            Probe block mask (galleries with blocks).
        purpose : str or None
            Purpose of the request (None: the gallery's default, if any).

        Raises
        ------
        UnknownIdentityError
        NoConsentError
            The identity has no current consent for the purpose (a subclass
            of UnknownIdentityError: for this purpose it is not enrolled).
        """
        self._check_open()
        self._refresh()
        name = check_id(identity_id)
        p = self._templates(probe, "probe")
        if p.shape[0] != 1:
            raise DimensionError(f"verify takes one probe of shape ({self.dim},), got {p.shape}")
        pm = self._masks(None if mask is None else [mask], 1, "probe mask")
        if self._xf is not None:
            p = self._xf.apply(p)
        thr, src, target = self.resolve_threshold(threshold, "fmr")
        with self._rw.read():
            slot = self._name_to_slot.get(name)
            if slot is None:
                raise UnknownIdentityError(f"identity {name!r} is not enrolled")
            allowed = self._allowed(purpose)
            if allowed is not None and not allowed[slot]:
                raise NoConsentError(
                    f"identity {name!r} has no current consent for purpose "
                    f"{purpose or self.default_purpose!r}: it cannot be verified for it "
                    "(grant_consent() records consent)"
                )
            rows = self._m.tid_to_row[np.asarray(self._slot_tids[slot], np.int64)]
            sub = np.ascontiguousarray(self._m.data[rows])
            sub_m = None if self._m.masks is None else np.ascontiguousarray(self._m.masks[rows])
        s, _ = exact_topk(p, sub, 1, pm, sub_m, self.blocks, self.min_fraction)
        score = float(s[0, 0])
        acc = None if thr is None else bool(np.isfinite(score) and score >= thr)
        self._audit_search(
            "verify",
            actor,
            {
                "identity": name,
                "purpose": purpose or self.default_purpose,
                "accepted": acc,
            },
        )
        return VerifyResult(name, score, Decision(acc, thr, src, target))

    @_consistent_read
    def verify_many(
        self,
        identity_ids: Sequence[str],
        probes: Any,
        threshold: float | None = None,
        *,
        purpose: str | None = None,
        actors: Sequence[str | None] | None = None,
    ) -> list[VerifyResult | Exception]:
        """Many 1:1 comparisons (a service's batch of verify requests) in one call.

        The same answers as :meth:`verify` of each pair, with the shared work done once (checks,
        threshold, consent, the read lock). One audit record per pair, naming its actor.

        Parameters
        ----------
        identity_ids : sequence of str, length M
        probes : array_like, (M, d)
            One probe per identity (a bad row fails the whole call: check rows first).
        threshold, purpose
            As in :meth:`verify`, for every pair.
        actors : sequence of (str or None), length M, or None
            Who asks for each pair (None: the gallery's ``actor``).

        Returns
        -------
        list of VerifyResult or Exception
            Per pair, its result, or the error :meth:`verify` would have raised for it alone
            (:class:`UnknownIdentityError`, :class:`NoConsentError`, an invalid id), returned,
            not raised, so that one pair's error does not fail the others.
        """
        self._check_open()
        self._refresh()
        ids = list(identity_ids)
        p = self._templates(probes, "probes")
        if p.shape[0] != len(ids):
            raise DimensionError(f"verify_many takes one probe per identity: {len(ids)} ids, {p.shape[0]} probes")  # fmt: skip
        who = [None] * len(ids) if actors is None else list(actors)
        if len(who) != len(ids):
            raise InputError(f"actors must name one actor per identity: {len(ids)} ids, {len(who)} actors")  # fmt: skip
        if self.blocks is not None:  # probe masks are per pair: the one-pair path
            out: list[VerifyResult | Exception] = []
            for i, ident in enumerate(ids):
                try:
                    out.append(self.verify(ident, p[i], threshold, purpose=purpose, actor=who[i]))
                except (InputError, UnknownIdentityError) as exc:
                    out.append(exc)
            return out
        if self._xf is not None:
            p = self._xf.apply(p)
        thr, src, target = self.resolve_threshold(threshold, "fmr")
        pur = purpose or self.default_purpose
        res: list[VerifyResult | Exception] = []
        with self._rw.read():
            allowed = self._allowed(purpose)
            for i, ident in enumerate(ids):
                try:
                    name = check_id(ident)
                except InputError as exc:
                    res.append(exc)
                    continue
                slot = self._name_to_slot.get(name)
                if slot is None:
                    res.append(UnknownIdentityError(f"identity {name!r} is not enrolled"))
                    continue
                if allowed is not None and not allowed[slot]:
                    res.append(
                        NoConsentError(
                            f"identity {name!r} has no current consent for purpose {pur!r}: it "
                            "cannot be verified for it (grant_consent() records consent)"
                        )
                    )
                    continue
                rows = self._m.tid_to_row[np.asarray(self._slot_tids[slot], np.int64)]
                sub = np.ascontiguousarray(self._m.data[rows])
                sc, _ = exact_topk(p[i : i + 1], sub, 1, None, None, None, self.min_fraction)
                score = float(sc[0, 0])
                acc = None if thr is None else bool(np.isfinite(score) and score >= thr)
                self._audit_search(
                    "verify", who[i], {"identity": name, "purpose": pur, "accepted": acc}
                )
                res.append(VerifyResult(name, score, Decision(acc, thr, src, target)))
        return res

    # ------------------------------------------------------------------ thresholds
    def calibrate(
        self,
        impostor_scores: Any = None,
        *,
        fmr: float | None = None,
        fpir: float | None = None,
        pairs: tuple[Any, Any] | None = None,
        nonmated_probes: Any = None,
        conservative: bool = False,
        confidence: float = 0.95,
    ) -> ThresholdRecord:
        """Calibrate and store a decision threshold.

        Give ``fmr=`` with ``impostor_scores`` (1:1 impostor comparison scores)
        or ``pairs=(a, b)`` (impostor template pairs, scored here); or give
        ``fpir=`` with ``impostor_scores`` (top scores of non-mated searches) or
        ``nonmated_probes`` (templates of people not enrolled, searched here).
        The stored threshold is used by :meth:`verify` (FMR) or
        :meth:`identify` (FPIR) when no explicit threshold is passed.

        Returns
        -------
        ThresholdRecord
        """
        self._check_writable("calibrate")
        sources = sum(x is not None for x in (impostor_scores, pairs, nonmated_probes))
        if sources != 1:
            raise InputError(
                "give exactly one of impostor_scores, pairs=(a, b) (for fmr) or "
                "nonmated_probes (for fpir)"
            )
        if pairs is not None:
            if fmr is None:
                raise InputError("pairs calibrate a verification threshold: pass fmr=…")
            a, b = pairs
            scores = pair_scores(self._templates(a, "pairs[0]"), self._templates(b, "pairs[1]"))
        elif nonmated_probes is not None:
            if fpir is None:
                raise InputError("nonmated_probes calibrate an identification threshold: fpir=…")
            res = self.identify_arrays(nonmated_probes, k=1, threshold=0.0)  # scores only
            top = res.scores[:, 0] if res.scores.shape[1] else np.full(len(res.scores), np.nan)
            scores = np.nan_to_num(top.astype(np.float64), nan=-np.inf)
        else:
            scores = impostor_scores
        rec = calibrate_threshold(
            scores,
            fmr=fmr,
            fpir=fpir,
            conservative=conservative,
            confidence=confidence,
            gallery_size=len(self) if fpir is not None else None,
        )
        self._thr.save(rec)
        return rec

    def threshold(self, kind: str) -> ThresholdRecord | None:
        """The stored ``"fmr"`` or ``"fpir"`` threshold, or None."""
        return self._thr.get(kind)

    # ------------------------------------------------------------------ listing
    def __len__(self) -> int:
        self._refresh()
        return self._n_identities

    def __contains__(self, identity_id: object) -> bool:
        self._refresh()
        with self._rw.read():
            return isinstance(identity_id, str) and identity_id in self._name_to_slot

    def __iter__(self) -> Iterator[str]:
        return iter(self.identities())

    def identities(self) -> list[str]:
        """Enrolled identity ids, in enrollment order."""
        self._refresh()
        with self._rw.read():
            return [n for n in self._slot_names if n is not None]

    @property
    def n_templates(self) -> int:
        """Templates enrolled, over all identities."""
        self._refresh()
        return self._m.n

    def record(self, identity_id: str) -> dict[str, Any]:
        """Metadata, consent state, timestamps and template count of an identity."""
        return self._store.identity_record(check_id(identity_id))

    def templates(self, identity_id: str) -> np.ndarray:
        """float32 (T, d) copy of an identity's templates."""
        name = check_id(identity_id)
        self._refresh()
        with self._rw.read():
            slot = self._name_to_slot.get(name)
            if slot is None:
                raise UnknownIdentityError(f"identity {name!r} is not enrolled")
            rows = self._m.tid_to_row[np.asarray(self._slot_tids[slot], np.int64)]
            return self._m.data[rows].copy()

    def template_masks(self, identity_id: str) -> np.ndarray | None:
        """uint64 (T,) block masks of an identity's templates (same order as :meth:`templates`);
        None for a gallery without blocks (plain cosine)."""
        name = check_id(identity_id)
        self._refresh()
        with self._rw.read():
            slot = self._name_to_slot.get(name)
            if slot is None:
                raise UnknownIdentityError(f"identity {name!r} is not enrolled")
            if self.blocks is None or self._m.masks is None:
                return None
            rows = self._m.tid_to_row[np.asarray(self._slot_tids[slot], np.int64)]
            return self._m.masks[rows].copy()

    def audit_log(self) -> list[tuple[float, str, str | None, str]]:
        """(timestamp, action, identity, detail) rows; never biometric data."""
        return self._store.audit_log()

    def index_info(self) -> dict[str, Any]:
        """Backend, tuned depth, measured recall@1, fallback reason, sizes."""
        with self._rw.read():
            d = self._backend.info(self._m)
            d["identities"] = self._n_identities
            d["recall_target"] = self.recall_target
            d["tune_similarity"], d["tune_similarity_source"] = self._tune_sim_used
            exact = (
                self._backend.name == "exact"
                or not self._backend.active
                or self._m.n < SMALL_GALLERY
            )
            d["search"] = "exact" if exact else "shortlist+exact-rerank"
        return d

    def rebuild_index(self) -> dict[str, Any]:
        """Rebuild (and retrain) the search index from the templates, then re-tune.

        Use it after many removals to retrain IVF centroids / PQ codebooks
        without the erased identities' influence; stale checkpoint files are
        deleted. Returns :meth:`index_info`.

        Raises
        ------
        IndexTrainingError
            The backend needs more templates to train than the gallery holds
            (automatic maintenance falls back to exact search instead).
        """
        self._check_open()
        b = self._backend
        with self._wmutex:
            b.check_trainable(self._m)  # raises IndexTrainingError with the reason
            with self._rw.write():
                b.rebuild(self._m)
                self._tune()
                self._serving_write()
            self._drop_checkpoints()
        return self.index_info()

    # ------------------------------------------------------------------ persistence
    def checkpoint(self) -> None:
        """Write the index checkpoint file (FAISS backends) and truncate the WAL.

        The file is written atomically with its HMAC-SHA256 (under the
        gallery's secret key, see :mod:`.secret`) recorded in the store, tagged
        with the store generation and a digest of the template ids; every other
        checkpoint or temporary file of the gallery is deleted.
        """
        self._check_writable("checkpoint")
        b = self._backend
        d = self.index_dir
        with self._wmutex:
            if d is not None and b.needs_checkpoint:
                if b.holds_erased:
                    with self._rw.write():  # never write erased templates to a file
                        b.compact(self._m)
                with self._rw.read():
                    data = b.serialize()
                    n = self._m.n
                    digest = digest_tids(self._m.tids[:n])
                    params = b.params()
                gen = self._store.generation
                if self._ring is not None:  # encrypted at rest like the store's rows
                    data = self._ring.seal_blob(data, self._ckpt_context(b.name, gen))
                    params = encryption.seal_params(
                        self._ring, f"checkpoint:{b.name}:{int(gen)}", params
                    )
                self._ckpt_file = self._ckpt.write(b.name, data, gen, n, digest, params)
            self._store.scrub_erased()  # VACUUM first if a removal still owes its scrub
            if self._eraser is not None and self._eraser.pending:
                self._eraser.complete(0.0)  # scrubbed above: settle the eraser's state

    @staticmethod
    def _ckpt_params_context(rec: Any) -> str:
        return f"checkpoint:{rec.backend}:{int(rec.generation)}"

    def _ckpt_context(self, backend: str, generation: int) -> bytes:
        return encryption.checkpoint_context(backend, generation)

    def verify_integrity(self) -> dict[str, Any]:
        """Check that memory and index match the store; raise if not.

        Returns counts; raises :class:`GalleryFileError` describing the first
        mismatch.
        """
        n_id, n_t = self._store.counts()
        with self._rw.read():
            tids = np.sort(self._m.tids[: self._m.n])
            if n_t != self._m.n or n_id != self._n_identities:
                raise GalleryFileError(
                    f"memory holds {self._n_identities} identities / {self._m.n} templates, "
                    f"the store {n_id} / {n_t}"
                )
            if digest_tids(tids) != self._store.tid_digest():
                raise GalleryFileError("memory and store hold different template ids")
            why = self._backend.check_consistency(self._m)
            if why is not None:
                raise GalleryFileError(why)
        return {"identities": n_id, "templates": n_t}

    def info(self) -> dict[str, Any]:
        """Health of the gallery's files: what a caller should know beyond the search index.

        Returns
        -------
        dict
            ``path``, ``read_only``, ``backend``, ``identities``, ``templates``,
            ``generation`` (store generation loaded), ``lock`` (lock file held,
            or None), ``erasure`` (``pending``: a committed removal whose scrub
            or WAL truncation is still owed; ``wal_pending``, ``scrub_pending``,
            ``scrub_due_at``, ``scrub_mode``, ``last_scrub_seconds``, ``scrubs``,
            ``pending_since``, ``attempts``, ``last_error``, ``completed_at``), ``tuning_saved`` / ``tuning_error``
            (whether the tuned parameters could be stored, so a reopened gallery
            answers the same), ``checkpoint`` (file in use, or why none was used).
        """
        erasure = (
            self._eraser.status
            if self._eraser is not None
            else WalEraser.idle_status(self._scrub_mode)
        )
        return {
            "path": None if self.path is None else os.fspath(self.path),
            "read_only": self.read_only,
            "backend": self._backend.name,
            "identities": self._n_identities,
            "templates": self._m.n,
            "generation": self._loaded_generation,
            "integrity_check_at_open": self._store.integrity,
            "lock": None if self._lock is None else os.fspath(self._lock.path),
            "erasure": erasure,
            "tuning_saved": self._tuning_error is None,
            "tuning_error": self._tuning_error,
            "checkpoint": {"file": self._ckpt_file, "not_used_because": self._ckpt.last_rejection},
            "serving": None
            if self._sf is None
            else {
                "folder": os.fspath(self._sf.dir),
                "mapped": self._m.mapped,
                "not_used_because": self._sf.last_rejection,
                "verified": self._sf.folder is not None and self._sf.folder.verified,
            },
            "security": {
                "encrypted": self._ring is not None,
                "cancelable": self._xf is not None,
                "default_purpose": self.default_purpose,
                "purposes": self._consent.purposes(),
                "audit_searches": self.audit_searches,
            },
        }

    def complete_erasure(self, timeout: float | None = None) -> bool:
        """Finish every committed removal's erasure on disk now (scrub and WAL truncation).

        Returns True when nothing of an erased person is left in the
        gallery's files; False if another process's read transaction kept the
        WAL from being truncated within ``timeout`` seconds (the background
        retries go on; ``info()["erasure"]`` says why).
        """
        if self._eraser is None:
            return True
        with self._wmutex:
            self._check_open()
        return self._eraser.complete(timeout)

    def wait_erasure(self, timeout: float | None = None) -> bool:
        """Wait (without forcing it) until no committed removal owes a scrub or truncation."""
        return True if self._eraser is None else self._eraser.wait(timeout)

    @property
    def erasure_pending(self) -> bool:
        """True while a committed removal still waits for its WAL truncation (see :meth:`info`)."""
        return self._eraser is not None and self._eraser.pending

    def close(self) -> None:
        """Checkpoint (writable file galleries), release the writer lock and close.

        Idempotent and safe to call from any thread: waits for a write in
        progress to finish; writes that start afterwards raise
        :class:`~pyfacematch.errors.GalleryClosedError` without writing.
        """
        with self._close_lock:
            if self._closed:
                return
            with self._wmutex:  # no enroll/remove is between its commit and its memory update
                try:
                    audit = getattr(self, "_audit", None)
                    if audit is not None:  # queued search records and a signed head, before
                        audit.close()  # the WAL is truncated (no commit races the truncation)
                    if self.path is not None and not self.read_only:
                        self.checkpoint()
                finally:
                    try:
                        if self._eraser is not None:  # its last step sweeps index files:
                            self._eraser.stop()  # before the gallery counts as closed
                    finally:
                        self._closed = True
                        try:
                            self._store.close()
                        finally:
                            if self._lock is not None:
                                self._lock.release()
                            # Break the gallery's reference cycles (the audit hook's closure, the
                            # eraser's bound methods): a closed gallery is then freed as soon as
                            # it is dropped, not at the next cyclic collection.
                            self._store.audit_hook = None
                            self._store.audit_many_hook = None
                            if self._eraser is not None:
                                self._eraser.detach()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "memory" if self.path is None else os.fspath(self.path)
        return (
            f"Gallery(dim={self.dim}, backend={self._backend.name!r}, "
            f"identities={self._n_identities}, templates={self._m.n}, at {where})"
        )
