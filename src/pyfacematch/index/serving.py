"""The serving format: a gallery's search arrays in one versioned folder, laid out to be memory-mapped.

A serving folder holds raw little-endian arrays, one file each, and ``manifest.json``::

    manifest.json        format, version, rows, dimension, compact kind, tuned parameters, and per
                         array: file, dtype, row shape, BLAKE2b-128 of every 16 MiB block
    float32.bin          the float32 templates (n × d): the exact re-score reads only a few rows
    compact_codes.bin    int8 (n × stride) or bf16 codes; compact_scale/norm/resid/gsum.bin metadata
    ids.bin              row → identity (int64; the caller's ids, e.g. store template ids)
    codes.bin            optional 1-bit codes (n × d/8) of the binary backend
    masks.bin            optional region-block mask of each row (uint64)
    labels.bin           optional text label of each row (a gallery: the identity's name), UTF-8,
                         one after another (not a row array: its size is ``blobs.labels.bytes``)
    label_at.bin         (n × 2) int64: byte offset and length of each row's label in labels.bin

Version 2 added the labels (so that a gallery maps rows to people without reading a row of its
store) and the masks; a version-1 folder is refused (:class:`~pyfacematch.errors.FormatVersionError`)
and rebuilt from the store by its gallery. A removal overwrites the removed rows' labels with
zero bytes in place (like their rows); the space is reclaimed when the folder is written afresh.

Opening maps the files (``numpy.memmap``, read-only) instead of reading and rebuilding anything:
only the pages a search touches are read. Integrity: a file shorter than the manifest says is
refused at once (:class:`~pyfacematch.errors.GalleryFileError`, saying to rebuild from the store);
the block checksums are verified by a background pass (``verify="background"``, the default; or
``"full"`` before returning, ``"split"``: all but float32 before returning, or ``"none"``) and :meth:`ServingFolder.check` raises on any altered
block. Appends write the new rows after the committed ones, fsync, then replace the manifest
atomically: the manifest is the commit point, so a process killed during an append leaves the
folder at its last acknowledged state (bytes past the committed rows are ignored, then overwritten
by the next append; files are never truncated, since a reader may map rows past the end). Encryption is not applied here: a gallery configured for encryption at rest must
not write a serving folder until the security layer covers it (see README).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.core.compact import CompactMatrix
from pyfacematch.errors import FormatVersionError, GalleryFileError, InputError

__all__ = ["FORMAT", "VERSION", "BLOCK_BYTES", "ServingFolder", "Signer"]

#: Manifest bytes → hex MAC (e.g. HMAC-SHA256 under a gallery's secret key).
Signer = Callable[[bytes], str]

FORMAT = "pyfacematch-serving"
VERSION = 2
#: Bytes per checksummed block.
BLOCK_BYTES = 16 << 20
_COMPACT = ("codes", "scale", "norm", "resid", "gsum")
_PIECE = 1 << 20


def _private(path: str, flags: int) -> int:
    """Open a new file readable by its owner only (mode 0600)."""
    return os.open(path, flags, 0o600)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _digest(buf: memoryview | bytes) -> str:
    return hashlib.blake2b(buf, digest_size=16).hexdigest()


def _block_digests(path: Path, nbytes: int, start_block: int = 0) -> list[str]:
    # read in 1 MiB pieces: hashing a block never holds the whole 16 MiB block in memory
    out = []
    with open(path, "rb") as fh:
        fh.seek(start_block * BLOCK_BYTES)
        pos = start_block * BLOCK_BYTES
        while pos < nbytes:
            h = hashlib.blake2b(digest_size=16)
            end = min(pos + BLOCK_BYTES, nbytes)
            while pos < end:
                piece = fh.read(min(_PIECE, end - pos))
                if not piece:
                    break
                h.update(piece)
                pos += len(piece)
            else:
                out.append(h.hexdigest())
                continue
            break  # the file ended early: no digest for a partial block
    return out


class ServingFolder:
    """A serving folder opened for search (memory-mapped), verified in the background."""

    def __init__(self, path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.path = path
        self.manifest = manifest
        self.arrays = arrays
        self._bad: list[str] = []
        self._verified: set[str] = set()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    # -- facts ----------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.manifest["rows"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def params(self) -> dict[str, Any]:
        """Tuned parameters stored with the arrays (reused until the gallery changes enough)."""
        p: dict[str, Any] = self.manifest.get("params") or {}
        return p

    @property
    def ids(self) -> np.ndarray:
        return self.arrays["ids"]

    @property
    def float32(self) -> np.ndarray:
        return self.arrays["float32"]

    def compact(self) -> CompactMatrix | None:
        """The compact templates, re-scoring exactly from the mapped float32 file."""
        kind = self.manifest.get("kind")
        if not kind:
            return None
        none = {"gsum": np.zeros(0, np.int32)}
        a = {
            k: self.arrays.get("compact_" + k, none.get(k, np.zeros(0, np.float32)))
            for k in _COMPACT
        }
        return CompactMatrix.from_arrays(kind, self.dim, a, exact=self.float32)

    def search(self, probes: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact float32 top-k of the probes: compact scan, then the rows its bound keeps read from
        ``float32.bin`` with ``pread`` (never mapped, so they add no resident memory) and re-scored
        by :func:`pyfacematch.rerank` — the same answer as ``compact().topk`` (same rows, bytes)."""
        from pyfacematch import _core
        from pyfacematch.core.scoring import _check_k, _probes, rerank

        c = self.compact()
        if c is None:
            raise InputError(f"serving folder {self.path} holds no compact templates to scan")
        q, single = _probes(probes)
        if q.shape[1] != self.dim:
            raise InputError(f"probes have dimension {q.shape[1]}, the folder {self.dim}")
        kk = _check_k(k, self.n)
        lists = _core.compact_candidates(c._t(), q, kk)
        rows = np.unique(np.concatenate(lists)) if lists else np.zeros(0, np.int64)
        data = self._read_rows(rows)
        width = max(len(r) for r in lists)
        local = np.full((len(lists), width), -1, np.int64)
        for i, r in enumerate(lists):
            local[i, : len(r)] = np.searchsorted(rows, r)  # increasing, as the rows: same ties
        s, li = rerank(q, data, local, kk)
        gi = np.where(li >= 0, rows[np.maximum(li, 0)], -1)
        return (s[0], gi[0]) if single else (s, gi)

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        e = self.manifest["arrays"]["float32"]
        row_bytes = 4 * self.dim
        out = np.empty((len(rows), self.dim), np.float32)
        buf = out.reshape(-1).view(np.uint8)
        fd = os.open(self.path / e["file"], os.O_RDONLY)
        try:
            for j, r in enumerate(rows.tolist()):
                piece: Any = buf[j * row_bytes : (j + 1) * row_bytes]
                got = os.preadv(fd, [piece], r * row_bytes)
                if got != row_bytes:
                    raise GalleryFileError(
                        f"serving file {e['file']} ended early: rebuild it from the store"
                    )
        finally:
            os.close(fd)
        return out

    # -- writing --------------------------------------------------------------------------------
    @staticmethod
    def _parts(
        exact: np.ndarray,
        ids: np.ndarray,
        compact: CompactMatrix | None,
        codes: np.ndarray | None,
        masks: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(exact, np.float32)
        if x.ndim != 2:
            raise InputError(f"templates must be 2-D (rows × dimension), got {x.ndim}-D")
        n = x.shape[0]
        i = np.ascontiguousarray(ids, np.int64).reshape(-1)
        if i.shape[0] != n:
            raise InputError(f"ids must hold one id per row ({n}), got {i.shape[0]}")
        parts: dict[str, np.ndarray] = {"float32": x, "ids": i}
        if compact is not None:
            if compact.shape != x.shape:
                raise InputError(f"compact templates are {compact.shape}, float32 {x.shape}")
            for k, arr in compact.arrays().items():
                if arr.shape[0] == n:  # bf16 has no scale / resid / gsum
                    parts["compact_" + k] = np.ascontiguousarray(arr)
        if codes is not None:
            c = np.ascontiguousarray(codes, np.uint8)
            if c.ndim != 2 or c.shape[0] != n:
                raise InputError(f"codes must be (rows × bytes) with {n} rows, got {c.shape}")
            parts["codes"] = c
        if masks is not None:
            mk = np.ascontiguousarray(masks, np.uint64).reshape(-1)
            if mk.shape[0] != n:
                raise InputError(f"masks must hold one mask per row ({n}), got {mk.shape[0]}")
            parts["masks"] = mk
        return parts

    @staticmethod
    def _encode_labels(labels: list[str] | None, n: int, base: int) -> tuple[bytes, np.ndarray]:
        """Labels → (UTF-8 bytes one after another, (n × 2) int64 offset and length from
        ``base``)."""
        if labels is None or len(labels) != n:
            raise InputError(f"labels must hold one label per row ({n})")
        enc = [str(x).encode("utf-8") for x in labels]
        lens = np.fromiter(map(len, enc), np.int64, n)
        at = np.empty((n, 2), np.int64)
        at[:, 1] = lens
        at[:, 0] = base + np.cumsum(lens) - lens
        return b"".join(enc), at

    @classmethod
    def write(
        cls,
        path: str | os.PathLike[str],
        exact: np.ndarray,
        ids: np.ndarray,
        *,
        compact: CompactMatrix | None = None,
        codes: np.ndarray | None = None,
        masks: np.ndarray | None = None,
        labels: list[str] | None = None,
        params: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        signer: Signer | None = None,
    ) -> ServingFolder:
        """Write a complete folder atomically (a temporary folder renamed into place).

        ``labels`` (one str per row, e.g. the identity of each row) are stored UTF-8 encoded in
        ``labels.bin`` with each row's offset and length in ``label_at.bin``; ``masks`` (uint64
        per row) in ``masks.bin``.

        ``meta`` is stored as is in the manifest (a gallery records its store generation there);
        ``signer`` (manifest bytes → hex MAC) authenticates the manifest, and with it every block
        checksum (see :meth:`manifest_bytes`).
        """
        dest = Path(path)
        parts = cls._parts(exact, ids, compact, codes, masks)
        blob = None
        if labels is not None:
            blob, parts["label_at"] = cls._encode_labels(labels, parts["float32"].shape[0], 0)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True, mode=0o700)  # the files hold templates: owner only
        entries = {}
        for name, arr in parts.items():
            f = tmp / f"{name}.bin"
            with open(f, "wb", opener=_private) as fh:
                arr.tofile(fh) if arr.size else None
                fh.flush()
                os.fsync(fh.fileno())
            entries[name] = {
                "file": f.name,
                "dtype": arr.dtype.str,
                "row_shape": list(arr.shape[1:]),
                "blocks": _block_digests(f, arr.nbytes),
            }
        blobs = {}
        if blob is not None:
            f = tmp / "labels.bin"
            with open(f, "wb", opener=_private) as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            blobs["labels"] = {
                "file": f.name,
                "bytes": len(blob),
                "blocks": _block_digests(f, len(blob)),
            }
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "rows": int(parts["float32"].shape[0]),
            "dim": int(parts["float32"].shape[1]),
            "kind": None if compact is None else compact.kind,
            "block_bytes": BLOCK_BYTES,
            "arrays": entries,
            "blobs": blobs,
            "params": params or {},
            "meta": meta or {},
        }
        cls._write_manifest(tmp, manifest, signer)
        _fsync_dir(tmp)
        old = dest.with_name(dest.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
        shutil.rmtree(old, ignore_errors=True)
        return cls.open(dest, verify="none")

    @staticmethod
    def manifest_bytes(manifest: dict[str, Any]) -> bytes:
        """The canonical bytes a signer authenticates: the manifest without its ``auth`` field."""
        body = {k: v for k, v in manifest.items() if k != "auth"}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @staticmethod
    def _write_manifest(
        folder: Path, manifest: dict[str, Any], signer: Signer | None = None
    ) -> None:
        manifest.pop("auth", None)
        if signer is not None:
            manifest["auth"] = signer(ServingFolder.manifest_bytes(manifest))
        tmp = folder / "manifest.json.tmp"
        with open(tmp, "w", encoding="utf-8", opener=_private) as fh:
            json.dump(manifest, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / "manifest.json")
        _fsync_dir(folder)

    def append(
        self,
        exact: np.ndarray,
        ids: np.ndarray,
        *,
        compact: CompactMatrix | None = None,
        codes: np.ndarray | None = None,
        masks: np.ndarray | None = None,
        labels: list[str] | None = None,
        meta: dict[str, Any] | None = None,
        signer: Signer | None = None,
    ) -> None:
        """Append rows; when this returns they are committed (durable across a crash or SIGKILL)."""
        parts = self._parts(exact, ids, compact, codes, masks)
        first = self.n
        blob_bytes = None
        if labels is not None:
            if "labels" not in self.blobs:
                raise InputError("this serving folder holds no labels: append without labels")
            if len(labels) != parts["float32"].shape[0]:
                raise InputError(
                    f"labels must hold one label per row ({parts['float32'].shape[0]})"
                )
        if set(parts) | ({"label_at"} if labels is not None else set()) != set(
            self.manifest["arrays"]
        ):
            raise InputError(
                f"append must give the folder's arrays {sorted(self.manifest['arrays'])}, "
                f"got {sorted(parts)}"
            )
        if parts["float32"].shape[1] != self.dim:
            raise InputError(
                f"rows have dimension {parts['float32'].shape[1]}, the folder {self.dim}"
            )
        for name, arr in parts.items():
            e = self.manifest["arrays"][name]
            if list(arr.shape[1:]) != e["row_shape"] or arr.dtype.str != e["dtype"]:
                raise InputError(f"{name}: rows of {arr.dtype} {arr.shape[1:]}, folder has {e}")
        for name, arr in parts.items():
            self.write_rows(name, first, arr)
        if labels is not None:
            blob_bytes = self.write_labels(first, labels)
        self.commit(
            first + int(parts["float32"].shape[0]),
            self.blocks_from(first),
            meta,
            signer,
            blob_bytes=None if blob_bytes is None else {"labels": blob_bytes},
        )

    @property
    def blobs(self) -> dict[str, Any]:
        """Manifest entries of the arrays that are not one row per row (``labels``)."""
        b: dict[str, Any] = self.manifest.get("blobs") or {}
        return b

    def write_labels(self, first: int, labels: list[str]) -> int:
        """Write the labels of rows ``first …`` after the committed label bytes, and their
        offsets (not committed until :meth:`commit` with the returned byte count)."""
        e = self.blobs["labels"]
        base = int(e["bytes"])
        blob, at = self._encode_labels(labels, len(labels), base)
        fd = os.open(self.path / e["file"], os.O_WRONLY)
        try:
            off = 0
            while off < len(blob):
                off += os.pwrite(fd, blob[off:], base + off)
        finally:
            os.close(fd)
        self.write_rows("label_at", first, at)
        return base + len(blob)

    def read_labels(self) -> bytes:
        """The label bytes, checked against their block checksums as they are read
        (:class:`GalleryFileError` on a mismatch)."""
        e = self.blobs["labels"]
        want = int(e["bytes"])
        with open(self.path / e["file"], "rb") as fh:
            data = fh.read(want)
        if len(data) != want:
            raise GalleryFileError(
                f"serving file {e['file']} ended early: rebuild it from the store"
            )
        for b, pos in enumerate(range(0, want, BLOCK_BYTES)):
            if b >= len(e["blocks"]) or _digest(data[pos : pos + BLOCK_BYTES]) != e["blocks"][b]:
                self._bad.append(f"{e['file']} block {b}")
                self.check(wait=False)
        self._verified.add("blob:labels")
        return data

    def read_into(self, name: str, out: np.ndarray) -> None:
        """Read array ``name`` (all committed rows) into ``out`` (C-contiguous, same dtype and
        row shape, at least as many rows) with plain reads: faster than faulting in a mapping
        page by page, and nothing stays resident but ``out``."""
        e = self.manifest["arrays"][name]
        want = self.n * self._row_bytes(name)
        if out.dtype != np.dtype(e["dtype"]) or not out.flags.c_contiguous or out.nbytes < want:
            raise InputError(f"read_into({name!r}): output of the wrong dtype, layout or size")
        buf = memoryview(out.reshape(-1).view(np.uint8).data)[:want]
        with open(self.path / e["file"], "rb", buffering=0) as fh:
            got = 0
            while got < want:
                k = fh.readinto(buf[got:])
                if not k:
                    raise GalleryFileError(
                        f"serving file {e['file']} ended early: rebuild it from the store"
                    )
                got += k

    def read_verified(self, name: str) -> np.ndarray:
        """Array ``name`` (all committed rows) read into memory and checked against its block
        checksums in the same pass (each byte read once); :class:`GalleryFileError` on a
        mismatch. The array then counts as verified (the background pass skips it)."""
        e = self.manifest["arrays"][name]
        dt = np.dtype(e["dtype"])
        shape = (self.n, *[int(v) for v in e["row_shape"]])
        out = np.empty(shape, dt)
        want = self.n * self._row_bytes(name)
        buf = memoryview(out.reshape(-1).view(np.uint8).data)[:want]
        blocks = e["blocks"]
        with open(self.path / e["file"], "rb", buffering=0) as fh:
            for b, pos in enumerate(range(0, want, BLOCK_BYTES)):
                end = min(pos + BLOCK_BYTES, want)
                got = pos
                while got < end:
                    k = fh.readinto(buf[got:end])
                    if not k:
                        raise GalleryFileError(
                            f"serving file {e['file']} ended early: rebuild it from the store"
                        )
                    got += k
                if b >= len(blocks) or _digest(buf[pos:end]) != blocks[b]:
                    self._bad.append(f"{e['file']} block {b}")
                    self.check(wait=False)
        self._verified.add(name)
        return out

    def verify_in_background(self) -> None:
        """Check every array not yet verified (:meth:`read_verified`) in a background thread;
        :meth:`check` / :attr:`failures` / :attr:`verified` report its outcome."""
        names = [k for k in self.manifest["arrays"] if k not in self._verified]
        names += ["blob:" + k for k in self.blobs if "blob:" + k not in self._verified]
        self._done.clear()
        self._thread = threading.Thread(
            target=self._verify, args=(names,), name="pfm-serving-verify", daemon=True
        )
        self._thread.start()

    @property
    def verified(self) -> bool:
        """True once every block of every array passed its checksum."""
        want = set(self.manifest["arrays"]) | {"blob:" + k for k in self.blobs}
        return not self._bad and self._verified.issuperset(want)

    def _row_bytes(self, name: str) -> int:
        e = self.manifest["arrays"][name]
        return int(np.dtype(e["dtype"]).itemsize * int(np.prod(e["row_shape"] or [1])))

    def blocks_from(self, row: int) -> dict[str, set[int]]:
        """Blocks of every array from ``row`` on (those an append rewrites)."""
        out = {}
        for name in self.manifest["arrays"]:
            out[name] = {row * self._row_bytes(name) // BLOCK_BYTES}
        return out

    def write_rows(self, name: str, first: int, arr: np.ndarray) -> None:
        """Write rows ``first …`` of array ``name`` (not committed until :meth:`commit`).

        Never truncates: a reader in another process may map rows past the committed end."""
        if not arr.size:
            return
        f = self.path / self.manifest["arrays"][name]["file"]
        fd = os.open(f, os.O_WRONLY)
        try:
            buf = memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data)
            pos, off = first * self._row_bytes(name), 0
            while off < len(buf):
                off += os.pwrite(fd, buf[off:], pos + off)
        finally:
            os.close(fd)

    def move_rows(
        self,
        moves: list[tuple[int, int]],
        new_n: int,
        meta: dict[str, Any] | None = None,
        signer: Signer | None = None,
    ) -> None:
        """Follow a removal: copy row ``src`` onto row ``dst`` for each move, in order (the
        gallery's swap-with-last), zero every row from ``new_n`` to the old end (the removed
        templates are overwritten, not left behind), and commit ``new_n`` rows."""
        old_n = self.n
        if not 0 <= new_n <= old_n:
            raise InputError(f"new row count {new_n} outside 0 … {old_n}")
        touched: dict[str, set[int]] = {}
        if "label_at" in self.manifest["arrays"] and "labels" in self.blobs:
            touched["blob:labels"] = self._zero_removed_labels(moves, old_n, new_n)
        for name, e in self.manifest["arrays"].items():
            rb = self._row_bytes(name)
            blocks: set[int] = set()
            fd = os.open(self.path / e["file"], os.O_RDWR)
            try:
                for src, dst in moves:
                    row = os.pread(fd, rb, src * rb)
                    if len(row) != rb:
                        raise GalleryFileError(
                            f"serving file {e['file']} ended early: rebuild it from the store"
                        )
                    os.pwrite(fd, row, dst * rb)
                    blocks.add(dst * rb // BLOCK_BYTES)
                if old_n > new_n:
                    os.pwrite(fd, bytes((old_n - new_n) * rb), new_n * rb)
                    blocks.add(new_n * rb // BLOCK_BYTES)
            finally:
                os.close(fd)
            touched[name] = blocks
        self.commit(new_n, touched, meta, signer)

    def _zero_removed_labels(
        self, moves: list[tuple[int, int]], old_n: int, new_n: int
    ) -> set[int]:
        """Overwrite with zero bytes the labels of the rows a removal drops (before the moves
        copy ``label_at``); returns the label blocks written."""
        at = self.arrays["label_at"]
        rows = {r for mv in moves for r in mv} | set(range(new_n, old_n))
        cur = {r: (int(at[r, 0]), int(at[r, 1])) for r in rows}
        before = set(cur.values())
        for src, dst in moves:  # the gallery's swap-with-last, in order
            cur[dst] = cur[src]
        after = {v for r, v in cur.items() if r < new_n}
        blocks: set[int] = set()
        e = self.blobs["labels"]
        fd = os.open(self.path / e["file"], os.O_WRONLY)
        try:
            for start, length in sorted(before - after):
                if length > 0:
                    os.pwrite(fd, bytes(length), start)
                    blocks.update(
                        range(start // BLOCK_BYTES, (start + length - 1) // BLOCK_BYTES + 1)
                    )
        finally:
            os.close(fd)
        return blocks

    def commit(
        self,
        rows: int,
        touched: dict[str, set[int]],
        meta: dict[str, Any] | None = None,
        signer: Signer | None = None,
        blob_bytes: dict[str, int] | None = None,
    ) -> None:
        """Make ``rows`` rows the committed state: fsync, re-hash the ``touched`` blocks (and
        every block past the old end), then replace the manifest — the commit point.

        ``blob_bytes``: the new size of a blob (labels written by :meth:`write_labels`); its
        touched blocks are ``touched["blob:<name>"]``."""
        manifest = json.loads(json.dumps(self.manifest))
        for name, e in (manifest.get("blobs") or {}).items():
            f = self.path / e["file"]
            with open(f, "r+b") as fh:
                os.fsync(fh.fileno())
            total = int((blob_bytes or {}).get(name, e["bytes"]))
            nblocks = -(-total // BLOCK_BYTES)
            old = list(e["blocks"])
            redo = {b for b in touched.get("blob:" + name, set()) if b < nblocks}
            redo.update(range(max(len(old) - 1, 0), nblocks))
            blocks = (old + [""] * nblocks)[:nblocks]
            for b in sorted(redo):
                blocks[b] = _block_digests(f, min(total, (b + 1) * BLOCK_BYTES), b)[0]
            e["blocks"] = blocks
            e["bytes"] = total
        for name, e in manifest["arrays"].items():
            f = self.path / e["file"]
            with open(f, "r+b") as fh:
                os.fsync(fh.fileno())
            total = rows * self._row_bytes(name)
            nblocks = -(-total // BLOCK_BYTES)
            old = list(e["blocks"])
            redo = {b for b in touched.get(name, set()) if b < nblocks}
            redo.update(range(max(len(old) - 1, 0), nblocks))  # grown, and the old partial block
            if nblocks:
                redo.add(nblocks - 1)  # the new last block may have shrunk
            blocks = (old + [""] * nblocks)[:nblocks]
            for b in sorted(redo):
                if b < nblocks:
                    blocks[b] = _block_digests(f, min(total, (b + 1) * BLOCK_BYTES), b)[0]
            e["blocks"] = blocks
        manifest["rows"] = int(rows)
        if meta is not None:
            manifest["meta"] = meta
        self._write_manifest(self.path, manifest, signer)
        self.manifest = manifest
        self.arrays = ServingFolder.open(self.path, verify="none", load_compact=False).arrays

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(
        cls, path: str | os.PathLike[str], verify: str = "background", load_compact: bool = True
    ) -> ServingFolder:
        """Open a folder. ``verify``: ``"background"`` (default), ``"full"``, ``"split"`` or
        ``"none"``.

        The float32 templates (and ids, codes) are memory-mapped with read-ahead off
        (``MADV_RANDOM``): a search reads only the pages of the few rows it re-scores. The compact
        arrays are read into memory when ``load_compact`` (default): every search scans all of them,
        so they are resident either way, and anonymous memory (transparent huge pages) scans
        faster than a file mapping of 4 KiB pages; ``load_compact=False`` maps them too.
        """
        if verify not in ("background", "full", "none", "split"):
            raise InputError(
                f"verify must be 'background', 'full', 'split' or 'none', got {verify!r}"
            )
        folder = Path(path)
        rebuild = "rebuild it from the store (Gallery.rebuild_index(), or write it again)"
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GalleryFileError(f"{folder} is not a serving folder (no manifest.json)") from None
        except (OSError, ValueError) as exc:
            raise GalleryFileError(
                f"{folder}/manifest.json cannot be read ({exc}): {rebuild}"
            ) from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise GalleryFileError(f"{folder}/manifest.json is not a {FORMAT} manifest: {rebuild}")
        if manifest.get("version") != VERSION:
            raise FormatVersionError(
                f"{folder} is serving format version {manifest.get('version')!r}; this pyfacematch "
                f"reads version {VERSION}: {rebuild}"
            )
        n = int(manifest["rows"])
        arrays: dict[str, np.ndarray] = {}
        for name, e in manifest["arrays"].items():
            f = folder / e["file"]
            dt = np.dtype(e["dtype"])
            shape = (n, *[int(v) for v in e["row_shape"]])
            need = dt.itemsize * int(np.prod(shape))
            have = f.stat().st_size if f.exists() else -1
            if have < need:
                raise GalleryFileError(
                    f"serving file {f} is truncated or missing ({max(have, 0)} of {need} bytes): "
                    f"{rebuild}"
                )
            if not need:
                arrays[name] = np.zeros(shape, dt)
            elif load_compact and name.startswith("compact_"):
                arrays[name] = np.fromfile(f, dtype=dt, count=int(np.prod(shape))).reshape(shape)
            else:
                mm = np.memmap(f, dtype=dt, mode="r", shape=shape)
                madvise = getattr(getattr(mm, "_mmap", None), "madvise", None)
                if madvise is not None and hasattr(mmap, "MADV_RANDOM"):
                    madvise(mmap.MADV_RANDOM)
                arrays[name] = mm
        for e in (manifest.get("blobs") or {}).values():
            f = folder / e["file"]
            need = int(e["bytes"])
            have = f.stat().st_size if f.exists() else -1
            if have < need:
                raise GalleryFileError(
                    f"serving file {f} is truncated or missing ({max(have, 0)} of {need} bytes): "
                    f"{rebuild}"
                )
        out = cls(folder, manifest, arrays)
        if verify == "full":
            out._verify()
            out.check()
        elif verify in ("background", "split"):
            names = None
            if verify == "split":  # everything but float32 now (what searches scan and map to ids)
                out._verify(
                    [k for k in manifest["arrays"] if k != "float32"]
                    + ["blob:" + k for k in manifest.get("blobs") or {}],
                    done=False,
                )
                out.check(wait=False)
                names = ["float32"]
            out._thread = threading.Thread(
                target=out._verify, args=(names,), name="pfm-serving-verify", daemon=True
            )
            out._thread.start()
        else:
            out._done.set()
        return out

    def _verify(self, names: list[str] | None = None, done: bool = True) -> None:
        # Reads the files (not the mappings), so the pass does not make every page resident in
        # this process: only what searches touch is.
        try:
            for name, e in self.manifest["arrays"].items():
                if names is not None and name not in names:
                    continue
                f = self.path / e["file"]
                dt = np.dtype(e["dtype"])
                nbytes = self.n * dt.itemsize * int(np.prod(e["row_shape"] or [1]))
                got = _block_digests(f, nbytes)
                ok = True
                for b, want in enumerate(e["blocks"]):
                    if b >= len(got) or got[b] != want:
                        self._bad.append(f"{e['file']} block {b}")
                        ok = False
                if ok:
                    self._verified.add(name)
            for name, e in (self.manifest.get("blobs") or {}).items():
                key = "blob:" + name
                if key in self._verified or (names is not None and key not in names):
                    continue
                got = _block_digests(self.path / e["file"], int(e["bytes"]))
                ok = len(got) == len(e["blocks"])
                for b, want in enumerate(e["blocks"]):
                    if b >= len(got) or got[b] != want:
                        self._bad.append(f"{e['file']} block {b}")
                        ok = False
                if ok:
                    self._verified.add(key)
        except Exception as exc:  # an unreadable file (I/O error) is a failed check, not a crash
            self._bad.append(f"verification failed: {exc}")
        finally:
            if done:
                self._done.set()

    @property
    def failures(self) -> list[str]:
        """Blocks (or reads) that failed verification so far (empty while all passed)."""
        return list(self._bad)

    def wait_verified(self) -> None:
        """Block until the background pass has finished (before the files are changed)."""
        self._done.wait()

    def check(self, wait: bool = True) -> bool:
        """Raise :class:`GalleryFileError` if a block failed its checksum; True once all passed.

        With ``wait=False`` returns False while the background pass is still running.
        """
        if wait:
            self._done.wait()
        if self._bad:
            raise GalleryFileError(
                f"serving folder {self.path} was altered ({', '.join(self._bad[:3])}): rebuild it "
                "from the store (Gallery.rebuild_index(), or write it again)"
            )
        return self._done.is_set()
