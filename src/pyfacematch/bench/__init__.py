"""Benchmarks shipped with pyfacematch: ``pyfacematch bench --suite quick|full --out DIR``.

:func:`run_suite` runs a named suite (see :data:`SUITES`) and writes a report folder:
``results.json`` (every figure, the machine, the sizes), ``report.md`` (tables and plots) and
the plots as PNG and SVG. Each protocol is written once, in this package: one module per section
(``scoring``, ``keys``, ``backends``, ``accuracy``, ``dayjob``, each exporting its
``section_<name>`` and the measurement functions behind it), shared pieces in ``section``,
``util``, ``synthdata`` and ``report``; ``suite`` only lists the sections. The scripts in the
repository's ``bench/`` folder are thin entry points over the same functions.
"""

from __future__ import annotations

from pyfacematch.bench.suite import SECTIONS, SUITES, SkipSection, run_suite

__all__ = ["run_suite", "SUITES", "SECTIONS", "SkipSection"]
