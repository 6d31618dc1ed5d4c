"""Small helpers the test modules share (imported as ``from _helpers import ...``; tests/ is on sys.path
through the root conftest, as for ``_logscan``)."""

from __future__ import annotations

import numpy as np


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """``n`` random unit-norm float32 templates of dimension ``d`` (normalised in float32)."""
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
