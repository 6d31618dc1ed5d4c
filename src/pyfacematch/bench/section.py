"""What every benchmark section shares: the skip signal, optional imports, plots and summary rows.

A *section* is a function ``section(cfg, out, log) -> dict`` in its own module of
:mod:`pyfacematch.bench` (``scoring``, ``keys``, ``accuracy``, ``backends``, ``dayjob``); the
suite (:mod:`pyfacematch.bench.suite`) only lists them. The dict it returns holds
``description``, ``data``, ``tables``, ``plots``, ``summary`` and optionally ``notes``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["Log", "Section", "SkipSection", "require", "save_plot", "summary_row"]

#: a progress sink: one line per call
Log = Callable[[str], None]
#: ``section(cfg, out_dir, log) -> result dict``
Section = Callable[[Mapping[str, Any], Path, Log], dict[str, Any]]


class SkipSection(Exception):
    """Raised by a section whose dependencies are missing; the message is the reason."""


def require(module: str, why: str) -> Any:
    """Import ``module`` or skip the section.

    Parameters
    ----------
    module : str
        Module to import.
    why : str
        The skip reason; ``{exc}`` is replaced by the import error.

    Raises
    ------
    SkipSection
        When the import fails.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SkipSection(why.format(exc=exc)) from exc


def save_plot(fig: Any, out: Path, stem: str, title: str) -> dict[str, str]:
    """Write ``fig`` as ``out/stem.png`` and ``.svg``; return the report's plot entry."""
    from pyfacematch.plots import save_figure

    save_figure(fig, out / stem, ("png", "svg"))
    return {"title": title, "file": f"{stem}.png"}


def summary_row(
    section: str,
    measure: str,
    value: Any,
    baseline: str | None = None,
    baseline_value: Any = None,
    ratio: float | None = None,
    ratio_text: str | None = None,
) -> dict[str, Any]:
    """One row of the report's summary table: a figure, its baseline and their ratio.

    Without ``ratio`` or ``ratio_text``, the ratio is ``value / baseline_value``.
    """
    if ratio is None and ratio_text is None and baseline_value:
        ratio = value / baseline_value
    if ratio is not None and ratio_text is None:
        ratio_text = f"×{ratio:.3g}"
    return {
        "section": section,
        "measure": measure,
        "value": value,
        "baseline": baseline,
        "baseline_value": baseline_value,
        "ratio": ratio,
        "ratio_text": ratio_text,
    }
