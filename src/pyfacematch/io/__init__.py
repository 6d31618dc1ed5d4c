"""Files in and out of bulk jobs: one reader per input format, result and rejects tables, exports.

This room owns reading templates and landmarks from ``.npy``, ``.npz``, Parquet, CSV and JSON
Lines in validated, bounded-memory chunks (:class:`RecordReader`; one module per format, each
treating its file as hostile: sizes checked before allocating, typed errors, no pickles), folders
of face images (:class:`ImageFolderReader`, which asks :mod:`pyfacematch.embed` to decode and
embed), and writing result tables, rejects files and exports atomically, owner-only (``0600``)
and, for CSV, escaped against spreadsheet formula injection. Format detection lives in
:mod:`~pyfacematch.io.formats`; ``"-"`` reads standard input (``csv``, ``jsonl`` or ``npy``).
"""

from __future__ import annotations

from pyfacematch.io.files import csv_escape, csv_unescape
from pyfacematch.io.formats import INPUT_FORMATS, OUTPUT_FORMATS, detect_format
from pyfacematch.io.images import ImageFolderReader
from pyfacematch.io.records import Chunk, RecordReader, Reject
from pyfacematch.io.rejects import REJECT_FIELDS, rejects_bytes, rejects_format, write_rejects
from pyfacematch.io.results import (
    RESULT_FIELDS,
    ResultColumns,
    concat_parts,
    read_results,
    result_bytes,
    result_part_suffix,
    write_results_part,
)
from pyfacematch.io.tables import write_table

__all__ = [
    "INPUT_FORMATS",
    "OUTPUT_FORMATS",
    "REJECT_FIELDS",
    "RESULT_FIELDS",
    "Chunk",
    "ImageFolderReader",
    "RecordReader",
    "Reject",
    "ResultColumns",
    "concat_parts",
    "csv_escape",
    "csv_unescape",
    "detect_format",
    "read_results",
    "rejects_bytes",
    "rejects_format",
    "result_bytes",
    "result_part_suffix",
    "write_rejects",
    "write_results_part",
    "write_table",
]
