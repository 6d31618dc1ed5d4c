"""Bulk enrollment: records (templates, landmarks or face images) into a gallery, a chunk at a time.

Each chunk is one transaction (:meth:`Gallery.enroll_many`). The duplicate rule: with
``on_duplicate="refuse"`` a record whose id the gallery held *before this job* is rejected (ids
repeated within the input give an identity several templates); with ``"append"`` it adds a
template. A gallery that does not exist is created from the first usable chunk (dimension from
the data, region blocks from the key model or ``blocks``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from typing import Any

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.gallery import Gallery
from pyfacematch.io import Chunk, Reject, write_rejects
from pyfacematch.jobs.common import exit_code, open_gallery, reason_counts
from pyfacematch.jobs.encode import (
    Source,
    check_key_model,
    load_key_model,
    open_reader,
    reject,
    templates_of,
)
from pyfacematch.jobs.runner import Progress, prefetch

__all__ = ["DUPLICATE_RULES", "enroll_records", "refuse_duplicates"]

DUPLICATE_RULES = ("refuse", "append")


def refuse_duplicates(
    chunk: Chunk, g: Gallery, enrolled_now: Collection[str]
) -> tuple[np.ndarray, list[Reject]]:
    """The records of a chunk whose id the gallery held before this job.

    Parameters
    ----------
    chunk : Chunk
    g : Gallery
    enrolled_now : collection of str
        Ids this job enrolled so far (more templates of them are welcome).

    Returns
    -------
    keep : bool (n,)
        False for the duplicates.
    rejects : list of Reject
        One per duplicate, reason ``"duplicate id: already enrolled"``.
    """
    keep = np.ones(len(chunk), bool)
    rejects = []
    for i, ident in enumerate(chunk.ids):
        if ident not in enrolled_now and ident in g:
            keep[i] = False
            rejects.append(reject(chunk, i, "duplicate id: already enrolled"))
    return keep, rejects


def enroll_records(
    gallery: str | os.PathLike[str],
    source: Source,
    *,
    key_model: str | os.PathLike[str] | None = None,
    backend: str | None = None,
    blocks: np.ndarray | None = None,
    on_duplicate: str = "refuse",
    rejects: str | None = None,
    quiet: bool = False,
    purpose: str | None = None,
    encrypt: bool | None = None,
    serving: bool | None = None,
) -> dict[str, Any]:
    """Enroll every record of ``source`` into the gallery file ``gallery`` (created if missing).

    Parameters
    ----------
    gallery : path
        Gallery file.
    source : Source
        Templates, landmarks (with ``key_model``) or a folder ``<identity>/<image>``.
    key_model : path or None
        Key model (``KeyModel.save``) turning landmarks into keys.
    backend : str or None
        Search backend of a new gallery (None: the default).
    blocks : int array or None
        Region-block offsets ``0, a, b, …, d`` of a new gallery of masked templates.
    on_duplicate : {"refuse", "append"}
        An id the gallery already held: reject the record, or add a template.
    rejects : str or None
        Rejects file, written when there are rejects (default ``<gallery>.enroll-rejects.csv``).
    quiet : bool
        No progress output.
    purpose : str or None
        Consent purpose recorded with every identity enrolled (source: the
        input's name); a new gallery takes it as its default purpose. None:
        the gallery's default purpose, if any.
    encrypt : bool or None
        Create a new gallery encrypted at rest (see :class:`Gallery`).
    serving : bool or None
        Keep a serving folder (``Gallery(serving=True)``): each chunk is appended to it, so the
        float32 templates stay on disk and memory grows by the compact copy only.

    Returns
    -------
    dict
        Summary: ``records``, ``templates_enrolled``, ``identities_enrolled``,
        ``gallery_identities``, ``gallery_templates``, ``rejected``, ``reject_reasons``,
        ``rejects_file``, ``seconds``, ``records_per_second``, ``backend``, ``exit_code``.

    Raises
    ------
    InputError
        A bad record or a duplicate with ``on_error="stop"`` (templates of earlier chunks stay
        enrolled, and the message says how many); a key model that does not fit the gallery.
    """
    if on_duplicate not in DUPLICATE_RULES:
        raise InputError(f"on_duplicate must be 'refuse' or 'append', got {on_duplicate!r}")
    km = load_key_model(key_model)
    new_blocks = km.blocks if km is not None else blocks  # of a gallery created here
    exists = os.path.exists(gallery)
    g = (
        open_gallery(gallery, create=True, backend=backend, encrypt=encrypt, serving=serving)
        if exists
        else None
    )
    try:
        check_key_model(km, g)
        reader = open_reader(source, gallery=g, key_model=km, role="enroll", blocks=blocks)
        rejected: list[Reject] = []
        enrolled_now: set[str] = set()
        n_records = n_templates = 0
        t0 = time.monotonic()
        prog = Progress(reader.count_records(), "enroll", quiet=quiet, unit="record")
        try:
            for chunk in prefetch(reader.chunks()):
                chunk, vals, masks, extra = templates_of(chunk, km, reader)
                n_records += chunk.count
                rejected.extend(chunk.rejects + extra)
                if len(chunk):
                    if g is None:
                        g = open_gallery(
                            gallery,
                            create=True,
                            dim=int(vals.shape[1]),
                            blocks=new_blocks,
                            backend=backend,
                            encrypt=encrypt,
                            purpose=purpose,
                            serving=serving,
                        )
                    keep = np.ones(len(chunk), bool)
                    if on_duplicate == "refuse":
                        keep, dup = refuse_duplicates(chunk, g, enrolled_now)
                        if dup and reader.on_error == "stop":
                            raise reader.fail(dup[0])
                        rejected.extend(dup)
                    idx = np.flatnonzero(keep)
                    if idx.size:
                        ids = [chunk.ids[i] for i in idx]
                        mk = None if masks is None or g.blocks is None else masks[idx]
                        g.enroll_many(
                            ids,
                            vals[idx],
                            mk,
                            on_duplicate="append",
                            purpose=purpose,
                            consent_source=f"enroll:{source.name}"[:200],
                        )
                        enrolled_now.update(ids)
                        n_templates += int(idx.size)
                prog.update(chunk.count)
        except InputError as exc:
            if n_templates:
                raise InputError(
                    f"{exc} ({n_templates:,} templates enrolled before the stop are kept: each "
                    "chunk is one transaction)"
                ) from exc
            raise
        finally:
            prog.close()
            reader.close()
        secs = time.monotonic() - t0
        rej_path = rejects or f"{os.fspath(gallery)}.enroll-rejects.csv"
        if rejected:
            write_rejects(rej_path, sorted(rejected, key=lambda r: r.row))
        return {
            "command": "enroll",
            "gallery": os.fspath(gallery),
            "records": n_records,
            "templates_enrolled": n_templates,
            "identities_enrolled": len(enrolled_now),
            "gallery_identities": 0 if g is None else len(g),
            "gallery_templates": 0 if g is None else g.n_templates,
            "rejected": len(rejected),
            "reject_reasons": reason_counts(rejected),
            "rejects_file": rej_path if rejected else None,
            "seconds": round(secs, 3),
            "records_per_second": round(n_records / secs, 1) if secs > 0 else None,
            "backend": None if g is None else g.index_info().get("backend"),
            "exit_code": exit_code(len(rejected)),
        }
    finally:
        if g is not None:
            g.close()
