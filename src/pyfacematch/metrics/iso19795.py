"""ISO/IEC 19795-1 rates: failure to enrol / acquire and the generalized FAR/FRR."""

from __future__ import annotations

import numpy as np

from pyfacematch.errors import EmptyInputError, InputError
from pyfacematch.metrics.intervals import interval
from pyfacematch.metrics.types import FailureRate, GeneralizedRates
from pyfacematch.metrics.validation import as_confidence, as_rate

__all__ = ["failure_rate", "generalized_rates"]


def failure_rate(
    failures: int, attempts: int, *, confidence: float = 0.95, ci: str = "auto"
) -> FailureRate:
    """FTE or FTA as ISO/IEC 19795-1 counts them: failures over attempts.

    FTE: persons for whom enrolment could not be completed / persons who
    attempted enrolment. FTA: attempts where no sample of sufficient quality
    was acquired / all attempts. Neither set of failures contributes
    comparisons to FMR/FNMR; fold them back with :func:`generalized_rates`.
    """
    for name, v in (("failures", failures), ("attempts", attempts)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise InputError(f"{name}: expected a non-negative integer count, got {v!r}")
    if attempts == 0:
        raise EmptyInputError("attempts: expected at least one attempt, got 0")
    if failures > attempts:
        raise InputError(f"failures ({failures}) cannot exceed attempts ({attempts})")
    return FailureRate(
        float(failures / attempts),
        int(failures),
        int(attempts),
        interval(int(failures), int(attempts), as_confidence(confidence), ci),
    )


def generalized_rates(
    fmr: float, fnmr: float, *, fte: float | FailureRate = 0.0, fta: float | FailureRate = 0.0
) -> GeneralizedRates:
    """Generalized FAR/FRR of ISO/IEC 19795-1 from FMR, FNMR, FTE and FTA.

    ``GFAR = FMR (1 - FTA)(1 - FTE)``;
    ``GFRR = FTE + (1 - FTE) FTA + (1 - FTE)(1 - FTA) FNMR``.

    Parameters
    ----------
    fmr, fnmr : float
        Rates measured on the comparisons that could be made.
    fte, fta : float or FailureRate
        Failure-to-enrol and failure-to-acquire rates.
    """
    f_e = fte.rate if isinstance(fte, FailureRate) else as_rate(fte, "fte")
    f_a = fta.rate if isinstance(fta, FailureRate) else as_rate(fta, "fta")
    fm = as_rate(fmr, "fmr")
    fnm = as_rate(fnmr, "fnmr")
    gfar = fm * (1 - f_a) * (1 - f_e)
    gfrr = f_e + (1 - f_e) * f_a + (1 - f_e) * (1 - f_a) * fnm
    return GeneralizedRates(gfar, gfrr, fm, fnm, f_e, f_a)
