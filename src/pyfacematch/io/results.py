"""Result tables of identify and verify jobs: rows, part files, their concatenation, reading back.

A table holds ``probe_id, rank, identity, score, decision`` and is written as CSV, JSON Lines or
Parquet. In CSV, ids are escaped against spreadsheet formula injection (see
:mod:`pyfacematch.io.files`: an id starting with ``=``, ``+``, ``-``, ``@``, a tab, a carriage
return or ``'`` is written with a leading ``'``); :func:`read_results` undoes it, so a table read
back holds exactly the ids that were written. JSON Lines and Parquet hold ids verbatim.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.io.files import csv_cell, csv_unescape, write_file_atomic

__all__ = [
    "RESULT_FIELDS",
    "ResultColumns",
    "concat_parts",
    "read_results",
    "result_bytes",
    "result_part_suffix",
    "write_results_part",
]

RESULT_FIELDS = ("probe_id", "rank", "identity", "score", "decision")


@dataclass
class ResultColumns:
    """Rows of a result table (one per probe and rank).

    Attributes
    ----------
    probe_id : list of str
    rank : int32 (n,)
        1 = best; 0 when the probe has no candidate at all.
    identity : list of str or None
    score : float32 (n,)
        NaN when there is no candidate.
    decision : list of str or None
        ``"match"`` (score ≥ threshold), ``"no-match"``, or None when no
        threshold applies.
    """

    probe_id: list[str]
    rank: np.ndarray
    identity: list[str | None]
    score: np.ndarray
    decision: list[str | None]

    def __len__(self) -> int:
        return len(self.probe_id)


def _score_text(x: float) -> str:
    return "" if x != x else f"{x:.6f}"


def result_part_suffix(fmt: str) -> str:
    """File ending of a part file of a result table in format ``fmt``."""
    return {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}[fmt]


def _result_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("probe_id", pa.string()),
            ("rank", pa.int32()),
            ("identity", pa.string()),
            ("score", pa.float32()),
            ("decision", pa.string()),
        ]
    )


def _result_arrow(cols: ResultColumns) -> Any:
    import pyarrow as pa

    score = np.asarray(cols.score, np.float32)
    return pa.table(
        {
            "probe_id": pa.array(cols.probe_id, pa.string()),
            "rank": pa.array(np.asarray(cols.rank, np.int32), pa.int32()),
            "identity": pa.array(cols.identity, pa.string()),
            "score": pa.array(score, pa.float32(), mask=np.isnan(score)),
            "decision": pa.array(cols.decision, pa.string()),
        },
        schema=_result_schema(),
    )


def result_bytes(fmt: str, cols: ResultColumns) -> bytes:
    """CSV (no header; ids escaped against formulas) or JSON Lines text of result rows."""
    scores = [_score_text(float(s)) for s in np.asarray(cols.score, np.float32).tolist()]
    ranks = np.asarray(cols.rank).tolist()
    out: list[str] = []
    if fmt == "csv":
        for p, r, i, s, d in zip(cols.probe_id, ranks, cols.identity, scores, cols.decision):
            out.append(f"{csv_cell(p)},{r},{csv_cell(i)},{s},{d or ''}\n")
    elif fmt == "jsonl":
        dumps = json.dumps
        for p, r, i, s, d in zip(cols.probe_id, ranks, cols.identity, scores, cols.decision):
            out.append(
                f'{{"probe_id": {dumps(p)}, "rank": {r}, "identity": {dumps(i)}, '
                f'"score": {s or "null"}, "decision": {dumps(d)}}}\n'
            )
    else:
        raise InputError(f"result_bytes: text formats only, got {fmt!r}")
    return "".join(out).encode("utf-8")


def write_results_part(path: str | os.PathLike[str], fmt: str, cols: ResultColumns) -> None:
    """Write result rows to a part file atomically (owner-only, fsync-ed, renamed)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        tbl = _result_arrow(cols)
        write_file_atomic(path, lambda fh: pq.write_table(tbl, fh))
    else:
        data = result_bytes(fmt, cols)
        write_file_atomic(path, lambda fh: fh.write(data))


def concat_parts(
    parts: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], fmt: str
) -> None:
    """Concatenate result part files into ``out`` atomically (owner-only, bounded memory).

    CSV gets one header; Parquet one row group per non-empty part.
    """

    def write(fh: BinaryIO) -> None:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            with pq.ParquetWriter(fh, _result_schema()) as w:
                for part in parts:
                    t = pq.read_table(part)
                    if t.num_rows:
                        w.write_table(t)
            return
        if fmt == "csv":
            fh.write((",".join(RESULT_FIELDS) + "\n").encode())
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)

    write_file_atomic(out, write)


def _opt_float(s: Any) -> float:
    return float("nan") if s in (None, "") else float(s)


def read_results(path: str | os.PathLike[str], fmt: str | None = None) -> ResultColumns:
    """Read a result table written by :func:`concat_parts` (or a part file) back.

    Parameters
    ----------
    path : path
    fmt : {"csv", "jsonl", "parquet"} or None
        None: from the file ending. A CSV part file has no header; it is
        recognised by its first line.

    Returns
    -------
    ResultColumns
        With the ids exactly as written (the CSV formula escape undone).

    Raises
    ------
    InputError
        Not a result table.
    """
    from pyfacematch.io.formats import detect_format

    f = detect_format(path, fmt, output=True)
    p = Path(path)
    probe: list[str] = []
    rank: list[int] = []
    ident: list[str | None] = []
    score: list[float] = []
    dec: list[str | None] = []
    try:
        if f == "parquet":
            import pyarrow.parquet as pq

            t = pq.read_table(p).to_pydict()
            probe, rank, ident = t["probe_id"], t["rank"], t["identity"]
            score, dec = [_opt_float(x) for x in t["score"]], t["decision"]
        elif f == "jsonl":
            with open(p, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        r = json.loads(line)
                        probe.append(r["probe_id"])
                        rank.append(int(r["rank"]))
                        ident.append(r["identity"])
                        score.append(_opt_float(r["score"]))
                        dec.append(r["decision"])
        else:
            with open(p, encoding="utf-8", newline="") as fh:
                for row in csv.reader(fh):
                    if not row or tuple(row) == RESULT_FIELDS:
                        continue
                    pid, rk, idt, sc, dc = row
                    probe.append(csv_unescape(pid))
                    rank.append(int(rk))
                    ident.append(csv_unescape(idt) if idt else None)
                    score.append(_opt_float(sc))
                    dec.append(dc or None)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{os.fspath(path)!r} is not a readable result table ({exc})") from exc
    return ResultColumns(
        probe, np.asarray(rank, np.int32), ident, np.asarray(score, np.float32), dec
    )
