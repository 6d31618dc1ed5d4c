"""Array files read without trusting them: .npy headers, .npz members, key models (issue 12)."""

from __future__ import annotations

import io
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from pyfacematch.core.arrayfile import MAX_HEADER_BYTES, SafeNpz, read_npy_header
from pyfacematch.errors import GalleryFileError, InputError, PyFaceMatchError

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
from harness import npy_bytes, zip_bomb  # noqa: E402


def test_npy_header_is_checked_before_anything_is_allocated():
    ok = read_npy_header(io.BytesIO(npy_bytes(np.ones((3, 4), np.float32))), "x")
    assert ok.shape == (3, 4) and ok.nbytes == 48 and ok.offset == 128
    for bad in (
        b"not an npy file at all",
        b"\x93NUMPY\x09\x00" + b"\x00" * 20,  # unknown version
        b"\x93NUMPY\x01\x00" + struct.pack("<H", 60000),  # header longer than the cap
        b"\x93NUMPY\x01\x00" + struct.pack("<H", 8) + b"{'a': 1}",
        b"\x93NUMPY\x01\x00" + struct.pack("<H", 10) + b"((((((((((",
    ):
        with pytest.raises(InputError):
            read_npy_header(io.BytesIO(bad), "x")
    with pytest.raises(InputError, match="pickles never are"):
        read_npy_header(io.BytesIO(npy_bytes(np.array([None, 1], object))), "x")
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 4), }"
    raw = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode()
    with pytest.raises(InputError, match="invalid .npy shape"):
        read_npy_header(io.BytesIO(raw), "x")
    assert MAX_HEADER_BYTES == 10_000


def test_npz_zip_bomb_is_refused_before_inflating(tmp_path):
    p = tmp_path / "bomb.npz"
    total = zip_bomb(p, "templates", (40_000, 512))  # 164 MB of zeros in a ~160 KB file
    assert os.path.getsize(p) < 1 << 20 and total > 150 << 20
    with SafeNpz(p) as z, pytest.raises(InputError, match="likely zip bomb"):
        z["templates"]
    with SafeNpz(p, max_bytes=1 << 20) as z, pytest.raises(InputError, match="over the cap"):
        z["templates"]


def test_npz_member_lying_about_its_size_is_refused(tmp_path):
    p = tmp_path / "liar.npz"
    total = zip_bomb(p, "templates", (1000, 512), lie=1000)  # declares 1000 of 4 MB
    with SafeNpz(p) as z, pytest.raises(InputError, match="Bad CRC"):
        z["templates"]  # the stream stops at the declared size: never more is inflated
    zip_bomb(p, "templates", (1000, 512), lie=total + 4096)
    with SafeNpz(p) as z, pytest.raises(InputError, match="corrupted or crafted"):
        z["templates"]


def test_npz_round_trip_and_typed_errors(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    f = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    np.savez_compressed(tmp_path / "ok.npz", a=a, f=f, s=np.array(["x", "yz"]))
    with SafeNpz(tmp_path / "ok.npz") as z:
        assert sorted(z.files) == ["a", "f", "s"]
        np.testing.assert_array_equal(z["a"], a)
        np.testing.assert_array_equal(z["f"], f)
        assert z["s"].tolist() == ["x", "yz"]
        with pytest.raises(InputError, match="has no array 'b'"):
            z["b"]
    np.savez(tmp_path / "obj.npz", o=np.array([{"x": 1}], object))
    with SafeNpz(tmp_path / "obj.npz") as z, pytest.raises(InputError, match="Python objects"):
        z["o"]
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04" + b"\xff" * 100)
    with pytest.raises(GalleryFileError):
        SafeNpz(tmp_path / "junk.npz", error=GalleryFileError)
    os.mkfifo(tmp_path / "fifo.npz")
    with pytest.raises(InputError, match="not a regular file"):
        SafeNpz(tmp_path / "fifo.npz")


def test_key_model_zip_bomb_is_a_gallery_file_error(tmp_path):
    """Regression: KeyModel.load inflated every member whole (np.load), 1 MB became gigabytes."""
    from pyfacematch import KeyModel

    p = tmp_path / "model.npz"
    zip_bomb(p, "meta", (40_000, 512))
    with pytest.raises(GalleryFileError, match="zip bomb") as ei:
        KeyModel.load(p)
    assert isinstance(ei.value, PyFaceMatchError)


@pytest.mark.parametrize("descr", ["'<,4'", "'<f4,(('", "[('a', 'O')]", "'V99999999999999999999'"])
def test_npy_header_with_an_unparsable_dtype_is_typed(descr):
    """Regression (found by the fuzzer): descr '<,4' raised SyntaxError out of numpy."""
    hdr = f"{{'descr': {descr}, 'fortran_order': False, 'shape': (2, 4), }}"
    raw = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode()
    with pytest.raises(InputError):
        read_npy_header(io.BytesIO(raw), "x")
