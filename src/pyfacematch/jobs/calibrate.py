"""Threshold calibration from data: impostor scores, non-mated probes or labelled templates.

A target false-match rate (1:1, ``fmr``) is reached from impostor pairs (templates of different
ids) or from impostor scores; a target false-positive identification rate (1:N, ``fpir``) from
the best score of each non-mated probe searched against the gallery (streamed: only the top
scores are kept). The threshold is stored in the gallery.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.io import Reject
from pyfacematch.jobs.common import exit_code, open_gallery, reason_counts
from pyfacematch.jobs.encode import (
    Source,
    check_key_model,
    load_key_model,
    open_reader,
    templates_of,
)
from pyfacematch.jobs.runner import prefetch

__all__ = ["calibrate_gallery", "impostor_pairs", "read_scores"]


def read_scores(path: str | os.PathLike[str]) -> np.ndarray:
    """float64 (n,) impostor scores from ``.npy`` or text with one number per line."""
    p = os.fspath(path)
    try:
        if p.endswith(".npy"):
            a = np.load(p, allow_pickle=False)
        else:
            a = np.loadtxt(p, dtype=np.float64, ndmin=1)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read impostor scores from {p!r}: {exc}") from exc
    return np.asarray(a, np.float64).ravel()


def impostor_pairs(
    ids: list[str], t: np.ndarray, max_pairs: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of templates with different ids: all of them when few, else a seeded sample.

    Parameters
    ----------
    ids : list of str, length n
    t : float32 (n, d)
    max_pairs : int
    seed : int

    Returns
    -------
    a, b : float32 (p, d)
        ``p ≤ max_pairs`` pairs; ``ids`` of ``a[i]`` and ``b[i]`` differ.
    """
    n = len(ids)
    lab = np.unique(np.asarray(ids, dtype=object).astype(str), return_inverse=True)[1]
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, 1)
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, int(max_pairs * 1.2) + 16)
        j = rng.integers(0, n, i.size)
    keep = lab[i] != lab[j]
    i, j = i[keep][:max_pairs], j[keep][:max_pairs]
    if i.size == 0:
        raise InputError("--fmr needs templates of at least two different ids")
    return t[i], t[j]


def calibrate_gallery(
    gallery: str | os.PathLike[str],
    *,
    fmr: float | None = None,
    fpir: float | None = None,
    source: Source | None = None,
    scores: str | os.PathLike[str] | None = None,
    key_model: str | os.PathLike[str] | None = None,
    max_pairs: int = 1_000_000,
    conservative: bool = False,
) -> dict[str, Any]:
    """Calibrate and store the gallery's threshold for a target FMR or FPIR.

    Parameters
    ----------
    gallery : path
        An existing gallery file.
    fmr, fpir : float or None
        Exactly one target rate.
    source : Source or None
        ``fpir``: non-mated probes (people not enrolled); ``fmr``: labelled templates.
    scores : path or None
        Impostor scores instead of ``source`` (see :func:`read_scores`).
    key_model : path or None
    max_pairs : int
        ``fmr`` from templates: impostor pairs sampled at most.
    conservative : bool
        Use the upper confidence bound of the rate (a stricter threshold).

    Returns
    -------
    dict
        Summary: ``kind``, ``threshold``, ``target``, ``n_scores``, ``gallery_size``,
        ``rejected``, ``reject_reasons``, ``exit_code``.

    Raises
    ------
    InputError
        Not exactly one of ``source``/``scores`` or of ``fmr``/``fpir``; no usable record.
    """
    if (source is None) == (scores is None):
        raise InputError(
            "give exactly one of --input (templates), --images (folder) or --scores "
            "(impostor scores)"
        )
    if (fmr is None) == (fpir is None):
        raise InputError("give exactly one target rate: fmr or fpir")
    km = load_key_model(key_model)
    g = open_gallery(gallery)
    rejects: list[Reject] = []
    try:
        check_key_model(km, g)
        kw: dict[str, Any] = {"conservative": conservative}
        if fmr is not None:
            kw["fmr"] = fmr
        else:
            kw["fpir"] = fpir
        if scores is not None:
            rec = g.calibrate(read_scores(scores), **kw)
        elif source is not None:
            reader = open_reader(source, gallery=g, key_model=km)
            ids: list[str] = []
            vals: list[np.ndarray] = []
            top: list[np.ndarray] = []
            try:
                for chunk in prefetch(reader.chunks()):
                    chunk, v, m, extra = templates_of(chunk, km, reader)
                    rejects.extend(chunk.rejects + extra)
                    if not len(chunk):
                        continue
                    if fpir is not None:  # stream: only the top scores are kept
                        res = g.identify_arrays(v, k=1, masks=m if g.blocks is not None else None)
                        s = res.scores[:, 0] if res.scores.shape[1] else np.full(len(chunk), np.nan)
                        top.append(np.nan_to_num(s.astype(np.float64), nan=-np.inf))
                    else:
                        ids.extend(chunk.ids)
                        vals.append(np.asarray(v, np.float32))
            finally:
                reader.close()
            if fpir is not None:
                if not top:
                    raise InputError(f"{source.name}: no usable non-mated probes")
                rec = g.calibrate(np.concatenate(top), **kw)
            else:
                if not vals:
                    raise InputError(f"{source.name}: no usable templates")
                a, b = impostor_pairs(ids, np.concatenate(vals), max_pairs)
                rec = g.calibrate(pairs=(a, b), **kw)
    finally:
        g.close()
    return {
        "command": "calibrate",
        "gallery": os.fspath(gallery),
        "kind": rec.name,
        "threshold": rec.value,
        "target": rec.target,
        "n_scores": rec.n_scores,
        "gallery_size": rec.gallery_size,
        "rejected": len(rejects),
        "reject_reasons": reason_counts(rejects),
        "exit_code": exit_code(len(rejects)),
    }
