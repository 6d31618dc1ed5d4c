"""Search backends of a gallery, one module per backend behind one interface.

:class:`~pyfacematch.index.base.Backend` (``base``) is the interface the gallery uses; each
backend returns a *shortlist* of template rows per probe (never fewer than ``min(k, N)``) that
the gallery ranks exactly with :func:`rank_shortlist` (``exact``, masked cosine when templates
have region blocks). The backends are ``exact`` (the core's SIMD top-k over every template; the
reference), ``binary`` (the default: 1-bit codes scanned in full, ``binary``) and the FAISS
indexes ``flat``, ``hnsw``, ``ivf`` and ``ivfpq`` (``faiss``, imported on first use). Templates
live in one :class:`TemplateMatrix` (``matrix``) that backends read and never own; every option a
caller passes is checked against the backend's declared options (``options``) before use.
:func:`make_backend` builds a backend by name.
"""

from __future__ import annotations

from typing import Any

from pyfacematch.errors import InputError
from pyfacematch.index.base import Backend, complete_shortlist
from pyfacematch.index.binary import BINARY_OPTIONS, BinaryBackend
from pyfacematch.index.exact import EXACT_OPTIONS, ExactBackend, exact_topk, rank_shortlist
from pyfacematch.index.faiss import (
    FAISS_KINDS,
    FAISS_OPTIONS,
    HNSW_REBUILD_FRACTION,
    MIN_PER_CENTROID,
    FaissBackend,
)
from pyfacematch.index.matrix import TemplateMatrix
from pyfacematch.index.options import Option, check_options
from pyfacematch.index.prepared import PreparedProbes

__all__ = [
    "BACKENDS",
    "BACKEND_OPTIONS",
    "DEFAULT_BACKEND",
    "HNSW_REBUILD_FRACTION",
    "MIN_PER_CENTROID",
    "Backend",
    "BinaryBackend",
    "ExactBackend",
    "FaissBackend",
    "Option",
    "PreparedProbes",
    "TemplateMatrix",
    "check_options",
    "complete_shortlist",
    "exact_topk",
    "make_backend",
    "rank_shortlist",
]

BACKENDS = ("exact", "binary", *FAISS_KINDS)
DEFAULT_BACKEND = "binary"

#: Options each backend accepts (``make_backend(name, **options)``, ``Gallery(backend_options=…)``).
BACKEND_OPTIONS: dict[str, tuple[Option, ...]] = {
    "exact": EXACT_OPTIONS,
    "binary": BINARY_OPTIONS,
    **FAISS_OPTIONS,
}


def make_backend(name: str, **options: Any) -> Backend:
    """A search backend by name, its options validated.

    Parameters
    ----------
    name : str
        One of :data:`BACKENDS`.
    **options
        The backend's options (:data:`BACKEND_OPTIONS`), e.g. ``hnsw_m=32`` for ``"hnsw"``.

    Returns
    -------
    Backend

    Raises
    ------
    InputError
        Unknown backend name.
    BackendOptionError
        An option the backend does not know, or a value of the wrong type or outside its range
        (the message names the backend, the option and the allowed range).
    """
    if not isinstance(name, str) or name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    if name == "exact":
        return ExactBackend(**options)
    if name == "binary":
        return BinaryBackend(**options)
    return FaissBackend(name, **options)
