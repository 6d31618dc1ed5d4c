"""Decisions out of the box: a gallery enrolled from photos says no-match to a stranger."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pyfacematch.embed import DEFAULT_OPERATING_POINTS, default_operating_point
from pyfacematch.embed.dlib import dlib_available

DATA = Path(__file__).parent / "data"


def test_default_operating_point_stands_on_the_stored_descriptors():
    op = default_operating_point("dlib_resnet_v1")
    assert op is not None and 0 < op.fmr < 0.01 and "impostor" in op.measured_on
    assert default_operating_point("some_onnx_model") is None
    assert set(DEFAULT_OPERATING_POINTS) == {"dlib_resnet_v1"}
    # the 6 stored descriptors of tests/data (2 people): genuine above, impostor below
    small = np.load(DATA / "faces_small.npz")
    t = small["embeddings"].astype(np.float64)
    s = t @ t.T
    same = small["labels"][:, None] == small["labels"][None, :]
    off = ~np.eye(len(t), dtype=bool)
    assert s[same & off].min() >= op.threshold > s[~same].max()


@pytest.mark.skipif(not dlib_available(), reason="dlib or its models are not installed")
def test_identify_images_decides_without_calibration(tmp_path):
    from pyfacematch.cli import main

    salley = sorted((DATA / "faces" / "John_Salley").glob("*.jpg"))
    savage = sorted((DATA / "faces" / "John_Savage").glob("*.jpg"))
    (tmp_path / "gallery" / "John_Salley").mkdir(parents=True)
    shutil.copy(salley[0], tmp_path / "gallery" / "John_Salley" / salley[0].name)
    (tmp_path / "probes").mkdir()
    for p in [*salley[1:], *savage]:  # two photos of the enrolled man, three of a stranger
        shutil.copy(p, tmp_path / "probes" / f"{p.parent.name}_{p.name}")
    g = str(tmp_path / "g.db")
    assert main(["enroll", "-g", g, "--images", str(tmp_path / "gallery"), "-q"]) == 0
    out = tmp_path / "o.jsonl"
    argv = ["identify", "-g", g, "--images", str(tmp_path / "probes"), "-o", str(out), "-q"]
    assert main([*argv, "--summary", str(tmp_path / "s.json")]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    got = {r["probe_id"].split("_dlib")[0]: [] for r in rows}
    for r in rows:
        got[r["probe_id"].split("_dlib")[0]].append(r["decision"])
    assert got == {"John_Salley": ["match"] * 2, "John_Savage": ["no-match"] * 3}
    thr = json.loads((tmp_path / "s.json").read_text())["threshold"]
    assert thr["source"] == "default-dlib_resnet_v1" and thr["value"] == 0.91
    # an explicit threshold still wins
    out2 = tmp_path / "o2.jsonl"
    argv2 = ["identify", "-g", g, "--images", str(tmp_path / "probes"), "-o", str(out2), "-q"]
    assert main([*argv2, "--threshold", "0.5"]) == 0
    assert all(json.loads(x)["decision"] == "match" for x in out2.read_text().splitlines())
