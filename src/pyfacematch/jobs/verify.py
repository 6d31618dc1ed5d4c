"""Bulk verification (1:1): each probe against the identity it claims, resumable.

The claim comes from a field of each record (``claim``) or is one identity for all. An unknown or
missing claim is a reject (or stops the job with ``on_error="stop"``). :func:`verify_chunk`
verifies one chunk; :func:`verify_job` runs it over the whole input through
:func:`~pyfacematch.jobs.runner.run_job`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pyfacematch.errors import InputError, NoConsentError
from pyfacematch.gallery import Gallery
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
    reject,
    templates_of,
)
from pyfacematch.jobs.runner import JobSpec, run_job
from pyfacematch.keys import KeyModel

__all__ = ["verify_chunk", "verify_job"]


def verify_chunk(
    g: Gallery,
    chunk: Chunk,
    reader: Any,
    *,
    identity: str | None = None,
    claim_field: str = "claim",
    threshold: float | None = None,
    key_model: KeyModel | None = None,
    purpose: str | None = None,
) -> tuple[ResultColumns, list[Reject], dict[str, int]]:
    """Verify the probes of one chunk against their claimed identities.

    Parameters
    ----------
    g : Gallery
    chunk : Chunk
        Probes; ``chunk.fields[claim_field]`` holds the claims unless ``identity`` is given.
    reader : RecordReader
        Its ``on_error`` decides whether an unknown claim stops the job or is a reject.
    identity : str or None
        One claimed identity for every probe.
    claim_field : str
    threshold : float or None
        ``decision`` is ``"match"`` when score ≥ threshold; None: no decision.
    key_model : KeyModel or None

    Returns
    -------
    rows : ResultColumns
        ``probe_id, rank (1), identity (the claim), score, decision`` per verified probe.
    rejects : list of Reject
        Missing or unknown claims, faces that made no key.
    counters : dict
        ``{"matches": n}``.
    """
    chunk, vals, masks, extra = templates_of(chunk, key_model, reader)
    pid: list[str] = []
    ident: list[str | None] = []
    scores: list[float] = []
    dec: list[str | None] = []
    matches = 0
    for i in range(len(chunk)):
        claim = identity or chunk.fields[claim_field][i]
        if claim is None or claim not in g:
            why = (
                f"missing claim: no {claim_field!r} value"
                if claim is None
                else "unknown identity: the claimed identity is not enrolled"
            )
            rej = reject(chunk, i, why)
            if reader.on_error == "stop":
                raise reader.fail(rej)
            extra.append(rej)
            continue
        mk = None if g.blocks is None or masks is None else int(masks[i])
        try:
            r = g.verify(claim, vals[i], threshold=threshold, mask=mk, purpose=purpose)
        except NoConsentError:
            rej = reject(
                chunk, i, "no consent: the claimed identity has no current consent for this purpose"
            )
            if reader.on_error == "stop":
                raise reader.fail(rej) from None
            extra.append(rej)
            continue
        pid.append(chunk.ids[i])
        ident.append(claim)
        scores.append(r.score)
        acc = r.decision.accepted
        dec.append(None if acc is None else ("match" if acc else "no-match"))
        matches += bool(acc)
    cols = ResultColumns(
        pid, np.ones(len(pid), np.int32), ident, np.asarray(scores, np.float32), dec
    )
    return cols, extra, {"matches": matches}


def verify_job(
    gallery: str | os.PathLike[str],
    source: Source,
    output: JobOutput,
    *,
    identity: str | None = None,
    claim_field: str = "claim",
    threshold: float | None = None,
    key_model: str | os.PathLike[str] | None = None,
    quiet: bool = False,
    purpose: str | None = None,
) -> dict[str, Any]:
    """Verify every probe of ``source`` against its claimed identity in the gallery ``gallery``.

    Parameters
    ----------
    gallery : path
        An existing gallery file.
    source : Source
    output : JobOutput
    identity : str or None
        Verify every probe against this identity (else the ``claim_field`` of each record).
    claim_field : str
    threshold : float or None
        Decision threshold; None: the gallery's calibrated FMR threshold, if any.
    key_model : path or None
    quiet : bool

    Returns
    -------
    dict
        The job summary plus ``threshold``, ``input`` and ``matches``.

    Raises
    ------
    InputError
        ``identity`` not enrolled; a bad record or claim with ``on_error="stop"``; see
        :func:`~pyfacematch.jobs.runner.run_job`.
    """
    fmt, rej_path, sum_path = output.resolved()
    km = load_key_model(key_model)
    g = open_gallery(gallery)
    try:
        check_key_model(km, g)
        fields = () if identity else (claim_field,)
        reader = open_reader(source, gallery=g, key_model=km, fields=fields)
        try:
            thr, src, target = default_threshold(
                reader, g.resolve_threshold(threshold, "fmr"), "fmr"
            )
            if identity is not None and identity not in g:
                raise InputError(f"identity {identity!r} is not enrolled in {os.fspath(gallery)}")
            spec = JobSpec(
                "verify",
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
                    claim=identity or f"field:{claim_field}",
                ),
                {"threshold": threshold_info(thr, src, target), "input": source.name},
            )
            return run_job(
                spec,
                reader,
                lambda chunk: verify_chunk(
                    g,
                    chunk,
                    reader,
                    identity=identity,
                    claim_field=claim_field,
                    threshold=thr,
                    key_model=km,
                    purpose=purpose,
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
