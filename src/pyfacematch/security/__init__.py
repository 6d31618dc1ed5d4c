"""Trust: encryption at rest (envelope keys), and later consent, audit and cancelable templates.

This package sits at the level of :mod:`pyfacematch.index` and
:mod:`pyfacematch.keys`: the gallery imports it; it imports neither the
gallery nor anything above it.
"""

from __future__ import annotations

__all__: list[str] = []
