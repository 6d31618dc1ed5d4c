"""The embedder in worker processes: same templates as in this process, input order, bad images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyfacematch.embed.dlib import dlib_available

if not dlib_available():
    pytest.skip(
        "dlib or its models are not installed (pip install 'pyfacematch[dlib]')",
        allow_module_level=True,
    )

from pyfacematch.embed import create_embedder  # noqa: E402
from pyfacematch.embed.dlib import DlibDetector, DlibEmbedder  # noqa: E402
from pyfacematch.embed.images import load_image  # noqa: E402
from pyfacematch.embed.parallel import ParallelEmbedder  # noqa: E402
from pyfacematch.errors import InputError  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def small():
    d = np.load(DATA / "faces_small.npz")
    return {k: d[k] for k in d.files}


def test_parallel_matches_in_process_and_keeps_order(small, tmp_path):
    paths = [str(DATA / p) for p in small["paths"]]
    (tmp_path / "fake.jpg").write_text("not an image")
    good = (DATA / small["paths"][0]).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 3])
    noise = np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8)
    images: list = [paths[0], str(tmp_path / "fake.jpg"), paths[1], noise]
    images += [str(tmp_path / "cut.jpg"), *paths[2:]]
    ref = DlibEmbedder().embed(paths).templates().astype(np.float64)
    # chunks of 2 with at most 2 in flight: order and results survive the chunking
    with ParallelEmbedder("dlib", workers=2, chunk_size=2, max_inflight=2) as pe:
        assert pe.dim == 128 and pe.name == "dlib_resnet_v1"
        b = pe.embed(images)
    reasons = [r.reason for r in b.images]
    assert reasons == [None, "not_an_image", None, "no_face", "unreadable", None, None, None, None]
    assert [r.position for r in b.images] == list(range(len(images)))
    t = b.templates().astype(np.float64)
    assert t.shape == (6, 128)
    assert (t * ref).sum(1).min() > 0.99999  # the same pipeline, only in another process
    assert pe.timings.images == len(images) and pe.timings.faces == 6
    assert pe.cpu_seconds > 0


def test_parallel_bad_arguments():
    with pytest.raises(InputError, match="workers"):
        ParallelEmbedder("dlib", workers=0)
    with pytest.raises(InputError, match="chunk_size"):
        ParallelEmbedder("dlib", chunk_size=0)
    with pytest.raises(InputError, match="policy"):
        next(ParallelEmbedder("dlib", workers=1).iter_embed(["x.jpg"], policy="some"))


def test_create_embedder_workers():
    pe = create_embedder("dlib", workers=2, upsample="auto")
    assert isinstance(pe, ParallelEmbedder) and pe.workers == 2
    assert pe.options == {"upsample": "auto", "threads": 1}  # one onnxruntime thread per worker
    pe.close()
    assert isinstance(create_embedder("dlib", workers=1), DlibEmbedder)


def test_upsample_auto_finds_small_faces(small):
    img = load_image(DATA / small["paths"][0])
    auto = DlibDetector(upsample="auto")
    assert len(auto.detect(img)) == 1  # large enough: found without upsampling
    tiny = img[::3, ::3]  # a 50-pixel face: only found upsampled
    assert len(DlibDetector(upsample=0).detect(tiny)) == 0
    assert len(auto.detect(tiny)) == 1
    with pytest.raises(InputError, match="upsample"):
        DlibDetector(upsample="fast")
