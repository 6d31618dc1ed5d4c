"""Templates with known bytes, and a scan of every file of a gallery for them.

The durability harness (:mod:`pyfacematch.bench.durability`) enrolls templates
that are a pure function of ``(seed, serial)`` so that, after an identity is
removed, the exact float32 byte pattern the gallery stored for it can be
searched for in every file under the gallery's folder: the database, its
``-wal`` and ``-shm`` files, the index folder and any temporary file.

The scan looks for every aligned 8-byte word of each removed template at all
eight byte offsets of a file (a template may start anywhere inside a SQLite
page), so a partial copy is found as well as a whole one. Two or more words of
one template in one file count as a leak (random float32 words never repeat by
chance: 2^-64 per position).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Leak", "stored_template", "stored_templates", "scan_files", "files_under"]

#: A match of this many 8-byte words of one template in one file is a leak.
MIN_WORDS = 2


def stored_templates(seed: int, serials: Iterable[int], dim: int) -> np.ndarray:
    """The float32 templates a gallery stores for the given serial numbers.

    Each template is a seeded standard normal vector (float64) normalised the
    way :meth:`pyfacematch.Gallery.enroll` normalises its input (float64 norm
    per row, then float32), so the result is byte for byte what is stored.

    Parameters
    ----------
    seed : int
        Seed of the run.
    serials : iterable of int
        Serial number of each template (unique within a run).
    dim : int
        Template dimension.

    Returns
    -------
    numpy.ndarray
        float32, shape (len(serials), dim), unit norm.
    """
    serials = list(serials)
    if not serials:
        return np.zeros((0, int(dim)), np.float32)
    raw = np.stack([raw_template(seed, s, dim) for s in serials])
    norms = np.linalg.norm(raw, axis=1)
    return np.ascontiguousarray(raw / norms[:, None], np.float32)


def raw_template(seed: int, serial: int, dim: int) -> np.ndarray:
    """float64 (dim,) input template of ``serial`` (what the worker passes to enroll)."""
    return np.random.default_rng([int(seed), int(serial)]).standard_normal(int(dim))


def stored_template(seed: int, serial: int, dim: int) -> bytes:
    """Bytes (``4 * dim``) of the float32 template stored for ``serial``."""
    return stored_templates(seed, [serial], dim)[0].tobytes()


@dataclass(frozen=True)
class Leak:
    """Bytes of a removed template found in a file.

    Attributes
    ----------
    file : str
        Path of the file, relative to the scanned folder.
    key : str
        Which removed template (the identity id and serial, ``"p12#12"``).
    matched_bytes : int
        Bytes of the template found (8-byte words, counted once per offset).
    whole : bool
        The complete template was found in one piece.
    """

    file: str
    key: str
    matched_bytes: int
    whole: bool


def files_under(folder: str | os.PathLike[str]) -> list[Path]:
    """Every regular file under ``folder`` (recursively, symlinks not followed)."""
    out = []
    for root, _dirs, files in os.walk(folder):
        for f in files:
            p = Path(root) / f
            if p.is_file() and not p.is_symlink():
                out.append(p)
    return sorted(out)


def scan_files(
    folder: str | os.PathLike[str], patterns: Mapping[str, bytes]
) -> tuple[list[Leak], int]:
    """Search every file under ``folder`` for the given template byte patterns.

    Parameters
    ----------
    folder : path
        Folder holding the gallery (and nothing else that could hold templates).
    patterns : mapping key -> bytes
        Byte pattern of each removed template (length a multiple of 8).

    Returns
    -------
    leaks : list of Leak
        One per (file, template) with at least :data:`MIN_WORDS` matching words.
    scanned_bytes : int
        Total size of the files read.
    """
    if not patterns:
        return [], sum(p.stat().st_size for p in files_under(folder))
    keys = list(patterns)
    words: list[np.ndarray] = []
    owner: list[np.ndarray] = []
    for i, k in enumerate(keys):
        b = patterns[k]
        w = np.frombuffer(b[: len(b) // 8 * 8], "<u8")
        words.append(w)
        owner.append(np.full(w.size, i, np.int64))
    all_words = np.concatenate(words)
    all_owner = np.concatenate(owner)
    order = np.argsort(all_words, kind="stable")
    sorted_words, sorted_owner = all_words[order], all_owner[order]
    leaks: list[Leak] = []
    scanned = 0
    for path in files_under(folder):
        try:
            data = path.read_bytes()
        except OSError:  # vanished between listing and reading
            continue
        scanned += len(data)
        counts = np.zeros(len(keys), np.int64)
        for off in range(8):
            n = (len(data) - off) // 8
            if n <= 0:
                continue
            arr = np.frombuffer(data, "<u8", count=n, offset=off)
            pos = np.searchsorted(sorted_words, arr)
            pos = np.minimum(pos, sorted_words.size - 1)
            hit = sorted_words[pos] == arr
            if hit.any():
                np.add.at(counts, sorted_owner[pos[hit]], 1)
        rel = os.fspath(path.relative_to(folder))
        for i in (int(v) for v in np.flatnonzero(counts >= MIN_WORDS)):
            k = keys[int(i)]
            leaks.append(Leak(rel, k, int(counts[i]) * 8, data.find(patterns[k]) >= 0))
    return leaks, scanned
