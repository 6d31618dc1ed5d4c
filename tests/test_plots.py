"""Tests of pyfacematch.plots: figures have curves, labelled axes and legends; files are written."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")

from matplotlib.image import imread  # noqa: E402

from pyfacematch import metrics as m  # noqa: E402
from pyfacematch import plots  # noqa: E402
from pyfacematch.errors import EmptyInputError, InputError  # noqa: E402


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(0)
    return rng.normal(2, 1, 2000), rng.normal(0, 1, 50_000)


@pytest.fixture(scope="module")
def ident():
    rng = np.random.default_rng(1)
    ranks = rng.geometric(0.6, 500)
    ranks[ranks > 20] = 0
    mate = rng.normal(1.5, 1, 500)
    non = rng.normal(0, 1, 2000)
    return ranks, mate, non


def _check_axes(fig, n_lines_min=1):
    (ax,) = fig.axes
    assert ax.get_xlabel().strip() and ax.get_ylabel().strip() and ax.get_title().strip()
    legend = ax.get_legend()
    assert legend is not None and len(legend.get_texts()) >= n_lines_min
    return ax


def _check_png(path):
    assert path.suffix == ".png" and path.is_file()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(path)
    assert img.shape[0] >= 400 and img.shape[1] >= 500  # legible size at 150 dpi
    rgb = img[..., :3]
    # not blank: many distinct colours and a good share of non-white pixels
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50
    assert np.mean(rgb.min(axis=2) < 0.9) > 0.02


def test_det_figure_has_curves_and_labels(scores):
    gen, imp = scores
    curves = {"d'=2": m.det_curve(gen, imp), "d'=3": m.det_curve(gen + 1, imp)}
    ops = m.fnmr_at_fmr(gen, imp, [1e-2, 1e-3, 1e-4])
    fig = plots.det_figure(curves, operating_points=ops)
    ax = _check_axes(fig, 3)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "FMR" in ax.get_xlabel() and "FNMR" in ax.get_ylabel()
    curve_lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 10]
    assert len(curve_lines) == 2
    for ln, c in zip(curve_lines, curves.values()):
        x, y = np.asarray(ln.get_xdata()), np.asarray(ln.get_ydata())
        assert np.all(x > 0) and np.all(y > 0)  # zeros cannot sit on a log axis
        assert x.size == np.count_nonzero((c.fmr > 0) & (c.fnmr > 0) & (c.fmr < 1) & (c.fnmr < 1))
    markers = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert len(markers) == 1 and len(markers[0].get_xdata()) == 3
    legend_text = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "d'=2" in legend_text and "d'=3" in legend_text


def test_identification_det_labels(ident):
    c = m.identification_det_curve(*ident)
    fig = plots.det_figure([("exact", c)])
    ax = _check_axes(fig)
    assert "FPIR" in ax.get_xlabel() and "FNIR" in ax.get_ylabel()


def test_det_probit(scores, tmp_path):
    pytest.importorskip("scipy")
    gen, imp = scores
    fig = plots.det_figure(m.det_curve(gen, imp), scale="probit")
    ax = _check_axes(fig)
    assert ax.get_xscale() == "function" and ax.get_yscale() == "function"
    (p,) = plots.plot_det(m.det_curve(gen, imp), tmp_path / "probit.png", scale="probit")
    _check_png(p)


def test_plot_det_writes_png_and_svg(scores, tmp_path):
    gen, imp = scores
    paths = plots.plot_det(m.det_curve(gen, imp), tmp_path / "sub" / "det")
    assert [p.suffix for p in paths] == [".png", ".svg"]
    _check_png(paths[0])
    svg = paths[1].read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "false match rate" in svg  # axis label present as text


def test_cmc_figure_and_file(ident, tmp_path):
    ranks = ident[0]
    c = m.cmc(ranks, 10)
    fig = plots.cmc_figure({"exact": c})
    ax = _check_axes(fig)
    (ln,) = ax.get_lines()
    np.testing.assert_array_equal(ln.get_xdata(), np.arange(1, 11))
    np.testing.assert_allclose(ln.get_ydata(), c.hit_rate)
    ax2 = plots.cmc_figure(c, miss_rate=True).axes[0]
    assert ax2.get_yscale() == "log" and "miss" in ax2.get_ylabel()
    (p,) = plots.plot_cmc(c, tmp_path / "cmc.png")
    _check_png(p)


def test_histograms(scores, tmp_path):
    gen, imp = scores
    ops = m.fnmr_at_fmr(gen, imp, [1e-2, 1e-3])
    fig = plots.score_histogram_figure(gen, imp, thresholds=ops, bins=50)
    ax = _check_axes(fig, 4)
    vlines = [ln for ln in ax.get_lines() if len(set(np.asarray(ln.get_xdata()))) == 1]
    assert sorted(v.get_xdata()[0] for v in vlines) == pytest.approx(
        sorted(p.threshold for p in ops)
    )
    assert len(ax.patches) >= 4  # two filled + two outline step histograms
    (p,) = plots.plot_score_histograms(gen, imp, tmp_path / "hist.svg", thresholds={"x": 1.0})
    assert p.suffix == ".svg" and p.stat().st_size > 5000
    (p,) = plots.plot_score_histograms(gen, imp, tmp_path / "hist", formats=["png"])
    _check_png(p)


def test_throughput(tmp_path):
    series = {
        "exact": ([1e3, 1e4, 1e5], [5e4, 5e3, 5e2]),
        "faiss": ([1e5, 1e3, 1e4], [4e2, 4e4, np.nan]),
    }
    fig = plots.throughput_figure(series)
    ax = _check_axes(fig, 2)
    lines = ax.get_lines()
    np.testing.assert_array_equal(lines[0].get_xdata(), [1e3, 1e4, 1e5])
    np.testing.assert_array_equal(lines[1].get_xdata(), [1e3, 1e5])  # sorted, NaN dropped
    assert ax.get_xscale() == "log" and "gallery" in ax.get_xlabel()
    (p,) = plots.plot_throughput(series, tmp_path / "tp.png")
    _check_png(p)


def test_save_formats(tmp_path):
    fig = plots.throughput_figure({"a": ([1, 10], [1, 2])})
    assert plots.save_figure(fig, tmp_path / "a.svg") == (tmp_path / "a.svg",)
    assert plots.save_figure(fig, tmp_path / "b.svg", ["png"]) == (tmp_path / "b.png",)
    assert plots.save_figure(fig, tmp_path / "c", "pdf") == (tmp_path / "c.pdf",)
    assert (tmp_path / "c.pdf").read_bytes()[:4] == b"%PDF"
    with pytest.raises(InputError):
        plots.save_figure(fig, tmp_path / "d", ["jpeg"])


def test_bad_inputs(scores):
    gen, imp = scores
    with pytest.raises(EmptyInputError):
        plots.det_figure({})
    with pytest.raises(InputError):
        plots.det_figure([gen])
    with pytest.raises(InputError):
        plots.det_figure(m.det_curve(gen, imp), scale="linear")
    with pytest.raises(InputError):
        plots.cmc_figure(m.det_curve(gen, imp))
    with pytest.raises(EmptyInputError):
        plots.throughput_figure({})
    with pytest.raises(InputError):
        plots.throughput_figure({"a": ([1, 2, 3], [1, 2])})
    with pytest.raises(InputError):
        plots.score_histogram_figure(gen, imp, bins=1)
    with pytest.raises(EmptyInputError):
        plots.score_histogram_figure([], imp)


def test_no_pyplot_and_no_show():
    code = (
        "import sys, numpy as np\n"
        "from pyfacematch import metrics, plots\n"
        "c = metrics.det_curve(np.arange(10.0) + 3, np.arange(100.0) / 10)\n"
        "plots.det_figure(c)\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
