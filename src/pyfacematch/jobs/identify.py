"""Bulk identification (1:N): every probe of a file or folder against a gallery, resumable.

:func:`identify_chunk` searches one chunk (the gallery's vectorised search, k best identities
and a decision each); :func:`identify_job` runs it over the whole input through
:func:`~pyfacematch.jobs.runner.run_job` (part files, manifest, ``resume``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.gallery import Gallery
from pyfacematch.gallery.thresholds import accept_top
from pyfacematch.io import Chunk, Reject, ResultColumns
from pyfacematch.jobs.common import (
    JobOutput,
    gallery_fingerprint,
    job_fingerprint,
    open_gallery,
    threshold_info,
)
from pyfacematch.jobs.encode import (
    Source,
    check_key_model,
    default_threshold,
    load_key_model,
    open_reader,
    templates_of,
)
from pyfacematch.jobs.runner import JobSpec, result_columns, run_job
from pyfacematch.keys import KeyModel

__all__ = ["identify_chunk", "identify_job", "identify_rows"]


def identify_chunk(
    g: Gallery,
    chunk: Chunk,
    *,
    k: int = 1,
    threshold: float | None = None,
    key_model: KeyModel | None = None,
    reader: Any = None,
    purpose: str | None = None,
) -> tuple[ResultColumns, list[Reject], dict[str, int]]:
    """Identify the probes of one chunk.

    Parameters
    ----------
    g : Gallery
    chunk : Chunk
        Probe templates (or landmarks, with ``key_model``); may be empty (every record rejected).
    k : int
        Identities per probe.
    threshold : float or None
        ``decision`` is ``"match"`` when score ≥ threshold; None: no decision.
    key_model : KeyModel or None
    reader : RecordReader or None
        Needed with ``key_model``: its ``on_error`` decides what a face without a key does.

    Returns
    -------
    rows : ResultColumns
        One row per probe and candidate (a rank-0 row when nothing is comparable).
    rejects : list of Reject
        Faces that made no key.
    counters : dict
        ``{"matches": n}``: probes whose best candidate was accepted.
    """
    chunk, vals, masks, extra = templates_of(chunk, key_model, reader)
    if not len(chunk):
        cols, counters = identify_rows([], np.empty((0, k), object), np.empty((0, k)), threshold)
        return cols, extra, counters
    res = g.identify_arrays(
        vals,
        k=k,
        threshold=threshold,
        masks=masks if g.blocks is not None else None,
        purpose=purpose,
    )
    cols, counters = identify_rows(chunk.ids, res.identities, res.scores, threshold, res.accepted)
    return cols, extra, counters


def identify_rows(
    probe_ids: list[str],
    identities: np.ndarray,
    scores: np.ndarray,
    threshold: float | None,
    accepted: np.ndarray | None = None,
) -> tuple[ResultColumns, dict[str, int]]:
    """A chunk's result rows and its ``{"matches": n}`` counter, from ranked candidates.

    ``accepted`` is the search's own decision per probe; None: decided here by the same rule
    (:func:`~pyfacematch.gallery.thresholds.accept_top`), as a job whose ranking was merged from
    shards does.
    """
    if accepted is None:
        accepted = accept_top(scores, threshold)
    cols = result_columns(probe_ids, identities, scores, threshold)
    return cols, {"matches": 0 if accepted is None else int(accepted.sum())}


def identify_job(
    gallery: str | os.PathLike[str],
    source: Source,
    output: JobOutput,
    *,
    k: int = 1,
    threshold: float | None = None,
    key_model: str | os.PathLike[str] | None = None,
    quiet: bool = False,
    purpose: str | None = None,
) -> dict[str, Any]:
    """Identify every probe of ``source`` against the gallery file ``gallery``.

    Parameters
    ----------
    gallery : path
        An existing gallery file.
    source : Source
        Probes: templates, landmarks (with ``key_model``) or images.
    output : JobOutput
        Result, rejects and summary files; resume / overwrite.
    k : int
        Identities per probe (≥ 1).
    threshold : float or None
        Decision threshold; None: the gallery's calibrated FPIR threshold, if any.
    key_model : path or None
    quiet : bool
        No progress output.

    Returns
    -------
    dict
        The job summary (see :func:`~pyfacematch.jobs.runner.run_job`) plus ``threshold``,
        ``k``, ``input``, ``index``, ``gallery_identities`` and ``matches``.

    Raises
    ------
    InputError
        ``k < 1``; a missing gallery; a bad record with ``on_error="stop"``; an existing output
        without ``overwrite``/``resume``; resuming a job whose input, options or gallery changed.
    """
    if isinstance(k, bool) or int(k) < 1:
        raise InputError(f"--top-k must be >= 1, got {k}")
    k = int(k)
    fmt, rej_path, sum_path = output.resolved()
    km = load_key_model(key_model)
    g = open_gallery(gallery)
    try:
        check_key_model(km, g)
        reader = open_reader(source, gallery=g, key_model=km)
        try:
            thr, src, target = default_threshold(
                reader, g.resolve_threshold(threshold, "fpir"), "fpir"
            )
            spec = JobSpec(
                "identify",
                output.path,
                fmt,
                rej_path,
                sum_path,
                job_fingerprint(
                    source,
                    reader,
                    key_model=key_model,
                    threshold=threshold_info(thr, src, target),
                    purpose=purpose or g.default_purpose,
                    gallery=gallery_fingerprint(g),
                    k=k,
                ),
                {
                    "threshold": threshold_info(thr, src, target),
                    "k": k,
                    "input": source.name,
                    "index": g.index_info(),
                    "gallery_identities": len(g),
                },
            )
            return run_job(
                spec,
                reader,
                lambda chunk: identify_chunk(
                    g, chunk, k=k, threshold=thr, key_model=km, reader=reader, purpose=purpose
                ),
                resume=output.resume,
                overwrite=output.overwrite,
                quiet=quiet,
                log_interval=output.log_interval,
            )
        finally:
            reader.close()  # also when the job is refused before its first chunk
    finally:
        g.close()
