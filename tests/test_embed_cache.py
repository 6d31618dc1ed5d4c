"""The model cache: made once, checked before every use, never in the way when it cannot write."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pyfacematch.embed.cache import cache_dir, cached_bytes, cached_file


class Maker:
    def __init__(self, data: bytes) -> None:
        self.data, self.calls = data, 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.data


def test_made_once_then_read(tmp_path, monkeypatch):
    monkeypatch.setenv("PYFACEMATCH_CACHE_DIR", str(tmp_path))
    make = Maker(b"model bytes" * 1000)
    assert cached_bytes("m.bin", make) == make.data
    assert cached_bytes("m.bin", make) == make.data
    assert make.calls == 1
    assert (tmp_path / "m.bin").read_bytes() == make.data
    assert cached_file("m.bin", make) == tmp_path / "m.bin" and make.calls == 1
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_sidecar", "bad_sidecar"])
def test_damaged_entry_is_made_again(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("PYFACEMATCH_CACHE_DIR", str(tmp_path))
    make = Maker(bytes(range(256)) * 40)
    cached_bytes("m.bin", make)
    entry, side = tmp_path / "m.bin", tmp_path / "m.bin.sha256"
    if damage == "truncate":
        entry.write_bytes(make.data[:100])
    elif damage == "flip":
        b = bytearray(make.data)
        b[5000] ^= 1
        entry.write_bytes(bytes(b))
    elif damage == "no_sidecar":
        side.unlink()
    else:
        side.write_bytes(b"\xff\xfe not a hash")
    assert cached_bytes("m.bin", make) == make.data and make.calls == 2
    assert entry.read_bytes() == make.data  # repaired
    assert cached_bytes("m.bin", make) == make.data and make.calls == 2


def test_disabled_or_unwritable_cache_still_gives_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("PYFACEMATCH_CACHE_DIR", "off")
    assert cache_dir() is None
    make = Maker(b"x" * 10)
    assert cached_bytes("m.bin", make) == make.data and cached_bytes("m.bin", make) == make.data
    assert make.calls == 2 and cached_file("m.bin", make) is None
    # a cache folder that cannot be created (a file is in the way): made in memory, no error
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("PYFACEMATCH_CACHE_DIR", str(blocker / "cache"))
    assert cached_bytes("m.bin", make) == make.data
    assert cached_file("m.bin", make) is None


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_folder_or_entry_others_can_write_is_not_used(tmp_path, monkeypatch):
    folder = tmp_path / "c"
    monkeypatch.setenv("PYFACEMATCH_CACHE_DIR", str(folder))
    make = Maker(b"model" * 100)
    cached_bytes("m.bin", make)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "m.bin").stat().st_mode & 0o777 == 0o600
    # an entry someone else could have written is made again (and rewritten private)
    os.chmod(folder / "m.bin.sha256", 0o666)
    assert cached_bytes("m.bin", make) == make.data and make.calls == 2
    assert (folder / "m.bin.sha256").stat().st_mode & 0o777 == 0o600
    assert cached_bytes("m.bin", make) == make.data and make.calls == 2
    # a folder others can write (not sticky): not used at all
    os.chmod(folder, 0o777)
    assert cached_bytes("m.bin", make) == make.data and make.calls == 3
    assert cached_file("m.bin", make) is None and make.calls == 3
    # sticky, as /tmp: others cannot replace our files, so it is used
    os.chmod(folder, 0o1777)
    assert cached_file("m.bin", make) == folder / "m.bin" and make.calls == 3


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG layout (Linux and BSDs)")
def test_default_folder_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("PYFACEMATCH_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "pyfacematch" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the spec says: ignore it
    assert cache_dir() == Path.home() / ".cache" / "pyfacematch" / "models"


def test_dlib_graph_cached_equals_built(tmp_path, monkeypatch):
    from pyfacematch.embed.dlib import dlib_available, dlib_model_dir

    if not dlib_available():
        pytest.skip("dlib or its models are not installed (pip install 'pyfacematch[dlib]')")
    from pyfacematch.embed.dlib_onnx import (
        build_dlib_resnet_onnx,
        dlib_resnet_onnx_cached,
        load_dlib_resnet,
    )

    monkeypatch.setenv("PYFACEMATCH_CACHE_DIR", str(tmp_path / "c"))
    src = dlib_model_dir() / "dlib_face_recognition_resnet_model_v1.dat"
    built = build_dlib_resnet_onnx(load_dlib_resnet(src))
    assert dlib_resnet_onnx_cached(src) == built
    (entry,) = (tmp_path / "c").glob("dlib_resnet_v1-*.onnx")
    assert dlib_resnet_onnx_cached(src) == built  # from the entry
    # another weight file (here: the same bytes, touched) makes another entry
    copy = tmp_path / "w.dat"
    copy.write_bytes(src.read_bytes())
    assert dlib_resnet_onnx_cached(copy) == built
    os.utime(copy, ns=(1, 1))
    dlib_resnet_onnx_cached(copy)
    assert len(list((tmp_path / "c").glob("dlib_resnet_v1-*.onnx"))) == 3
    assert entry.is_file()
