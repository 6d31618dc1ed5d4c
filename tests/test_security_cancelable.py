"""Cancelable templates: scores kept, unlinkable across keys (two-sample test), revocation."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pyfacematch.gallery import Gallery
from pyfacematch.security.cancelable import CancelableTransform

DATA = Path(__file__).parent / "data" / "faces_johns_embeddings.npz"


pytestmark = pytest.mark.usefixtures("no_key_env")


def test_transform_is_orthogonal_and_reproducible() -> None:
    from pyfacematch.security.cancelable import haar_orthogonal

    q = haar_orthogonal(64, np.random.default_rng(3))
    np.testing.assert_allclose(q @ q.T, np.eye(64), atol=1e-12)
    a = CancelableTransform(b"k" * 32, 40, np.array([0, 10, 40]))
    assert np.all(a.matrix[:10, 10:] == 0) and np.all(a.matrix[10:, :10] == 0)  # block-diagonal
    b = CancelableTransform(b"k" * 32, 40, np.array([0, 10, 40]))
    np.testing.assert_array_equal(a.matrix, b.matrix)  # the seed alone fixes it
    assert not np.allclose(
        a.matrix, CancelableTransform(b"j" * 32, 40, np.array([0, 10, 40])).matrix
    )


def _faces() -> tuple[np.ndarray, np.ndarray]:
    d = np.load(DATA)  # 54 real dlib descriptors of 5 people (see tests/data)
    return d["embeddings"].astype(np.float32), d["labels"]


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("blocks", [None, [0, 16, 40, 64, 128]])
def test_scores_are_preserved_to_1e5(tmp_path: Path, blocks: list[int] | None) -> None:
    x, labels = _faces()
    ids = [f"{lab}-{i}" for i, lab in enumerate(labels)]
    rng = np.random.default_rng(0)
    masks = None
    if blocks is not None:
        masks = rng.integers(1, 16, size=len(ids)).astype(np.uint64)
    plain = Gallery(128, backend="exact", blocks=blocks)
    plain.enroll_many(ids, x, masks)
    with Gallery(128, path=tmp_path / "c.db", backend="exact", blocks=blocks, cancelable=True) as g:
        g.enroll_many(ids, x, masks)
        assert g.cancelable
        stored = g.templates(ids[0])
        assert abs(float(stored[0] @ x[0])) < 0.5  # what is stored is not the template
    probes = x[::5] + 0.02 * rng.standard_normal((11, 128)).astype(np.float32)
    pm = None if blocks is None else np.full(11, 0b0111, np.uint64)
    with Gallery.open(tmp_path / "c.db") as g:
        got = g.identify(probes, k=6, masks=pm)
        want = plain.identify(probes, k=6, masks=pm)
        for a, b in zip(got, want):
            assert [c.identity for c in a.candidates] == [c.identity for c in b.candidates]
            np.testing.assert_allclose(
                [c.score for c in a.candidates], [c.score for c in b.candidates], atol=1e-5
            )
        v = g.verify(ids[3], probes[1], mask=None if pm is None else int(pm[1]))
        w = plain.verify(ids[3], probes[1], mask=None if pm is None else int(pm[1]))
        assert abs(v.score - w.score) < 1e-5


def test_cross_key_scores_are_distributed_like_impostor_scores() -> None:
    """Unlinkability on real descriptors (ISO/IEC 30136 setting): under two different keys,
    scores of the same person (mated; half of them the very same template) are distributed
    like scores of two different people (non-mated). One mated and one non-mated score per
    independent key pair, so the samples are independent (a two-sample KS test needs that)."""
    x, labels = _faces()
    rng = np.random.default_rng(1)
    mated: list[float] = []
    nonmated: list[float] = []
    for t in range(300):
        a = CancelableTransform(rng.bytes(32), 128, None).apply(x)
        b = CancelableTransform(rng.bytes(32), 128, None).apply(x)
        i = int(rng.integers(len(x)))
        same = np.flatnonzero(labels == labels[i])
        j = i if t % 2 else int(rng.choice(same))
        o = int(rng.choice(np.flatnonzero(labels != labels[i])))
        mated.append(float(a[i] @ b[j]))
        nonmated.append(float(a[i] @ b[o]))
    ks = stats.ks_2samp(mated, nonmated)
    assert ks.pvalue > 0.01, ks
    # mated cross-key scores lie far below same-key scores of different people
    same_key_impostor = (x @ x.T)[labels[:, None] != labels[None, :]]
    assert max(mated) < same_key_impostor.min()
    assert abs(np.mean(mated)) < 0.03 and abs(np.std(mated) - 128**-0.5) < 0.03


def test_revocation_rekeys_in_place_and_answers_as_before(tmp_path: Path) -> None:
    x, labels = _faces()
    ids = [f"{lab}-{i}" for i, lab in enumerate(labels)]
    db = tmp_path / "r.db"
    probes = x[1::7]
    with Gallery(128, path=db, backend="flat", cancelable=True, encrypt=True) as g:
        g.enroll_many(ids, x)
        before = g.identify(probes, k=5)
        leaked = g.templates(ids[0]).copy()  # a stored template leaks
        assert g.revoke_templates() == len(ids)
        after = g.identify(probes, k=5)
        now = g.templates(ids[0])
    for a, b in zip(before, after):
        assert [c.identity for c in a.candidates] == [c.identity for c in b.candidates]
        np.testing.assert_allclose(
            [c.score for c in a.candidates], [c.score for c in b.candidates], atol=1e-5
        )
    assert abs(float(leaked[0] @ now[0])) < 0.5  # the leaked one no longer matches its owner
    with Gallery.open(db) as g:  # data-key rotation carries the transform secret along
        assert g.rotate_data_key() == len(ids)
    with Gallery.open(db) as g:  # reopened: the new secret (in the key ring) is used
        again = g.identify(probes, k=5)
        assert [c.identity for c in again[0].candidates] == [
            c.identity for c in before[0].candidates
        ]
        assert g.identify(leaked, k=1)[0].candidates[0].score < 0.5
    con = sqlite3.connect(db)
    (audit,) = con.execute("SELECT count(*) FROM audit WHERE action='revoke-templates'").fetchone()
    con.close()
    assert audit == 1


def test_unencrypted_cancelable_gallery_keeps_its_secret_wrapped(tmp_path: Path) -> None:
    x, _ = _faces()
    db = tmp_path / "u.db"
    with Gallery(128, path=db, cancelable=True, backend="exact") as g:
        g.enroll_many([f"i{i}" for i in range(10)], x[:10])
        want = g.identify(x[:3], k=2)
    text = sqlite3.connect(db).execute("SELECT value FROM meta WHERE key='cancelable'").fetchone()
    assert '"wrapped"' in text[0]
    with Gallery.open(db) as g:
        assert [c.identity for c in g.identify(x[:3], k=2)[0].candidates] == [
            c.identity for c in want[0].candidates
        ]
    (tmp_path / "u.db.key").write_text("e" * 64)
    with pytest.raises(Exception, match="cannot be unwrapped"):
        Gallery.open(db)
