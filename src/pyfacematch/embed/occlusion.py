"""Occlusion masks from the picture: which face regions a mask, a hand or sunglasses hide.

Masked cosine needs to know which region blocks of a landmark key are valid.
Landmarkers place every point even under an occluder (MediaPipe and dlib both
guess the hidden shape), so the points alone cannot tell; the pixels can.

The choice: **per-region appearance against the face's own visible skin, scored by a small
logistic model trained here on synthetic overlays.** For each region of the landmark scheme
(its points' convex hull widened by 12 % of the inter-ocular distance) six numbers are measured
relative to the same face, so that one model serves every scheme and every face:

1. the fraction of skin-coloured pixels (YCrCb rule of Chai & Ngan, 1999);
2. the median colour distance to the face's reference skin (median of the skin pixels of the
   whole face);
3. very dark pixels (sunglasses, dark masks);
4. texture: mean absolute Laplacian, relative to the whole face's (flat fabric or plastic
   loses the eyes', brows' and lips' edges; a drawn hand is skin-coloured but flatter);
5. colour saturation relative to the face's;
6. the spread of brightness relative to the face's.

The weights (:data:`DEFAULT_WEIGHTS`) were fitted by :func:`train_occlusion_model` on three of
the five people of the shared photos with occluders drawn by :func:`draw_occluder` (masks,
sunglasses, hands, patches; random shapes, colours and positions); the other two people are
held out to judge it (``tests/test_occlusion.py``, ``python bench/embed.py``: intersection over
union per region of predicted and drawn hidden regions). Nothing is downloaded. A classifier on
synthetic overlays is only as good as its overlays: real scarves, beards and shadows are not in
its training data — calibrate on real occluded photos before relying on it.

Example
-------
>>> vis = OcclusionDetector().point_visibility(image, landmarks, scheme)   # doctest: +SKIP
>>> keys, masks = key_model.encode(landmarks[None], vis[None])              # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyfacematch.errors import InputError, LandmarkError

__all__ = [
    "FEATURES",
    "DEFAULT_WEIGHTS",
    "OcclusionDetector",
    "region_pixels",
    "region_features",
    "draw_occluder",
    "OCCLUDERS",
    "train_occlusion_model",
    "hidden_truth",
]

FEATURES = ("skin_fraction", "skin_distance", "dark_fraction", "texture", "saturation", "spread")
OCCLUDERS = ("mask", "sunglasses", "hand", "patch")

#: Logistic weights over the terms of ``_expand`` (bias, the six features of :data:`FEATURES`
#: standardised by ``_MU`` / ``_SD``, their products and squares). Fitted by
#: :func:`train_occlusion_model` (seed 0, 12 overlays per photo) on the 32 shared photos of
#: John_Schneider, John_Shimkus and John_Simm, with their stored 68- and 478-point landmarks;
#: John_Salley and John_Savage are held out to judge it.
DEFAULT_WEIGHTS = np.array(
    [-2.8251, -0.4912, -0.4255, -0.4982, 1.2403, 0.2551, -0.8787, 0.2274, -0.8031, 0.3349,
     -0.0937, 0.0946, 0.0907, 0.8118, 0.0682, -0.2061, -0.0781, 0.3437, 0.5778, -0.0144,
     0.2809, 0.2559, -0.1152, -0.0446, -0.3439, -0.1029, 0.0331, 0.4347]
)  # fmt: skip
_MU = np.array([0.7378, 0.4877, 0.1591, 1.0179, 0.9804, 0.6929])
_SD = np.array([0.341, 0.4122, 0.2716, 0.4597, 0.2417, 0.3132])


def _ycrcb(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cr = (r - y) * 0.713 + 128.0
    cb = (b - y) * 0.564 + 128.0
    return np.stack([y, cr, cb], axis=-1)


def _laplacian(gray: np.ndarray) -> np.ndarray:
    out = np.zeros_like(gray)
    out[1:-1, 1:-1] = np.abs(
        gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]
    )
    return out


def _eye_distance(landmarks: np.ndarray, scheme: Any) -> float:
    eyes = [r for r in scheme.regions if r.endswith("_eye")]
    if len(eyes) != 2:
        span = landmarks.max(0) - landmarks.min(0)
        return max(float(span.max()) / 2.5, 1.0)
    a, b = (landmarks[scheme.region_points(r)].mean(0) for r in eyes)
    return max(float(np.linalg.norm(a - b)), 1.0)


def _hull_equations(points: np.ndarray) -> np.ndarray:
    """The edges of the convex hull of 2-D points as half-planes ``a x + b y + c <= 0`` (inside),
    ``(a, b)`` the unit outward normal: (edges, 3) float64.

    Andrew's monotone chain (A. M. Andrew, "Another efficient algorithm for convex hulls in two
    dimensions", Information Processing Letters 9(5), 1979) on the few points of one face region:
    the same half-planes as ``scipy.spatial.ConvexHull(points).equations`` (tests check the masks
    against it), without importing ``scipy.spatial`` (0.4–1 s of start-up per process) or paying
    Qhull's setup (~0.12 ms a hull, 19 hulls a face).

    Raises
    ------
    ValueError
        Fewer than three points not on one line.
    """
    # Python floats: a few dozen points, where NumPy's per-element overhead would dominate
    pts = sorted(set(map(tuple, np.asarray(points, np.float64).tolist())))  # by x, then y
    if len(pts) < 3:
        raise ValueError("fewer than three distinct points")

    def chain(seq: list[tuple[float, float]]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for px, py in seq:
            while len(out) >= 2:
                (ox, oy), (ax, ay) = out[-2], out[-1]
                if (ax - ox) * (py - oy) - (ay - oy) * (px - ox) > 0:
                    break
                out.pop()
            out.append((px, py))
        return out

    hull = np.array(chain(pts)[:-1] + chain(pts[::-1])[:-1])  # counter-clockwise
    if len(hull) < 3:
        raise ValueError("the points lie on one line")
    d = np.roll(hull, -1, axis=0) - hull
    normal = np.stack([d[:, 1], -d[:, 0]], axis=1) / np.linalg.norm(d, axis=1, keepdims=True)
    return np.concatenate([normal, -(normal * hull).sum(1, keepdims=True)], axis=1)


def _hull_box(
    points: np.ndarray, shape: tuple[int, int], widen: float
) -> tuple[int, int, np.ndarray]:
    """Pixels within ``widen`` of the convex hull of ``points``, inside their bounding box:
    ``(y0, x0, mask)``, ``mask`` bool of the box's shape (0 × 0 when the box leaves the image)."""
    h, w = shape
    lo = np.floor(points.min(0) - widen).astype(int)
    hi = np.ceil(points.max(0) + widen).astype(int)
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], w - 1), min(hi[1], h - 1)
    if x1 < x0 or y1 < y0:
        return 0, 0, np.zeros((0, 0), bool)
    yy, xx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
    q = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float64)
    try:
        # inside the hull pushed out by `widen` (each edge's half-plane moved outwards)
        eq = _hull_equations(points)  # a x + b y + c <= 0 inside, (a, b) unit
        inside = ((q @ eq[:, :2].T + eq[:, 2]) <= widen).all(1)
    except ValueError:  # collinear or too few points: discs around the points
        d = np.min(np.linalg.norm(q[:, None, :] - points[None, :, :], axis=2), axis=1)
        inside = d <= widen
    return int(y0), int(x0), inside.reshape(yy.shape)


def _hull_mask(points: np.ndarray, shape: tuple[int, int], widen: float) -> np.ndarray:
    """Pixels within ``widen`` of the convex hull of ``points`` (bool, image shape)."""
    y0, x0, m = _hull_box(points, shape, widen)
    out = np.zeros(shape, bool)
    out[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m
    return out


def _region_boxes(
    shape: tuple[int, int], landmarks: np.ndarray, scheme: Any, widen: float = 0.12
) -> list[tuple[int, int, np.ndarray]]:
    """:func:`region_pixels` as ``(y0, x0, mask)`` boxes (the features look only there)."""
    lm = _checked_landmarks(landmarks, scheme)
    wid = widen * _eye_distance(lm, scheme)
    return [_hull_box(lm[scheme.region_points(r)], shape, wid) for r in scheme.regions]


def _box_of(mask: np.ndarray) -> tuple[int, int, np.ndarray]:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0, 0, np.zeros((0, 0), bool)
    y0, x0 = int(ys.min()), int(xs.min())
    return y0, x0, mask[y0 : int(ys.max()) + 1, x0 : int(xs.max()) + 1]


def _checked_landmarks(landmarks: np.ndarray, scheme: Any) -> np.ndarray:
    lm = np.asarray(landmarks, np.float64)[:, :2]
    if lm.shape[0] != scheme.n_points:
        raise LandmarkError(
            f"expected {scheme.n_points} landmarks of scheme {scheme.name!r}, got {lm.shape[0]}"
        )
    if not np.isfinite(lm).all():
        raise LandmarkError("landmarks hold NaN or Inf: cannot place the face's regions")
    return lm


def region_pixels(
    shape: tuple[int, int], landmarks: np.ndarray, scheme: Any, widen: float = 0.12
) -> list[np.ndarray]:
    """One bool mask (image shape) per region of ``scheme``: its points' hull widened by
    ``widen`` × the inter-ocular distance."""
    out = []
    for y0, x0, m in _region_boxes(shape, landmarks, scheme, widen):
        full = np.zeros(shape, bool)
        full[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m
        out.append(full)
    return out


def region_features(
    image: np.ndarray, landmarks: np.ndarray, scheme: Any, regions: list[np.ndarray] | None = None
) -> np.ndarray:
    """(R, 6) appearance features of each region relative to the face (see :data:`FEATURES`)."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 RGB image, got {img.shape} {img.dtype}")
    # each region is looked at inside its bounding box only
    if regions is None:
        boxes = _region_boxes(img.shape[:2], landmarks, scheme)
    else:
        boxes = [_box_of(np.asarray(m, bool)) for m in regions]
    ycc = _ycrcb(img)
    y, cr, cb = ycc[..., 0], ycc[..., 1], ycc[..., 2]
    skin = (cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127) & (y > 40)
    mx = img.max(2).astype(np.float32)
    sat = (mx - img.min(2)) / np.maximum(mx, 1.0)
    lap = _laplacian(y)
    face = np.zeros(img.shape[:2], bool)
    for y0, x0, m in boxes:
        face[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] |= m
    if not face.any():
        raise LandmarkError("the face's regions fall outside the image")
    ref_set = face & skin if (face & skin).sum() >= 0.05 * face.sum() else face
    ref = np.median(ycc[ref_set], axis=0)
    lap_face = float(lap[face].mean()) + 1.0
    sat_face = float(sat[face].mean()) + 0.02
    spread_face = float(y[face].std()) + 1.0
    feats = np.zeros((len(boxes), 6))
    for i, (y0, x0, m) in enumerate(boxes):
        if not m.any():
            feats[i] = (0.0, 3.0, 1.0, 0.0, 0.0, 0.0)  # nothing seen: looks hidden
            continue
        box = (slice(y0, y0 + m.shape[0]), slice(x0, x0 + m.shape[1]))
        px = ycc[box][m]
        ym = px[:, 0]
        dist = np.sqrt(((px[:, 1:] - ref[1:]) ** 2).sum(1) + ((ym - ref[0]) / 2) ** 2)
        feats[i] = (
            skin[box][m].mean(),
            np.median(dist) / 50.0,
            (ym < 60).mean(),
            lap[box][m].mean() / lap_face,
            sat[box][m].mean() / sat_face,
            ym.std() / spread_face,
        )
    return feats


_IU = np.triu_indices(6)
#: model terms: bias, the 6 standardised features, their 21 products and squares
N_TERMS = 1 + 6 + len(_IU[0])


def _face_crop(image: Any, landmarks: Any, scheme: Any) -> tuple[Any, Any]:
    """The image cut to the face's regions (+ a margin) and the landmarks moved with it.

    Every region mask lies within ``widen`` (0.12 × the inter-ocular distance) of the points,
    so with 3 more pixels no region pixel touches the cut and the features (the Laplacian
    included) are those of the whole image, at a cost that no longer grows with the photo.
    Invalid input is passed through untouched for :func:`region_features` to refuse.
    """
    img = np.asarray(image)
    lm = np.asarray(landmarks, np.float64)
    if img.ndim != 3 or lm.ndim != 2 or lm.shape[0] != scheme.n_points or not np.isfinite(lm).all():
        return image, landmarks
    xy = lm[:, :2]
    pad = 0.12 * _eye_distance(xy, scheme) + 3.0
    h, w = img.shape[:2]
    x0, y0 = (max(int(np.floor(v - pad)), 0) for v in xy.min(0))
    x1 = min(int(np.ceil(xy[:, 0].max() + pad)) + 1, w)
    y1 = min(int(np.ceil(xy[:, 1].max() + pad)) + 1, h)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return image, landmarks
    return img[y0:y1, x0:x1], xy - np.array([x0, y0], np.float64)


def _expand(f: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    z = (f - mu) / sd
    quad = (z[:, :, None] * z[:, None, :])[:, _IU[0], _IU[1]]
    return np.concatenate([np.ones((len(z), 1)), z, quad], axis=1)


class OcclusionDetector:
    """Hidden face regions from the picture and the landmarks.

    Parameters
    ----------
    weights, mu, sd : array, optional
        A logistic model from :func:`train_occlusion_model` (default: :data:`DEFAULT_WEIGHTS`).
    threshold : float
        Probability above which a region counts as hidden.
    """

    def __init__(
        self,
        weights: np.ndarray | None = None,
        mu: np.ndarray | None = None,
        sd: np.ndarray | None = None,
        *,
        threshold: float = 0.5,
    ) -> None:
        self.weights = np.asarray(DEFAULT_WEIGHTS if weights is None else weights, np.float64)
        self.mu = np.asarray(_MU if mu is None else mu, np.float64)
        self.sd = np.asarray(_SD if sd is None else sd, np.float64)
        if self.weights.shape != (N_TERMS,) or self.mu.shape != (6,) or self.sd.shape != (6,):
            raise InputError(f"expected weights ({N_TERMS},), mu (6,) and sd (6,)")
        self.threshold = float(threshold)

    def hidden_probability(
        self, image: np.ndarray, landmarks: np.ndarray, scheme: Any
    ) -> np.ndarray:
        """(R,) probability that each region of ``scheme`` is hidden."""
        image, landmarks = _face_crop(image, landmarks, scheme)
        f = region_features(image, landmarks, scheme)
        z = _expand(f, self.mu, self.sd) @ self.weights
        return 1.0 / (1.0 + np.exp(-z))

    def hidden_regions(self, image: np.ndarray, landmarks: np.ndarray, scheme: Any) -> np.ndarray:
        """(R,) bool: the regions judged hidden."""
        return self.hidden_probability(image, landmarks, scheme) > self.threshold

    def point_visibility(self, image: np.ndarray, landmarks: np.ndarray, scheme: Any) -> np.ndarray:
        """(P,) bool: a point is visible when its region is (the ``visibility`` a key model takes)."""
        hidden = self.hidden_regions(image, landmarks, scheme)
        return ~hidden[np.asarray(scheme.point_region)]


# -- synthetic occluders (training and judging) ---------------------------------------------


def _poly_mask(shape: tuple[int, int], poly: np.ndarray) -> np.ndarray:
    from matplotlib.path import Path as MplPath

    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    q = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)
    return MplPath(poly).contains_points(q).reshape(shape)


def _ellipse(
    shape: tuple[int, int], c: np.ndarray, ax: tuple[float, float], ang: float
) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = xx - c[0], yy - c[1]
    ca, sa = np.cos(ang), np.sin(ang)
    u, v = (dx * ca + dy * sa) / ax[0], (-dx * sa + dy * ca) / ax[1]
    return u * u + v * v <= 1.0


def draw_occluder(
    image: np.ndarray, landmarks: np.ndarray, scheme: Any, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a synthetic occluder over a face: (new image, bool pixel mask of what it covers).

    ``kind``: ``"mask"`` (a face mask from below the eyes to below the chin; plain, dark or
    patterned), ``"sunglasses"`` (two dark tinted lenses and a bridge), ``"hand"`` (a skin-toned
    palm and fingers, tone taken from the face with noise, anywhere on the face) or ``"patch"``
    (a random coloured ellipse or polygon anywhere on the face). Sizes, colours, angles and
    positions are random.
    """
    if kind not in OCCLUDERS:
        raise InputError(f"expected an occluder in {OCCLUDERS}, got {kind!r}")
    img = np.array(image, copy=True)
    shape = img.shape[:2]
    lm = np.asarray(landmarks, np.float64)[:, :2]
    iod = _eye_distance(lm, scheme)
    lo, hi = lm.min(0), lm.max(0)
    centre = (lo + hi) / 2
    eyes = [lm[scheme.region_points(r)].mean(0) for r in scheme.regions if r.endswith("_eye")]
    eye_y = float(np.mean([e[1] for e in eyes])) if eyes else lo[1] + 0.35 * (hi[1] - lo[1])
    if kind == "mask":
        top = eye_y + iod * rng.uniform(0.35, 0.7)
        bottom = hi[1] + iod * rng.uniform(0.0, 0.4)
        left = lo[0] - iod * rng.uniform(0.0, 0.2)
        right = hi[0] + iod * rng.uniform(0.0, 0.2)
        sag = iod * rng.uniform(0.0, 0.3)
        poly = np.array(
            [
                [left, top + sag],
                [centre[0], top],
                [right, top + sag],
                [right - 0.15 * iod, bottom - 0.3 * iod],
                [centre[0], bottom],
                [left + 0.15 * iod, bottom - 0.3 * iod],
            ]
        )
        m = _poly_mask(shape, poly)
        colour = rng.choice([[235, 235, 240], [90, 140, 200], [30, 30, 35], [70, 120, 90]])
        colour = np.clip(np.asarray(colour) + rng.normal(0, 15, 3), 0, 255)
        fill = np.broadcast_to(colour, img.shape).copy()
        if rng.random() < 0.4:  # stripes
            yy = np.mgrid[0 : shape[0], 0 : shape[1]][0]
            fill[(yy // max(2, int(iod / 6))) % 2 == 0] *= 0.7
    elif kind == "sunglasses":
        m = np.zeros(shape, bool)
        r = iod * rng.uniform(0.28, 0.42)
        for e in eyes:
            m |= _ellipse(
                shape, e + rng.normal(0, 0.05 * iod, 2), (r * 1.2, r), rng.uniform(-0.2, 0.2)
            )
        if len(eyes) == 2:
            a, b = eyes
            bridge = np.array([[a[0], a[1] - 0.08 * iod], [b[0], b[1] - 0.08 * iod]])
            bridge = np.vstack([bridge, bridge[::-1] + [0, 0.12 * iod]])
            m |= _poly_mask(shape, bridge)
        colour = np.clip(
            rng.choice([[15, 15, 20], [40, 30, 20], [20, 30, 50]]) + rng.normal(0, 8, 3), 0, 255
        )
        fill = np.broadcast_to(colour, img.shape).copy()
    elif kind == "hand":
        c = lm[rng.integers(len(lm))] + rng.normal(0, 0.3 * iod, 2)
        ang = rng.uniform(0, np.pi)
        m = _ellipse(shape, c, (iod * rng.uniform(0.55, 0.8), iod * rng.uniform(0.45, 0.65)), ang)
        for k in range(4):  # fingers
            off = (k - 1.5) * 0.28 * iod
            d = np.array([np.cos(ang), np.sin(ang)])
            n_ = np.array([-d[1], d[0]])
            base = c + n_ * off + d * 0.4 * iod
            m |= _ellipse(shape, base + d * 0.5 * iod, (0.6 * iod, 0.12 * iod), ang)
        face_px = img[_poly_mask(shape, np.array([lo, [hi[0], lo[1]], hi, [lo[0], hi[1]]]))]
        tone = np.median(face_px, axis=0) if len(face_px) else np.array([200, 160, 140])
        colour = np.clip(tone * rng.uniform(0.8, 1.15) + rng.normal(0, 10, 3), 0, 255)
        fill = np.broadcast_to(colour, img.shape).copy()
    else:  # patch
        c = lm[rng.integers(len(lm))] + rng.normal(0, 0.2 * iod, 2)
        if rng.random() < 0.5:
            m = _ellipse(shape, c, tuple(iod * rng.uniform(0.3, 0.8, 2)), rng.uniform(0, np.pi))
        else:
            nk = int(rng.integers(3, 7))
            angs = np.sort(rng.uniform(0, 2 * np.pi, nk))
            rad = iod * rng.uniform(0.3, 0.8, nk)
            m = _poly_mask(shape, c + np.stack([np.cos(angs), np.sin(angs)], 1) * rad[:, None])
        fill = np.broadcast_to(rng.uniform(0, 255, 3), img.shape).copy()
    fill = fill + rng.normal(0, 4, img.shape)  # sensor noise on the occluder too
    img[m] = np.clip(fill[m], 0, 255).astype(np.uint8)
    return img, m


def hidden_truth(
    covered: np.ndarray, regions: list[np.ndarray], min_cover: float = 0.5
) -> np.ndarray:
    """(R,) bool: regions of which at least ``min_cover`` of the pixels are covered."""
    return np.array([m.any() and covered[m].mean() >= min_cover for m in regions])


def train_occlusion_model(
    images: list[np.ndarray],
    landmarks: list[np.ndarray],
    scheme: Any,
    *,
    overlays: int = 20,
    seed: int = 0,
    l2: float = 1e-2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit the logistic model on ``overlays`` random occluders per photo (and the clean photo).

    ``scheme`` is the landmarks' scheme, or a list with one scheme per photo (the features are
    relative to the face, so one model can learn from several schemes at once).

    Returns
    -------
    weights (7,), mu (6,), sd (6,)
        For :class:`OcclusionDetector`.
    """
    from scipy.optimize import minimize

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    schemes = scheme if isinstance(scheme, (list, tuple)) else [scheme] * len(images)
    for img, lm, scheme in zip(images, landmarks, schemes):
        regions = region_pixels(img.shape[:2], lm, scheme)
        xs.append(region_features(img, lm, scheme, regions))
        ys.append(np.zeros(len(regions), bool))
        for k in range(overlays):
            occ, cov = draw_occluder(img, lm, scheme, OCCLUDERS[k % len(OCCLUDERS)], rng)
            xs.append(region_features(occ, lm, scheme, regions))
            ys.append(hidden_truth(cov, regions))
    x, y = np.concatenate(xs), np.concatenate(ys).astype(np.float64)
    mu, sd = x.mean(0), x.std(0) + 1e-9
    a = _expand(x, mu, sd)
    # balance the classes: hidden regions are the rarer
    wt = np.where(y > 0, 0.5 / max(y.mean(), 1e-9), 0.5 / max(1 - y.mean(), 1e-9))

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = a @ w
        p = 1 / (1 + np.exp(-z))
        ll = wt * (np.logaddexp(0, z) - y * z)
        g = a.T @ (wt * (p - y)) / len(y) + l2 * np.r_[0, w[1:]]
        return float(ll.mean() + 0.5 * l2 * (w[1:] ** 2).sum()), g

    w = minimize(loss, np.zeros(a.shape[1]), jac=True, method="L-BFGS-B").x
    return w, mu, sd
