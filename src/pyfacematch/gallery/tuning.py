"""Tuning an approximate backend to a recall target on probes made from the gallery itself.

Tuning probes are gallery templates plus isotropic noise of a chosen strength
(a cosine ``sim`` between probe and source template); their exact top-1 is the
reference, and the backend picks the smallest search depth whose pipeline
(shortlist + exact re-rank) reaches the recall target. The noise strength is
explicit, or measured on the gallery's own genuine pairs, or a conservative 0.5.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from pyfacematch.index import Backend, TemplateMatrix

__all__ = ["make_tuning_probes", "run_tuning", "tuning_similarity"]

log = logging.getLogger("pyfacematch.gallery")

#: (scores (M, k), rows (M, k)) of a search of probes, k, probe masks.
SearchFn = Callable[[np.ndarray, int, "np.ndarray | None"], "tuple[np.ndarray, np.ndarray]"]


def tuning_similarity(
    explicit: float | None, slot_tids: Mapping[int, Sequence[int]], m: TemplateMatrix
) -> tuple[float, tuple[float, str]]:
    """Cosine of the tuning probes to their source template, and how it was chosen.

    Returns ``(sim, (reported value, source))``: ``explicit`` when given; else
    the 5th percentile of the cosine between two templates of one identity
    (clipped to [0.2, 0.95]) when at least 50 identities have two templates;
    else 0.5.
    """
    if explicit is not None:
        return explicit, (explicit, "explicit")
    pairs = [list(t[:2]) for t in slot_tids.values() if len(t) >= 2][:5000]
    if len(pairs) < 50:
        return 0.5, (0.5, "default (fewer than 50 identities with 2 templates)")
    rows = m.tid_to_row[np.asarray(pairs, np.int64)]
    a, b = m.data[rows[:, 0]], m.data[rows[:, 1]]
    genuine = np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))
    sim = float(np.clip(np.quantile(genuine, 0.05), 0.2, 0.95))
    return sim, (round(sim, 4), f"5th percentile of {len(pairs)} genuine pairs")


def make_tuning_probes(
    m: TemplateMatrix, n_probes: int, sim: float, rng: np.random.Generator
) -> np.ndarray:
    """``min(n_probes, m.n)`` unit float32 probes at cosine ≈ ``sim`` from random templates."""
    n = m.n
    s = min(n_probes, n)
    rows = rng.choice(n, s, replace=False)
    sigma = np.sqrt(1.0 / sim**2 - 1.0)
    noise = rng.standard_normal((s, m.dim)) * (sigma / np.sqrt(m.dim))
    p = m.view[rows].astype(np.float64) + noise
    return np.ascontiguousarray(p / np.linalg.norm(p, axis=1, keepdims=True), np.float32)


def run_tuning(
    backend: Backend,
    m: TemplateMatrix,
    probes: np.ndarray,
    pm: np.ndarray | None,
    exact: SearchFn,
    approx: SearchFn,
    recall_target: float,
) -> None:
    """Tune ``backend`` so that ``approx`` finds ``exact``'s top-1 at ``recall_target``.

    Logs a warning when the measured recall stays below the target.
    """
    ref_s, ref_i = exact(probes, 1, pm)
    ref_s = np.where(np.isnan(ref_s[:, 0]), -np.inf, ref_s[:, 0]).astype(np.float32)

    def pipeline(pr: np.ndarray, k: int) -> np.ndarray:
        sc, _ = approx(pr, k, pm)
        return np.where(np.isnan(sc[:, 0]), -np.inf, sc[:, 0])

    backend.tune(m, probes, ref_s, ref_i[:, 0], pipeline, recall_target)
    if backend.measured_recall is not None and backend.measured_recall < recall_target:
        log.warning(
            "%s backend: measured recall@1 %.4f is below the target %.4f",
            backend.name,
            backend.measured_recall,
            recall_target,
        )
