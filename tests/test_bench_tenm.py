"""The ten-million benchmark's two steps at a small size: the build writes a mapped gallery and
its probes; the measure step reopens it from the serving folder and finds exact search's top-1."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pyfacematch.bench import tenm


def test_build_then_measure_reuses_the_gallery(tmp_path: Path) -> None:
    path = str(tmp_path / "g.db")
    b = tenm.build(path, n=3000, d=64, chunk=1024, probes=64)
    assert b["n"] == 3000 and b["enroll_s"] > 0 and b["serving_bytes"] > 3000 * 64 * 4
    assert np.load(path + ".tenm-probes.npy").shape == (64, 64)
    r = tenm.measure(path, single=5, batch=64, exact=32)
    assert r["mapped"] and r["n"] == 3000 and r["verified"]
    assert r["recall_at_1_vs_exact"] == 1.0 and r["top1_score_max_abs_diff_vs_exact"] < 1e-5
    assert r["rank1_vs_truth"] > 0.9
