"""Landmark keys: compact identity templates made of region blocks.

Pipeline (per face, in the C++ core): similarity alignment to the scheme's
mean shape on the visible points → per-region features (see
:mod:`pyfacematch.geometry`) → per block ``b``: ``k_b = (f_b - mu_b) W_b`` →
blocks whose region has too few visible points are zero and their mask bit
is clear → the key is scaled to unit norm over its valid blocks.

``W_b`` folds, learned offline in numpy/scipy by :meth:`KeyModel.fit`:
standardisation (1/σ per feature) → PCA (components keeping ``pca_energy`` of
the variance) → LDA on the identity labels (within-class whitened
discriminant directions) → a block scale making the mean squared key value
per dimension 1 on the training set, so every block weighs in proportion to
its dimension and masked cosine over shared blocks stays meaningful.

Key layout: ``model.blocks`` (int64, B+1 offsets) is what
:func:`pyfacematch.masked_topk` takes; ``masks`` are uint64 bitmasks (bit b
= block b valid).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from pyfacematch import _core
from pyfacematch.core.arrayfile import SafeNpz
from pyfacematch.errors import (
    FormatVersionError,
    GalleryFileError,
    InputError,
    LandmarkError,
    PyFaceMatchError,
)
from pyfacematch.keys.geometry import STATUS, FeatureLayout, check_landmarks, min_visible_points
from pyfacematch.keys.schemes import Scheme, get_scheme, load_scheme

__all__ = ["KeyModel", "FORMAT_VERSION"]

#: version of the saved-model format this code writes and reads
FORMAT_VERSION = 1
_MAGIC = "pyfacematch.keymodel"
#: Largest key model file loaded (its arrays uncompressed): real models are a few megabytes.
MAX_MODEL_BYTES = 256 << 20


class KeyModel:
    """A learned (or default) projection from landmarks to region-block keys.

    Build with :meth:`fit`, :meth:`default` or :meth:`load`; use :meth:`encode`.

    Attributes
    ----------
    scheme : Scheme
    dims : int
        Coordinates per landmark the model takes (2 or 3).
    blocks : numpy.ndarray
        int64 (B+1,), key offsets of the region blocks (block b = region b).
    dim : int
        Key dimension d = ``blocks[-1]``.
    kind : str
        ``"lda"``, ``"pca"`` (fitted without labels) or ``"default"``.
    """

    def __init__(
        self,
        scheme: Scheme,
        dims: int,
        mu: np.ndarray,
        w_blocks: list[np.ndarray],
        *,
        kind: str,
        min_block_fraction: float = 0.75,
        min_visible: int | None = None,
    ) -> None:
        self.scheme = scheme
        self.dims = int(dims)
        self.kind = kind
        self.min_block_fraction = float(min_block_fraction)
        self.min_visible = min_visible_points(scheme.n_points, min_visible)
        self.layout = FeatureLayout.build(scheme, self.dims, self.min_block_fraction)
        self.mu = np.ascontiguousarray(mu, np.float32)
        if len(w_blocks) != self.layout.n_blocks or self.mu.shape != (self.layout.n_features,):
            raise InputError("projection does not match the scheme's feature layout")
        for b, w in enumerate(w_blocks):
            nb = self.layout.offsets[b + 1] - self.layout.offsets[b]
            if w.ndim != 2 or w.shape[0] != nb:
                raise InputError(f"projection block {b} must have {nb} rows, got {w.shape}")
        self.w_blocks = [np.ascontiguousarray(w, np.float32) for w in w_blocks]
        sizes = [w.size for w in self.w_blocks]
        # the core takes each block transposed, (d_b, F_b) row-major: one SIMD dot per key value
        self._w = np.ascontiguousarray(
            np.concatenate([w.T.ravel() for w in self.w_blocks]), np.float32
        )
        self._w_offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.blocks = np.concatenate([[0], np.cumsum([w.shape[1] for w in self.w_blocks])]).astype(
            np.int64
        )
        self.blocks.setflags(write=False)
        self._mean = np.ascontiguousarray(scheme.mean_shape[:, : self.dims], np.float32)

    @property
    def dim(self) -> int:
        return int(self.blocks[-1])

    @property
    def n_blocks(self) -> int:
        return len(self.blocks) - 1

    def __repr__(self) -> str:
        return (
            f"KeyModel(scheme={self.scheme.name!r}, dims={self.dims}, kind={self.kind!r}, "
            f"dim={self.dim}, blocks={self.n_blocks})"
        )

    # --- building --------------------------------------------------------------------------

    @classmethod
    def _features(cls, scheme, dims, landmarks, visibility, min_block_fraction, min_visible):
        layout = FeatureLayout.build(scheme, dims, min_block_fraction)
        x, v = check_landmarks(landmarks, visibility, scheme.n_points, dims)
        f, masks, status = _core.geometry_features(
            x,
            v,
            np.ascontiguousarray(scheme.mean_shape[:, :dims], np.float32),
            None,
            min_visible_points(scheme.n_points, min_visible),
            layout.kind,
            layout.p,
            layout.q,
            layout.reference,
            layout.offsets,
            layout.point_block,
            layout.block_min_visible,
        )
        return layout, f, masks, status

    @classmethod
    def fit(
        cls,
        landmarks,
        labels=None,
        *,
        scheme: str | Scheme,
        dim: int = 128,
        visibility=None,
        pca_energy: float = 0.99,
        min_block_fraction: float = 0.75,
        min_visible: int | None = None,
        regularization: float = 1e-3,
    ) -> KeyModel:
        """Learn per-block standardise → PCA → LDA from labelled faces (offline, numpy/scipy).

        Parameters
        ----------
        landmarks : array (n, P, D)
        labels : array (n,), optional
            Identity of each face; without labels the model is standardise → PCA
            (whitened), ``kind="pca"``.
        scheme : str or Scheme
        dim : int
            Upper bound of the key dimension; split over blocks in proportion to their
            feature counts (at least 1 each), each capped by its PCA rank and by
            (number of identities - 1).
        visibility : bool array (n, P), optional
            Training faces may be occluded; a block learns only from faces where it is valid.
        pca_energy : float
            Fraction of the standardised variance the PCA keeps per block.
        regularization : float
            Added to the within-class covariance (relative to its mean eigenvalue).

        Raises
        ------
        InputError
            Too few usable faces, or fewer than 2 identities.
        """
        from scipy.linalg import eigh

        s = get_scheme(scheme)
        x0 = np.asarray(landmarks)
        dims = int(x0.shape[-1]) if x0.ndim == 3 else s.dims
        layout, f, masks, status = cls._features(
            s, dims, landmarks, visibility, min_block_fraction, min_visible
        )
        ok = status == 0
        y = None
        if labels is not None:
            y_all = np.asarray(labels)
            if y_all.shape != (len(f),):
                raise InputError(
                    f"labels must have one entry per face ({len(f)}), got {y_all.shape}"
                )
            _, y = np.unique(y_all, return_inverse=True)
        if ok.sum() < 3:
            raise InputError(f"fit needs at least 3 usable faces, got {int(ok.sum())}")
        B = layout.n_blocks
        sizes = np.diff(layout.offsets)
        alloc = np.maximum(1, np.floor(dim * sizes / sizes.sum())).astype(int)
        mu = layout.reference.astype(np.float64).copy()
        w_blocks = []
        for b in range(B):
            sl = slice(layout.offsets[b], layout.offsets[b + 1])
            rows = ok & ((masks >> np.uint64(b)) & np.uint64(1)).astype(bool)
            fb = f[rows, sl].astype(np.float64)
            if len(fb) < 3:
                raise InputError(f"block {s.regions[b]!r} is valid in fewer than 3 training faces")
            m = fb.mean(0)
            sd = fb.std(0)
            sd = np.where(sd > 1e-8 * max(1.0, float(np.abs(m).max())), sd, 1.0)
            z = (fb - m) / sd
            mu[sl] = m
            ev, evec = eigh(z.T @ z)  # PCA from the (F_b, F_b) scatter: cheaper than an SVD of z
            order = np.argsort(ev)[::-1]
            sv = np.sqrt(np.maximum(ev[order], 0.0))
            vt = evec[:, order].T
            energy = np.cumsum(sv**2) / max((sv**2).sum(), 1e-300)
            k = min(int(np.searchsorted(energy, pca_energy)) + 1, len(sv), len(fb) - 1)
            k = max(k, 1)
            pcs = vt[:k].T  # (F_b, k)
            zp = z @ pcs
            if y is None:
                d_b = min(alloc[b], k)
                proj = pcs[:, :d_b] / np.maximum(sv[:d_b], 1e-12) * np.sqrt(len(fb))
            else:
                classes, yb = np.unique(y[rows], return_inverse=True)
                if len(classes) < 2:
                    raise InputError("fit with labels needs at least 2 identities")
                counts = np.bincount(yb, minlength=len(classes)).astype(np.float64)
                means = np.zeros((len(classes), k))
                np.add.at(means, yb, zp)
                means /= counts[:, None]
                within = zp - means[yb]
                sw = within.T @ within / max(len(zp) - len(classes), 1)
                sw += regularization * np.trace(sw) / k * np.eye(k)
                mc = means - zp.mean(0)
                sb = (mc * counts[:, None]).T @ mc / len(zp)
                evals, evecs = eigh(sb, sw)
                d_b = int(min(alloc[b], k, len(classes) - 1))
                lda = evecs[:, ::-1][:, :d_b]  # within-class whitened (evecs^T Sw evecs = I)
                proj = pcs @ lda
            wb = proj / sd[:, None]
            kb = (fb - m) @ wb
            scale = np.sqrt(d_b / max(float((kb**2).sum(1).mean()), 1e-300))
            w_blocks.append(wb * scale)
        return cls(
            s,
            dims,
            mu,
            w_blocks,
            kind="pca" if y is None else "lda",
            min_block_fraction=min_block_fraction,
            min_visible=min_visible,
        )

    @classmethod
    def default(
        cls, scheme: str | Scheme, dims: int | None = None, *, min_block_fraction: float = 0.75
    ) -> KeyModel:
        """Untrained model: standardised features, no labels needed.

        Each feature is centred on the mean shape's value and divided by its spread
        over 2,000 synthetic faces of 200 identities (:mod:`pyfacematch.synth`, seed 0);
        blocks are scaled to unit mean square per dimension. Key dimension = number of
        features.
        """
        from pyfacematch.keys.synth import FaceSynthesizer

        s = get_scheme(scheme)
        dims = s.dims if dims is None else int(dims)
        faces = FaceSynthesizer(s, 200, seed=0).sample(np.arange(2000) % 200, seed=1, dims=dims)
        layout, f, _, status = cls._features(
            s, dims, faces.landmarks, None, min_block_fraction, None
        )
        f = f[status == 0].astype(np.float64)
        ref = layout.reference.astype(np.float64)
        sd = np.sqrt(((f - ref) ** 2).mean(0))
        sd = np.where(sd > 1e-9, sd, 1.0)
        w_blocks = []
        for b in range(layout.n_blocks):
            sl = slice(layout.offsets[b], layout.offsets[b + 1])
            wb = np.diag(1.0 / sd[sl])
            kb = (f[:, sl] - ref[sl]) @ wb
            wb *= np.sqrt(wb.shape[1] / max(float((kb**2).sum(1).mean()), 1e-300))
            w_blocks.append(wb)
        return cls(s, dims, ref, w_blocks, kind="default", min_block_fraction=min_block_fraction)

    # --- encoding ----------------------------------------------------------------------------

    def encode(
        self,
        landmarks,
        visibility=None,
        *,
        on_error: str = "raise",
        return_status: bool = False,
    ):
        """Keys of faces.

        Parameters
        ----------
        landmarks : array (n, P, D) or (P, D)
            ``D`` must be the model's ``dims``; P the scheme's point count.
        visibility : bool array (n, P), optional
            Hidden points may hold anything (NaN included). None: all visible.
        on_error : {"raise", "flag"}
            ``"raise"``: a face that cannot make a key raises :class:`LandmarkError`
            naming the face and the reason. ``"flag"``: such faces get a zero key and
            mask 0; their status (with ``return_status=True``) says why.
        return_status : bool
            Also return the int32 (n,) status codes (see :data:`pyfacematch.geometry.STATUS`,
            :meth:`reasons`).

        Returns
        -------
        keys : float32 (n, d), unit norm over the valid blocks (zero rows for failed faces)
        masks : uint64 (n,), bit b set when block b is valid
        status : int32 (n,), only with ``return_status=True``
        """
        if on_error not in ("raise", "flag"):
            raise InputError(f"on_error must be 'raise' or 'flag', got {on_error!r}")
        wrong = np.zeros(0, np.int64)
        if isinstance(landmarks, (list, tuple)):
            # a list of faces may be ragged: a face with the wrong point count is its own failure
            want = (self.scheme.n_points, self.dims)
            faces = [np.asarray(a) for a in landmarks]
            wrong = np.array([i for i, a in enumerate(faces) if a.shape != want], np.int64)
            if len(wrong) and on_error == "raise":
                i = int(wrong[0])
                raise LandmarkError(
                    f"face {i} has shape {faces[i].shape}, expected {want} for scheme "
                    f"{self.scheme.name!r}; pass on_error='flag' to get per-face failure flags"
                )
            if len(wrong):
                faces = [np.full(want, np.nan, np.float32) if a.shape != want else a for a in faces]
            landmarks = np.stack(faces) if faces else np.zeros((0, *want), np.float32)
        x, v = check_landmarks(landmarks, visibility, self.scheme.n_points, self.dims)
        lay = self.layout
        keys, masks, status, _ = _core.geometry_encode(
            x,
            v,
            self._mean,
            None,
            self.min_visible,
            lay.kind,
            lay.p,
            lay.q,
            self.mu,
            lay.offsets,
            lay.point_block,
            lay.block_min_visible,
            self.mu,
            self._w,
            self._w_offsets,
            self.blocks,
        )
        if len(wrong):
            status[wrong] = 1
            keys[wrong] = 0
            masks[wrong] = 0
        if on_error == "raise":
            bad = np.flatnonzero(status)
            if len(bad):
                i = int(bad[0])
                more = f" ({len(bad) - 1} more faces failed too)" if len(bad) > 1 else ""
                raise LandmarkError(
                    f"face {i} cannot make a key: {STATUS.get(int(status[i]), 'unknown')}{more}; "
                    "pass on_error='flag' to get per-face failure flags instead"
                )
        return (keys, masks, status) if return_status else (keys, masks)

    @staticmethod
    def reasons(status: np.ndarray) -> list[str]:
        """Human-readable reason of each status code."""
        return [STATUS.get(int(c), "unknown") for c in np.asarray(status).ravel()]

    # --- persistence -----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the model as one small versioned ``.npz`` file (atomically)."""
        meta = {
            "magic": _MAGIC,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "dims": self.dims,
            "min_block_fraction": self.min_block_fraction,
            "min_visible": self.min_visible,
            "scheme": self.scheme.to_dict(),
        }
        arrays: dict[str, np.ndarray] = {
            "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
            "mu": self.mu,
        }
        for b, w in enumerate(self.w_blocks):
            arrays[f"w{b}"] = w
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy stubs type **kwds as allow_pickle
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> KeyModel:
        """Read a model written by :meth:`save`.

        Raises
        ------
        FormatVersionError
            The file was written by an unknown format version.
        GalleryFileError
            The file is missing, truncated or not a key model.
        """
        try:
            # members checked (declared sizes, a cap, no pickles) before anything is inflated
            with SafeNpz(
                path, repr(os.fspath(path)), max_bytes=MAX_MODEL_BYTES, error=GalleryFileError
            ) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                if meta.get("magic") != _MAGIC:
                    raise GalleryFileError(f"{os.fspath(path)!r} is not a pyfacematch key model")
                ver = meta.get("format_version")
                if ver != FORMAT_VERSION:
                    raise FormatVersionError(
                        f"key model {os.fspath(path)!r} has format version {ver!r}; this "
                        f"pyfacematch reads version {FORMAT_VERSION}: upgrade pyfacematch"
                    )
                mu = z["mu"]
                n_blocks = len(meta["scheme"]["regions"])
                w_blocks = [z[f"w{b}"] for b in range(n_blocks)]
        except FormatVersionError:
            raise
        except GalleryFileError as exc:
            if not os.path.exists(path):
                raise GalleryFileError(
                    f"key model file {os.fspath(path)!r} does not exist"
                ) from exc
            raise
        except Exception as exc:  # zip/npz/json corruption of any kind
            raise GalleryFileError(
                f"{os.fspath(path)!r} is not a readable key model (truncated or corrupted)"
            ) from exc
        try:
            scheme = load_scheme(meta["scheme"])
            try:  # use the registered scheme object when it is the same scheme
                known = get_scheme(scheme.name)
                if np.array_equal(known.mean_shape, scheme.mean_shape):
                    scheme = known
            except InputError:
                pass
            return cls(
                scheme,
                meta["dims"],
                mu,
                w_blocks,
                kind=meta["kind"],
                min_block_fraction=meta["min_block_fraction"],
                min_visible=meta["min_visible"],
            )
        except PyFaceMatchError:
            raise
        except Exception as exc:  # a description that does not fit together (crafted or corrupted)
            raise GalleryFileError(
                f"{os.fspath(path)!r} is not a readable key model (its description is "
                f"inconsistent: {type(exc).__name__}); re-create it with KeyModel.save"
            ) from exc
