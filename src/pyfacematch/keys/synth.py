"""Seeded synthetic faces for tests and benchmarks.

Model of one synthetic face of identity ``i`` (all in the scheme's mean-shape
units, where the mean shape is centred with unit RMS radius; 3-D, with the
scheme's ``mean_depth`` or zeros as depth for 2-D schemes):

1. **Identity** — the mean shape deformed by (a) a smooth field: ``K`` Gaussian
   radial basis functions centred on farthest-point-sampled anchors of the
   mean shape, with random 3-D coefficients; (b) a random translation and a
   random scale of every region about its centroid. Identity parameters are
   drawn once per :class:`FaceSynthesizer` from its ``seed``.
2. **Expression** — per face: mouth opening, smile, brow raise, eye squint
   (fields built from the regions named ``mouth``, ``*brow``, ``*eye``,
   ``contour_lower``/``chin`` when the scheme has them) plus a small random
   smooth field.
3. **Occluders** — decided on the mean shape's positions, then the hidden
   points are *displaced*: a detector guesses them, so they get the smooth
   deformation of a random other face (plausible, carrying no identity):

   ``mask`` (code 1)
       surgical mask: every point below a line about 45 % of the way from the
       eye line to the mouth (nose lower half, mouth, cheeks, lower jaw).
   ``hand`` (code 2)
       a disc of radius 0.35–0.6 centred on a random point of the face.
   ``sunglasses`` (code 3)
       a band of half-height 0.2–0.26 around the eye line, as wide as the face.

   ``none`` is code 0. ``visibility`` is False exactly on hidden points (the
   flags a detector would give).
4. **Head pose** — yaw, pitch, roll (normal, σ = ``pose_deg``, degrees) as a
   3-D rotation, then orthographic projection for 2-D output.
5. **Image placement and detector noise** — scaled to ``face_px`` pixels of
   RMS radius, translated to around (``center_px``), Gaussian noise of σ =
   ``noise`` × radius on every coordinate.

Generation is vectorised and runs in chunks of ``chunk`` faces; results are
a pure function of the synthesizer's seed, the identities and the call's seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.keys.schemes import Scheme, get_scheme

__all__ = ["OCCLUDERS", "SynthFaces", "FaceSynthesizer", "synthesize"]

#: occluder names by code
OCCLUDERS: tuple[str, ...] = ("none", "mask", "hand", "sunglasses")


@dataclass
class SynthFaces:
    """A batch of synthetic faces.

    Attributes
    ----------
    landmarks : numpy.ndarray
        float32 (n, P, D), pixels (D = 2: x, y; D = 3: x, y, depth).
    visibility : numpy.ndarray
        bool (n, P), False where an occluder hides the point.
    identities : numpy.ndarray
        int64 (n,), identity label of each face.
    occluders : numpy.ndarray
        int8 (n,), occluder code of each face (index into :data:`OCCLUDERS`).
    """

    landmarks: np.ndarray
    visibility: np.ndarray
    identities: np.ndarray
    occluders: np.ndarray

    def __len__(self) -> int:
        return len(self.identities)


def _farthest_points(x: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(x))
    idx = [int(np.argmin(x[:, 1]))]
    d = np.linalg.norm(x - x[idx[0]], axis=1)
    for _ in range(k - 1):
        j = int(np.argmax(d))
        idx.append(j)
        d = np.minimum(d, np.linalg.norm(x - x[j], axis=1))
    return np.array(idx)


def _rotations(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """(n, 3, 3) float32 rotation matrices R = Rz(roll) Ry(yaw) Rx(pitch)."""
    n = len(yaw)
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    r = np.empty((n, 3, 3), np.float32)
    r[:, 0, 0] = cr * cy
    r[:, 0, 1] = cr * sy * sp - sr * cp
    r[:, 0, 2] = cr * sy * cp + sr * sp
    r[:, 1, 0] = sr * cy
    r[:, 1, 1] = sr * sy * sp + cr * cp
    r[:, 1, 2] = sr * sy * cp - cr * sp
    r[:, 2, 0] = -sy
    r[:, 2, 1] = cy * sp
    r[:, 2, 2] = cy * cp
    return r


class FaceSynthesizer:
    """Synthetic identities of a scheme, and faces of them.

    Parameters
    ----------
    scheme : str or Scheme
    n_identities : int
        Number of identities (labels ``0 … n_identities-1``).
    seed : int
        Seed of the identity parameters.
    identity_strength : float
        Multiplies every identity deformation (1.0: identities clearly distinct
        at the default expression/noise levels).
    n_basis : int
        Number of smooth radial basis functions (anchors on the mean shape).
    """

    def __init__(
        self,
        scheme: str | Scheme,
        n_identities: int,
        *,
        seed: int = 0,
        identity_strength: float = 1.0,
        n_basis: int = 24,
    ) -> None:
        self.scheme = get_scheme(scheme)
        if int(n_identities) < 1:
            raise InputError(f"n_identities must be >= 1, got {n_identities}")
        self.n_identities = int(n_identities)
        s = self.scheme
        mean = s.mean_shape_3d()
        self.mean3 = mean.astype(np.float32)
        anchors = _farthest_points(mean[:, :2], n_basis)
        d2 = ((mean[:, None, :2] - mean[None, anchors, :2]) ** 2).sum(-1)
        phi = np.exp(-d2 / (2 * 0.35**2))
        phi /= phi.sum(1, keepdims=True)
        self.phi = phi.astype(np.float32)  # (P, K)
        self.phi_t = np.ascontiguousarray(self.phi.T)  # (K, P)
        self.mean_cm = np.ascontiguousarray(self.mean3.T)  # (3, P)
        self._table: np.ndarray | None = None
        self.k = len(anchors)
        pr = s.point_region
        cent = np.stack([mean[pr == r].mean(0) for r in range(s.n_regions)])
        self.region_offset_cm = np.ascontiguousarray((mean - cent[pr]).T.astype(np.float32))
        rng = np.random.default_rng([int(seed), 0x1D])
        zscale = np.array([1.0, 1.0, 0.5], np.float32)[:, None]  # coordinate-major (3, 1)
        st = float(identity_strength)
        self.id_coef = (
            rng.standard_normal((self.n_identities, 3, self.k), np.float32) * (0.10 * st) * zscale
        )
        self.id_shift = (
            rng.standard_normal((self.n_identities, 3, s.n_regions), np.float32)
            * (0.025 * st)
            * zscale
        )
        self.id_scale = rng.standard_normal((self.n_identities, s.n_regions), np.float32) * (
            0.06 * st
        )
        self.expr_modes = self._expression_modes(mean)  # (E, 3*P) coordinate-major
        # canonical geometry for occluders
        names = list(s.regions)

        def ymean(pred) -> float | None:
            rs = [i for i, r in enumerate(names) if pred(r)]
            return float(mean[np.isin(pr, rs), 1].mean()) if rs else None

        eye = ymean(lambda r: r.endswith("_eye"))
        mouth = ymean(lambda r: r == "mouth")
        lo, hi = float(mean[:, 1].min()), float(mean[:, 1].max())
        self.eye_y = eye if eye is not None else lo + 0.35 * (hi - lo)
        self.mouth_y = mouth if mouth is not None else lo + 0.8 * (hi - lo)
        self.width = float(mean[:, 0].max() - mean[:, 0].min())

    def _expression_modes(self, mean: np.ndarray) -> np.ndarray:
        s = self.scheme
        names = list(s.regions)
        pr = s.point_region

        def pts(pred) -> np.ndarray:
            return np.isin(pr, [i for i, r in enumerate(names) if pred(r)])

        modes = np.zeros((4, s.n_points, 3))
        mouth = pts(lambda r: r == "mouth")
        lower = pts(lambda r: r in ("contour_lower", "chin"))
        if mouth.any():
            mc = mean[mouth].mean(0)
            below = mouth & (mean[:, 1] > mc[1])
            modes[0, below, 1] = 0.08  # mouth open: lower lip and jaw drop
            modes[0, lower, 1] = 0.06
            modes[1, mouth, 0] = 0.10 * (mean[mouth, 0] - mc[0])  # smile: corners out and up
            modes[1, mouth, 1] = -0.15 * np.abs(mean[mouth, 0] - mc[0]) ** 2
        brows = pts(lambda r: r.endswith("brow"))
        modes[2, brows, 1] = -0.05  # brow raise
        for side in ("right_eye", "left_eye"):
            e = pts(lambda r, side=side: r == side)
            if e.any():
                ec = mean[e].mean(0)
                modes[3, e, 1] = -0.3 * (mean[e, 1] - ec[1])  # squint
        return np.ascontiguousarray(modes.transpose(0, 2, 1).reshape(4, -1).astype(np.float32))

    def identity_shapes(self, identities: np.ndarray) -> np.ndarray:
        """Neutral 3-D shapes (float32 (n, P, 3), mean-shape units) of the given identities."""
        ids = self._check_ids(identities)
        return np.ascontiguousarray(self._id_cm(ids).transpose(0, 2, 1))

    def _check_ids(self, identities) -> np.ndarray:
        ids = np.asarray(identities)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise InputError(f"identities must be a 1-D integer array, got {ids.dtype} {ids.shape}")
        if len(ids) and (ids.min() < 0 or ids.max() >= self.n_identities):
            raise InputError(
                f"identities must lie in 0..{self.n_identities - 1}; "
                "create the synthesizer with more identities"
            )
        return ids.astype(np.int64)

    def _field_cm(self, coef: np.ndarray) -> np.ndarray:
        """Smooth field, coordinate-major float32 (n, 3, P), from coefficients (n, 3, K)."""
        n = len(coef)
        return (coef.reshape(n * 3, self.k) @ self.phi_t).reshape(n, 3, -1)

    def _id_cm(self, ids: np.ndarray) -> np.ndarray:
        """Identity shapes, coordinate-major float32 (n, 3, P); a cached table when small."""
        if self._table is None and self.n_identities * self.scheme.n_points <= 20_000_000:
            self._table = np.concatenate(
                [
                    self._id_compute(np.arange(i, min(i + 8192, self.n_identities)))
                    for i in range(0, self.n_identities, 8192)
                ]
            )
        if self._table is not None:
            return self._table[ids]
        return self._id_compute(ids)

    def _id_compute(self, ids: np.ndarray) -> np.ndarray:
        out = self._field_cm(self.id_coef[ids])
        out += self.mean_cm
        pr = self.scheme.point_region
        out += self.id_shift[ids][:, :, pr]
        out += self.id_scale[ids][:, None, pr] * self.region_offset_cm
        return out

    def sample(
        self,
        identities: np.ndarray,
        *,
        seed: int = 0,
        occluder: str | np.ndarray = "none",
        dims: int | None = None,
        pose_deg: tuple[float, float, float] = (8.0, 6.0, 10.0),
        expression: float = 1.0,
        noise: float = 0.006,
        face_px: float = 60.0,
        center_px: tuple[float, float] = (320.0, 240.0),
        chunk: int = 65536,
    ) -> SynthFaces:
        """Faces of the given identities.

        Parameters
        ----------
        identities : int array (n,)
            Identity label of each face (``0 … n_identities-1``; repeats allowed).
        seed : int
            Seed of everything that varies per face (expression, pose, occluder
            placement, noise); chunking does not change the result.
        occluder : str or int array (n,)
            One of :data:`OCCLUDERS` for every face, ``"random"`` (uniform over
            the four), or per-face codes.
        dims : {2, 3} or None
            Output coordinates (default: the scheme's ``dims``).
        pose_deg : (yaw, pitch, roll)
            Standard deviations of head pose, degrees.
        expression : float
            Multiplies the expression coefficients (0 disables).
        noise : float
            Detector noise σ, as a fraction of the face's RMS radius.
        face_px : float
            Mean RMS radius of a face, pixels (varies ±20 %).
        center_px : (x, y)
            Mean face centre, pixels (varies ±10 % of the radius·4).
        chunk : int
            Faces generated per vectorised step.

        Returns
        -------
        SynthFaces
        """
        ids = self._check_ids(identities)
        n = len(ids)
        dims = self.scheme.dims if dims is None else int(dims)
        if dims not in (2, 3):
            raise InputError(f"dims must be 2 or 3, got {dims}")
        if isinstance(occluder, str):
            if occluder == "random":
                occ = np.random.default_rng([int(seed), 0x0CC]).integers(0, 4, n).astype(np.int8)
            elif occluder in OCCLUDERS:
                occ = np.full(n, OCCLUDERS.index(occluder), np.int8)
            else:
                raise InputError(
                    f"occluder must be one of {OCCLUDERS} or 'random', got {occluder!r}"
                )
        else:
            occ = np.asarray(occluder)
            if (
                occ.shape != (n,)
                or not np.issubdtype(occ.dtype, np.integer)
                or (n and (occ.min() < 0 or occ.max() > 3))
            ):
                raise InputError("per-face occluder codes must be an int array (n,) of 0..3")
            occ = occ.astype(np.int8)
        P = self.scheme.n_points
        lm = np.empty((n, P, dims), np.float32)
        vis = np.ones((n, P), bool)
        chunk = max(1, int(chunk))
        for c0 in range(0, n, chunk):
            c1 = min(n, c0 + chunk)
            # per-chunk generator keyed by the chunk's first index: results do not depend on
            # how the caller splits work as long as the chunk size is the same
            rng = np.random.default_rng([int(seed), c0, 0x5F])
            lm[c0:c1], vis[c0:c1] = self._chunk(
                rng, ids[c0:c1], occ[c0:c1], dims, pose_deg, expression, noise, face_px, center_px
            )
        return SynthFaces(lm, vis, ids.copy(), occ)

    def _chunk(self, rng, ids, occ, dims, pose_deg, expression, noise, face_px, center_px):
        n = len(ids)
        P = self.scheme.n_points
        f32 = np.float32
        s = self._id_cm(ids)  # (n, 3, P), coordinate-major throughout
        if expression:
            e = (rng.standard_normal((n, 4), f32) * f32(expression)).clip(-2.5, 2.5)
            e[:, 0] = np.abs(e[:, 0])  # mouth only opens
            s += (e @ self.expr_modes).reshape(n, 3, P)
            s += self._field_cm(rng.standard_normal((n, 3, self.k), f32) * f32(0.012 * expression))
        hidden = np.zeros((n, P), bool)
        if (occ > 0).any():
            m = self.mean3
            y = m[None, :, 1]
            mk = occ == 1
            if mk.any():
                cut = self.eye_y + (0.45 + 0.05 * rng.uniform(-1, 1, mk.sum()).astype(f32)) * (
                    self.mouth_y - self.eye_y
                )
                hidden[mk] = y > cut[:, None]
            hk = occ == 2
            if hk.any():
                centre = m[rng.integers(0, P, hk.sum()), :2]
                r = rng.uniform(0.35, 0.6, hk.sum()).astype(f32)
                d2 = ((m[None, :, :2] - centre[:, None]) ** 2).sum(-1)
                hidden[hk] = d2 < (r * r)[:, None]
            gk = occ == 3
            if gk.any():
                h = rng.uniform(0.2, 0.26, gk.sum()).astype(f32)
                hidden[gk] = np.abs(y - self.eye_y) < h[:, None]
            rows = np.flatnonzero(hidden.any(1))
            if len(rows):
                # a detector's guess for hidden points: a random plausible face, no identity
                fake = self._field_cm(rng.standard_normal((len(rows), 3, self.k), f32) * f32(0.10))
                fake += self.mean_cm
                if len(rows) == n:
                    np.copyto(s, fake, where=hidden[:, None, :])
                else:
                    sub = s[rows]
                    np.copyto(sub, fake, where=hidden[rows][:, None, :])
                    s[rows] = sub
        yaw, pitch, roll = (
            np.deg2rad(rng.standard_normal((3, n)) * np.asarray(pose_deg, float)[:, None])
            .clip(-1.2, 1.2)
            .astype(f32)
        )
        rot = _rotations(yaw, pitch, roll)
        scale = (face_px * rng.uniform(0.8, 1.2, n)).astype(f32)
        rot *= scale[:, None, None]
        shift = np.zeros((n, dims), f32)
        shift[:, :2] = np.asarray(center_px, f32) + rng.uniform(-0.4, 0.4, (n, 2)).astype(f32) * (
            face_px
        )
        out = np.einsum("nbp,nab->npa", s, rot[:, :dims])  # rotate, scale, project
        out += shift[:, None, :]
        noise_px = rng.standard_normal((n, P, dims), f32)
        noise_px *= (f32(noise) * scale)[:, None, None]
        out += noise_px
        return out, ~hidden


def synthesize(
    scheme: str | Scheme,
    n_identities: int,
    per_identity: int,
    *,
    seed: int = 0,
    occluder: str | np.ndarray = "none",
    **kwargs,
) -> SynthFaces:
    """Convenience: ``per_identity`` faces of each of ``n_identities`` identities.

    Faces are ordered identity-major (identity 0's faces first). Identity
    parameters come from ``seed``, per-face variation from ``seed + 1``.
    Other keyword arguments go to :meth:`FaceSynthesizer.sample`.
    """
    syn = FaceSynthesizer(scheme, n_identities, seed=seed)
    ids = np.repeat(np.arange(n_identities), per_identity)
    return syn.sample(ids, seed=seed + 1, occluder=occluder, **kwargs)
