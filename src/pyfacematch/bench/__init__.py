"""Benchmarks shipped with pyfacematch: ``pyfacematch bench --suite quick|full --out DIR``.

:func:`run_suite` runs a named suite (see :data:`SUITES`) and writes a report folder:
``results.json`` (every figure, the machine, the sizes), ``report.md`` (tables and plots) and
the plots as PNG and SVG. The measurement code lives in this package (``scoring``,
``backends``, ``keys``, ``dayjob``) so that the suite runs on an installed copy; the scripts
in the repository's ``bench/`` folder call the same functions.
"""

from __future__ import annotations

from pyfacematch.bench.suite import SECTIONS, SUITES, SkipSection, run_suite

__all__ = ["run_suite", "SUITES", "SECTIONS", "SkipSection"]
