"""What every job shares: opening a gallery, its state fingerprint, output paths, reject counts.

A job either finishes with a summary (a JSON-ready ``dict`` whose ``exit_code`` is 0, or 1 when
records were rejected) or raises a typed :class:`~pyfacematch.errors.PyFaceMatchError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyfacematch.errors import InputError
from pyfacematch.gallery import Gallery
from pyfacematch.gallery import atomic as _fileio
from pyfacematch.io import Reject, detect_format
from pyfacematch.jobs.encode import input_fingerprint
from pyfacematch.jobs.runner import file_fingerprint

__all__ = [
    "JobOutput",
    "exit_code",
    "gallery_fingerprint",
    "job_fingerprint",
    "open_gallery",
    "reason_counts",
    "threshold_info",
    "write_summary",
]


def open_gallery(path: str | os.PathLike[str], *, create: bool = False, **kw: Any) -> Gallery:
    """Open the gallery file ``path``.

    Parameters
    ----------
    path : path
        Gallery file (SQLite).
    create : bool
        Create it when missing; otherwise a missing file is an :class:`InputError` that says how
        to create one.
    **kw
        Passed to :meth:`Gallery.open` (``dim``, ``blocks``, ``backend`` …).
    """
    p = os.fspath(path)
    if not create and not os.path.exists(p):
        raise InputError(
            f"gallery {p!r} does not exist: create it with `pyfacematch enroll -g {p} -i …`"
        )
    return Gallery.open(p, **kw)


def gallery_fingerprint(g: Gallery) -> dict[str, Any]:
    """The state of a gallery that decides a job's answers (checked when a job is resumed).

    Path, identity and template counts, dimension, backend, the store's generation (bumped by every
    committed enroll or removal) and the tuned search depth.
    """
    info = g.index_info()
    fp: dict[str, Any] = {
        "gallery": os.path.abspath(os.fspath(g.path)) if g.path is not None else None,
        "identities": len(g),
        "templates": g.n_templates,
        "dim": g.dim,
        "backend": info.get("backend"),
    }
    # Gallery has no public generation yet: read the store's counter when there is one.
    store = getattr(g, "_store", None)
    if store is not None and hasattr(store, "generation"):
        fp["generation"] = int(store.generation)
    for key in ("depth", "shortlist", "nprobe", "ef_search"):
        if key in info:
            fp[f"index_{key}"] = info[key]
    return fp


def job_fingerprint(
    source: Any,
    reader: Any,
    *,
    key_model: str | os.PathLike[str] | None,
    threshold: dict[str, Any],
    purpose: str | None,
    gallery: dict[str, Any],
    **options: Any,
) -> dict[str, Any]:
    """The fingerprint an identify / verify job records and checks on ``--resume``.

    The one place that lists what decides a job's answers, so a job started in one process and
    resumed on a Dask cluster (or the other way round) is recognised as the same job.

    Parameters
    ----------
    source : Source
        The job's input (its file's size and time, or its image list and embedder).
    reader : RecordReader
        The reader opened on ``source`` (its format).
    key_model : path or None
        The key model file given on the command line.
    threshold : dict
        :func:`threshold_info` of the decision threshold.
    purpose : str or None
        The purpose the searches filter consent on (the gallery's default when none was given).
    gallery : dict
        :func:`gallery_fingerprint` of a gallery file, or a shard manifest's equivalent.
    **options
        What else the job's answers depend on (``k=``, ``claim=``).
    """
    return {
        "input": input_fingerprint(source, reader),
        "input_format": reader.fmt,
        "id_field": source.id_field,
        "key_model": None if key_model is None else file_fingerprint(os.fspath(key_model)),
        **options,
        "threshold": threshold,
        "purpose": purpose,
        **gallery,
    }


def threshold_info(thr: float | None, source: str, target: float | None) -> dict[str, Any]:
    """``{"value", "source", "target"}`` of the decision threshold a job used."""
    return {"value": thr, "source": source, "target": target}


def reason_counts(rejects: Sequence[Reject]) -> dict[str, int]:
    """Rejects per reason kind, sorted by kind."""
    out: dict[str, int] = {}
    for r in rejects:
        out[r.kind] = out.get(r.kind, 0) + 1
    return dict(sorted(out.items()))


def exit_code(rejected: int) -> int:
    """A finished job's exit code: 0, or 1 when some records were rejected."""
    return 1 if rejected else 0


def write_summary(path: str | os.PathLike[str] | None, summary: dict[str, Any]) -> None:
    """Write a summary as indented JSON, atomically (nothing when ``path`` is None)."""
    if path:
        _fileio.atomic_write(path, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())


@dataclass(frozen=True)
class JobOutput:
    """Where a resumable identify / verify job writes, and how it starts.

    Attributes
    ----------
    path : str
        Result file (``.csv``, ``.jsonl``, ``.parquet``).
    format : str or None
        Result format; None: from the ending of ``path``.
    rejects : str or None
        Rejects file; None: ``<path>.rejects.csv``.
    summary : str or None
        JSON summary; None: ``<path>.summary.json``.
    resume : bool
        Continue an unfinished job after its last committed chunk.
    overwrite : bool
        Replace an existing output or unfinished job.
    log_interval : float
        Seconds between progress lines when not on a terminal.
    """

    path: str
    format: str | None = None
    rejects: str | None = None
    summary: str | None = None
    resume: bool = False
    overwrite: bool = False
    log_interval: float = 10.0

    def resolved(self) -> tuple[str, str, str]:
        """(result format, rejects path, summary path) with the defaults filled in."""
        fmt = detect_format(self.path, self.format, output=True)
        return (
            fmt,
            self.rejects or f"{self.path}.rejects.csv",
            self.summary or f"{self.path}.summary.json",
        )
