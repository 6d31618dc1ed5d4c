"""`audit leaks` beyond float32: float16 / bfloat16 / int8 / 1-bit copies of enrolled templates
and face landmark sets, on real dlib descriptors and landmarks (tests/data); no false alarm on
an encrypted gallery or on random bytes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pyfacematch.core import scoring
from pyfacematch.core.compact import CompactMatrix
from pyfacematch.gallery import Gallery
from pyfacematch.jobs.leaks import leak_report

DATA = Path(__file__).parent / "data"


pytestmark = pytest.mark.usefixtures("no_key_env")


def _real() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    emb = np.load(DATA / "faces_johns_embeddings.npz")["embeddings"].astype(np.float32)
    lm = np.load(DATA / "faces_johns_landmarks.npz")
    return emb, lm["landmarks"], lm["landmarks_mp478"]


def _gallery(tmp_path: Path) -> tuple[Path, np.ndarray]:
    emb, _, _ = _real()
    db = tmp_path / "g" / "people.db"
    db.parent.mkdir(mode=0o700)
    with Gallery(128, path=db, backend="flat", encrypt=True) as g:
        g.enroll_many([f"face{i:02d}" for i in range(len(emb))], emb)
        g.checkpoint()
    return db, emb


def _plant(db: Path, name: str, payload: bytes, pad: int = 3) -> Path:
    rng = np.random.default_rng(len(name))
    f = db.with_name(db.name + "." + name)
    f.write_bytes(rng.bytes(1000 + pad) + payload + rng.bytes(777))
    f.chmod(0o600)
    return f


def _found(rep: dict, f: Path) -> list[tuple[str, str]]:
    return [(x["kind"], x["detail"]) for x in rep["findings"] if x["file"] == os.fspath(f)]


def test_encrypted_real_gallery_and_random_bytes_are_clean(tmp_path: Path) -> None:
    db, _ = _gallery(tmp_path)
    _plant(db, "random", np.random.default_rng(1).bytes(1 << 20))
    rep, _ = leak_report(db)
    assert rep["clean"], rep["findings"]


def test_other_dtypes_and_codes_of_enrolled_templates_are_found(tmp_path: Path) -> None:
    db, x = _gallery(tmp_path)
    bf16 = (x[4].view(np.uint32) >> 16).astype("<u2").tobytes()  # truncation, not the core's
    planted = {
        "f16": _plant(db, "f16", x[3].astype("<f2").tobytes()),
        "bf16": _plant(db, "bf16", bf16, pad=1),
        "core-bf16": _plant(
            db, "cbf16", CompactMatrix.from_float32(x[5:6], kind="bf16").codes[0].tobytes()
        ),
        "int8": _plant(
            db, "int8", CompactMatrix.from_float32(x[6:9], kind="int8").codes.tobytes(), pad=2
        ),
        "bits": _plant(db, "bits", scoring.pack_signs(x[10:12]).tobytes(), pad=5),
    }
    rep, _ = leak_report(db)
    assert not rep["clean"]
    got = {k: _found(rep, f) for k, f in planted.items()}
    assert ("template-copy", "float16 copies of 1 enrolled templates") in got["f16"]
    assert any(k == "plaintext-template" and "float16" in d for k, d in got["f16"])
    assert any(k == "plaintext-template" and "bfloat16" in d for k, d in got["bf16"])
    assert ("template-copy", "bfloat16 copies of 1 enrolled templates") in got["core-bf16"]
    assert ("template-copy", "int8 copies of 3 enrolled templates") in got["int8"]
    assert ("template-copy", "1-bit code copies of 2 enrolled templates") in got["bits"]


def test_binary_backend_codes_centred_are_found(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 64)).astype(np.float32) + 0.3  # not centred: centre matters
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    db = tmp_path / "g" / "people.db"
    db.parent.mkdir(mode=0o700)
    with Gallery(64, path=db, backend="binary", encrypt=True) as g:
        g.enroll_many([f"p{i}" for i in range(300)], x)
        center = g._backend.center
        assert center is not None
    f = _plant(db, "codes", scoring.pack_signs(x[20:23], center=center).tobytes())
    rep, _ = leak_report(db)
    assert ("template-copy", "1-bit code (centred) copies of 3 enrolled templates") in _found(
        rep, f
    )


def test_landmark_sets_are_found(tmp_path: Path) -> None:
    db, _ = _gallery(tmp_path)
    _, lm68, lm478 = _real()
    f68 = _plant(db, "lm68", lm68[:3].astype("<f4").tobytes(), pad=2)
    f478 = _plant(db, "lm478", lm478[7].astype("<f4").tobytes(), pad=0)
    f2d = _plant(db, "lm478xy", np.ascontiguousarray(lm478[9, :, :2]).astype("<f4").tobytes())
    rep, _ = leak_report(db)
    assert (
        "landmarks",
        "3 face landmark sets fitting the ibug68 scheme (float32 coordinates)",
    ) in (_found(rep, f68))
    assert any("mediapipe478-3d" in d for k, d in _found(rep, f478) if k == "landmarks")
    assert any(k == "landmarks" and "mediapipe478 scheme" in d for k, d in _found(rep, f2d)), (
        _found(rep, f2d)
    )


def test_landmark_sets_in_float64_and_as_text_are_found(tmp_path: Path) -> None:
    db, _ = _gallery(tmp_path)
    _, lm68, lm478 = _real()
    f64 = _plant(db, "lm64", lm68[4:6].astype("<f8").tobytes(), pad=5)  # numpy's default dtype
    rows = "\n".join(",".join(f"{c:.2f}" for c in s.ravel()) for s in lm68[10:12])
    csv = db.with_name(db.name + ".lm.csv")
    csv.write_text("photo,points\n" + rows + "\n" + str(lm478[3, :, :2].ravel().tolist()) + "\n")
    csv.chmod(0o600)
    rep, _ = leak_report(db)
    assert (
        "landmarks",
        "2 face landmark sets fitting the ibug68 scheme (float64 coordinates)",
    ) in _found(rep, f64)
    text = [d for k, d in _found(rep, csv) if k == "landmarks"]
    assert "2 face landmark sets fitting the ibug68 scheme (as text)" in text, text
    assert any("mediapipe478 scheme (as text)" in d for d in text), text
