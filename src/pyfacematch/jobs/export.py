"""A gallery described (:func:`gallery_info`) or written out (:func:`export_templates`)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.gallery import Gallery
from pyfacematch.io import detect_format, write_table
from pyfacematch.jobs.common import open_gallery

__all__ = ["EXPORT_FORMATS", "export_templates", "gallery_info"]

EXPORT_FORMATS = ("npz", "parquet", "csv", "jsonl")


def gallery_info(gallery: str | os.PathLike[str]) -> dict[str, Any]:
    """Size, dimension, region blocks, search index and stored thresholds of a gallery file."""
    g = open_gallery(gallery)
    try:
        th: dict[str, Any] = {}
        for kind in ("fmr", "fpir"):
            rec = g.threshold(kind)
            th[kind] = (
                None
                if rec is None
                else {
                    "value": rec.value,
                    "target": rec.target,
                    "n_scores": rec.n_scores,
                    "gallery_size": rec.gallery_size,
                }
            )
        return {
            "gallery": os.fspath(gallery),
            "identities": len(g),
            "templates": g.n_templates,
            "dim": g.dim,
            "blocks": None if g.blocks is None else [int(x) for x in g.blocks],
            "index": g.index_info(),
            "thresholds": th,
        }
    finally:
        g.close()


def _template_masks(g: Gallery, identities: list[str]) -> np.ndarray | None:
    """uint64 masks of every template, in the order of ``templates(i) for i in identities``."""
    if g.blocks is None:
        return None
    if not identities:
        return np.zeros(0, np.uint64)
    parts = [g.template_masks(i) for i in identities]
    return np.concatenate([m for m in parts if m is not None])


def export_templates(
    gallery: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    output_format: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write every enrolled template (id, template, mask) to a file enroll can read back.

    Parameters
    ----------
    gallery : path
        An existing gallery file.
    output : path
        ``.npz``, ``.parquet``, ``.csv`` or ``.jsonl``.
    output_format : str or None
        None: from the ending of ``output``.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    dict
        ``{"command", "output", "templates", "exit_code"}``.
    """
    out = os.fspath(output)
    fmt = output_format or detect_format(out, None)
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"export writes npz, parquet, csv or jsonl, not {fmt}")
    if os.path.exists(out) and not overwrite:
        raise InputError(f"output {out} exists: pass --overwrite to replace it")
    g = open_gallery(gallery)
    try:
        names = g.identities()
        ids: list[str] = []
        rows: list[np.ndarray] = []
        for ident in names:
            t = g.templates(ident)
            ids.extend([ident] * len(t))
            rows.append(t)
        vals = np.concatenate(rows) if rows else np.zeros((0, g.dim), np.float32)
        write_table(out, fmt, ids, vals, masks=_template_masks(g, names))
    finally:
        g.close()
    return {"command": "export", "output": out, "templates": len(ids), "exit_code": 0}
