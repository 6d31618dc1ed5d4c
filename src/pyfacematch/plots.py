"""Plots of evaluation results: DET, CMC, score histograms, throughput.

Every ``plot_*`` function takes results and a path, writes the figure as PNG
and/or SVG, and returns the paths written. Every ``*_figure`` function builds
the same figure and returns the :class:`matplotlib.figure.Figure` without
writing it (useful for tests, notebooks and reports).

Figures are made with :class:`matplotlib.figure.Figure` and the Agg renderer
directly: no pyplot state, no GUI backend, nothing is ever shown, and the
functions are safe to call from worker threads.

Output formats: if ``path`` ends in ``.png``, ``.svg`` or ``.pdf`` and
``formats`` is None, that format alone is written; otherwise ``formats``
(default ``("png", "svg")``) decides, each written to ``path`` with that
suffix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from pyfacematch.errors import EmptyInputError, InputError
from pyfacematch.metrics import (
    CMCCurve,
    ErrorCurve,
    IdentificationPoint,
    OperatingPoint,
    as_scores,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "det_figure",
    "plot_det",
    "cmc_figure",
    "plot_cmc",
    "score_histogram_figure",
    "plot_score_histograms",
    "throughput_figure",
    "plot_throughput",
    "save_figure",
]

PathLike = Union[str, "os.PathLike[str]"]
_FORMATS = ("png", "svg", "pdf")
_DEFAULT_FORMATS = ("png", "svg")
# threshold lines: tab10 colours other than the genuine blue and impostor red
_LINE_COLORS = ("C2", "C4", "C5", "C6", "C8", "C9", "C1", "C7")


def _new_figure(figsize: tuple[float, float] = (6.4, 4.8)) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def save_figure(
    fig: Figure, path: PathLike, formats: Sequence[str] | None = None, *, dpi: int = 150
) -> tuple[Path, ...]:
    """Write ``fig`` to ``path`` in each format; return the paths written.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : str or path-like
        Output file; its suffix is replaced by each format's.
    formats : sequence of {"png", "svg", "pdf"} or None
        None: the suffix of ``path`` if it is one of those, else PNG and SVG.
    dpi : int
        Resolution of raster output.
    """
    p = Path(path)
    suffix = p.suffix.lower().lstrip(".")
    if formats is None:
        fmts: tuple[str, ...] = (suffix,) if suffix in _FORMATS else _DEFAULT_FORMATS
    else:
        if isinstance(formats, str):
            formats = (formats,)
        fmts = tuple(f.lower().lstrip(".") for f in formats)
        bad = [f for f in fmts if f not in _FORMATS]
        if bad or not fmts:
            raise InputError(f"formats: expected some of {_FORMATS}, got {list(formats)!r}")
    base = p.with_suffix("") if suffix in _FORMATS else p
    base.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for f in fmts:
        target = base.with_name(base.name + "." + f)
        meta = {"Date": None} if f == "svg" else None  # reproducible SVG
        fig.savefig(target, format=f, dpi=dpi, metadata=meta)
        out.append(target)
    return tuple(out)


def _labelled(items: Any, kind: type, what: str) -> list[tuple[str, Any]]:
    """Normalise one result, a mapping label -> result, or (label, result) pairs."""
    if isinstance(items, kind):
        return [("", items)]
    if isinstance(items, Mapping):
        pairs = list(items.items())
    elif isinstance(items, Iterable):
        pairs = []
        for it in items:
            if isinstance(it, kind):
                pairs.append(("", it))
            elif isinstance(it, tuple) and len(it) == 2 and isinstance(it[1], kind):
                pairs.append((str(it[0]), it[1]))
            else:
                raise InputError(
                    f"expected {kind.__name__} results (or (label, result) pairs), "
                    f"got {type(it).__name__}"
                )
    else:
        raise InputError(f"expected {what}, got {type(items).__name__}")
    if not pairs:
        raise EmptyInputError(f"expected at least one {kind.__name__} to plot, got none")
    for label, res in pairs:
        if not isinstance(res, kind):
            raise InputError(f"{label!r}: expected a {kind.__name__}, got {type(res).__name__}")
    return [(str(label), res) for label, res in pairs]


# ----------------------------------------------------------------------------- DET


def _probit_scale(ax: Any, axis: str) -> None:
    from scipy.stats import norm

    def fwd(x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return norm.ppf(np.clip(x, 1e-12, 1 - 1e-12))

    def inv(y: np.ndarray) -> np.ndarray:
        return norm.cdf(y)

    ticks = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99, 0.999]
    labels = ["1e-6", "1e-5", "1e-4", "1e-3", "0.01", "0.05", "0.2", "0.5", "0.8", "0.95"]
    labels += ["0.99", "0.999"]
    if axis == "x":
        ax.set_xscale("function", functions=(fwd, inv))
        ax.set_xticks(ticks, labels)
    else:
        ax.set_yscale("function", functions=(fwd, inv))
        ax.set_yticks(ticks, labels)


def det_figure(
    curves: ErrorCurve | Mapping[str, ErrorCurve] | Sequence[Any],
    *,
    operating_points: Mapping[str, Sequence[OperatingPoint | IdentificationPoint]]
    | Sequence[OperatingPoint | IdentificationPoint]
    | None = None,
    scale: str = "log",
    title: str | None = None,
) -> Figure:
    """DET plot: false non-match rate against false match rate.

    Parameters
    ----------
    curves : ErrorCurve, mapping label -> ErrorCurve, or (label, ErrorCurve) pairs
        From :func:`pyfacematch.metrics.det_curve` (1:1: FMR vs FNMR) or
        :func:`pyfacematch.metrics.identification_det_curve` (1:N: FPIR vs FNIR).
    operating_points : sequence of OperatingPoint / IdentificationPoint, or mapping
        Marked on the plot (e.g. from :func:`~pyfacematch.metrics.fnmr_at_fmr`).
    scale : {"log", "probit"}
        Axis scale of both axes. "probit" (normal deviate, the classic DET
        scale) needs scipy. Points with a rate of exactly 0 cannot be drawn
        on either scale and are left out.
    title : str or None
        Figure title (default says what is plotted).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if scale not in ("log", "probit"):
        raise InputError(f"scale: expected 'log' or 'probit', got {scale!r}")
    pairs = _labelled(curves, ErrorCurve, "an ErrorCurve or a mapping label -> ErrorCurve")
    ident = all(c.kind == "identification" for _, c in pairs)
    xname, yname = ("FPIR", "FNIR") if ident else ("FMR", "FNMR")
    fig = _new_figure()
    ax = fig.add_subplot()
    lo_x = 1.0
    lo_y = 1.0
    for i, (label, c) in enumerate(pairs):
        keep = (c.fmr > 0) & (c.fnmr > 0) & (c.fmr < 1) & (c.fnmr < 1)
        x, y = c.fmr[keep], c.fnmr[keep]
        name = label or f"curve {i + 1}"
        ax.plot(x, y, drawstyle="default", lw=1.6, label=f"{name} (n={c.n_genuine}/{c.n_impostor})")
        if x.size:
            lo_x = min(lo_x, float(x.min()))
            lo_y = min(lo_y, float(y.min()))
    if operating_points is not None:
        op_pairs: list[tuple[str, Sequence[Any]]]
        if isinstance(operating_points, Mapping):
            op_pairs = [(str(k), v) for k, v in operating_points.items()]
        else:
            op_pairs = [("", operating_points)]
        for label, pts in op_pairs:
            xs, ys = [], []
            for p in pts:
                if isinstance(p, OperatingPoint):
                    px, py = p.fmr, p.fnmr
                elif isinstance(p, IdentificationPoint):
                    px, py = p.fpir, p.fnir
                else:
                    raise InputError(
                        f"operating_points: expected OperatingPoint or IdentificationPoint, "
                        f"got {type(p).__name__}"
                    )
                if 0 < px < 1 and 0 < py < 1:
                    xs.append(px)
                    ys.append(py)
            if xs:
                ax.plot(
                    xs,
                    ys,
                    "o",
                    ms=6,
                    mfc="none",
                    mew=1.5,
                    label=(label + " " if label else "") + f"{yname} @ target {xname}",
                )
    if scale == "log":
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(max(lo_x / 2, 1e-9), 1.0)
        ax.set_ylim(max(lo_y / 2, 1e-9), 1.0)
    else:
        _probit_scale(ax, "x")
        _probit_scale(ax, "y")
        ax.set_xlim(max(lo_x / 2, 1e-7), 0.999)
        ax.set_ylim(max(lo_y / 2, 1e-7), 0.999)
        ax.tick_params(axis="x", labelrotation=35)  # probit ticks crowd at the low end
    full_x = "false positive identification rate" if ident else "false match rate"
    full_y = "false negative identification rate" if ident else "false non-match rate"
    ax.set_xlabel(f"{xname} ({full_x})")
    ax.set_ylabel(f"{yname} ({full_y})")
    ax.set_title(title or f"DET: {yname} vs {xname}" + (" (1:N)" if ident else " (1:1)"))
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", alpha=0.15)
    ax.legend(loc="best", fontsize="small")
    return fig


def plot_det(
    curves: ErrorCurve | Mapping[str, ErrorCurve] | Sequence[Any],
    path: PathLike,
    *,
    formats: Sequence[str] | None = None,
    operating_points: Any = None,
    scale: str = "log",
    title: str | None = None,
) -> tuple[Path, ...]:
    """Write a DET plot (see :func:`det_figure`); return the paths written."""
    fig = det_figure(curves, operating_points=operating_points, scale=scale, title=title)
    return save_figure(fig, path, formats)


# ----------------------------------------------------------------------------- CMC


def cmc_figure(
    curves: CMCCurve | Mapping[str, CMCCurve] | Sequence[Any],
    *,
    miss_rate: bool = False,
    title: str | None = None,
) -> Figure:
    """CMC plot: identification rate (or rank-k miss rate) against rank.

    Parameters
    ----------
    curves : CMCCurve, mapping label -> CMCCurve, or (label, CMCCurve) pairs
        From :func:`pyfacematch.metrics.cmc`.
    miss_rate : bool
        Plot the miss rate ``1 - CMC`` on a log axis instead of the hit rate.
    title : str or None
        Figure title.
    """
    pairs = _labelled(curves, CMCCurve, "a CMCCurve or a mapping label -> CMCCurve")
    fig = _new_figure()
    ax = fig.add_subplot()
    max_rank = 1
    for i, (label, c) in enumerate(pairs):
        name = (label or f"curve {i + 1}") + f" (n={c.n_mated})"
        if miss_rate:
            y = c.miss_rate
            lo, hi = c.ci_low, c.ci_high
        else:
            y = c.hit_rate
            lo, hi = 1 - c.ci_high, 1 - c.ci_low
        (line,) = ax.plot(c.ranks, y, marker="o" if c.ranks.size <= 30 else None, ms=3, label=name)
        ax.fill_between(c.ranks, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
        max_rank = max(max_rank, int(c.ranks[-1]))
    ax.set_xlabel("rank")
    if miss_rate:
        ax.set_yscale("log")
        ax.set_ylabel("rank-k miss rate (FNIR at T = -inf)")
    else:
        ax.set_ylabel("identification rate (mate at rank <= k)")
        ax.set_ylim(None, 1.0)
    if max_rank > 20:
        ax.set_xscale("log")
    else:
        ax.set_xticks(range(1, max_rank + 1))
    ax.set_title(title or "CMC: cumulative match characteristic")
    ax.grid(True, alpha=0.4)
    ax.legend(loc="best", fontsize="small")
    return fig


def plot_cmc(
    curves: CMCCurve | Mapping[str, CMCCurve] | Sequence[Any],
    path: PathLike,
    *,
    formats: Sequence[str] | None = None,
    miss_rate: bool = False,
    title: str | None = None,
) -> tuple[Path, ...]:
    """Write a CMC plot (see :func:`cmc_figure`); return the paths written."""
    return save_figure(cmc_figure(curves, miss_rate=miss_rate, title=title), path, formats)


# ----------------------------------------------------------------------------- histograms


def score_histogram_figure(
    genuine: Any,
    impostor: Any,
    *,
    bins: int = 100,
    thresholds: Mapping[str, float] | Sequence[OperatingPoint] | None = None,
    log_y: bool = True,
    title: str | None = None,
) -> Figure:
    """Histograms (densities) of genuine and impostor scores.

    Parameters
    ----------
    genuine, impostor : array_like, (n,)
        Similarity scores.
    bins : int
        Number of bins over the common score range.
    thresholds : mapping label -> threshold, or OperatingPoints
        Drawn as vertical lines.
    log_y : bool
        Log density axis (shows the impostor tail that sets low-FMR thresholds).
    title : str or None
        Figure title.
    """
    g = as_scores(genuine, "genuine")
    imp = as_scores(impostor, "impostor")
    if not isinstance(bins, (int, np.integer)) or bins < 2:
        raise InputError(f"bins: expected an integer >= 2, got {bins!r}")
    lo = min(float(g.min()), float(imp.min()))
    hi = max(float(g.max()), float(imp.max()))
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, int(bins) + 1)
    fig = _new_figure()
    ax = fig.add_subplot()
    for data, name, color in ((imp, "impostor", "tab:red"), (g, "genuine", "tab:blue")):
        h, _ = np.histogram(data, bins=edges, density=True)
        ax.stairs(h, edges, fill=True, alpha=0.3, color=color)
        ax.stairs(h, edges, color=color, lw=1.2, label=f"{name} (n={data.size})")
    if thresholds is not None:
        if isinstance(thresholds, Mapping):
            items = [(str(k), float(v)) for k, v in thresholds.items()]
        else:
            items = []
            for p in thresholds:
                if not isinstance(p, OperatingPoint):
                    raise InputError(
                        "thresholds: expected a mapping label -> threshold or OperatingPoints"
                    )
                items.append((f"FMR {p.target_fmr:g}", p.threshold))
        for k, (label, t) in enumerate(items):
            if math.isfinite(t):
                ax.axvline(
                    t,
                    ls="--",
                    lw=1,
                    color=_LINE_COLORS[k % len(_LINE_COLORS)],
                    label=f"T @ {label}",
                )
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("similarity score")
    ax.set_ylabel("density" + (" (log)" if log_y else ""))
    ax.set_title(title or "Genuine and impostor score distributions")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return fig


def plot_score_histograms(
    genuine: Any,
    impostor: Any,
    path: PathLike,
    *,
    formats: Sequence[str] | None = None,
    bins: int = 100,
    thresholds: Any = None,
    log_y: bool = True,
    title: str | None = None,
) -> tuple[Path, ...]:
    """Write genuine/impostor score histograms (see :func:`score_histogram_figure`)."""
    fig = score_histogram_figure(
        genuine, impostor, bins=bins, thresholds=thresholds, log_y=log_y, title=title
    )
    return save_figure(fig, path, formats)


# ----------------------------------------------------------------------------- throughput


def throughput_figure(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    ylabel: str = "probes per second",
    xlabel: str = "gallery size (identities)",
    title: str | None = None,
) -> Figure:
    """Throughput against gallery size, one line per engine/backend.

    Parameters
    ----------
    series : mapping label -> (gallery_sizes, throughput)
        Each a pair of equal-length sequences; NaN throughput is skipped.
    ylabel, xlabel : str
        Axis labels (units!).
    title : str or None
        Figure title.
    """
    if not isinstance(series, Mapping) or not series:
        raise EmptyInputError("series: expected a non-empty mapping label -> (sizes, values)")
    fig = _new_figure()
    ax = fig.add_subplot()
    for label, val in series.items():
        try:
            sizes, values = val
        except (TypeError, ValueError) as exc:
            raise InputError(f"{label!r}: expected a pair (gallery_sizes, throughput)") from exc
        x = np.asarray(sizes, dtype=np.float64)
        y = np.asarray(values, dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape or x.size == 0:
            raise InputError(
                f"{label!r}: gallery_sizes and throughput must be non-empty 1-D arrays of the "
                f"same length, got shapes {x.shape} and {y.shape}"
            )
        ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
        order = np.argsort(x[ok])
        ax.plot(x[ok][order], y[ok][order], marker="o", ms=4, label=str(label))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or "Throughput against gallery size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return fig


def plot_throughput(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: PathLike,
    *,
    formats: Sequence[str] | None = None,
    ylabel: str = "probes per second",
    xlabel: str = "gallery size (identities)",
    title: str | None = None,
) -> tuple[Path, ...]:
    """Write a throughput plot (see :func:`throughput_figure`); return the paths written."""
    fig = throughput_figure(series, ylabel=ylabel, xlabel=xlabel, title=title)
    return save_figure(fig, path, formats)
