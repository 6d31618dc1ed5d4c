"""Accuracy metrics in the terms of biometric evaluations (NIST FRVT, ISO/IEC 19795-1).

Conventions
-----------
* Scores are **similarities**: higher means more alike. A comparison is
  *accepted* at threshold ``T`` when ``score >= T``.
* 1:1 (verification), from genuine (mated) and impostor (non-mated) scores::

      FMR(T)  = #{impostor >= T} / n_impostor      (false match rate)
      FNMR(T) = #{genuine  <  T} / n_genuine       (false non-match rate)

* 1:N (identification), as NIST FRVT 1:N defines it. A *mated* search has its
  true identity enrolled; a *non-mated* search does not::

      FPIR(T)    = #{non-mated searches whose top candidate scores >= T} / n_non_mated
      FNIR(T, R) = #{mated searches whose mate is NOT returned at rank <= R
                     with score >= T} / n_mated

  With ``T = -inf`` the rank-``R`` miss rate (1 - CMC(R)) is FNIR(-inf, R).
* The threshold that achieves a target FMR (or FPIR) ``a`` on ``n`` impostor
  scores is the **smallest threshold whose empirical rate is <= a**
  (:func:`threshold_for_fmr`). At most ``k = floor(a * n)`` impostors may
  score at or above it, so it lies just above the ``(k+1)``-th largest impostor
  score: the next representable number above that score in the scores' own
  floating-point type (so a float32 comparison gives the same decisions).
* **Too few impostors.** A target ``a`` is *supported* only when
  ``n_impostor >= ceil(3 / a)`` -- the "rule of three": with zero false matches
  in ``n`` trials the one-sided 95% upper bound on the rate is about ``3/n``,
  so fewer comparisons cannot show that the rate is below ``a``. Unsupported
  targets are still computed (the threshold is then simply above every
  impostor score) but are flagged with ``supported=False`` and a reason.
* Confidence intervals are two-sided binomial intervals on the counted rates:
  Clopper-Pearson (exact, via :mod:`scipy.stats`) when scipy is installed,
  else Wilson score; or a bootstrap that also resamples the impostor scores
  that fix the threshold (:func:`fnmr_at_fmr` with ``ci="bootstrap"``).
* Failure to enrol (FTE) and failure to acquire (FTA) are counted as
  ISO/IEC 19795-1 counts them: FMR/FNMR are measured on the comparisons that
  could be made, and the generalized rates fold the failures back in::

      GFAR = FMR * (1 - FTA) * (1 - FTE)
      GFRR = FTE + (1 - FTE) * FTA + (1 - FTE) * (1 - FTA) * FNMR

All functions take array-likes of any real dtype, validate them (empty arrays,
NaN, bad targets raise the typed errors of :mod:`pyfacematch.errors`), and
sort each score array once; millions of impostor scores take well under a
second.

Layout: :mod:`~pyfacematch.metrics.types` (result dataclasses),
:mod:`~pyfacematch.metrics.validation` (input checks, e.g. :func:`as_scores`),
:mod:`~pyfacematch.metrics.intervals`, :mod:`~pyfacematch.metrics.thresholds`,
:mod:`~pyfacematch.metrics.verification` (1:1), :mod:`~pyfacematch.metrics.identification`
(1:N) and :mod:`~pyfacematch.metrics.iso19795`; everything public is re-exported here.
"""

from __future__ import annotations

from pyfacematch.metrics.identification import (
    DEFAULT_FPIR_TARGETS,
    cmc,
    fnir_at_fpir,
    fpir_fnir,
    identification_det_curve,
    rank_miss_rate,
    threshold_for_fpir,
)
from pyfacematch.metrics.intervals import binomial_ci
from pyfacematch.metrics.iso19795 import failure_rate, generalized_rates
from pyfacematch.metrics.thresholds import min_comparisons_for
from pyfacematch.metrics.types import (
    CMCCurve,
    EERResult,
    ErrorCurve,
    FailureRate,
    GeneralizedRates,
    IdentificationPoint,
    Interval,
    OperatingPoint,
)
from pyfacematch.metrics.validation import as_scores
from pyfacematch.metrics.verification import (
    DEFAULT_FMR_TARGETS,
    det_curve,
    eer,
    error_rates,
    fnmr_at_fmr,
    threshold_for_fmr,
)

__all__ = [
    "DEFAULT_FMR_TARGETS",
    "DEFAULT_FPIR_TARGETS",
    "Interval",
    "ErrorCurve",
    "OperatingPoint",
    "EERResult",
    "IdentificationPoint",
    "CMCCurve",
    "FailureRate",
    "GeneralizedRates",
    "as_scores",
    "binomial_ci",
    "min_comparisons_for",
    "error_rates",
    "threshold_for_fmr",
    "fnmr_at_fmr",
    "eer",
    "det_curve",
    "fpir_fnir",
    "threshold_for_fpir",
    "fnir_at_fpir",
    "identification_det_curve",
    "cmc",
    "rank_miss_rate",
    "failure_rate",
    "generalized_rates",
]
