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
    hamming_topk2,
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

# Heavier parts load on first use, so `import pyfacematch` stays fast for a service that only scores.
_LAZY_ATTRS = {
    "Gallery": "gallery",
    "IdentifyResult": "gallery",
    "IdentifyArrays": "gallery",
    "VerifyResult": "gallery",
    "Decision": "gallery",
    "Candidate": "gallery",
    "KeyModel": "keys",
}
_LAZY_MODULES = (
    "metrics",
    "plots",
    "synth",
    "schemes",
    "gallery",
    "keys",
    "embed",
    "fusion",
    "calibration",
    "io",
)


def __getattr__(name: str) -> object:
    import importlib

    if name in _LAZY_ATTRS:
        return getattr(importlib.import_module(f".{_LAZY_ATTRS[name]}", __name__), name)
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'pyfacematch' has no attribute {name!r}")


__all__ = [
    "Candidate",
    "Decision",
    "Gallery",
    "IdentifyArrays",
    "IdentifyResult",
    "KeyModel",
    "VerifyResult",
    "PyFaceMatchError",
    "as_templates",
    "cosine",
    "errors",
    "get_num_threads",
    "hamming_topk",
    "hamming_topk2",
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
