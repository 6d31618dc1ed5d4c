"""Finding biometric data where it should not be: unit-vector runs, numbers as text, file modes.

A template is ``dim`` float32 values of unit norm. :func:`find_unit_vectors`
slides over a file's bytes at each of the four float32 alignments and reports
every window of ``dim`` finite values, each of magnitude at most 1, whose
squares sum to 1 (± 1e-3) and of which at least half are non-zero. Random
bytes (ciphertext, compressed data) almost never pass: their float32
exponents are spread over the whole range. What is not found: templates
stored in another dtype (float16, int8 codes, 1-bit codes), scaled, or
compressed; landmark coordinates (not unit vectors); see the README.
:func:`find_text_vectors` finds ``dim`` or more numbers in [-1, 1] written as
text on one line (a CSV or JSON job output or rejects file holding a template).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Finding",
    "find_text_vectors",
    "find_unit_vectors",
    "iter_files",
    "mode_findings",
    "render_markdown",
    "unit_vectors_in",
]

_TOL = 1e-3
_BLOCK = 1 << 22  # bytes read at a time (files of any size, bounded memory)


@dataclass(frozen=True)
class Finding:
    """One problem: ``severity`` is ``"leak"`` or ``"warning"`` (both fail the audit) or ``"info"``."""

    severity: str
    kind: str
    file: str | None
    detail: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def unit_vectors_in(data: bytes, dim: int) -> list[tuple[int, bytes]]:
    """(offset, bytes) of unit-norm float32 runs of length ``dim`` in ``data`` (all alignments)."""
    out: list[tuple[int, bytes]] = []
    for align in range(4):
        n = (len(data) - align) // 4
        if n < dim:
            continue
        with np.errstate(invalid="ignore", over="ignore"):  # NaN bit patterns are expected
            v = np.frombuffer(data, "<f4", count=n, offset=align).astype(np.float64)
            bad = ~np.isfinite(v) | (np.abs(v) > 1.0)
            sq = np.where(bad, 4.0, v * v)  # a bad value pushes its windows' sum past 1 + tol
        nz = (v != 0) & ~bad
        c = np.concatenate([[0.0], np.cumsum(sq)])
        z = np.concatenate([[0], np.cumsum(nz)])
        s = c[dim:] - c[:-dim]
        nnz = z[dim:] - z[:-dim]
        hits = np.flatnonzero((np.abs(s - 1.0) <= _TOL) & (nnz * 2 >= dim))
        last = -dim
        for i in hits.tolist():
            if i < last + dim:  # overlapping windows of one vector count once
                continue
            last = i
            o = align + 4 * i
            out.append((o, data[o : o + 4 * dim]))
    out.sort()
    return out


def find_unit_vectors(
    path: str | os.PathLike[str], dim: int
) -> tuple[list[tuple[int, bytes]], int]:
    """(offset, bytes) of every unit-norm float32 run of length ``dim`` in a file; bytes read."""
    found: list[tuple[int, bytes]] = []
    size = 0
    overlap = 4 * dim + 4
    with open(path, "rb") as f:
        base = 0
        prev = b""
        while True:
            block = f.read(_BLOCK)
            if not block:
                break
            size += len(block)
            data = prev + block
            start = base - len(prev)
            for off, b in unit_vectors_in(data, dim):
                if not found or start + off >= found[-1][0] + 4 * dim:
                    found.append((start + off, b))
            prev = data[-overlap:]
            base += len(block)
    return found, size


_NUM = re.compile(rb"-?(?:0|1)?\.\d+(?:[eE]-?\d+)?|-?[01](?:\.0+)?(?![\d.])")


def find_text_vectors(path: str | os.PathLike[str], dim: int) -> int:
    """Lines of a text file holding ``dim`` or more numbers in [-1, 1] whose squares sum to ~1."""
    hits = 0
    with open(path, "rb") as f:
        for line in f:
            if len(line) < 2 * dim:
                continue
            nums = _NUM.findall(line)
            if len(nums) < dim:
                continue
            try:
                v = np.array([float(x) for x in nums], np.float64)
            except ValueError:
                continue
            v = np.where(np.abs(v) <= 1.0, v, 4.0)
            # any run of dim consecutive numbers of unit norm
            c = np.concatenate([[0.0], np.cumsum(v * v)])
            s = c[dim:] - c[:-dim]
            if np.any(np.abs(s - 1.0) <= 1e-2):
                hits += 1
    return hits


def iter_files(root: str | os.PathLike[str]) -> Iterator[Path]:
    """``root`` itself if it is a file, else every file below it (symlinks not followed)."""
    p = Path(root)
    if p.is_symlink():
        return
    if p.is_file():
        yield p
        return
    for d, _dirs, files in os.walk(p):
        for name in sorted(files):
            f = Path(d) / name
            if f.is_file() and not f.is_symlink():
                yield f


def mode_findings(path: Path, *, secret: bool = False) -> list[Finding]:
    """Files or folders readable/writable by group or others; secrets must be 0600."""
    try:
        st = path.lstat()
    except OSError:
        return []
    mode = stat.S_IMODE(st.st_mode)
    out = []
    if mode & 0o077:
        what = "folder" if stat.S_ISDIR(st.st_mode) else "file"
        out.append(
            Finding(
                "leak" if secret or mode & 0o044 else "warning",
                "permissions",
                os.fspath(path),
                f"{what} has mode {mode:o}: readable or writable by other users; "
                f"run `chmod {'700' if what == 'folder' else '600'} {os.fspath(path)}`",
            )
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        out.append(
            Finding("warning", "owner", os.fspath(path), f"owned by user {st.st_uid}, not by you")
        )
    return out


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown (for people; the JSON is for machines)."""
    lines = [
        f"# Data-leak audit of `{report['gallery']}`",
        "",
        f"**{'CLEAN' if report['clean'] else 'NOT CLEAN'}** — "
        f"{report['files_scanned']} files, {report['bytes_scanned']:,} bytes examined.",
        "",
        "## Keys",
        "",
    ]
    for k, v in report["keys"].items():
        lines.append(f"- {k}: {v}")
    a = report["audit"]
    lines += ["", "## Audit trail", ""]
    if a.get("ok"):
        lines.append(
            f"- chain OK: {a['records']} records, head `{a['head']['seq']}:{a['head']['hash']}`"
        )
    else:
        bad = a.get("first_bad") or {}
        lines.append(f"- **chain broken** at record {bad.get('seq')}: {bad.get('reason')}")
    for w in a.get("warnings", []):
        lines.append(f"- note: {w}")
    lines += ["", "## Findings", ""]
    if not report["findings"]:
        lines.append("None.")
    else:
        lines.append("| severity | kind | file | detail |")
        lines.append("| --- | --- | --- | --- |")
        for f in report["findings"]:
            detail = str(f["detail"]).replace("|", "\\|")
            lines.append(f"| {f['severity']} | {f['kind']} | `{f['file'] or '-'}` | {detail} |")
    return "\n".join(lines) + "\n"
