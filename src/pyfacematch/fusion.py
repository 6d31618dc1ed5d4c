"""Score fusion: one decision score from several scores of the same comparison.

Typical use: a landmark-key score and an image-embedding score of the same two
faces. Both are similarities (higher = more alike) but on different scales
(dlib descriptors are not centred: impostors score 0.7–0.9), so they are
first put on a common footing, then combined with weights learned from
labelled genuine/impostor pairs.

Methods
-------
``"zscore"``
    Each score is z-normalised by the impostor mean and standard deviation;
    the weights are Fisher's discriminant direction on the z-scores (pooled
    class covariances), clipped at 0 and scaled to sum to 1. The fused score
    is in "impostor standard deviations".
``"logistic"``
    Logistic regression on the standardised scores, fitted by Newton–Raphson
    (IRLS) with a small L2 penalty and class weights that make genuine and
    impostor pairs count equally. The fused score is a calibrated
    log-likelihood ratio ``log p(s | genuine) / p(s | impostor)``: add the
    log prior odds for a posterior (:meth:`ScoreFusion.probability`).

Missing scores (NaN, e.g. a masked landmark comparison that is not
comparable) contribute nothing: they are replaced by the impostor mean of
their score, i.e. ``z = 0``, before fusion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pyfacematch.errors import DimensionError, EmptyInputError, InputError

__all__ = ["ScoreFusion", "pair_scores", "cross_validated_fusion"]

_METHODS = ("zscore", "logistic")


def _stack(scores: Any, name: str = "scores") -> np.ndarray:
    if isinstance(scores, np.ndarray) and scores.ndim == 2:
        x = scores.astype(np.float64)
    else:
        cols = [np.asarray(s, dtype=np.float64).reshape(-1) for s in scores]
        if not cols:
            raise EmptyInputError(f"expected at least one score array in {name}, got none")
        n = {c.size for c in cols}
        if len(n) != 1:
            raise DimensionError(
                f"expected score arrays of the same length in {name}, got lengths {sorted(n)}"
            )
        x = np.stack(cols, axis=1)
    if np.isinf(x).any():
        raise InputError(f"{name} hold ±Inf: use NaN for a missing score")
    return x


class ScoreFusion:
    """Fuse K similarity scores per comparison into one.

    Parameters
    ----------
    method : {"logistic", "zscore"}
        See the module docstring.
    l2 : float
        L2 penalty of the logistic fit, on standardised scores.

    Attributes
    ----------
    weights : numpy.ndarray
        (K,) float64 weight of each score, after :meth:`fit` (on z-scores for
        ``"zscore"``, on standardised scores for ``"logistic"``).
    """

    def __init__(self, method: str = "logistic", *, l2: float = 1e-3) -> None:
        if method not in _METHODS:
            raise InputError(f"expected method in {_METHODS}, got {method!r}")
        if l2 < 0:
            raise InputError(f"expected l2 >= 0, got {l2}")
        self.method = method
        self.l2 = float(l2)
        self.weights: np.ndarray | None = None
        self.bias = 0.0
        self._imp_mean: np.ndarray | None = None
        self._imp_std: np.ndarray | None = None
        self._loc: np.ndarray | None = None
        self._scale: np.ndarray | None = None

    # ---------------------------------------------------------------- fitting
    def fit(self, scores: Any, genuine: Any) -> ScoreFusion:
        """Learn the normalisation and the weights from labelled comparisons.

        Parameters
        ----------
        scores : (n, K) array or sequence of K (n,) arrays
            Similarity scores, one column per matcher; NaN = missing.
        genuine : (n,) bool
            True for a genuine (same person) comparison.

        Returns
        -------
        ScoreFusion
            ``self``.
        """
        x = _stack(scores)
        y = np.asarray(genuine).reshape(-1)
        if y.size != x.shape[0]:
            raise DimensionError(f"expected {x.shape[0]} labels, got {y.size}")
        y = y.astype(bool)
        if y.all() or not y.any():
            raise InputError(
                "fitting a fusion needs both genuine and impostor comparisons; got only one kind"
            )
        imp = x[~y]
        with np.errstate(invalid="ignore"):
            mu = np.nanmean(imp, axis=0)
            sd = np.nanstd(imp, axis=0)
        if not np.isfinite(mu).all():
            raise InputError("a score column has no impostor value (all NaN): cannot fit")
        sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
        self._imp_mean, self._imp_std = mu, sd
        z = self._z(x)
        if self.method == "zscore":
            d = z[y].mean(0) - z[~y].mean(0)
            cov = np.cov(z[y], rowvar=False) * y.sum() + np.cov(z[~y], rowvar=False) * (~y).sum()
            cov = np.atleast_2d(cov) / len(y) + 1e-9 * np.eye(z.shape[1])
            w = np.clip(np.linalg.solve(cov, d), 0.0, None)
            if w.sum() <= 0:
                w = np.ones_like(w)
            self.weights = w / w.sum()
            self.bias = 0.0
        else:
            self._loc = z.mean(0)
            self._scale = z.std(0)
            self._scale = np.where(self._scale > 0, self._scale, 1.0)
            self.weights, self.bias = self._logistic(
                (z - self._loc) / self._scale, y.astype(np.float64)
            )
        return self

    def _z(self, x: np.ndarray) -> np.ndarray:
        z = (x - self._imp_mean) / self._imp_std
        return np.where(np.isnan(z), 0.0, z)

    def _logistic(self, f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        n, k = f.shape
        a = np.hstack([f, np.ones((n, 1))])
        # class weights: each class has total weight n/2 (balanced), so the
        # intercept is the log-likelihood ratio's, not the sample prior's
        cw = np.where(y > 0, 0.5 * n / y.sum(), 0.5 * n / (n - y.sum()))
        beta = np.zeros(k + 1)
        pen = np.full(k + 1, self.l2 * n)
        pen[-1] = 0.0
        for _ in range(100):
            eta = a @ beta
            p = 1.0 / (1.0 + np.exp(-eta))
            g = a.T @ (cw * (p - y)) + pen * beta
            h = (a * (cw * p * (1 - p))[:, None]).T @ a + np.diag(pen) + 1e-9 * np.eye(k + 1)
            step = np.linalg.solve(h, g)
            beta -= step
            if np.abs(step).max() < 1e-10:
                break
        return beta[:k].copy(), float(beta[k])

    # ---------------------------------------------------------------- scoring
    def _fitted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(weights, impostor mean, impostor std) of a fitted fusion; raises when not fitted."""
        if self.weights is None or self._imp_mean is None or self._imp_std is None:
            raise InputError("this ScoreFusion is not fitted: call fit(scores, genuine) first")
        return self.weights, self._imp_mean, self._imp_std

    def _check_fitted(self) -> None:
        self._fitted()

    def fuse(self, scores: Any) -> np.ndarray:
        """Fused scores.

        Parameters
        ----------
        scores : (n, K) array or sequence of K arrays of any one shape
            Scores in the order used by :meth:`fit`; e.g. two (M, N) score
            matrices give an (M, N) fused matrix.

        Returns
        -------
        numpy.ndarray
            float64, the shape of one input score array: z-score units
            (``"zscore"``) or log-likelihood ratio (``"logistic"``).
        """
        weights, _, _ = self._fitted()
        if isinstance(scores, np.ndarray) and scores.ndim == 2:
            shape: tuple[int, ...] = (scores.shape[0],)
            x = _stack(scores)
        else:
            arrs = [np.asarray(s) for s in scores]
            shape = arrs[0].shape if arrs else (0,)
            x = _stack(arrs)
        if x.shape[1] != len(weights):
            raise DimensionError(
                f"this fusion was fitted on {len(weights)} scores per comparison, got {x.shape[1]}"
            )
        z = self._z(x)
        if self.method == "zscore":
            out = z @ weights
        else:
            out = ((z - self._loc) / self._scale) @ weights + self.bias
        return out.reshape(shape)

    def probability(self, scores: Any, prior: float = 0.5) -> np.ndarray:
        """Posterior probability of a genuine comparison (``"logistic"`` only).

        ``prior`` is the prior probability that a comparison is genuine.
        """
        if self.method != "logistic":
            raise InputError("probability() needs method='logistic' (a calibrated fusion)")
        if not 0 < prior < 1:
            raise InputError(f"expected 0 < prior < 1, got {prior}")
        llr = self.fuse(scores) + np.log(prior / (1 - prior))
        return 1.0 / (1.0 + np.exp(-llr))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters (for saving next to a gallery)."""
        weights, imp_mean, imp_std = self._fitted()
        d: dict[str, Any] = {
            "method": self.method,
            "l2": self.l2,
            "weights": weights.tolist(),
            "bias": self.bias,
            "impostor_mean": imp_mean.tolist(),
            "impostor_std": imp_std.tolist(),
        }
        if self.method == "logistic" and self._loc is not None and self._scale is not None:
            d["loc"] = self._loc.tolist()
            d["scale"] = self._scale.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreFusion:
        """Inverse of :meth:`to_dict`."""
        f = cls(d["method"], l2=d.get("l2", 1e-3))
        f.weights = np.asarray(d["weights"], np.float64)
        f.bias = float(d["bias"])
        f._imp_mean = np.asarray(d["impostor_mean"], np.float64)
        f._imp_std = np.asarray(d["impostor_std"], np.float64)
        if f.method == "logistic":
            f._loc = np.asarray(d["loc"], np.float64)
            f._scale = np.asarray(d["scale"], np.float64)
        return f

    def __repr__(self) -> str:
        w = None if self.weights is None else np.round(self.weights, 4).tolist()
        return f"ScoreFusion(method={self.method!r}, weights={w})"


def pair_scores(
    matrices: Sequence[np.ndarray], labels: Any, rows: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs comparisons of one set with itself, as fusion training data.

    Parameters
    ----------
    matrices : sequence of (n, n) arrays
        Square similarity matrices over the same n samples (one per matcher).
    labels : (n,) array
        Identity of each sample.
    rows : (m,) int array, optional
        Use only pairs among these samples (default: all).

    Returns
    -------
    scores : (n_pairs, K) float64
        Upper-triangle pairs ``i < j`` (no self-comparisons).
    genuine : (n_pairs,) bool
    """
    lab = np.asarray(labels)
    idx = np.arange(lab.size) if rows is None else np.asarray(rows, np.int64)
    mats = [np.asarray(m, np.float64) for m in matrices]
    for m in mats:
        if m.shape != (lab.size, lab.size):
            raise DimensionError(f"expected ({lab.size}, {lab.size}) score matrices, got {m.shape}")
    iu, ju = np.triu_indices(idx.size, k=1)
    i, j = idx[iu], idx[ju]
    return np.stack([m[i, j] for m in mats], axis=1), lab[i] == lab[j]


def cross_validated_fusion(
    matrices: Sequence[np.ndarray],
    labels: Any,
    *,
    method: str = "logistic",
    folds: int = 2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Fused scores of every pair, each from a fusion fitted on other samples.

    Samples are split into ``folds`` parts (stratified by identity, seeded);
    pairs inside part f are fused with weights fitted on the pairs among the
    samples outside f. Cross-part pairs are not scored.

    Returns
    -------
    fused : (n_pairs,) float64
    genuine : (n_pairs,) bool
        The within-part pairs, all parts together.
    """
    lab = np.asarray(labels)
    if folds < 2:
        raise InputError(f"expected folds >= 2, got {folds}")
    rng = np.random.default_rng(seed)
    part = np.empty(lab.size, np.int64)
    for person in np.unique(lab):
        members = rng.permutation(np.flatnonzero(lab == person))
        part[members] = np.arange(members.size) % folds
    fused, gen = [], []
    for f in range(folds):
        train = np.flatnonzero(part != f)
        test = np.flatnonzero(part == f)
        x_tr, y_tr = pair_scores(matrices, lab, train)
        model = ScoreFusion(method).fit(x_tr, y_tr)
        x_te, y_te = pair_scores(matrices, lab, test)
        fused.append(model.fuse(x_te))
        gen.append(y_te)
    return np.concatenate(fused), np.concatenate(gen)
