"""Five-point similarity alignment of face crops (ArcFace convention).

The standard recipe of ArcFace/InsightFace models: estimate the similarity
transform (rotation, uniform scale, translation; no reflection) that maps the
face's five points — left eye, right eye, nose tip, left and right mouth
corners, *as seen in the image* — onto fixed reference points in a 112 × 112
crop, least squares (Umeyama 1991), then warp the image with bilinear
interpolation. Pixel centres sit on integer coordinates, as in OpenCV's
``warpAffine``; outside the image the crop is black.
"""

from __future__ import annotations

import numpy as np

from pyfacematch._similarity import similarity_fit
from pyfacematch.errors import InputError, LandmarkError

__all__ = [
    "ARCFACE_REFERENCE_112",
    "reference_points",
    "similarity_transform",
    "warp_affine",
    "align_face",
    "points5_from_ibug68",
]

#: ArcFace reference points for a 112 × 112 crop, (5, 2) float32 pixels (x, y):
#: left eye, right eye, nose tip, left mouth corner, right mouth corner (image left/right).
ARCFACE_REFERENCE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def reference_points(size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """ArcFace reference points for an output crop of ``size = (height, width)``.

    The 112 × 112 points are scaled by ``width / 112`` and centred vertically
    and horizontally, as InsightFace does for other square sizes (e.g. 128).

    Returns
    -------
    numpy.ndarray
        (5, 2) float32, pixels (x, y).
    """
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise InputError(f"expected a positive crop size (height, width), got {size}")
    scale = min(h, w) / 112.0
    ref = ARCFACE_REFERENCE_112.astype(np.float64) * scale
    ref[:, 0] += (w - 112.0 * scale) / 2.0
    ref[:, 1] += (h - 112.0 * scale) / 2.0
    return ref.astype(np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` points onto ``dst``.

    Parameters
    ----------
    src, dst : array_like
        (P, 2) point sets, P >= 2, in pixels (x, y).

    Returns
    -------
    numpy.ndarray
        (2, 3) float64 matrix ``M`` with ``dst ≈ src @ M[:, :2].T + M[:, 2]``.

    Raises
    ------
    LandmarkError
        If the points hold NaN/Inf or ``src`` has collapsed to one point.
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 2 or s.shape != d.shape or s.shape[0] < 2:
        raise InputError(
            f"expected two (P, 2) point sets of the same shape with P >= 2, got {s.shape} and {d.shape}"
        )
    if not (np.isfinite(s).all() and np.isfinite(d).all()):
        raise LandmarkError("face points hold NaN or Inf: cannot align this face")
    if ((s - s.mean(0)) ** 2).sum() / s.shape[0] < 1e-12:
        raise LandmarkError("face points collapse to a single point: cannot align this face")
    scale, rot, trans = similarity_fit(s[None], d)
    m = np.empty((2, 3), dtype=np.float64)
    m[:, :2] = scale[0] * rot[0]
    m[:, 2] = trans[0]
    return m


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warp an image by a forward affine map, bilinear, black outside.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W, C) or (H, W) uint8.
    matrix : array_like
        (2, 3) forward map from image pixels to crop pixels.
    size : tuple of int
        Output (height, width).

    Returns
    -------
    numpy.ndarray
        (height, width, C) or (height, width) uint8; output pixel (u, v) takes
        the image value at ``M⁻¹ (u, v)`` (rounded half to even).
    """
    img = np.asarray(image)
    m = np.asarray(matrix, dtype=np.float64)
    oh, ow = int(size[0]), int(size[1])
    a = m[:, :2]
    det = np.linalg.det(a)
    if not np.isfinite(det) or abs(det) < 1e-12:
        raise LandmarkError("degenerate alignment transform: cannot warp this face")
    ainv = np.linalg.inv(a)
    binv = -ainv @ m[:, 2]
    v, u = np.mgrid[0:oh, 0:ow].astype(np.float64)
    x = ainv[0, 0] * u + ainv[0, 1] * v + binv[0]
    y = ainv[1, 0] * u + ainv[1, 1] * v + binv[1]
    h, w = img.shape[:2]
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx = x - x0
    fy = y - y0
    src = img.astype(np.float64)
    if src.ndim == 2:
        src = src[:, :, None]
    out = np.zeros((oh, ow, src.shape[2]), dtype=np.float64)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xi = x0 + dx
            yi = y0 + dy
            ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            wgt = (wx * wy) * ok
            vals = src[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
            out += vals * wgt[:, :, None]
    res = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return res[:, :, 0] if img.ndim == 2 else res


def align_face(
    image: np.ndarray, points5: np.ndarray, size: tuple[int, int] = (112, 112)
) -> np.ndarray:
    """Crop one face aligned on its five points (ArcFace reference).

    Parameters
    ----------
    image : numpy.ndarray
        (H, W, 3) uint8.
    points5 : array_like
        (5, 2) pixels (x, y): left eye, right eye, nose, left mouth, right mouth.
    size : tuple of int
        Crop (height, width).

    Returns
    -------
    numpy.ndarray
        (height, width, 3) uint8.
    """
    m = similarity_transform(points5, reference_points(size))
    return warp_affine(image, m, size)


def points5_from_ibug68(landmarks: np.ndarray) -> np.ndarray:
    """ArcFace five points from iBUG 68-point landmarks.

    Eye centres are the means of points 36–41 and 42–47, the nose tip is
    point 30, the mouth corners are points 48 and 54.

    Parameters
    ----------
    landmarks : array_like
        (68, 2) or (N, 68, 2) pixels.

    Returns
    -------
    numpy.ndarray
        (5, 2) or (N, 5, 2) float32.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape[-2:] != (68, 2):
        raise LandmarkError(
            f"expected iBUG 68-point landmarks of shape (..., 68, 2), got {lm.shape}"
        )
    out = np.stack(
        [
            lm[..., 36:42, :].mean(-2),
            lm[..., 42:48, :].mean(-2),
            lm[..., 30, :],
            lm[..., 48, :],
            lm[..., 54, :],
        ],
        axis=-2,
    )
    return out.astype(np.float32)
