"""Compact templates: int8 (per-row symmetric scale) or bf16 storage, scanned with a proven error bound.

A :class:`CompactMatrix` holds a gallery in a quarter (int8) or half (bf16) of float32's memory. Its
scan gives each row an approximate score ``a`` and a bound ``E`` with ``|a − f| ≤ E``, where ``f`` is
the float32 score the exact kernel computes (the derivation is in ``cpp/src/compact.cpp``). The top-k
keeps every row whose ``a + E`` reaches the k-th best ``a − E`` and re-scores only those from the float32
templates (which may be a ``numpy.memmap`` on disk), so the answer is exactly the float32 top-k of
:func:`pyfacematch.rerank` over all rows: same rows, same order (ties to the lower row), same scores.

>>> import numpy as np, pyfacematch as pf
>>> X = pf.normalize(np.random.default_rng(0).standard_normal((1000, 64)))
>>> C = pf.CompactMatrix.from_float32(X, kind="int8", exact=X)
>>> s, i = pf.topk(X[:3], C, 5)
>>> bool((i[:, 0] == np.arange(3)).all())
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyfacematch import _core
from pyfacematch.core.scoring import _check_k, _gallery, _probes, _raise_if_nonfinite, as_templates
from pyfacematch.errors import DimensionError, DTypeError, InputError, NonFiniteError

__all__ = ["KINDS", "CompactMatrix"]

#: Storage kinds: bytes per value (plus per-row metadata: int8 16 bytes, bf16 4 bytes).
KINDS = {"int8": 1, "bf16": 2}


def padded_width(kind: str, d: int) -> int:
    """Elements per stored row of a compact matrix of dimension ``d``: rows are padded to whole
    SIMD blocks (64 int8 or 32 bf16 values)."""
    step = 64 if kind == "int8" else 32
    return -(-max(d, 1) // step) * step


class CompactMatrix:
    """A gallery of templates stored as int8 or bf16, with an optional float32 source for exact re-scores.

    Build one with :meth:`from_float32`; :meth:`arrays` / :meth:`from_arrays` move it to and from files
    (the arrays may be memory-mapped). ``exact`` is the float32 (n, d) matrix of the same rows — an
    array in memory or a ``numpy.memmap`` — used by :meth:`topk` and :meth:`rerank` to return exact scores.
    """

    def __init__(
        self,
        kind: str,
        dim: int,
        codes: np.ndarray,
        scale: np.ndarray,
        norm: np.ndarray,
        resid: np.ndarray,
        gsum: np.ndarray,
        exact: np.ndarray | None = None,
    ) -> None:
        if kind not in KINDS:
            raise InputError(f"compact kind must be one of {sorted(KINDS)}, got {kind!r}")
        want = np.int8 if kind == "int8" else np.uint16
        n = int(codes.shape[0]) if codes.ndim == 2 else -1
        if codes.dtype != want or codes.ndim != 2 or codes.shape[1] != padded_width(kind, dim):
            raise DTypeError(
                f"{kind} codes must be a 2-D {np.dtype(want).name} array of row stride "
                f"{padded_width(kind, dim)}, got {codes.dtype} {codes.shape}: build it with "
                "CompactMatrix.from_float32()"
            )
        meta: dict[str, tuple[np.ndarray, Any]] = {"norm": (norm, np.float32)}
        if kind == "int8":
            meta.update(scale=(scale, np.float32), resid=(resid, np.float32), gsum=(gsum, np.int32))
        for name, (arr, dt) in meta.items():
            if arr.dtype != dt or arr.shape != (n,):
                raise DimensionError(
                    f"compact {name} must be {np.dtype(dt).name} with one value per row ({n}), "
                    f"got {arr.dtype} {arr.shape}"
                )
        self.kind = kind
        self.dim = int(dim)
        self.codes, self.scale, self.norm, self.resid, self.gsum = codes, scale, norm, resid, gsum
        self.exact: np.ndarray | None = None
        if exact is not None:
            self.attach_exact(exact)

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def from_float32(cls, templates: Any, kind: str = "int8", exact: Any = None) -> CompactMatrix:
        """Quantise (n, d) float32 templates; ``exact=X`` (or ``True`` for ``templates`` itself)
        keeps a float32 source for exact re-scores."""
        if kind not in KINDS:
            raise InputError(f"compact kind must be one of {sorted(KINDS)}, got {kind!r}")
        x = as_templates(templates)
        if x.shape[0] == 0:
            from pyfacematch.errors import EmptyInputError

            raise EmptyInputError("no templates to store: pass at least one row")
        _raise_if_nonfinite(x, "templates")
        empty_f, empty_i = np.zeros(0, np.float32), np.zeros(0, np.int32)
        codes: np.ndarray
        if kind == "int8":
            codes, scale, norm, resid, gsum, ok = _core.compact_quantize_int8(x)
        else:
            codes, norm, ok = _core.compact_convert_bf16(x)
            scale, resid, gsum = empty_f, empty_f, empty_i
        if not ok:
            raise NonFiniteError(
                f"templates too large to store as {kind} (a value or a row norm overflows float32): "
                "normalise them first (pyfacematch.normalize)"
            )
        src = x if exact is True else exact
        return cls(kind, x.shape[1], codes, scale, norm, resid, gsum, None if src is None else src)

    def attach_exact(self, exact: Any) -> None:
        """Use ``exact`` (float32 (n, d), e.g. a ``numpy.memmap``) for exact re-scores."""
        g = _gallery(exact, "exact templates")
        if g.shape != (len(self), self.dim):
            raise DimensionError(
                f"the float32 templates are {g.shape[0]} × {g.shape[1]} but the compact gallery is "
                f"{len(self)} × {self.dim}: they must hold the same rows"
            )
        self.exact = g

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays that make up the matrix (for writing to files)."""
        return {
            "codes": self.codes,
            "scale": self.scale,
            "norm": self.norm,
            "resid": self.resid,
            "gsum": self.gsum,
        }

    @classmethod
    def from_arrays(
        cls, kind: str, dim: int, arrays: dict[str, np.ndarray], exact: Any = None
    ) -> CompactMatrix:
        """Rebuild from :meth:`arrays` (e.g. memory-mapped), validating shapes and dtypes."""
        return cls(
            kind,
            dim,
            arrays["codes"],
            arrays["scale"],
            arrays["norm"],
            arrays["resid"],
            arrays["gsum"],
            exact,
        )

    # -- facts -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.dim)

    @property
    def bytes_per_row(self) -> int:
        """Bytes one row takes (codes + metadata), excluding the float32 source."""
        meta = 16 if self.kind == "int8" else 4
        return int(self.codes.shape[1]) * KINDS[self.kind] + meta

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays().values())

    def __repr__(self) -> str:
        src = "none" if self.exact is None else type(self.exact).__name__
        return f"CompactMatrix(kind={self.kind!r}, n={len(self)}, d={self.dim}, exact={src})"

    # -- scoring -----------------------------------------------------------------------------
    def _t(self) -> tuple[Any, ...]:
        return (self.kind, self.dim, self.codes, self.scale, self.norm, self.resid, self.gsum)

    def _q(self, probes: Any) -> tuple[np.ndarray, bool]:
        q, single = _probes(probes)
        if q.shape[1] != self.dim:
            raise DimensionError(
                f"probes have dimension {q.shape[1]} but the compact gallery has dimension "
                f"{self.dim}: were they made by the same model?"
            )
        return q, single

    def scores(self, probes: Any) -> tuple[np.ndarray, np.ndarray]:
        """Approximate scores (m, n) and their proven bounds: |score − float32 score| ≤ bound."""
        q, single = self._q(probes)
        a, b = _core.compact_scores(self._t(), q)
        return (a[0], b[0]) if single else (a, b)

    def topk(
        self, probes: Any, k: int, exact: Any = None, *, return_shortlist: bool = False
    ) -> Any:
        """The k best rows per probe: exact float32 scores when a float32 source is known (``exact``
        or the attached one), else the k best approximate scores. ``return_shortlist=True`` also
        returns how many rows each probe re-scored."""
        q, single = self._q(probes)
        src = self.exact if exact is None else _gallery(exact, "exact templates")
        s, i, nc, ok = _core.compact_topk(self._t(), q, src, _check_k(k, len(self)))
        if not ok:
            raise NonFiniteError("a float32 template holds NaN or Inf: rebuild the gallery's files")
        out = (s[0], i[0]) if single else (s, i)
        return (*out, nc) if return_shortlist else out

    def rerank(
        self, probes: Any, candidates: Any, k: int, exact: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among candidate rows (m, c) (-1 = padding): the compact bound prunes the
        shortlist, the float32 source scores what remains. Same answer as :func:`pyfacematch.rerank`."""
        q, single = self._q(probes)
        src = self.exact if exact is None else _gallery(exact, "exact templates")
        if src is None:
            raise InputError(
                "re-ranking needs the float32 templates: pass exact= or attach_exact()"
            )
        c = np.asarray(candidates)
        if c.dtype.kind not in "iu":
            raise DTypeError(f"candidates must be integer row indices, got dtype {c.dtype}")
        c = np.ascontiguousarray(c.reshape(1, -1) if c.ndim == 1 else c, dtype=np.int64)
        s, i, _, ok = _core.compact_rerank(self._t(), q, src, c, _check_k(k, c.shape[1]))
        if not ok:
            raise NonFiniteError("a float32 template holds NaN or Inf: rebuild the gallery's files")
        return (s[0], i[0]) if single else (s, i)
