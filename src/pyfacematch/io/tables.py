"""Tables of records in an input format (``export``, the demo, tests): what the readers read back.

The files are owner-only (mode ``0600``) and written atomically. Unlike result and rejects tables,
a CSV export is an *input* file and holds ids verbatim, so :class:`~pyfacematch.io.RecordReader`
reads back exactly what was written; do not open an export of untrusted ids in a spreadsheet.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.io.files import write_file_atomic
from pyfacematch.io.formats import INPUT_FORMATS

__all__ = ["write_table"]


def write_table(
    path: str | os.PathLike[str],
    fmt: str,
    ids: Sequence[str],
    values: np.ndarray,
    *,
    value_name: str = "template",
    masks: np.ndarray | None = None,
    extra: dict[str, Sequence[Any]] | None = None,
) -> None:
    """Write records (id, values, optional mask) in an input format, atomically and owner-only.

    The file can be read back by :class:`RecordReader` (used by ``export``
    and by the demo and tests to make inputs).

    Parameters
    ----------
    path : path
    fmt : {"npy", "npz", "parquet", "csv", "jsonl"}
    ids : sequence of str, length n
    values : float array (n, d) (templates) or (n, P, D) (landmarks)
    value_name : str
        ``"template"`` or ``"landmarks"``.
    masks : uint64 (n,) or None
    extra : mapping of column name to n values, or None
    """
    v = np.asarray(values)
    n = v.shape[0]
    extra = dict(extra or {})
    p = Path(path)

    def write(fh: BinaryIO) -> None:
        if fmt == "npy":
            np.save(fh, v)
        elif fmt == "npz":
            arrs: dict[str, Any] = {
                "ids": np.asarray(list(ids), dtype=str),
                ("templates" if value_name == "template" else "landmarks"): v,
            }
            if masks is not None:
                arrs["masks"] = np.asarray(masks, np.uint64)
            for k, col in extra.items():
                arrs[k] = np.asarray(col)
            np.savez(fh, **arrs)
        elif fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            flat = v.reshape(n, -1)
            cols: dict[str, Any] = {
                "id": pa.array(list(ids), pa.string()),
                value_name: pa.FixedSizeListArray.from_arrays(
                    pa.array(flat.ravel()), flat.shape[1]
                ),
            }
            if masks is not None:
                cols["mask"] = pa.array(np.asarray(masks, np.uint64))
            for k, col in extra.items():
                cols[k] = pa.array(list(col))
            pq.write_table(pa.table(cols), fh)
        elif fmt == "csv":
            flat = v.reshape(n, -1)
            txt = io.StringIO()
            w = csv.writer(txt, lineterminator="\n")
            names = (
                [f"f{j}" for j in range(flat.shape[1])]
                if value_name == "template"
                else [f"{'xyz'[j % v.shape[-1]]}{j // v.shape[-1]}" for j in range(flat.shape[1])]
            )
            head = ["id", *names]
            if masks is not None:
                head.append("mask")
            head += list(extra)
            w.writerow(head)
            for i in range(n):
                row = [ids[i], *(repr(float(x)) for x in flat[i].tolist())]
                if masks is not None:
                    row.append(str(int(masks[i])))
                row += [str(col[i]) for col in extra.values()]
                w.writerow(row)
            fh.write(txt.getvalue().encode("utf-8"))
        elif fmt == "jsonl":
            for i in range(n):
                rec: dict[str, Any] = {"id": ids[i], value_name: v[i].tolist()}
                if masks is not None:
                    rec["mask"] = int(masks[i])
                for k, col in extra.items():
                    rec[k] = col[i]
                fh.write((json.dumps(rec) + "\n").encode("utf-8"))
        else:
            raise InputError(f"unknown format {fmt!r}: expected one of {', '.join(INPUT_FORMATS)}")

    write_file_atomic(p, write)
