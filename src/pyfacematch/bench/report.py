"""The benchmark report: results.json, report.md (tables + plots) and the suite's own plots.

:func:`write_report` takes the dict built by :func:`pyfacematch.bench.run_suite` (sections with
status, tables, plots and summary rows) and writes the Markdown report next to the JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.bench.util import SIMD_FLAGS, table

__all__ = ["write_report", "write_json", "recall_speed_figure", "bars_figure", "fmt"]


def fmt(v: Any) -> str:
    """A number for a report cell: 3 significant digits, thousands separators, '—' for missing."""
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "n/a"
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 0.01:
            return f"{v:.3g}"
        return f"{v:.2e}"
    return str(v)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if x is None or isinstance(x, (str, int, bool)):
        return x
    return str(x)


def write_json(results: Mapping[str, Any], path: Path) -> None:
    """results.json (NaN/inf written as null, numpy types as plain numbers)."""
    path.write_text(json.dumps(_jsonable(results), indent=2))


# ------------------------------------------------------------------------------------ plots


def _figure(figsize: tuple[float, float] = (7.5, 5.0)) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def recall_speed_figure(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    tuned: Sequence[Mapping[str, Any]] = (),
    *,
    title: str = "Recall@1 against search speed",
    zoom: float = 0.95,
) -> Any:
    """Recall@1 (against exact search) vs probes/s; one line per engine, tuned points starred.

    Two panels: the whole range, and recall ≥ ``zoom`` where the operating points live.
    ``curves``: engine -> points with ``probes_per_s``, ``recall1`` and ``depth``;
    ``tuned``: rows with ``backend``, ``probes_per_s_b1024``, ``recall1``.
    """
    fig = _figure((13.0, 6.2))
    axes = fig.subplots(1, 2, sharex=True)
    markers = "osD^v<>phX*"
    lo = 1.0
    stars = [r for r in tuned if r.get("probes_per_s_b1024") and r.get("recall1") is not None]
    for ax in axes:
        for i, (name, pts) in enumerate(curves.items()):
            pts = [p for p in pts if p.get("probes_per_s") and p.get("recall1") is not None]
            if not pts:
                continue
            pts = sorted(pts, key=lambda p: p["probes_per_s"])
            x = [p["probes_per_s"] for p in pts]
            y = [p["recall1"] for p in pts]
            lo = min(lo, min(y))
            dashed = "FAISS" in name or "hnswlib" in name
            ax.plot(
                x,
                y,
                ls="--" if dashed else "-",
                marker=markers[i % len(markers)],
                ms=5,
                lw=1.5,
                color=f"C{i % 10}",
                label=name,
            )
        for j, r in enumerate(sorted(stars, key=lambda r: r["probes_per_s_b1024"])):
            ax.plot(
                r["probes_per_s_b1024"],
                r["recall1"],
                "*",
                ms=14,
                mec="black",
                mfc="gold",
                label="self-tuned Gallery backend" if j == 0 else None,
                zorder=5,
            )
            ax.annotate(
                r["backend"],
                (r["probes_per_s_b1024"], r["recall1"]),
                textcoords="offset points",
                xytext=(0, -16 if j % 2 == 0 else -28),
                ha="center",
                fontsize="small",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
            )
            lo = min(lo, r["recall1"])
        ax.axhline(0.99, color="grey", lw=0.8, ls=":", label="recall target 0.99")
        ax.set_xscale("log")
        ax.set_xlabel("probes per second (batches of ≤ 1024, log scale)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylim(max(0.0, lo - 0.05), 1.01)
    axes[0].set_ylabel("recall@1 against exact search")
    axes[0].set_title("all depths")
    axes[1].set_ylim(zoom, 1.0 + (1.0 - zoom) * 0.04)
    axes[1].set_title(f"zoom: recall@1 ≥ {zoom}")
    fig.suptitle(title)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize="small")
    return fig


def bars_figure(
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    ylabel: str,
    title: str,
    log: bool = True,
) -> Any:
    """Grouped bars: one group per label in ``groups``, one bar per series (NaN bars left out)."""
    fig = _figure()
    ax = fig.add_subplot()
    k = max(len(series), 1)
    w = 0.8 / k
    x = np.arange(len(groups))
    for i, (name, vals) in enumerate(series.items()):
        v = np.asarray(vals, np.float64)
        ok = np.isfinite(v)
        bars = ax.bar(x[ok] + (i - (k - 1) / 2) * w, v[ok], w, label=name)
        ax.bar_label(
            bars, labels=[fmt(float(t)) for t in v[ok]], fontsize="x-small", rotation=90, padding=2
        )
    ax.set_xticks(x, groups)
    if log:
        ax.set_yscale("log")
        ax.margins(y=0.25)
    else:
        top = max(
            (float(np.nanmax(np.asarray(v, np.float64))) for v in series.values()), default=1.0
        )
        ax.set_ylim(0, max(top, 1e-9) * 1.18)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return fig


# ------------------------------------------------------------------------------------ markdown


def _machine_md(m: Mapping[str, Any]) -> str:
    simd = m.get("simd") or {}
    flags = m.get("cpu_flags") or []
    rows = [
        ["CPU", m.get("cpu")],
        ["CPU vendor", m.get("cpu_vendor")],
        [
            "CPU family / model",
            f"{m.get('cpu_family')} / {m.get('cpu_model_number')}" if m.get("cpu_family") else None,
        ],
        ["CPU flags (SIMD)", " ".join(f for f in SIMD_FLAGS if f in flags) or None],
        ["cores (os.cpu_count)", m.get("cores")],
        ["pyfacematch threads", simd.get("num_threads") if isinstance(simd, Mapping) else None],
        [
            "SIMD level (active / available)",
            f"{simd.get('active')} / {', '.join(simd.get('available', []))}"
            if isinstance(simd, Mapping)
            else simd,
        ],
        [
            "CPU features",
            ", ".join(simd.get("cpu_features", [])) if isinstance(simd, Mapping) else None,
        ],
        ["Python", m.get("python")],
        ["pyfacematch", m.get("pyfacematch")],
        ["numpy", m.get("numpy")],
        ["faiss", m.get("faiss")],
        ["simsimd", m.get("simsimd")],
        ["hnswlib", m.get("hnswlib")],
        ["onnxruntime", m.get("onnxruntime")],
    ]
    for b in m.get("blas") or []:
        ver = " ".join(str(b[k]) for k in ("version", "architecture") if b.get(k))
        rows.append(
            [
                f"threadpool ({b.get('internal_api')})",
                f"{ver + ', ' if ver else ''}{b.get('num_threads')} threads",
            ]
        )
    return table(["", "value"], [[k, "not installed" if v is None else str(v)] for k, v in rows])


def write_report(results: Mapping[str, Any], out_dir: Path) -> Path:
    """Write report.md from the suite results (plots are already in ``out_dir``)."""
    lines: list[str] = []
    add = lines.append
    add(f"# pyfacematch benchmark report — suite `{results['suite']}`")
    add("")
    la0, la1 = results.get("load_average_start"), results.get("load_average_end")
    load = ""
    if la0 and la1:
        load = (
            f" System load average (1 min) {la0[0]:.1f} at the start and {la1[0]:.1f} at the end on "
            f"{results['machine'].get('cores')} cores: with other work running, speeds are lower than on an "
            "idle machine, and ratios (same run, same conditions) are the figures to compare."
        )
    add(
        f"Started {results['started']}, wall time {results['wall_s']:.0f} s (process CPU time "
        f"{results.get('cpu_s', float('nan')):.0f} s). Command: `{results.get('command', '')}`.{load}"
    )
    add("")
    add(
        "Every speed figure is a ratio against a baseline measured in the same run on this machine; "
        "timings are medians or whole-batch rates (see each section). Raw figures: `results.json`."
    )
    add("")
    add("## Machine")
    add("")
    add(_machine_md(results["machine"]))
    add("")
    add("## Summary")
    add("")
    summary = [r for s in results["sections"] for r in s.get("summary", [])]
    if summary:
        add(
            table(
                [
                    "section",
                    "measure",
                    "pyfacematch",
                    "baseline",
                    "baseline value",
                    "ratio / change",
                ],
                [
                    [
                        r["section"],
                        r["measure"],
                        fmt(r["value"]),
                        r.get("baseline", "—"),
                        fmt(r.get("baseline_value")),
                        r.get("ratio_text") or fmt(r.get("ratio")),
                    ]
                    for r in summary
                ],
            )
        )
    add("")
    st = [
        [
            s["title"],
            s["status"],
            f"{s['seconds']:.0f}",
            f"{s.get('cpu_seconds', float('nan')):.0f}",
            s.get("reason") or "",
        ]
        for s in results["sections"]
    ]
    add(table(["section", "status", "wall s", "CPU s", "note"], st))
    add("")
    for s in results["sections"]:
        add(f"## {s['title']}")
        add("")
        if s["status"] != "ok":
            add(f"**{s['status']}**: {s.get('reason')}")
            add("")
            continue
        if s.get("description"):
            add(s["description"])
            add("")
        for t in s.get("tables", []):
            if t.get("title"):
                add(f"**{t['title']}**")
                add("")
            add(
                table(
                    t["headers"],
                    [[fmt(v) if not isinstance(v, str) else v for v in r] for r in t["rows"]],
                )
            )
            add("")
            if t.get("note"):
                add(t["note"])
                add("")
        for p in s.get("plots", []):
            add(f"![{p['title']}]({p['file']})")
            add("")
            add(f"*{p['title']}* ([SVG]({Path(p['file']).with_suffix('.svg').name}))")
            add("")
        for k, v in (s.get("notes") or {}).items():
            add(f"- {k}: {v}")
        if s.get("notes"):
            add("")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
