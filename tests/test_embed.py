"""Image loading, five-point alignment and the Embedder pipeline (no model needed)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np
import pytest

from pyfacematch.embed import FAILURE_REASONS, Embedder, Face, face_quality
from pyfacematch.embed.align import (
    ARCFACE_REFERENCE_112,
    align_face,
    points5_from_ibug68,
    reference_points,
    similarity_transform,
    warp_affine,
)
from pyfacematch.embed.images import ImageLoadError, load_image
from pyfacematch.errors import InputError, LandmarkError, PyFaceMatchError

PIL = pytest.importorskip("PIL", reason="Pillow is needed to write test images")
from PIL import Image  # noqa: E402


# --------------------------------------------------------------------------- io
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width × height pixels (never decoded)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def test_load_array_forms():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    out = load_image(rgb)
    assert out is rgb or np.shares_memory(out, rgb)  # no copy for C-contiguous RGB
    grey = rng.integers(0, 256, (4, 6), dtype=np.uint8)
    g3 = load_image(grey)
    assert g3.shape == (4, 6, 3) and all(np.array_equal(g3[..., c], grey) for c in range(3))
    rgba = rng.integers(0, 256, (3, 3, 4), dtype=np.uint8)
    np.testing.assert_array_equal(load_image(rgba), rgba[..., :3])


@pytest.mark.parametrize(
    ("arr", "reason"),
    [
        (np.zeros((4, 4, 3), np.float32), "not_an_image"),
        (np.zeros((4, 4, 2), np.uint8), "not_an_image"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros((40, 40, 3), np.uint8), "too_large"),
    ],
)
def test_load_bad_arrays(arr, reason):
    with pytest.raises(ImageLoadError) as ei:
        load_image(arr, max_pixels=1000)
    assert ei.value.reason == reason
    assert isinstance(ei.value, PyFaceMatchError) and isinstance(ei.value, OSError)


def test_load_files(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "ok.png")
    np.testing.assert_array_equal(load_image(tmp_path / "ok.png"), arr)
    # palette and greyscale files come back as RGB
    Image.fromarray(arr[..., 0]).save(tmp_path / "grey.png")
    g = load_image(str(tmp_path / "grey.png"))
    assert g.shape == (20, 30, 3) and np.array_equal(g[..., 2], arr[..., 0])

    cases = {
        "missing.jpg": None,
        "empty.jpg": b"",
        "text.jpg": b"this is not an image\n" * 10,
        "bomb.png": _bomb_png(200_000, 200_000),
    }
    Image.fromarray(arr).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    cases["truncated.jpg"] = data[: len(data) // 3]
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    expected = {
        "missing.jpg": "unreadable",
        "empty.jpg": "empty",
        "text.jpg": "not_an_image",
        "bomb.png": "too_large",
        "truncated.jpg": "unreadable",
    }
    for name, reason in expected.items():
        with pytest.raises(ImageLoadError) as ei:
            load_image(tmp_path / name)
        assert ei.value.reason == reason, name
    with pytest.raises(ImageLoadError) as ei:
        load_image(tmp_path)  # a directory
    assert ei.value.reason == "unreadable"
    # limits below Pillow's own: refused from the header / file size
    with pytest.raises(ImageLoadError) as ei:
        load_image(tmp_path / "ok.png", max_pixels=599)
    assert ei.value.reason == "too_large"
    with pytest.raises(ImageLoadError) as ei:
        load_image(tmp_path / "ok.png", max_bytes=10)
    assert ei.value.reason == "too_large"


def test_load_exif_orientation(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255  # left half white
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    up = load_image(tmp_path / "rot.jpg")
    assert up.shape == (20, 10, 3)
    assert up[:5].mean() > 200 and up[-5:].mean() < 50  # left half became the top
    raw = load_image(tmp_path / "rot.jpg", exif_transpose=False)
    assert raw.shape == (10, 20, 3)


# ------------------------------------------------------------------------ align
def _random_similarity(rng):
    s = rng.uniform(0.3, 3.0)
    th = rng.uniform(-np.pi, np.pi)
    r = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    return np.hstack([s * r, rng.uniform(-50, 50, (2, 1))])


def test_similarity_transform_recovers_known_transform():
    rng = np.random.default_rng(2)
    for p in (2, 5, 68):
        m = _random_similarity(rng)
        src = rng.uniform(0, 200, (p, 2))
        dst = src @ m[:, :2].T + m[:, 2]
        np.testing.assert_allclose(similarity_transform(src, dst), m, atol=1e-9)


def test_similarity_transform_is_least_squares_without_reflection():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 100, (5, 2))
    dst = src * [-1, 1]  # a mirror image: best proper similarity is not a reflection
    m = similarity_transform(src, dst)
    assert np.linalg.det(m[:, :2]) > 0

    # local optimality: no small perturbation of (scale, angle, t) does better
    def cost(mm):
        return ((src @ mm[:, :2].T + mm[:, 2] - dst) ** 2).sum()

    base = cost(m)
    a, b = m[0, 0], m[1, 0]
    for da, db, tx, ty in rng.normal(0, 1e-3, (50, 4)):
        mm = np.array([[a + da, -(b + db), m[0, 2] + tx], [b + db, a + da, m[1, 2] + ty]])
        assert cost(mm) >= base - 1e-9


def test_similarity_transform_errors():
    with pytest.raises(LandmarkError):
        similarity_transform(np.ones((5, 2)), ARCFACE_REFERENCE_112)
    bad = ARCFACE_REFERENCE_112.copy()
    bad[0, 0] = np.nan
    with pytest.raises(LandmarkError):
        similarity_transform(bad, ARCFACE_REFERENCE_112)
    with pytest.raises(InputError):
        similarity_transform(np.ones((5, 3)), np.ones((5, 3)))


def _bilinear_reference(img, x, y):
    """Scalar float64 bilinear sample, black outside (independent of warp_affine)."""
    h, w = img.shape[:2]
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    acc = np.zeros(img.shape[2])
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            wgt = (1 - abs(x - xx)) * (1 - abs(y - yy))
            if 0 <= xx < w and 0 <= yy < h:
                acc += wgt * img[yy, xx]
    return acc


def test_warp_affine_matches_pointwise_reference():
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    m = _random_similarity(rng)
    m[:, 2] = [10, 5]
    out = warp_affine(img, m, (30, 35))
    minv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))
    for v, u in rng.integers(0, (30, 35), (60, 2)):
        x, y, _ = minv @ [u, v, 1]
        ref = _bilinear_reference(img.astype(np.float64), x, y)
        assert np.abs(out[v, u].astype(np.float64) - ref).max() <= 0.5 + 1e-9
    # identity and integer shift are exact
    np.testing.assert_array_equal(warp_affine(img, np.eye(2, 3), (40, 50)), img)
    shift = np.array([[1.0, 0, -3], [0, 1, -2]])
    np.testing.assert_array_equal(warp_affine(img, shift, (38, 47)), img[2:40, 3:50])


def test_align_face_puts_points_on_reference():
    rng = np.random.default_rng(5)
    ref = reference_points((112, 112))
    np.testing.assert_allclose(ref, ARCFACE_REFERENCE_112)
    # place the five points by an unknown similarity in a large image, mark each with a blob
    m = _random_similarity(rng)
    m[:2, :2] *= 2.0 / np.sqrt(abs(np.linalg.det(m[:, :2])))  # face ~2x the crop
    m[:, 2] = 150 - ARCFACE_REFERENCE_112.mean(0) @ m[:, :2].T  # face centred in the image
    pts = ARCFACE_REFERENCE_112 @ m[:, :2].T + m[:, 2]
    assert pts.min() > 10 and pts.max() < 290
    img = np.zeros((300, 300, 3), np.uint8)
    yy, xx = np.mgrid[0:300, 0:300]
    for k, (x, y) in enumerate(pts):
        img[(xx - x) ** 2 + (yy - y) ** 2 <= 9, k % 3] = 255
    crop = align_face(img, pts, (112, 112))
    assert crop.shape == (112, 112, 3)
    for k, (x, y) in enumerate(ARCFACE_REFERENCE_112):
        ch = crop[..., k % 3].astype(np.float64)
        y0, x0 = int(y) - 5, int(x) - 5
        win = ch[y0 : y0 + 11, x0 : x0 + 11]
        assert win.sum() > 0
        wy, wx = np.mgrid[0:11, 0:11]
        cy = (win * wy).sum() / win.sum() + y0  # blob centroid in the crop
        cx = (win * wx).sum() / win.sum() + x0
        assert abs(cy - y) < 0.5 and abs(cx - x) < 0.5
    # a 128 crop scales and centres the reference
    r128 = reference_points((128, 128))
    np.testing.assert_allclose(r128, ARCFACE_REFERENCE_112 * (128 / 112), rtol=1e-6)


def test_points5_from_ibug68_known_answer():
    lm = np.zeros((68, 2), np.float32)
    lm[36:42] = [[10 + i, 20] for i in range(6)]
    lm[42:48] = [[40 + i, 22] for i in range(6)]
    lm[30] = [30, 35]
    lm[48] = [15, 50]
    lm[54] = [45, 51]
    p5 = points5_from_ibug68(lm)
    np.testing.assert_allclose(p5, [[12.5, 20], [42.5, 22], [30, 35], [15, 50], [45, 51]])
    assert points5_from_ibug68(np.stack([lm, lm])).shape == (2, 5, 2)
    with pytest.raises(LandmarkError):
        points5_from_ibug68(np.zeros((5, 2)))


# --------------------------------------------------------------------- pipeline
class _FakeEmbedder(Embedder):
    """Faces are encoded in the image: pixel (0, k) with value > 0 is a face of side value."""

    dim = 4
    name = "fake"

    def detect(self, image):
        faces = []
        for k in range(image.shape[1]):
            side = int(image[0, k, 0])
            if side > 0:
                box = np.array([k, 1, k + side, 1 + side], np.float32)
                p5 = ARCFACE_REFERENCE_112 * (side / 112.0) + box[:2]
                faces.append(Face(box=box, points5=p5.astype(np.float32), detector_score=1.0))
        return faces

    def face_from_landmarks(self, landmarks):
        lm = np.asarray(landmarks, np.float32)
        if lm.shape != (5, 2):
            raise LandmarkError("need 5 points")
        return Face(box=np.array([*lm.min(0), *lm.max(0)], np.float32), points5=lm)

    def align(self, image, face):
        return align_face(image, face.points5, (8, 8))

    def embed_crops(self, crops: Sequence[np.ndarray]):
        # the template says which face: side and x of its box, read back from the crop's source
        return np.array([[c.mean() + 1.0, 1.0, 2.0, c.shape[0]] for c in crops], np.float32)


def _face_image(sides_at: dict[int, int]) -> np.ndarray:
    img = np.full((120, 200, 3), 30, np.uint8)
    img[0] = 0
    for x, side in sides_at.items():
        img[0, x, 0] = side
    return img


def test_pipeline_policies_and_failures(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    two = _face_image({3: 20, 50: 60})
    images = [two, _face_image({}), tmp_path / "empty.jpg", _face_image({10: 40})]
    emb = _FakeEmbedder(batch_size=2)

    b = emb.embed(images, policy="largest")
    assert [r.reason for r in b.images] == [None, "no_face", "empty", None]
    assert [r.position for r in b.images] == [0, 1, 2, 3]
    assert b.images[0].n_detected == 2 and len(b.images[0].faces) == 1
    np.testing.assert_allclose(b.images[0].faces[0].box, [50, 1, 110, 61])  # the larger face
    t = b.templates()
    assert t.shape == (2, 4) and t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(b.image_index(), [0, 3])
    assert {r.reason for r in b.failures} <= set(FAILURE_REASONS)
    assert "empty.jpg" in b.images[2].source and b.images[1].source == "<array #1>"

    b_all = emb.embed(images, policy="all")
    np.testing.assert_array_equal(b_all.image_index(), [0, 0, 3])
    np.testing.assert_array_equal(b_all.face_index(), [0, 1, 0])
    assert b_all.images[0].faces[1].area < b_all.images[0].faces[0].area
    # batching does not change results
    b1 = _FakeEmbedder(batch_size=1).embed(images, policy="all")
    np.testing.assert_array_equal(b1.templates(), b_all.templates())

    b_one = emb.embed(images, policy="single")
    assert [r.reason for r in b_one.images] == ["several_faces", "no_face", "empty", None]
    assert emb.timings.images == 12 and emb.timings.faces == 2 + 3 + 1
    assert set(emb.timings.shares()) == {"load", "detect", "align", "embed"}

    with pytest.raises(InputError):
        emb.embed(images, policy="biggest")


def test_pipeline_caller_landmarks_and_bad_embeddings():
    img = _face_image({})
    good = ARCFACE_REFERENCE_112 * 0.5 + 20
    nan = good.copy()
    nan[2, 0] = np.nan
    emb = _FakeEmbedder()
    b = emb.embed([img, img, img, img], landmarks=[good, nan, np.stack([good, good + 30]), None])
    assert [r.reason for r in b.images] == [None, "bad_landmarks", None, "no_face"]
    assert len(b.images[2].faces) == 1  # policy largest applies to caller faces too
    with pytest.raises(InputError):
        emb.embed([img], landmarks=[good, good])

    class _Zero(_FakeEmbedder):
        def embed_crops(self, crops):
            out = np.ones((len(crops), 4), np.float32)
            out[0] = 0
            return out

    b = _Zero().embed([_face_image({3: 20}), _face_image({3: 30})])
    assert [r.reason for r in b.images] == ["bad_embedding", None]


def test_face_quality_orders_sharp_large_above_blurred_small():
    rng = np.random.default_rng(6)
    sharp = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    flat = np.full((64, 64, 3), 128, np.uint8)
    big = Face(box=np.array([0, 0, 100, 100], np.float32), points5=np.zeros((5, 2), np.float32))
    small = Face(box=np.array([0, 0, 20, 20], np.float32), points5=np.zeros((5, 2), np.float32))
    q = face_quality(big, sharp)
    assert 0.99 < q <= 1.0
    assert face_quality(big, flat) == 0.0
    assert face_quality(small, sharp) == pytest.approx(q * 20 / 80)


def test_list_images_identities(tmp_path):
    from pyfacematch.embed import list_images

    for rel in [
        "alice/1.jpg",
        "alice/2.PNG",
        "bob/x/3.jpeg",
        "carol.jpg",
        "notes.txt",
        ".hidden/4.jpg",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    got = [(i, p.relative_to(tmp_path).as_posix()) for i, p in list_images(tmp_path)]
    assert got == [
        ("alice", "alice/1.jpg"),
        ("alice", "alice/2.PNG"),
        ("bob", "bob/x/3.jpeg"),
        ("carol", "carol.jpg"),
    ]
    assert [p.name for _, p in list_images(tmp_path, recursive=False)] == [
        "1.jpg",
        "2.PNG",
        "carol.jpg",
    ]
    with pytest.raises(ImageLoadError):
        list_images(tmp_path / "carol.jpg")


def test_create_embedder_rejects_unknown_specs():
    from pyfacematch.embed import create_embedder

    for spec in ("arcface", "onnx", "onnx:"):
        with pytest.raises(InputError):
            create_embedder(spec)


def test_iter_embed_streams_in_order():
    images = (_face_image({3: 20 + k}) if k % 2 == 0 else _face_image({}) for k in range(5))
    emb = _FakeEmbedder(batch_size=2)
    got = list(emb.iter_embed(images))
    assert [r.position for r in got] == [0, 1, 2, 3, 4]
    assert [r.reason for r in got] == [None, "no_face", None, "no_face", None]
    ref = emb.embed([_face_image({3: 20 + k}) if k % 2 == 0 else _face_image({}) for k in range(5)])
    np.testing.assert_array_equal(np.concatenate([r.templates for r in got]), ref.templates())
    with pytest.raises(InputError, match="ran out"):
        list(emb.iter_embed([_face_image({})] * 3, landmarks=iter([None])))
