"""A gallery's serving folder: reopen by mapping files instead of reading the store and rebuilding.

The folder ``<db>.index/serving`` (format: :mod:`pyfacematch.index.serving`) holds the gallery's
rows in the order of its in-memory matrix: float32 templates, template ids, each row's identity
name (format version 2) and mask, the compact copy of the ``exact`` store / ``binary`` re-rank
store, and the binary codes — everything a reopen needs, so it reads no per-identity row of the
store. It is derived data, like an index checkpoint, and distrusted the same way:

- **Authenticated.** The manifest (which holds a BLAKE2b-128 of every 16 MiB block of every file)
  carries an HMAC-SHA256 under the gallery's secret key (:mod:`.secret`), over the gallery uuid and
  the manifest; a folder written for another gallery, or edited, is not used.
- **Current.** The manifest records the store generation, backend, compact kind, the binary
  centre the codes were packed with, the backend options, the template and identity counts and
  the largest template id; the folder is used only when all of them match the gallery and its
  store (the counts come from the store's indexes, :meth:`Store.row_facts`). Anything else — stale generation (a crash between
  the store commit and the folder update), another backend, a failed checksum, another format
  version — means the folder is not used: the gallery is rebuilt from the store (the truth), a
  warning says why, and a writable gallery writes the folder again.
- **Verified.** Ids, names, masks and binary codes (what maps rows to people, and what every
  search scans in full) are checked block by block as they are read, before the first answer (each byte read
  once). The compact re-rank arrays and the float32 file — of which a search reads only the few
  rows it re-ranks — stay mapped and are checked by a background pass started at open (for the
  ``exact`` backend, which scans every compact row, and for writable galleries, which change
  their own copy, the compact arrays are read and checked before the first answer too). **Answers given while that pass runs are not final**:
  ``Gallery.info()["serving"]["verified"]`` is False until it has passed, and a gallery whose
  pass fails logs why, drops the folder and rebuilds from the store at its next call (callers
  that need only verified answers call ``Gallery.wait_verified()`` first).
- **Kept in step.** Enrollments append rows (committed by replacing the manifest after the store
  committed); a removal copies the last rows into the holes — the same swap-with-last as memory —
  and zeroes the freed tail at once, so the removed templates are overwritten in every file before
  ``remove()`` returns and no dead row is ever scanned. The files never shrink in place (a reader
  in another process may map rows past the end): once the zeroed tail passes
  :data:`COMPACT_SLACK` of the live rows, the removal writes a fresh folder (a temporary folder
  renamed into place; a crash leaves the old one or none, both safe), as ``rebuild_index()`` does.

Encrypted galleries refuse a serving folder (``serving=True`` raises): its files are not encrypted.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.core.compact import CompactMatrix
from pyfacematch.errors import FormatVersionError, GalleryFileError, InputError
from pyfacematch.gallery.secret import KeyProvider, new_mac
from pyfacematch.index import Backend, TemplateMatrix
from pyfacematch.index.serving import BLOCK_BYTES, ServingFolder

__all__ = ["SERVING_KEY", "ServingFiles"]

log = logging.getLogger("pyfacematch.gallery")

#: Store meta key: "1" when the gallery keeps a serving folder.
SERVING_KEY = "serving_folder"
#: Removals leave zeroed rows past the end of the files (they never shrink: a reader may map
#: them); the folder is written afresh once those exceed this share of the live rows …
COMPACT_SLACK = 0.25
#: … and this many rows.
COMPACT_MIN_ROWS = 4096
_HEADER = b"pyfacematch-serving-manifest-v1"


def center_digest(backend: Backend) -> str | None:
    """BLAKE2b of the binary centre the codes are packed with (None for other backends)."""
    c = getattr(backend, "center", None)
    if c is None:
        return None
    return hashlib.blake2b(
        np.ascontiguousarray(c, np.float32).tobytes(), digest_size=16
    ).hexdigest()


def _kind(backend: Backend) -> str | None:
    cs = backend.compact_store
    return None if cs is None else str(cs.kind)


class ServingFiles:
    """The serving folder of one gallery: open it if it matches, keep it in step, rewrite it.

    Parameters
    ----------
    index_dir : Path
        The gallery's index folder (``<db>.index``); the folder is ``index_dir / "serving"``.
    keys : KeyProvider
        The gallery's secret key (authenticates the manifest).
    uuid : str
        The gallery's uuid (a folder of another gallery is refused).
    writable : bool
    """

    def __init__(self, index_dir: Path, keys: KeyProvider, uuid: str, *, writable: bool) -> None:
        self.dir = index_dir / "serving"
        self.keys = keys
        self.uuid = uuid
        self.writable = writable
        self.folder: ServingFolder | None = None
        #: Why the folder was not used at the last open (None when it was).
        self.last_rejection: str | None = None
        #: Manifests (by their MAC) whose checksum pass failed: never mapped again by this
        #: process (a read-only gallery cannot delete the folder; the writer rewrites it).
        self._failed: set[str] = set()

    # ------------------------------------------------------------------ authentication
    def _mac(self, body: bytes, create: bool) -> str | None:
        key = self.keys.key(create=create)
        if key is None:
            return None
        h = new_mac(key, _HEADER, self.uuid.encode())
        h.update(body)
        return h.hexdigest()

    def _signer(self, body: bytes) -> str:
        mac = self._mac(body, create=True)
        if mac is None:  # pragma: no cover - create=True always gives a key
            raise GalleryFileError("no gallery key to sign the serving folder")
        return mac

    def meta(
        self, backend: Backend, generation: int, facts: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """What the manifest records of the gallery state it was written for: the store
        generation, backend, compact kind, binary centre and ``facts`` (:func:`row_facts`)."""
        out = {
            "generation": int(generation),
            "backend": backend.name,
            "kind": _kind(backend),
            "center": center_digest(backend),
        }
        if facts is not None:
            out.update(facts)
        return out

    # ------------------------------------------------------------------ open
    def open(
        self, backend: Backend, generation: int, dim: int, facts: dict[str, int] | None = None
    ) -> ServingFolder | None:
        """The folder if it is authentic and matches the store state; else None (logged).

        ``facts``: the store's template and identity counts and largest template id
        (:meth:`Store.row_facts`), which the manifest must record too."""
        self.folder = None
        self.last_rejection = None
        if not (self.dir / "manifest.json").exists():
            self.last_rejection = "no serving folder"
            return None
        try:
            sf = ServingFolder.open(self.dir, verify="none", load_compact=False)
        except (GalleryFileError, FormatVersionError, InputError, OSError, ValueError) as exc:
            return self._reject(str(exc))
        except Exception as exc:  # a crafted manifest (wrong types): not used, never a crash
            return self._reject(f"unreadable manifest ({type(exc).__name__}: {exc})")
        got = sf.manifest.get("auth")
        try:
            want = self._mac(ServingFolder.manifest_bytes(sf.manifest), create=False)
        except GalleryFileError as exc:
            return self._reject(f"gallery key unusable: {exc}")
        if want is None or not isinstance(got, str) or not hmac.compare_digest(got, want):
            return self._reject("its manifest fails its HMAC-SHA256 (altered, or another gallery)")
        if got in self._failed:
            return self._reject("its checksums failed earlier (altered files)")
        meta = sf.manifest.get("meta") or {}
        expect = self.meta(backend, generation, facts)
        expect.pop("center")  # checked after the stored tuning is loaded (see check_center)
        for k, v in expect.items():
            if meta.get(k) != v:
                if facts is not None and k in facts:
                    return self._reject(
                        f"stale: it records {k} = {meta.get(k)!r}, the store {v!r} (the store "
                        "was changed without it)"
                    )
                return self._reject(f"{k} {meta.get(k)!r} ≠ gallery {v!r}")
        if "label_at" not in sf.manifest["arrays"] or "labels" not in sf.blobs:
            return self._reject("it holds no row → identity labels")
        if sf.dim != dim:
            return self._reject(f"dimension {sf.dim} ≠ gallery {dim}")
        if backend.name == "binary" and "codes" not in sf.manifest["arrays"]:
            return self._reject("no binary codes")
        if _kind(backend) is not None and not sf.manifest.get("kind"):
            return self._reject("no compact templates")
        # Nothing is read here: the gallery reads ids and binary codes verifying each block as
        # it reads them (ServingFolder.read_verified), maps the rest, then starts the background
        # pass (ServingFolder.verify_in_background) over what it did not read.
        self.folder = sf
        return sf

    def check_center(self, backend: Backend) -> bool:
        f = self.folder
        return f is not None and (f.manifest.get("meta") or {}).get("center") == center_digest(
            backend
        )

    def _reject(self, why: str) -> ServingFolder | None:
        self.last_rejection = why
        self.folder = None
        log.warning("serving folder %s not used (%s): rebuilding from the store", self.dir, why)
        return None  # what open() returns for a folder it does not use

    def reject(self, why: str, failed: bool = False) -> None:
        """Log that the opened folder cannot be used after all (caller rebuilds); ``failed``:
        its checksums failed, so it is not opened again by this process."""
        f = self.folder
        if failed and f is not None and isinstance(f.manifest.get("auth"), str):
            self._failed.add(f.manifest["auth"])
        self._reject(why)

    # ------------------------------------------------------------------ arrays of rows
    @staticmethod
    def _compact_of(backend: Backend, rows: np.ndarray, dim: int) -> CompactMatrix | None:
        cs = backend.compact_store
        if cs is None:
            return None
        a = cs.arrays_of(rows)
        empty_f, empty_i = np.zeros(0, np.float32), np.zeros(0, np.int32)
        return CompactMatrix(
            cs.kind,
            dim,
            a["codes"],
            a.get("scale", empty_f),
            a["norm"],
            a.get("resid", empty_f),
            a.get("gsum", empty_i),
        )

    @staticmethod
    def _codes_of(backend: Backend, n0: int, n1: int) -> np.ndarray | None:
        planes = getattr(backend, "planes", None)
        if backend.name != "binary" or planes is None:
            return None
        return np.ascontiguousarray(np.hstack([p[n0:n1] for p in planes]))

    # ------------------------------------------------------------------ writing
    def write(
        self,
        m: TemplateMatrix,
        backend: Backend,
        generation: int,
        names: list[str],
        facts: dict[str, Any],
    ) -> ServingFolder:
        """Write the whole folder from ``m`` (at least one row) and ``backend`` (atomically);
        ``names``: the identity of each row; ``facts``: :func:`row_facts` of the gallery."""
        if self.folder is not None:
            self.folder.wait_verified()  # its pass reads the files being replaced
        self.dir.parent.mkdir(mode=0o700, exist_ok=True)
        rows = np.arange(m.n, dtype=np.int64)
        c = self._compact_of(backend, rows, m.dim) if m.n else None
        sf = ServingFolder.write(
            self.dir,
            m.view,
            m.tids[: m.n],
            compact=c,
            codes=self._codes_of(backend, 0, m.n),
            masks=m.mask_view,
            labels=names,
            meta=self.meta(backend, generation, facts),
            signer=self._signer,
        )
        self.folder = sf
        return sf

    def stage_float32(self, m: TemplateMatrix, rows: np.ndarray) -> None:
        """Write new float32 rows after ``m``'s (uncommitted) and map them into ``m``."""
        sf = self._live()
        sf.write_rows("float32", m.n, rows)
        total = m.n + rows.shape[0]
        m.attach(np.memmap(sf.path / "float32.bin", np.float32, "r", shape=(total, m.dim)))

    def commit_append(
        self,
        m: TemplateMatrix,
        backend: Backend,
        first: int,
        generation: int,
        names: list[str],
        facts: dict[str, Any],
        recode: bool = False,
    ) -> None:
        """Commit rows ``first … m.n`` (float32 already staged): ids, labels (``names``: the
        identity of each new row), masks, compact, codes, manifest. ``recode``: the binary
        centre moved, so the codes of every row are written again (in place, committed with the
        rest: a crash before the manifest leaves codes that fail their checksums, and the folder
        is rebuilt from the store) — float32, compact rows, ids and names are not rewritten."""
        sf = self._live()
        rows = np.arange(first, m.n, dtype=np.int64)
        sf.write_rows("ids", first, m.tids[first : m.n])
        mv = m.mask_view
        if mv is not None and "masks" in sf.manifest["arrays"]:
            sf.write_rows("masks", first, mv[first:])
        blob_bytes = sf.write_labels(first, names)
        c = self._compact_of(backend, rows, m.dim)
        if c is not None:
            for k, arr in c.arrays().items():
                if "compact_" + k in sf.manifest["arrays"] and arr.shape[0] == rows.size:
                    sf.write_rows("compact_" + k, first, arr)
        c0 = 0 if recode else first
        codes = self._codes_of(backend, c0, m.n)
        touched = sf.blocks_from(first)
        if codes is not None and "codes" in sf.manifest["arrays"]:
            sf.write_rows("codes", c0, codes)
            if recode:
                touched["codes"] = set(range(-(-codes.nbytes // BLOCK_BYTES)))
        sf.commit(
            m.n,
            touched,
            self.meta(backend, generation, facts),
            self._signer,
            blob_bytes={"labels": blob_bytes},
        )
        m.attach(sf.float32)

    def commit_moves(
        self,
        m: TemplateMatrix,
        moves: list[tuple[int, int]],
        backend: Backend,
        generation: int,
        facts: dict[str, Any],
    ) -> None:
        """Follow a removal (``moves`` as :meth:`TemplateMatrix.remove_tids` returned them);
        the removed rows' labels are overwritten with zero bytes."""
        sf = self._live()
        sf.move_rows(moves, m.n, self.meta(backend, generation, facts), self._signer)
        m.attach(sf.float32)

    def slack_due(self, n: int) -> bool:
        """True when the zeroed rows past the end call for writing the folder afresh."""
        sf = self.folder
        if sf is None:
            return False
        try:
            rows = (sf.path / "float32.bin").stat().st_size // (4 * sf.dim)
        except OSError:
            return False
        slack = rows - n
        return slack > COMPACT_MIN_ROWS and slack > COMPACT_SLACK * n

    def _live(self) -> ServingFolder:
        sf = self.folder
        if sf is None:
            raise GalleryFileError("no serving folder in use")
        sf.wait_verified()  # its background pass reads the blocks about to change
        sf.check()
        return sf

    def drop(self) -> None:
        """Delete the folder (and leftovers of an interrupted rewrite): they may hold templates."""
        self.folder = None
        if not self.writable:
            return
        for name in ("serving", "serving.tmp", "serving.old"):
            p = self.dir.parent / name
            if p.is_symlink():
                with contextlib.suppress(OSError):
                    os.unlink(p)
            elif p.exists():
                shutil.rmtree(p, ignore_errors=True)

    def sweep(self) -> None:
        """Delete leftovers of an interrupted rewrite (``serving.tmp`` / ``serving.old``)."""
        if not self.writable:
            return
        for name in ("serving.tmp", "serving.old"):
            p = self.dir.parent / name
            if p.exists() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
