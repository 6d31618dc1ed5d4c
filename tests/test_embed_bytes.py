"""``load_image`` on the bytes of an image file (an HTTP upload): the same guards as for a file."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL", reason="decoding images needs Pillow (pip install pillow)")

from PIL import Image  # noqa: E402

from pyfacematch.embed.images import ImageLoadError, describe_source, load_image  # noqa: E402

PHOTO = next(iter(sorted((Path(__file__).parent / "data" / "faces").glob("*/*.jpg"))))


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 20, 30)).save(buf, "PNG")
    return buf.getvalue()


def _declared(w: int, h: int) -> bytes:
    raw = bytearray(_png(8, 8))
    ihdr = struct.pack(">II", w, h) + bytes(raw[24:29])
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(raw)


def test_bytes_decode_like_the_file():
    a = load_image(PHOTO)
    b = load_image(PHOTO.read_bytes())
    assert b.dtype == np.uint8 and b.shape == a.shape and np.array_equal(a, b)
    assert describe_source(PHOTO.read_bytes(), 3) == "<image #3>"


@pytest.mark.parametrize(
    ("data", "kw", "reason"),
    [
        (b"", {}, "empty"),
        (b"plain text, not an image", {}, "not_an_image"),
        (_declared(6000, 6000), {"max_pixels": 25_000_000}, "too_large"),
        (_png(64, 64), {"max_bytes": 100}, "too_large"),
        (PHOTO.read_bytes()[:500], {}, "unreadable"),
    ],
)
def test_bytes_refused_with_a_reason(data, kw, reason):
    with pytest.raises(ImageLoadError) as e:
        load_image(data, **kw)
    assert e.value.reason == reason
