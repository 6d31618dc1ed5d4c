"""Robust image loading for the embedders.

Every image a user hands over is either decoded into an ``(H, W, 3)`` uint8 RGB
array or rejected with an :class:`ImageLoadError` whose ``reason`` is one of
:data:`LOAD_REASONS`. The embedders turn that error into a per-image
failure-to-acquire result; nothing here crashes a batch.

Guards
------
- files larger than ``max_bytes`` are refused before reading them;
- the pixel count is read from the header and checked against ``max_pixels``
  *before* decoding, so a decompression bomb never allocates its pixels;
- truncated or corrupt files, zero-byte files and files that are not images
  are told apart.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np

from pyfacematch.errors import PyFaceMatchError

__all__ = [
    "ImageLoadError",
    "ImageSource",
    "LOAD_REASONS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_BYTES",
    "load_image",
    "describe_source",
    "IMAGE_EXTENSIONS",
    "list_images",
]

#: File name endings :func:`list_images` picks up (case-insensitive).
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)

#: Anything the embedders accept as one image: a path, an ``(H, W[, C])`` uint8 array, or the
#: bytes of an image file (an HTTP upload).
ImageSource = Union[str, os.PathLike, np.ndarray, bytes]

#: Refuse images with more pixels than this (about 8000 × 5000).
DEFAULT_MAX_PIXELS = 40_000_000
#: Refuse image files larger than this many bytes.
DEFAULT_MAX_BYTES = 100 * 1024 * 1024

#: Reasons an image can fail to load.
LOAD_REASONS = ("unreadable", "empty", "too_large", "not_an_image")


class ImageLoadError(PyFaceMatchError, OSError):
    """An image cannot be turned into pixels.

    Attributes
    ----------
    reason : str
        One of :data:`LOAD_REASONS`: ``"unreadable"`` (missing, no permission,
        truncated or corrupt), ``"empty"`` (zero bytes or zero pixels),
        ``"too_large"`` (over the byte or pixel limit), ``"not_an_image"``
        (not a decodable image format, or an array of the wrong shape/dtype).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def describe_source(source: object, index: int) -> str:
    """A short printable name of an image source (its path, or ``<array #i>``)."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<image #{index}>"
    return f"<array #{index}>"


def _array_to_rgb(arr: np.ndarray, max_pixels: int) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise ImageLoadError(
            "not_an_image",
            f"expected a path or a numpy array, got {type(arr).__name__}: "
            "pass image files or (H, W, 3) uint8 RGB arrays",
        )
    if arr.dtype != np.uint8:
        raise ImageLoadError(
            "not_an_image",
            f"expected a uint8 image array, got dtype {arr.dtype}: "
            "convert with np.clip(x, 0, 255).astype(np.uint8) if the values are 0..255",
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif not (arr.ndim == 3 and arr.shape[2] == 3):
        raise ImageLoadError(
            "not_an_image",
            f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}",
        )
    h, w = arr.shape[:2]
    if h == 0 or w == 0:
        raise ImageLoadError("empty", f"the image array has no pixels (shape {arr.shape})")
    if h * w > max_pixels:
        raise ImageLoadError(
            "too_large",
            f"image has {h}x{w} = {h * w} pixels, more than max_pixels={max_pixels}: "
            "downscale it or raise max_pixels",
        )
    return np.ascontiguousarray(arr)


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    exif_transpose: bool = True,
) -> np.ndarray:
    """Decode one image into an RGB uint8 array.

    Parameters
    ----------
    source : str, os.PathLike, bytes or numpy.ndarray
        An image file (any format Pillow reads), the bytes of one (an upload, checked
        like a file: size, header pixel count, format), or an array: ``(H, W, 3)``
        uint8 RGB is used as is (no copy when C-contiguous); ``(H, W)`` grey is
        repeated to three channels; ``(H, W, 4)`` drops alpha.
    max_pixels : int
        Largest accepted ``H * W``. Checked from the file header before any
        pixel is decoded (decompression-bomb guard).
    max_bytes : int
        Largest accepted file size in bytes.
    exif_transpose : bool
        Apply the EXIF orientation tag, so a phone photo stored sideways is
        seen upright.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8, C-contiguous, RGB.

    Raises
    ------
    ImageLoadError
        With ``reason`` in :data:`LOAD_REASONS`.
    """
    fp: Path | io.BytesIO
    if isinstance(source, (bytes, bytearray)):
        path: Path | str = "uploaded image"
        size = len(source)
        fp = io.BytesIO(source)
    elif not isinstance(source, (str, os.PathLike)):
        return _array_to_rgb(source, max_pixels)
    else:
        path = fp = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ImageLoadError(
                "unreadable", f"cannot read image file {path}: {exc.strerror or exc}"
            ) from None
        if path.is_dir():
            raise ImageLoadError("unreadable", f"{path} is a directory, not an image file")
    if size == 0:
        raise ImageLoadError("empty", f"image file {path} is empty (0 bytes)")
    if size > max_bytes:
        raise ImageLoadError(
            "too_large",
            f"image file {path} has {size} bytes, more than max_bytes={max_bytes}: "
            "downscale it or raise max_bytes",
        )

    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading image files needs Pillow: pip install 'pyfacematch[dlib]' or pip install pillow"
        ) from exc

    with warnings.catch_warnings():
        # We enforce our own pixel limit below, before decoding; Pillow's
        # warning/error would otherwise fire first with a less useful message.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(fp) as im:
                w, h = im.size
                if w == 0 or h == 0:
                    raise ImageLoadError("empty", f"image file {path} has no pixels")
                if w * h > max_pixels:
                    raise ImageLoadError(
                        "too_large",
                        f"image file {path} declares {w}x{h} = {w * h} pixels, more than "
                        f"max_pixels={max_pixels}: downscale it or raise max_pixels",
                    )
                im.load()
                img: Image.Image = im
                if exif_transpose:
                    img = ImageOps.exif_transpose(img)
                if img.mode != "RGB":
                    img = img.convert("RGB")
                arr = np.asarray(img, dtype=np.uint8)
        except ImageLoadError:
            raise
        except UnidentifiedImageError:
            raise ImageLoadError(
                "not_an_image", f"{path} is not an image format Pillow can read"
            ) from None
        except Image.DecompressionBombError:
            raise ImageLoadError(
                "too_large", f"image file {path} is too large to decode safely"
            ) from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageLoadError(
                "unreadable", f"image file {path} is truncated or corrupt ({type(exc).__name__})"
            ) from None
    return np.ascontiguousarray(arr)


def list_images(
    folder: str | os.PathLike,
    *,
    recursive: bool = True,
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
) -> list[tuple[str, Path]]:
    """Image files under a folder, with the identity their location implies.

    Layout ``folder/<identity>/<image>`` gives ``identity`` = the subfolder
    name; an image directly in ``folder`` gives its file stem. Hidden files
    and folders are skipped; files are listed in sorted order. Whether a
    file really is an image is found out when it is loaded (a bad file
    becomes a per-image failure, not an error here).

    Parameters
    ----------
    folder : path
    recursive : bool
        Look into subfolders at any depth (the identity is the first-level
        subfolder).
    extensions : tuple of str
        Lower-case file endings to keep.

    Returns
    -------
    list of (str, pathlib.Path)
        (identity, path) pairs.

    Raises
    ------
    ImageLoadError
        If ``folder`` is not a readable folder (reason ``"unreadable"``).
    """
    root = Path(folder)
    if not root.is_dir():
        raise ImageLoadError("unreadable", f"{root} is not a folder of images")
    pattern = "**/*" if recursive else "*/*"
    out: list[tuple[str, Path]] = []
    candidates = sorted(set(root.glob(pattern)) | set(root.glob("*")))
    for p in candidates:
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if not p.is_file() or p.suffix.lower() not in extensions:
            continue
        identity = rel.parts[0] if len(rel.parts) > 1 else p.stem
        out.append((identity, p))
    return out
