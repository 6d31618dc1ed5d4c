"""Inspect a SQLite write-ahead log before SQLite recovers it.

After a crash, the next connection replays the ``-wal`` file into the
database view: frame by frame, while each frame's cumulative checksum is right,
and stops at the first frame whose checksum is wrong. A torn last write looks
like that and is harmless (it was never acknowledged). But a frame damaged in
the *middle* of the log (a bad sector, a stray write) looks the same to SQLite,
which then silently drops that commit **and every later acknowledged commit**
— an enrollment, or worse an opt-out, is undone without any error, and
``PRAGMA quick_check`` / ``integrity_check`` see a perfectly consistent older
database.

:func:`scan_wal` reads the log itself, before SQLite touches it, and counts the
commits SQLite would drop: frames after the first bad one that still carry the
log's salts and verify against their predecessor's *stored* checksum (each
frame's checksum is seeded with the previous frame's, so a later frame can be
checked on its own). See https://www.sqlite.org/fileformat2.html#walformat.

What cannot be detected here
----------------------------
- A damaged frame *after the last commit* (torn tail): nothing acknowledged is
  lost, and it is indistinguishable from an interrupted write.
- Damage to the WAL header's salts or page size: the frames cannot be matched
  to the log any more (reported as ``header_damaged``; SQLite ignores the
  whole log then, so every commit it held since the last checkpoint is lost).
- Frames that were fully overwritten with a *valid* older log's frames, or a
  log deleted or truncated by hand: there is nothing left to compare with.
- Damage inside the database file itself is SQLite's job
  (``PRAGMA integrity_check``), and rows that are consistent but wrong
  (crafted) need authentication (keyed checksums), not checksums.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pyfacematch.errors import GalleryFileError

__all__ = ["WalReport", "check_left_wal", "scan_wal"]

log = logging.getLogger("pyfacematch.gallery")

_MAGIC_LE = 0x377F0682  # checksums over little-endian words
_MAGIC_BE = 0x377F0683  # checksums over big-endian words
_HEADER = 32
_FRAME_HEADER = 24
_M32 = np.uint64(0xFFFFFFFF)


@dataclass(frozen=True)
class WalReport:
    """What a write-ahead log holds and what SQLite would keep of it.

    Attributes
    ----------
    frames : int
        Whole frames in the file.
    valid_frames : int
        Frames SQLite will replay (up to the first bad checksum or salt).
    valid_commits : int
        Commits among them.
    lost_commits : int
        Commits after the first bad frame that verify on their own: SQLite
        would silently drop them.
    header_damaged : bool
        The header fails its checksum (or magic, version, page size).
    """

    frames: int
    valid_frames: int
    valid_commits: int
    lost_commits: int
    header_damaged: bool


@lru_cache(maxsize=4)
def _powers(n: int) -> np.ndarray:
    """``P[k] = M^(n-1-k)`` for k < n and ``P[n] = M^n``, with M = [[1, 1], [1, 2]] mod 2**32.

    One checksum step over the words (a, b) is ``s <- M s + (a, a + b)``, so n
    steps are ``M^n s0 + sum_k M^(n-1-k) v_k``: a dot product, vectorised.
    """
    m = np.array([[1, 1], [1, 2]], np.uint64)
    pw = np.empty((n + 1, 2, 2), np.uint64)
    pw[0] = np.eye(2, dtype=np.uint64)
    for e in range(1, n + 1):
        pw[e] = (m @ pw[e - 1]) & _M32
    out = np.empty_like(pw)
    out[:n] = pw[n - 1 :: -1]
    out[n] = pw[n]
    return out


def _checksums(seeds: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Checksum of F frames at once.

    Parameters
    ----------
    seeds : uint64 (F, 2)
        Checksum state before each frame.
    words : uint64 (F, 2n)
        The 32-bit words checksummed for each frame (already in checksum byte order).

    Returns
    -------
    uint64 (F, 2)
    """
    n = words.shape[1] // 2
    p = _powers(n)
    a = words[:, 0::2]
    v = np.stack([a, (a + words[:, 1::2]) & _M32], axis=2)  # (F, n, 2)
    body = np.einsum("kij,fkj->fi", p[:n], v)  # wraps mod 2**64: exact mod 2**32
    head = np.einsum("ij,fj->fi", p[n], seeds)
    return (body + head) & _M32


def _words(data: bytes, big: bool) -> np.ndarray:
    return np.frombuffer(data, ">u4" if big else "<u4").astype(np.uint64)


def scan_wal(path: str | os.PathLike[str], chunk_frames: int = 256) -> WalReport | None:
    """Read a ``-wal`` file and report what SQLite's recovery would keep and drop.

    The file is only read, never modified; it is scanned again (up to three
    times) when its header changed meanwhile (a live writer reset the log).

    Parameters
    ----------
    path : str or os.PathLike
        The ``<database>-wal`` file.
    chunk_frames : int
        Frames checked per vectorised batch (bounds memory to about
        ``chunk_frames × page size × 24`` bytes).

    Returns
    -------
    WalReport or None
        None when the file is missing or shorter than a header (nothing to recover).
    """
    for _ in range(3):
        before = _header(path)
        rep = _scan_once(path, chunk_frames)
        if _header(path) == before:
            return rep
    return rep


def _header(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(_HEADER)
    except OSError:
        return b""


def _scan_once(path: str | os.PathLike[str], chunk_frames: int) -> WalReport | None:
    """One pass of :func:`scan_wal`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``<database>-wal`` file. It is only read (never modified).
    chunk_frames : int
        Frames checked per vectorised batch (bounds memory to about
        ``chunk_frames × page size × 24`` bytes).

    Returns
    -------
    WalReport or None
        None when the file is missing or shorter than a header (nothing to recover).
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return None
    with f:
        hdr = f.read(_HEADER)
        if len(hdr) < _HEADER:
            return None
        magic, version, page, _seq, salt1, salt2, c1, c2 = struct.unpack(">8I", hdr)
        big = magic == _MAGIC_BE
        page_ok = 512 <= page <= 65536 and page & (page - 1) == 0
        damaged = magic not in (_MAGIC_LE, _MAGIC_BE) or version != 3007000 or not page_ok
        if not damaged:
            got = _checksums(np.zeros((1, 2), np.uint64), _words(hdr[:24], big)[None, :])[0]
            damaged = (int(got[0]), int(got[1])) != (c1, c2)
        if not page_ok:  # frames cannot even be delimited
            return WalReport(0, 0, 0, 0, True)
        fsize = _FRAME_HEADER + page
        prev = np.array([c1, c2], np.uint64)
        frames = valid = commits = lost = 0
        broken = damaged  # SQLite replays nothing from a log with a bad header
        while True:
            buf = f.read(fsize * chunk_frames)
            nf = len(buf) // fsize
            if nf == 0:
                break
            raw = np.frombuffer(buf[: nf * fsize], np.uint8).reshape(nf, fsize)
            fh = raw[:, :_FRAME_HEADER].copy().view(">u4").reshape(nf, 6).astype(np.uint64)
            body = np.concatenate([raw[:, :8], raw[:, _FRAME_HEADER:]], axis=1)
            words = np.ascontiguousarray(body).view(">u4" if big else "<u4").astype(np.uint64)
            seeds = np.vstack([prev[None, :], fh[:-1, 4:6]])
            sums = _checksums(seeds, words)
            ok = (
                (fh[:, 2] == salt1)
                & (fh[:, 3] == salt2)
                & (sums[:, 0] == fh[:, 4])
                & (sums[:, 1] == fh[:, 5])
            )
            is_commit = fh[:, 1] != 0
            for j in range(nf):
                if not broken and ok[j]:
                    valid += 1
                    commits += int(is_commit[j])
                else:
                    broken = True
                    lost += int(ok[j] and is_commit[j])
            frames += nf
            prev = fh[-1, 4:6].copy()
            if nf < chunk_frames:
                break
    return WalReport(frames, valid, commits, lost, damaged)


def check_left_wal(db: str | os.PathLike[str], *, refuse_loss: bool = True) -> bool:
    """Check the ``-wal`` file of database ``db`` before SQLite opens (and recovers) it.

    Parameters
    ----------
    db : str or os.PathLike
        The database file; its log is ``<db>-wal``.
    refuse_loss : bool
        Raise when SQLite would silently drop committed transactions behind a
        damaged frame (False: only report whether a log was left).

    Returns
    -------
    bool
        True when a non-empty log was left (a crash, or another process has
        the database open): the caller should run a full integrity check.

    Raises
    ------
    GalleryFileError
        The log holds commits after a damaged frame (nothing was changed).
    """
    p = Path(db)
    wal = p.with_name(p.name + "-wal")
    try:
        left = wal.stat().st_size > 0
    except OSError:
        return False
    if not left or not refuse_loss:
        return left
    rep = scan_wal(wal)
    if rep is not None and rep.lost_commits:
        raise GalleryFileError(
            f"the write-ahead log {os.fspath(wal)!r} of this gallery is damaged: "
            f"{rep.lost_commits} committed transaction(s) lie after a corrupted frame "
            f"(frame {rep.valid_frames + 1} of {rep.frames}) and SQLite would silently drop "
            "them (an enrollment or removal would be undone). Nothing was changed. Restore "
            "the gallery from a backup, or open it with integrity_check=False to accept the "
            "loss and then repeat any recent enroll/remove"
        )
    if rep is not None and rep.header_damaged and rep.frames:
        log.warning(
            "gallery %s: the header of its write-ahead log is damaged, SQLite will ignore "
            "its %d frame(s); recent commits may be lost",
            os.fspath(p),
            rep.frames,
        )
    return left
