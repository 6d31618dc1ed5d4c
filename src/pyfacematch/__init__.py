"""pyfacematch: face template matching with a C++ SIMD core.

The package has one room per concern, layered so that each depends only on those below it:

- ``errors``: typed errors shared by every layer;
- ``core``: the compiled scoring core (1:1, M×N, top-k, masked cosine, codes) and SIMD levels;
- ``keys``: landmark schemes, geometry, the key model, synthetic faces;
- ``index``: search backends (exact, binary codes, FAISS) behind one interface;
- ``metrics``, ``plots``: FRVT-style accuracy measures and their pictures;
- ``embed``, ``fusion``: photos to templates; fusing landmark keys with embeddings;
- ``gallery``: identities, the SQLite store, calibration, atomic files;
- ``io``: file formats for bulk jobs; ``jobs``: the resumable bulk jobs and the demo;
- ``bench``: the benchmark suite; ``cli``: the command line (parses, calls, prints).

Scoring functions and the gallery types are importable from here (``pf.topk``, ``pf.Gallery``,
``pf.KeyModel``); heavier parts load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

try:
    from pyfacematch import _core  # noqa: F401
except ImportError as exc:  # pragma: no cover - only without a build
    import os as _os

    raise ImportError(
        "pyfacematch's compiled core (_core) is missing from "
        f"{_os.path.dirname(__file__)}: this is the source tree, not an installed package; "
        "install it with `pip install .` (or `pip install -e .`) and import it from elsewhere."
    ) from exc

from pyfacematch import errors
from pyfacematch.core import simd
from pyfacematch.core.compact import CompactMatrix
from pyfacematch.core.scoring import (
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
from pyfacematch.errors import PyFaceMatchError

if TYPE_CHECKING:  # the lazy names below, for type checkers and IDEs
    from pyfacematch.gallery import (
        Candidate,
        Decision,
        Gallery,
        IdentifyArrays,
        IdentifyResult,
        VerifyResult,
    )
    from pyfacematch.keys import KeyModel

__version__ = "0.1.0"

# Heavier parts load on first use, so `import pyfacematch` stays fast for a service that only scores.
_LAZY_ATTRS = {
    "Gallery": "pyfacematch.gallery",
    "IdentifyResult": "pyfacematch.gallery",
    "IdentifyArrays": "pyfacematch.gallery",
    "VerifyResult": "pyfacematch.gallery",
    "Decision": "pyfacematch.gallery",
    "Candidate": "pyfacematch.gallery",
    "KeyModel": "pyfacematch.keys",
}
# Modules reachable as attributes (``pf.metrics``, ``from pyfacematch import synth``), several of
# them by the short names they had before the package was split into rooms.
_LAZY_MODULES = {
    "bench": "pyfacematch.bench",
    "calibration": "pyfacematch.gallery.calibration",
    "core": "pyfacematch.core",
    "embed": "pyfacematch.embed",
    "fusion": "pyfacematch.fusion",
    "gallery": "pyfacematch.gallery",
    "geometry": "pyfacematch.keys.geometry",
    "index": "pyfacematch.index",
    "io": "pyfacematch.io",
    "jobs": "pyfacematch.jobs",
    "keys": "pyfacematch.keys",
    "metrics": "pyfacematch.metrics",
    "plots": "pyfacematch.plots",
    "schemes": "pyfacematch.keys.schemes",
    "scoring": "pyfacematch.core.scoring",
    "synth": "pyfacematch.keys.synth",
}


def __getattr__(name: str) -> object:
    import importlib

    if name in _LAZY_ATTRS:
        return getattr(importlib.import_module(_LAZY_ATTRS[name]), name)
    if name in _LAZY_MODULES:
        return importlib.import_module(_LAZY_MODULES[name])
    raise AttributeError(f"module 'pyfacematch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_ATTRS) | set(_LAZY_MODULES))


__all__ = [
    "Candidate",
    "CompactMatrix",
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
