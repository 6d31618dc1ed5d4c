"""Finding biometric data where it should not be: unit-vector runs, numbers as text, file modes.

A template is ``dim`` float32 values of unit norm. :func:`find_unit_vectors`
slides over a file's bytes at each of the four float32 alignments and reports
every window of ``dim`` finite values, each of magnitude at most 1, whose
squares sum to 1 (± 1e-3) and of which at least half are non-zero. Random
bytes (ciphertext, compressed data) almost never pass: their float32
exponents are spread over the whole range. The same test runs on float16 and
bfloat16 values (:func:`unit_vectors_in` with ``kind``; from dimension
:data:`MIN_DIM_16` on).
:func:`find_text_vectors` finds ``dim`` or more numbers in [-1, 1] written as
text on one line (a CSV or JSON job output or rejects file holding a template).

:class:`CopyFinder` finds exact byte copies of known templates in other forms
(float16, bfloat16, the int8 codes of :class:`~pyfacematch.core.compact.CompactMatrix`,
1-bit sign codes with and without the binary backend's centre): the caller
gives the encoded forms of the enrolled templates, and every file offset is
looked up (8-byte keys, then a full comparison). :func:`find_landmark_sets`
finds face landmark sets (float32 x, y[, z] per point) of a known scheme: a
window of ``P`` points whose similarity-Procrustes fit to the scheme's mean
shape explains at least :data:`LANDMARK_FIT` of its variance (real dlib-68
and MediaPipe-478 landmarks of the 54 photos in the shared data: ≥ 0.973;
Gaussian noise: ≤ 0.11). The same fit runs on float64 coordinates and, in text files,
on numbers written as text (:func:`find_text_landmarks`). Not found: templates
scaled by an unknown factor or compressed, int8 codes of another quantiser
(FAISS SQ8 trains its own ranges).
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
    "LANDMARK_FIT",
    "CopyFinder",
    "Finding",
    "find_landmark_sets",
    "find_text_landmarks",
    "find_text_vectors",
    "scan_log_text",
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


#: value width (bytes) and norm tolerance of each floating-point kind
_KINDS = {"float32": (4, _TOL), "float16": (2, 1e-2), "bfloat16": (2, 2e-2)}


def _decode(data: bytes, kind: str, n: int, align: int) -> np.ndarray:
    if kind == "float32":
        return np.frombuffer(data, "<f4", count=n, offset=align).astype(np.float64)
    u = np.frombuffer(data, "<u2", count=n, offset=align)
    if kind == "float16":
        return u.view(np.float16).astype(np.float64)
    return (u.astype(np.uint32) << 16).view(np.float32).astype(np.float64)  # bfloat16


def unit_vectors_in(data: bytes, dim: int, kind: str = "float32") -> list[tuple[int, bytes]]:
    """(offset, bytes) of unit-norm runs of ``dim`` values of ``kind`` in ``data`` (all alignments).

    ``kind``: ``"float32"`` (default), ``"float16"`` or ``"bfloat16"``.
    """
    width, tol = _KINDS[kind]
    out: list[tuple[int, bytes]] = []
    for align in range(width):
        n = (len(data) - align) // width
        if n < dim:
            continue
        with np.errstate(invalid="ignore", over="ignore"):  # NaN bit patterns are expected
            v = _decode(data, kind, n, align)
            bad = ~np.isfinite(v) | (np.abs(v) > 1.0)
            sq = np.where(bad, 4.0, v * v)  # a bad value pushes its windows' sum past 1 + tol
        nz = (v != 0) & ~bad
        c = np.concatenate([[0.0], np.cumsum(sq)])
        z = np.concatenate([[0], np.cumsum(nz)])
        s = c[dim:] - c[:-dim]
        nnz = z[dim:] - z[:-dim]
        hits = np.flatnonzero((np.abs(s - 1.0) <= tol) & (nnz * 2 >= dim))
        last = -dim
        for i in hits.tolist():
            if i < last + dim:  # overlapping windows of one vector count once
                continue
            last = i
            o = align + width * i
            out.append((o, data[o : o + width * dim]))
    out.sort()
    return out


class CopyFinder:
    """Finds exact byte copies of known encodings of templates in files.

    Parameters
    ----------
    forms : mapping of str to uint8 array (n, L)
        For each form (``"float16"``, ``"int8"``, ``"bits"`` …) the encoded bytes of every
        enrolled template, one row each; only the first :data:`PREFIX` bytes are compared (a
        chance match of 32 given bytes does not happen). Forms shorter than 8 bytes are not
        searched (a 4-byte pattern occurs by chance in a large file): see :attr:`skipped`.
    """

    PREFIX = 32

    def __init__(self, forms: dict[str, np.ndarray]) -> None:
        self.skipped: list[str] = []
        self.forms: list[str] = []
        keys, pats, fid, rid = [], [], [], []
        for form, rows in forms.items():
            rows = np.ascontiguousarray(rows, np.uint8)
            if rows.ndim != 2 or rows.shape[1] < 8 or rows.shape[0] == 0:
                if rows.ndim == 2 and rows.shape[0]:
                    self.skipped.append(form)
                continue
            pat = np.zeros((rows.shape[0], self.PREFIX), np.uint8)
            w = min(self.PREFIX, rows.shape[1])
            pat[:, :w] = rows[:, :w]
            keys.append(rows[:, :8].copy().view("<u8").ravel())
            pats.append(pat)
            fid.append(np.full(rows.shape[0], len(self.forms), np.int32))
            rid.append(np.arange(rows.shape[0], dtype=np.int64))
            self.forms.append(form)
        self._widths = {f: min(self.PREFIX, np.asarray(forms[f]).shape[1]) for f in self.forms}
        self._seen = np.zeros(1 << self._BITS, bool)  # a one-hash Bloom filter of the keys
        if keys:
            k = np.concatenate(keys)
            order = np.argsort(k, kind="stable")
            self._keys = k[order]
            self._pats = np.concatenate(pats)[order]
            self._fid = np.concatenate(fid)[order]
            self._rid = np.concatenate(rid)[order]
            self._seen[self._slot(self._keys)] = True
        else:
            self._keys = np.zeros(0, np.uint64)

    _BITS = 25

    @classmethod
    def _slot(cls, k: np.ndarray) -> np.ndarray:
        """Filter slot of each key (Fibonacci hashing: the top bits of key × 2⁶⁴/φ)."""
        return (k * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - cls._BITS)

    @property
    def overlap(self) -> int:
        """Bytes a block must keep from the previous one so no copy is cut."""
        return self.PREFIX

    def find_in(self, data: bytes) -> list[tuple[int, str, int]]:
        """(offset, form, template row) of every copy starting in ``data``."""
        if self._keys.size == 0 or len(data) < 8:
            return []
        b = np.frombuffer(data, np.uint8)
        w = np.lib.stride_tricks.sliding_window_view(b, 8)
        keys = np.ascontiguousarray(w).view("<u8").ravel()
        out = []
        cand = np.flatnonzero(self._seen[self._slot(keys)])  # cheap; rare false candidates
        kc = keys[cand]
        at = np.minimum(np.searchsorted(self._keys, kc), self._keys.size - 1)
        cand = cand[self._keys[at] == kc]  # the sorted keys: no re-sort per block
        for off in cand.tolist():
            lo = int(np.searchsorted(self._keys, keys[off], "left"))
            hi = int(np.searchsorted(self._keys, keys[off], "right"))
            for j in range(lo, hi):
                form = self.forms[int(self._fid[j])]
                n = self._widths[form]
                if data[off : off + n] == self._pats[j, :n].tobytes():
                    out.append((off, form, int(self._rid[j])))
        return out


#: Smallest dimension the 16-bit unit-norm test runs at: below it, short runs of SQLite
#: b-tree cells (ids such as ``p406`` and their headers) pass as 32 float16 values of norm 1.
MIN_DIM_16 = 64

#: Share of a window's variance a scheme's mean shape must explain to count as landmarks.
LANDMARK_FIT = 0.9
_PLAUSIBLE = 1e5  # |coordinate| bound (pixels); ciphertext floats rarely stay within it


def _runs(ok: np.ndarray, length: int) -> list[tuple[int, int]]:
    """[start, end) of maximal runs of True of at least ``length``."""
    d = np.diff(np.concatenate([[0], ok.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return [(int(a), int(e)) for a, e in zip(starts, ends) if e - a >= length]


def _fit_windows(v: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Procrustes fit (explained variance share) of every window of ``v`` to ``shape`` (P, k)."""
    from scipy.signal import correlate

    p, k = shape.shape
    y = shape[:, :2] - shape[:, :2].mean(axis=0)
    y = y / np.linalg.norm(y)
    n = p * k

    def pattern(cols: dict[int, np.ndarray]) -> np.ndarray:
        r = np.zeros((p, k))
        for j, col in cols.items():
            r[:, j] = col
        return r.ravel()

    one = np.ones(p)
    a = correlate(v, pattern({0: y[:, 0], 1: y[:, 1]}), mode="valid", method="fft")
    b = correlate(v, pattern({0: y[:, 1], 1: -y[:, 0]}), mode="valid", method="fft")
    sx = correlate(v, pattern({0: one}), mode="valid", method="fft")
    sy = correlate(v, pattern({1: one}), mode="valid", method="fft")
    q = correlate(v * v, pattern({0: one, 1: one}), mode="valid", method="fft")
    var = q - (sx * sx + sy * sy) / p
    scale = np.maximum(np.abs(q), 1e-30)
    fit = np.where(var > 1e-9 * scale, (a * a + b * b) / np.maximum(var, 1e-300), 0.0)
    return fit[: max(0, v.size - n + 1)]


def find_landmark_sets(
    data: bytes, shapes: dict[str, np.ndarray], skip: int = 0, kind: str = "float32"
) -> dict[str, int]:
    """Scheme name -> landmark sets (``k`` coordinates a point) found in ``data``.

    ``kind``: the coordinates' type, ``"float32"`` (default) or ``"float64"`` (numpy's
    default, what a script saving landmarks writes unless told otherwise).
    Sets that end within the first ``skip`` bytes are not counted (seen in a previous block).
    """
    out: dict[str, int] = {}
    if not shapes:
        return out
    width = {"float32": 4, "float64": 8}[kind]
    shortest = min(int(np.asarray(v).size) for v in shapes.values())
    for align in range(width):
        n = (len(data) - align) // width
        if n <= 0:
            continue
        v32 = np.frombuffer(data, f"<f{width}", count=n, offset=align)
        with np.errstate(invalid="ignore", over="ignore"):
            a = np.abs(v32)
            ok = (a <= _PLAUSIBLE) & ((a >= 1e-6) | (a == 0))  # NaN compares False
        runs = _runs(ok, shortest)
        if not runs:
            continue
        for name, shape in shapes.items():
            m = shape.size
            for start, end in runs:
                if end - start < m:
                    continue
                v = v32[start:end].astype(np.float64)  # finite, plausible values only
                fit = _fit_windows(v, np.asarray(shape, np.float64))
                hits = np.flatnonzero(fit >= LANDMARK_FIT)
                last = -m
                for i in hits.tolist():
                    if i < last + m:  # one set matches at one offset; neighbours overlap it
                        continue
                    last = i
                    if align + width * (start + i + m) > skip:
                        out[name] = out.get(name, 0) + 1
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


#: Template lengths looked for in logs, where the dimension is not known.
LOG_DIMS = (8, 16, 32, 64, 128, 256, 384, 512, 768, 1024, 2048)
# A run of numbers as text: numbers separated only by commas, blanks and brackets.
_NUMBER = (
    rb"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"  # one reading per text: no backtracking blow-up
)
# A run starts only where a number starts (the look-behind), so a long digit string costs
# linear time, not one backtracking attempt per position.
_RUN = re.compile(rb"(?<![\d.])" + _NUMBER + rb"(?:[\s,\[\]()]+" + _NUMBER + rb"){7,}")
_RUN_NUM = re.compile(_NUMBER)
_B64 = re.compile(rb"[A-Za-z0-9+/_-]{40,}={0,2}")
_HEX = re.compile(rb"(?:[0-9a-fA-F]{2}[ :]?){32,}")
_ESC = re.compile(rb"(?:\\x[0-9a-fA-F]{2}|\\[ntr\\'\"]|[ -\[\]-~]){32,}")
_LINE_MAX = 1 << 20  # longer lines are examined in their first MiB only


def _text_run_is_template(v: np.ndarray) -> int:
    """The length of a unit-norm template inside a run of numbers (0: none).

    The whole run of unit norm (one template printed, any length >= 8), or a
    window of a usual template length (a batch printed flat).
    """
    if np.any(np.abs(v) > 1.0) or np.count_nonzero(v) * 2 < v.size:
        return 0 if v.size < 16 else _window_template(v)
    if abs(float(v @ v) - 1.0) <= 1e-2:
        return int(v.size)
    return _window_template(v)


def _window_template(v: np.ndarray) -> int:
    sq = np.where(np.abs(v) <= 1.0, v * v, 4.0)
    c = np.concatenate([[0.0], np.cumsum(sq)])
    nz = np.concatenate([[0], np.cumsum(v != 0)])
    for dim in LOG_DIMS:
        if dim > v.size:
            break
        s = c[dim:] - c[:-dim]
        ok = (np.abs(s - 1.0) <= 1e-2) & ((nz[dim:] - nz[:-dim]) * 2 >= dim)
        if ok.any():
            return dim
    return 0


def _binary_template(data: bytes) -> tuple[str, int] | None:
    """(kind, dim) of a unit-norm float32/float16/bfloat16 run in decoded bytes, if any."""
    for dim in LOG_DIMS:
        for kind in ("float32", "float16", "bfloat16"):
            width = _KINDS[kind][0]
            if width * dim > len(data) or (width == 2 and dim < MIN_DIM_16):
                continue
            if unit_vectors_in(data, dim, kind):
                return kind, dim
    return None


def _bytes_in_line(line: bytes) -> str | None:
    """A template written as base64, hex or a bytes repr in one line of text, described."""
    import base64
    import binascii

    for m in _B64.finditer(line):
        tok = m.group()
        try:
            raw = base64.b64decode(tok + b"=" * (-len(tok) % 4), altchars=b"-_")
        except (binascii.Error, ValueError):
            continue
        hit = _binary_template(raw)
        if hit:
            return f"{hit[1]} {hit[0]} values of unit norm in base64"
    for m in _HEX.finditer(line):
        hit = _binary_template(bytes.fromhex(re.sub(rb"[ :]", b"", m.group()).decode()))
        if hit:
            return f"{hit[1]} {hit[0]} values of unit norm in hex"
    for m in _ESC.finditer(line):
        if b"\\x" in m.group():
            hit = _binary_template(m.group().decode("unicode_escape").encode("latin-1"))
            if hit:
                return f"{hit[1]} {hit[0]} values of unit norm as bytes"
    return None


def scan_log_text(data: bytes) -> list[tuple[int, str]]:
    """Template-like content in log text: ``(line number, what)`` per finding.

    Logs and console output must never hold a template (ISO/IEC 24745 §5:
    biometric references are confidential wherever they are stored or sent).
    The dimension is unknown, so the usual template lengths (:data:`LOG_DIMS`)
    are tried. Looked for, per line:

    - numbers as text (a list, a numpy repr, JSON): a run of 8 or more
      numbers of unit norm, or a window of a usual length inside a longer run;
    - bytes written as base64, hex or a Python ``bytes`` repr (``\\x..``
      escapes) that decode to a unit-norm float32, float16 or bfloat16 run.

    Not found: a few values of a template (numpy summarises arrays of more than
    1,000 values with ``...``), templates scaled by an unknown factor,
    encrypted or compressed bytes (which are no leak).
    """
    out: list[tuple[int, str]] = []
    # Numbers as text first, over the whole text: numpy wraps a long array over many lines.
    text_lines: set[int] = set()
    for m in _RUN.finditer(data):
        try:
            v = np.array([float(x) for x in _RUN_NUM.findall(m.group())], np.float64)
        except ValueError:  # pragma: no cover - the pattern only matches numbers
            continue
        dim = _text_run_is_template(v)
        if dim:
            no = data.count(b"\n", 0, m.start()) + 1
            text_lines.add(no)
            out.append((no, f"{dim} numbers of unit norm written as text"))
    for no, line in enumerate(data.splitlines(), 1):
        if len(line) >= 32 and no not in text_lines:
            what = _bytes_in_line(line[:_LINE_MAX])
            if what:
                out.append((no, what))
    return out


def find_text_landmarks(
    path: str | os.PathLike[str], shapes: dict[str, np.ndarray]
) -> dict[str, int]:
    """Scheme name -> landmark sets written as text (CSV, JSON, a numpy repr) in a file.

    Each line's runs of numbers are fitted like binary coordinates
    (:func:`find_landmark_sets`); a set written over several lines is not seen.
    """
    out: dict[str, int] = {}
    if not shapes:
        return out
    shortest = min(int(np.asarray(v).size) for v in shapes.values())
    with open(path, "rb") as f:
        for line in f:
            if len(line) < 2 * shortest:
                continue
            for m in _RUN.finditer(line[:_LINE_MAX]):
                nums = _RUN_NUM.findall(m.group())
                if len(nums) < shortest:
                    continue
                v = np.array([float(x) for x in nums], np.float64)
                if not np.all(np.abs(v) <= _PLAUSIBLE):
                    continue
                for name, shape in shapes.items():
                    size = int(np.asarray(shape).size)
                    if v.size < size:
                        continue
                    fit = _fit_windows(v, np.asarray(shape, np.float64))
                    hits = np.flatnonzero(fit >= LANDMARK_FIT)
                    last = -size
                    for i in hits.tolist():
                        if i >= last + size:
                            last = i
                            out[name] = out.get(name, 0) + 1
    return out


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


def scan_file(
    path: str | os.PathLike[str],
    dim: int,
    copies: CopyFinder | None = None,
    shapes: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """One pass over a file for the forms :func:`find_unit_vectors` does not see.

    The 16-bit unit-norm test runs for ``dim >= MIN_DIM_16`` only (exact copies of
    enrolled templates are found at any dimension).

    Returns ``units`` (kind -> unit-norm runs of float16 / bfloat16 values), ``copies``
    (form -> template rows with an exact copy) and ``landmarks`` ((scheme, float32 or
    float64) -> sets found; only when ``shapes`` is given).
    """
    units: dict[str, int] = {}
    found: dict[str, set[int]] = {}
    marks: dict[tuple[str, str], int] = {}
    keep = 4 * dim + 4
    if copies is not None:
        keep = max(keep, copies.overlap)
    if shapes:
        keep = max(keep, 8 * max(int(np.asarray(v).size) for v in shapes.values()) + 8)
    with open(path, "rb") as f:
        prev = b""
        while True:
            block = f.read(_BLOCK)
            if not block:
                break
            data = prev + block
            # a hit wholly inside the kept tail was counted with the previous block
            for kind in ("float16", "bfloat16") if dim >= MIN_DIM_16 else ():
                n = sum(1 for o, b in unit_vectors_in(data, dim, kind) if o + len(b) > len(prev))
                if n:
                    units[kind] = units.get(kind, 0) + n
            if copies is not None:
                for _off, form, row in copies.find_in(data):
                    found.setdefault(form, set()).add(row)
            for kind in ("float32", "float64"):
                for name, n in find_landmark_sets(data, shapes or {}, len(prev), kind).items():
                    marks[(name, kind)] = marks.get((name, kind), 0) + n
            prev = data[-keep:] if len(data) > keep else data
    return {"units": units, "copies": found, "landmarks": marks}
