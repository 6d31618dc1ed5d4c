"""pyfacematch: face template matching with a C++ SIMD core.

Scoring (1:1, M×N, top-k, masked cosine) lives in :mod:`pyfacematch.scoring`; SIMD levels in
:mod:`pyfacematch.simd`; errors in :mod:`pyfacematch.errors`.
"""

from __future__ import annotations

from . import errors, simd
from .errors import PyFaceMatchError
from .scoring import (
    as_templates,
    cosine,
    get_num_threads,
    hamming_topk,
    masked_cosine,
    masked_scores,
    masked_topk,
    normalize,
    pack_signs,
    rerank,
    scores,
    set_num_threads,
    topk,
)

__version__ = "0.1.0"

__all__ = [
    "PyFaceMatchError",
    "as_templates",
    "cosine",
    "errors",
    "get_num_threads",
    "hamming_topk",
    "masked_cosine",
    "masked_scores",
    "masked_topk",
    "normalize",
    "pack_signs",
    "rerank",
    "scores",
    "set_num_threads",
    "simd",
    "topk",
]

simd._check_env()
