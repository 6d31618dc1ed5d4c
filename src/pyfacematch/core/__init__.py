"""The public face of the compiled core (``pyfacematch._core``).

``core.scoring`` validates and converts arrays once, then calls the SIMD kernels (1:1, M×N, fused
top-k, masked cosine, binary codes, exact re-rank); ``core.simd`` reports and forces the instruction
set the kernels run on. Nothing here knows about galleries, files or the command line.
"""

from __future__ import annotations

from pyfacematch.core import compact, scoring, simd

__all__ = ["compact", "scoring", "simd"]
