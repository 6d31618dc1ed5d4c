"""The benchmark suite: a tiny run writes a complete report; sections fail or skip without stopping it."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pyfacematch as pf
from pyfacematch.bench import SUITES, run_suite, suite
from pyfacematch.bench.accuracy import search_outcome
from pyfacematch.bench.section import SkipSection, summary_row
from pyfacematch.bench.synthdata import NOISE, SyntheticIdentities
from pyfacematch.errors import InputError

TINY = {
    "scoring": {"n": 1000, "sizes": [500, 1000], "cosine_calls": 2000},
    "keys": {"n": 1000, "repeat": 1},
    "accuracy": {"n_ids": 400, "n_train": 40},
    "backends": {"n": 1000, "n_probes": 128, "single": 10, "tune_probes": 50, "sweep_points": 2},
    "dayjob": {"n": 1000, "m": 1000, "exact_probes": 300, "recall_sample": 300, "batch": 500},
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    lines: list[str] = []
    res = run_suite("smoke", out, log=lines.append, overrides=TINY)
    return res, out


def _numbers(x: Any) -> list[Any]:
    if isinstance(x, dict):
        return [v for val in x.values() for v in _numbers(val)]
    if isinstance(x, list):
        return [v for val in x for v in _numbers(val)]
    return [x]


def test_smoke_suite_writes_every_file_and_section(smoke: tuple[dict[str, Any], Path]) -> None:
    res, out = smoke
    for name in ("results.json", "report.md"):
        assert (out / name).stat().st_size > 0
    data = json.loads((out / "results.json").read_text())
    assert data["suite"] == "smoke"
    assert {s["key"] for s in data["sections"]} == {k for k, _, _ in suite.SECTIONS}
    bad = {s["key"]: s["reason"] for s in data["sections"] if s["status"] != "ok"}
    assert not bad, bad
    m = data["machine"]
    assert m["cores"] >= 1 and m["cpu"] and m["simd"]["active"] in m["simd"]["available"]
    assert m["numpy"] == np.__version__


def test_every_summary_and_table_number_is_present(smoke: tuple[dict[str, Any], Path]) -> None:
    res, out = smoke
    data = json.loads((out / "results.json").read_text())
    summary = [r for s in data["sections"] for r in s["summary"]]
    assert len(summary) >= 10
    for r in summary:
        assert isinstance(r["value"], (int, float)) and math.isfinite(r["value"]), r
        assert r["baseline"] and isinstance(r["baseline_value"], (int, float)), r
        assert r["ratio_text"], r
    for s in data["sections"]:
        for t in s["tables"]:
            for row in t["rows"]:
                assert len(row) == len(t["headers"])
    report = (out / "report.md").read_text()
    for s in data["sections"]:
        assert f"## {s['title']}" in report
    assert "n/a" not in report and "None" not in report and "nan" not in report.lower()


def test_plots_exist_and_are_referenced(smoke: tuple[dict[str, Any], Path]) -> None:
    from matplotlib.image import imread

    res, out = smoke
    report = (out / "report.md").read_text()
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    # throughput + bars, backends, one DET per probe condition
    assert len(refs) >= 2 + 1 + 4
    for ref in refs:
        png = out / ref
        img = imread(png)
        assert img.shape[0] >= 400 and img.shape[1] >= 600
        assert img[..., :3].std() > 0.05  # not blank
        svg = png.with_suffix(".svg").read_text()
        assert "<svg" in svg and "<path" in svg


def test_smoke_figures_agree_with_references(smoke: tuple[dict[str, Any], Path]) -> None:
    res, _ = smoke
    sec = {s["key"]: s for s in res["sections"]}
    # keys: the C++ encoder and the numpy pipeline agree
    assert sec["keys"]["data"]["max_abs_key_diff"] < 1e-4
    # scoring: pyfacematch's top-1 equals numpy's
    assert all(r["top1_agrees_with_numpy"] == 1.0 for r in sec["scoring"]["data"]["topk"])
    # one probe: the core's plain read of the gallery was timed in the same rounds, other batches not
    for r in sec["scoring"]["data"]["topk"]:
        if r["batch"] == 1:
            assert r["stream_read_ms_same_rounds"] > 0 and r["stream_read_fraction"] > 0
        else:
            assert r["stream_read_fraction"] is None
    # backends: the exact backend through the Gallery API finds the brute-force top-1
    tuned = {r["backend"]: r for r in sec["backends"]["data"]["tuned"]}
    assert tuned["exact"]["recall1"] == 1.0
    # accuracy: clean probes are found; masked cosine does not lose to plain on occluded ones
    acc = {(r["probe"], r["scoring"]): r for r in sec["accuracy"]["data"]["rows"]}
    assert acc[("none", "masked")]["rank1"] > 0.9
    for occ in ("mask", "sunglasses"):
        assert acc[(occ, "masked")]["rank1"] >= acc[(occ, "plain")]["rank1"]
    dj = sec["dayjob"]["data"]
    assert 0.9 <= dj["recall1_vs_exact"] <= 1.0 and dj["probes_per_s"] > 0


def test_search_outcome_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    sc = -np.sort(-rng.random((50, 5)), axis=1).astype(np.float32)
    idx = np.stack([rng.permutation(20)[:5] for _ in range(50)])
    truth = rng.integers(0, 20, 50)
    rank, mate = search_outcome(sc, idx, truth)
    for i in range(50):
        pos = np.flatnonzero(idx[i] == truth[i])
        if pos.size:
            assert rank[i] == pos[0] + 1 and mate[i] == sc[i, pos[0]]
        else:
            assert rank[i] == 0 and mate[i] == -np.inf
    sc[0, 0] = np.nan
    assert search_outcome(sc, idx, None)[0] == -np.inf


def test_synthetic_identities_closed_form() -> None:
    syn = SyntheticIdentities(3000, 256, seed=5, chunk=1000)
    g = syn.gallery()
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(g, syn.gallery())  # seeded
    p, ids = syn.mated_probes(1500, seed=1)
    assert p.shape == (1500, 256) and ids.min() >= 0 and ids.max() < 3000
    genuine = np.einsum("ij,ij->i", p, g[ids])
    impostor = np.einsum("ij,ij->i", p, g[(ids + 1) % 3000])
    # two templates c + e1, c + e2 with |e|² = NOISE²: cosine = 1 / (1 + NOISE²)
    assert abs(genuine.mean() - 1 / (1 + NOISE**2)) < 0.01
    assert abs(impostor.mean()) < 0.01
    assert np.mean(pf.topk(p, g, 1)[1][:, 0] == ids) > 0.99


def test_sections_skip_or_fail_without_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def ok(cfg: Any, out: Path, log: Any) -> dict[str, Any]:
        return {
            "tables": [{"title": "t", "headers": ["a", "b"], "rows": [[1, 2.5]]}],
            "plots": [],
            "summary": [summary_row("fake", "m", 2.0, "base", 1.0)],
        }

    def missing(cfg: Any, out: Path, log: Any) -> dict[str, Any]:
        raise SkipSection("hnswlib not installed")

    def no_module(cfg: Any, out: Path, log: Any) -> dict[str, Any]:
        import pyfacematch_no_such_module  # noqa: F401

        return {}

    def broken(cfg: Any, out: Path, log: Any) -> dict[str, Any]:
        raise ValueError("boom")

    fake = [
        ("scoring", "OK section", ok),
        ("keys", "Missing dep", missing),
        ("backends", "No module", no_module),
        ("accuracy", "Broken", broken),
        ("dayjob", "OK again", ok),
    ]
    monkeypatch.setattr(suite, "SECTIONS", fake)
    res = run_suite("smoke", tmp_path, log=lambda s: None)
    st = {s["key"]: (s["status"], s["reason"]) for s in res["sections"]}
    assert st["scoring"] == ("ok", None) and st["dayjob"] == ("ok", None)
    assert st["keys"] == ("skipped", "hnswlib not installed")
    assert st["backends"][0] == "skipped" and "pyfacematch_no_such_module" in st["backends"][1]
    assert st["accuracy"] == ("failed", "ValueError: boom")
    report = (tmp_path / "report.md").read_text()
    assert (
        "**skipped**: hnswlib not installed" in report and "**failed**: ValueError: boom" in report
    )
    assert "×2" in report
    res2 = run_suite("smoke", tmp_path / "sel", log=lambda s: None, sections=["dayjob"])
    assert [s["status"] for s in res2["sections"]] == ["skipped"] * 4 + ["ok"]


def test_bad_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="quick"):
        run_suite("fast", tmp_path)
    with pytest.raises(InputError, match="scoring"):
        run_suite("smoke", tmp_path, sections=["nope"])
    assert set(SUITES) == {"smoke", "quick", "full"}


def test_keys_baseline_timed_like_the_engine(smoke: tuple[dict[str, Any], Path]) -> None:
    """Regression (issue 11): numpy was timed once, cold, on a 5-25x smaller prefix."""
    res, _ = smoke
    k = {s["key"]: s for s in res["sections"]}["keys"]["data"]
    assert "faces_numpy" not in k  # one batch for both engines
    assert k["faces"] + k["faces_rejected"] == TINY["keys"]["n"]
    assert len(k["wall_s"]["numpy"]) == len(k["wall_s"]["pyfacematch"]) == k["repeat"]
    # the reported rates are the medians of those rounds on that batch
    for eng in ("numpy", "pyfacematch"):
        med = float(np.median(k["wall_s"][eng]))
        assert k[f"{eng}_faces_per_s"] == pytest.approx(k["faces"] / med)
    assert k["x_numpy"] == pytest.approx(k["pyfacematch_faces_per_s"] / k["numpy_faces_per_s"])


def _entry_point(name: str) -> Any:
    """Import the repository's ``bench/<name>.py`` script as a module (not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_entry_{name}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_keys_script_fnir_is_the_library_metric(capsys: pytest.CaptureFixture[str]) -> None:
    """Regression (issue 11): bench/keys.py had its own FNIR quantile formula (strict '>' over
    np.quantile(..., 'higher')) while the suite used metrics.fnir_at_fpir; the script now prints
    the library protocol's rows."""
    from pyfacematch.bench.accuracy import measure_key_accuracy

    script = _entry_point("keys")
    assert not hasattr(script, "_fnir_at_fpir")
    printed = script.main(["accuracy", "--identities", "300", "--train", "40"])
    out = capsys.readouterr().out
    assert out.startswith("# machine: ") and "flags " in out.splitlines()[0]
    lib = measure_key_accuracy(300, 40, log=lambda s: None)
    for row, ref in zip(printed["rows"], lib["rows"]):
        assert row["fnir_at_fpir_0.01"] == ref["fnir_at_fpir_0.01"]
        assert f"{ref['fnir_at_fpir_0.01']:.4f}" in out


def test_real_codes_full_shortlist_is_exact() -> None:
    """1-bit codes + re-rank with a shortlist of every other row must equal exact search."""
    from pyfacematch.bench.backends import measure_real_codes

    e = SyntheticIdentities(40, 32, seed=3).gallery()
    r = measure_real_codes(e, lengths=(1, 39))
    assert set(r) == {"centred on gallery mean", "no centring"}
    for by_c in r.values():
        assert by_c[39] == 1.0
        assert 0.0 <= by_c[1] <= 1.0


def test_gallery_script_is_the_library_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    script = _entry_point("gallery")
    r = script.main(
        ["--n", "800", "--d", "32", "--probes", "128", "--single", "4", "--backends",
         "exact,binary", "--no-hnswlib", "--no-real", "--sweep-points", "2"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("# machine: ") and "Self-tuned backends (Gallery API)" in out
    tuned = {t["backend"]: t for t in r["tuned"]}
    assert tuned["exact"]["recall1"] == 1.0 and tuned["exact"]["rerank_share"] is None
    assert 0.0 < tuned["binary"]["rerank_share"] < 1.0
    assert r["skipped"]["hnswlib"] == "not requested"
    # the core's Hamming scan with a full shortlist re-ranks to the exact answer
    core = r["curves"]["pyfacematch hamming_topk + re-rank (no Gallery)"]
    assert max(c["recall1"] for c in core) == 1.0


def test_cli_day_job_through_the_real_command(tmp_path: Path) -> None:
    from pyfacematch.bench.dayjob import measure_cli_day_job

    r = measure_cli_day_job(
        tmp_path / "day", 600, 300, 32, backends=("exact",), sample=100, log=lambda s: None
    )
    ex = r["backends"]["exact"]
    assert ex["recall_at_1_vs_exact"] == 1.0
    # rank-1 against the truth is what exact search gets on the sample, up to sampling
    assert abs(ex["rank1_accuracy_vs_truth"] - ex["exact_rank1_accuracy_on_sample"]) < 0.1
    assert ex["identify_peak_rss_mib"] > 10 and r["enroll"]["seconds"] > 0
    assert not (tmp_path / "day").exists()  # scratch folder removed
    # the backend's batched rate, measured in the same run on every probe, and the job's share
    rate = ex["backend_batched"]
    assert rate["probes"] == 300 and rate["probes_per_second"] > 0 and rate["cpu_seconds"] > 0
    assert ex["identify_cpu_seconds"] > 0
    want = ex["probes_per_second_wall"] / rate["probes_per_second"]
    assert ex["job_share_of_backend_rate_wall"] == pytest.approx(want)
    assert 0 < ex["job_share_of_backend_rate_cpu"] < 10


def test_cli_day_job_prepared_once_then_reused(tmp_path: Path) -> None:
    """--prepare-only generates and enrolls; --reuse then runs only the job (same answers)."""
    from pyfacematch.bench.dayjob import measure_cli_day_job

    work = tmp_path / "day"
    kw: dict[str, Any] = dict(backends=("exact",), sample=50, log=lambda s: None, rate_probes=0)
    p = measure_cli_day_job(work, 300, 120, 16, reuse=True, prepare_only=True, **kw)
    assert p["prepared"] == str(work) and "backends" not in p and p["enroll"]["seconds"] > 0
    db_mtime = (work / "day.db").stat().st_mtime_ns
    r = measure_cli_day_job(work, 300, 120, 16, reuse=True, **kw)
    assert r["enroll"] == {"reused": True, "backend": "exact"} and "seconds_generate" not in r
    assert r["backends"]["exact"]["recall_at_1_vs_exact"] == 1.0
    assert (work / "gallery.npy").exists()  # kept for the next run
    # other sizes do not reuse the folder: it is prepared again
    r2 = measure_cli_day_job(work, 200, 120, 16, reuse=True, **kw)
    assert "reused" not in r2 and r2["enroll"]["seconds"] > 0
    assert (work / "day.db").stat().st_mtime_ns != db_mtime


def test_rank1_leave_one_out_known_answer() -> None:
    from pyfacematch.bench.embed import rank1_leave_one_out

    labels = np.array([0, 0, 1, 1])
    s = np.array([[9, 0.9, 0.1, 0.2], [0.9, 9, 0.95, 0.0], [0.1, 0.95, 9, 0.5], [0.2, 0.0, 0.5, 9]])
    # row 0 -> 1 (hit), row 1 -> 2 (miss), row 2 -> 1 (miss), row 3 -> 2 (hit)
    assert rank1_leave_one_out(s, labels) == 0.5
