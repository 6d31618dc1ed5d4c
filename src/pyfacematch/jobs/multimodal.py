"""Photos to multi-modal templates, and the photo jobs of a :class:`MultimodalGallery`.

:class:`PhotoEncoder` turns each photo into the two templates a
:class:`~pyfacematch.gallery.multimodal.MultimodalGallery` holds: the image embedding (dlib's
ResNet descriptor by default) and the landmark key of the MediaPipe 478 points (the untrained
``KeyModel.default("mediapipe478", dims=2)`` unless a key model is given), whose block mask comes
from the occlusion detector run on the same photo (:mod:`pyfacematch.embed.occlusion`): a region
a mask, a hand or sunglasses hide leaves the key's comparison, nothing else does. Each photo is
decoded once; a photo that gives no face, several faces (enrollment), or two faces that do not
agree (the landmarker's face is not the one the embedder kept) is rejected with its reason.

The folder jobs (:func:`enroll_folder`, :func:`identify_folder`, :func:`calibrate_folder`)
read folders laid out as ``DIR/<person>/<photo>`` (enroll, calibrate) or any photos (identify).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.errors import InputError
from pyfacematch.gallery.multimodal import MultimodalGallery
from pyfacematch.keys import KeyModel

__all__ = [
    "ParallelPhotoEncoder",
    "PhotoEncoder",
    "PhotoTemplates",
    "calibrate_folder",
    "enroll_folder",
    "identify_folder",
    "list_photos",
]

#: Where dlib's HOG box sits inside the box of MediaPipe's 478 points, as fractions of that box
#: ([left, top, right, bottom]; mean over the 54 shared photos, spread 0.04-0.07).
HOG_BOX_FROM_MESH = (0.02, 0.08, 1.0, 0.91)

_PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


@dataclass
class PhotoTemplates:
    """The templates of a batch of photos (rows: the photos that gave both).

    Attributes
    ----------
    positions : (n,) int64
        Position in the input of each row.
    embeddings : (n, d) float32
    keys : (n, dk) float32
    key_masks : (n,) uint64
        Valid region blocks of each key (the occlusion detector's verdict).
    hidden : (n, R) bool
        Regions of the landmarker's scheme judged hidden (all False without the detector).
    landmarks : (n, P, dims) float32
        The landmarker's points (pixels) of each row.
    rejects : list of (position, source, reason, message)
    rescued : (r,) int64
        Positions whose face the embedder's detector missed (a mask or a hand defeats HOG) and
        that were embedded from the landmarker's face instead (see :class:`PhotoEncoder`).
    seconds : dict
        Time per stage (decode, embed, landmarks, occlusion, keys), wall seconds.
    """

    positions: np.ndarray
    embeddings: np.ndarray
    keys: np.ndarray
    key_masks: np.ndarray
    hidden: np.ndarray
    landmarks: np.ndarray
    rejects: list[tuple[int, str, str, str]] = field(default_factory=list)
    rescued: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    seconds: dict[str, float] = field(default_factory=dict)


class PhotoEncoder:
    """Photos → (embedding, landmark key, key mask).

    Parameters
    ----------
    embedder : str or Embedder
        Spec for :func:`pyfacematch.embed.create_embedder` (default ``"dlib"``, with
        ``upsample="auto"``) or an embedder.
    key_model : KeyModel, path or None
        Landmark key model; None: ``KeyModel.default("mediapipe478", dims=2)`` (no training).
    landmarker : str or Landmarker or None
        None: MediaPipe for the mediapipe478 / dense200 schemes, dlib for ibug68.
    occlusion : bool
        Decide the key masks from the picture (:class:`~pyfacematch.embed.occlusion.
        OcclusionDetector`); False: every block valid.
    policy : {"single", "largest"}
        Several faces in a photo: reject it (``single``; the default, right for enrollment)
        or keep the largest.
    rescue : bool
        When the embedder's own detector finds no face but the landmarker does (dlib's HOG
        loses most faces behind a drawn mask, MediaPipe keeps them), embed the face the
        landmarker found: dlib's 68-point predictor runs in the box HOG would have given
        (:data:`HOG_BOX_FROM_MESH`, measured on the shared photos), then the usual chip and
        descriptor. Only for the dlib embedder; photos it rescues are listed in ``rescued``.
    """

    def __init__(
        self,
        embedder: Any = "dlib",
        key_model: Any = None,
        landmarker: Any = None,
        *,
        occlusion: bool = True,
        policy: str = "single",
        rescue: bool = True,
    ) -> None:
        from pyfacematch.embed import create_embedder
        from pyfacematch.embed.landmarks import create_landmarker

        if policy not in ("single", "largest"):
            raise InputError(f"expected policy 'single' or 'largest', got {policy!r}")
        self.policy = policy
        self.rescue = bool(rescue)
        if isinstance(embedder, str):
            # HOG without upsampling first, upsampled only when that finds no face (4x cheaper);
            # chips on the 68 landmarks the rescue (below) was measured with
            opts: dict[str, Any] = (
                {"upsample": "auto", "points": 68} if embedder.startswith("dlib") else {}
            )
            embedder = create_embedder(embedder, **opts)
        self.embedder = embedder
        if key_model is None:
            key_model = KeyModel.default("mediapipe478", dims=2)
        elif isinstance(key_model, (str, os.PathLike)):
            if not os.path.exists(key_model):
                raise InputError(f"key model {os.fspath(key_model)!r} does not exist")
            key_model = KeyModel.load(key_model)
        self.key_model: KeyModel = key_model
        s = self.key_model.scheme
        if landmarker is None:
            landmarker = "mediapipe" if "mediapipe478" in (s.name, s.subset_of) else "dlib"
        self.landmarker = (
            create_landmarker(landmarker) if isinstance(landmarker, str) else landmarker
        )
        self._source_scheme: Any = None
        self.occlusion: Any = None
        if occlusion:
            from pyfacematch.embed.occlusion import OcclusionDetector

            self.occlusion = OcclusionDetector()

    def describe(self) -> dict[str, Any]:
        """What a new :class:`MultimodalGallery` for these templates needs: ``embedding_dim``,
        ``key_dim``, ``key_blocks``, ``models``."""
        return {
            "embedding_dim": int(self.embedder.dim),
            "key_dim": int(self.key_model.dim),
            "key_blocks": self.key_model.blocks,
            "models": self.models,
        }

    @property
    def models(self) -> dict[str, str]:
        """``{"embedder": …, "key_model": …}`` for :class:`MultimodalGallery` (default fusions)."""
        from pyfacematch.gallery.multimodal import key_model_id

        return {"embedder": str(self.embedder.name), "key_model": key_model_id(self.key_model)}

    @property
    def scheme(self) -> Any:
        """The landmark scheme the landmarker gives (the occlusion regions are its regions)."""
        if self._source_scheme is None:
            from pyfacematch.keys.schemes import get_scheme

            self._source_scheme = get_scheme(self.landmarker.scheme)
        return self._source_scheme

    def encode(self, images: Sequence[Any]) -> PhotoTemplates:
        """Templates of photos (paths or RGB arrays); bad photos become rejects, never errors."""
        from pyfacematch.embed.images import ImageLoadError, describe_source, load_image
        from pyfacematch.embed.landmarks import landmarks_for_scheme

        km = self.key_model
        secs = {k: 0.0 for k in ("decode", "embed", "landmarks", "occlusion", "keys")}
        rejects: list[tuple[int, str, str, str]] = []
        decoded: list[tuple[int, str, np.ndarray]] = []
        t = time.perf_counter()
        for pos, src in enumerate(images):
            name = describe_source(src, pos)
            try:
                decoded.append((pos, name, load_image(src)))
            except ImageLoadError as exc:
                rejects.append((pos, name, exc.reason, str(exc)))
        secs["decode"] = time.perf_counter() - t
        arrays = [im for _, _, im in decoded]
        t = time.perf_counter()
        batch = self.embedder.embed(arrays, policy=self.policy)
        secs["embed"] = time.perf_counter() - t
        t = time.perf_counter()
        marks = self.landmarker.landmarks(arrays, policy=self.policy)
        secs["landmarks"] = time.perf_counter() - t
        t = time.perf_counter()
        results = list(batch.images)
        rescued = []
        det = getattr(getattr(self.embedder, "detector", None), "landmarks", None)
        for i, (er, lr) in enumerate(zip(results, marks)):
            if self.rescue and det is not None and er.reason == "no_face" and lr.ok:
                lo, hi = lr.landmarks[0][:, :2].min(0), lr.landmarks[0][:, :2].max(0)
                f = np.asarray(HOG_BOX_FROM_MESH)
                box = np.concatenate([lo + f[:2] * (hi - lo), lo + f[2:] * (hi - lo)])
                lm68 = det(arrays[i], box)
                again = self.embedder.embed([arrays[i]], landmarks=[lm68]).images[0]
                if again.ok:
                    results[i] = again
                    rescued.append(decoded[i][0])
        secs["embed"] += time.perf_counter() - t
        pos_ok, emb, lms, vis = [], [], [], []
        scheme = self.scheme
        for (pos, name, img), er, lr in zip(decoded, results, marks):
            if not er.ok or not lr.ok:
                why = er if not er.ok else lr
                rejects.append((pos, name, str(why.reason), why.message))
                continue
            lm = lr.landmarks[0]
            box = er.faces[0].box
            cx, cy = lm[:, 0].mean(), lm[:, 1].mean()
            if not (box[0] <= cx <= box[2] and box[1] <= cy <= box[3]):
                rejects.append(
                    (
                        pos,
                        name,
                        "faces_disagree",
                        f"{name}: the landmarker and the embedder "
                        "kept different faces (several people in the photo?)",
                    )
                )
                continue
            t = time.perf_counter()
            if self.occlusion is not None:
                hid = self.occlusion.hidden_regions(img, lm[:, :2], scheme)
            else:
                hid = np.zeros(len(scheme.regions), bool)
            secs["occlusion"] += time.perf_counter() - t
            pos_ok.append(pos)
            emb.append(er.templates[0])
            lms.append(lm)
            vis.append(hid)
        t = time.perf_counter()
        rows = np.array(pos_ok, np.int64)
        d = int(self.embedder.dim)
        if rows.size:
            hidden = np.stack(vis)
            vis_all = ~hidden[:, np.asarray(scheme.point_region)]
            lm_all = landmarks_for_scheme(np.stack(lms), scheme.name, km.scheme)
            lm_all = np.ascontiguousarray(lm_all[:, :, : km.dims])
            if km.scheme.name != scheme.name:  # a subset scheme (dense200): its points' flags
                vis_all = np.ascontiguousarray(vis_all[:, km.scheme.subset_indices])
            keys, masks, status = km.encode(lm_all, vis_all, on_error="flag", return_status=True)
            bad = np.flatnonzero(status)
            for i, why in zip(bad.tolist(), km.reasons(status[bad]) if bad.size else []):
                p = int(rows[i])
                rejects.append((p, describe_source(images[p], p), "no_key", why))
            keep = status == 0
            out = PhotoTemplates(
                rows[keep],
                np.stack(emb)[keep].astype(np.float32),
                keys[keep],
                masks[keep],
                hidden[keep],
                np.stack(lms)[keep].astype(np.float32),
            )
        else:
            out = PhotoTemplates(
                rows,
                np.zeros((0, d), np.float32),
                np.zeros((0, km.dim), np.float32),
                np.zeros(0, np.uint64),
                np.zeros((0, len(scheme.regions)), bool),
                np.zeros((0, self.landmarker.n_points, self.landmarker.dims), np.float32),
            )
        secs["keys"] = time.perf_counter() - t
        out.rejects = sorted(rejects)
        out.rescued = np.array(rescued, np.int64)
        out.seconds = secs
        return out


# one PhotoEncoder per worker process, made on its first chunk (models load once per process)
_WORKER: dict[str, Any] = {}


def _describe(options: dict[str, Any]) -> dict[str, Any]:
    return _worker_encoder(options).describe()


def _encode_chunk(options: dict[str, Any], images: list[Any]) -> PhotoTemplates:
    return _worker_encoder(options).encode(images)


def _worker_encoder(options: dict[str, Any]) -> PhotoEncoder:
    enc = _WORKER.get("encoder")
    if enc is None:
        from pyfacematch.embed import create_embedder

        opts = dict(options)
        spec = opts.pop("embedder", "dlib")
        dl = spec.startswith("dlib")
        emb = create_embedder(
            spec, **({"threads": 1, "upsample": "auto", "points": 68} if dl else {})
        )
        enc = _WORKER["encoder"] = PhotoEncoder(emb, **opts)
    return enc


def _merge(parts: list[tuple[int, PhotoTemplates]], dim: int, kdim: int) -> PhotoTemplates:
    if not parts:
        raise InputError("no photos given")
    ts = [t for _, t in parts]
    out = PhotoTemplates(
        np.concatenate([t.positions + off for off, t in parts]).astype(np.int64),
        np.concatenate([t.embeddings for t in ts]).reshape(-1, dim),
        np.concatenate([t.keys for t in ts]).reshape(-1, kdim),
        np.concatenate([t.key_masks for t in ts]).astype(np.uint64),
        np.concatenate([t.hidden for t in ts]),
        np.concatenate([t.landmarks for t in ts]),
    )
    out.rejects = sorted((p + off, a, b, c) for off, t in parts for p, a, b, c in t.rejects)
    out.rescued = np.concatenate([t.rescued + off for off, t in parts]).astype(np.int64)
    out.seconds = {k: sum(t.seconds.get(k, 0.0) for t in ts) for k in ts[0].seconds}
    return out


class ParallelPhotoEncoder:
    """:class:`PhotoEncoder` in ``workers`` spawned processes (decode, embed, landmarks and
    occlusion of different chunks overlap across the cores; one onnxruntime thread each).

    Chunks of ``chunk_size`` photos go out as paths (or arrays), at most ``2 × workers`` in
    flight (bounded memory); results come back in input order. Options as
    :class:`PhotoEncoder` (``embedder`` as a spec string, ``key_model`` as a path or None).
    A script using it needs the ``if __name__ == "__main__":`` guard (spawn).
    """

    def __init__(self, *, workers: int = 2, chunk_size: int = 16, **options: Any) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InputError(f"workers must be a positive integer, got {workers!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        if not isinstance(options.get("embedder", "dlib"), str):
            raise InputError("ParallelPhotoEncoder takes the embedder as a spec string ('dlib')")
        km = options.get("key_model")
        if km is not None and not isinstance(km, (str, os.PathLike)):
            raise InputError("ParallelPhotoEncoder takes the key model as a path (KeyModel.save)")
        self.workers, self.chunk_size, self.options = workers, chunk_size, options
        self._pool: Any = None
        self._description: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        """As :meth:`PhotoEncoder.describe`, asked of a worker (which keeps its models for the
        chunks that follow: the models are never loaded in this process)."""
        if self._description is None:
            self._description = self._executor().submit(_describe, self.options).result()
        return self._description

    def _executor(self) -> Any:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    def encode(self, images: Sequence[Any]) -> PhotoTemplates:
        """As :meth:`PhotoEncoder.encode`, on the worker processes."""
        from collections import deque

        items = list(images)
        pool = self._executor()
        pending: deque[tuple[int, Any]] = deque()
        parts: list[tuple[int, PhotoTemplates]] = []
        for off in range(0, len(items), self.chunk_size):
            chunk = [
                os.fspath(x) if isinstance(x, os.PathLike) else x
                for x in items[off : off + self.chunk_size]
            ]
            pending.append((off, pool.submit(_encode_chunk, self.options, chunk)))
            while len(pending) >= 2 * self.workers:
                o, fut = pending.popleft()
                parts.append((o, fut.result()))
        while pending:
            o, fut = pending.popleft()
            parts.append((o, fut.result()))
        if not parts:
            raise InputError("no photos given")
        t0 = parts[0][1]
        return _merge(parts, t0.embeddings.shape[1], t0.keys.shape[1])

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> ParallelPhotoEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def list_photos(folder: str | os.PathLike[str], *, by_person: bool) -> list[tuple[str, str]]:
    """(label, path) of the photos of a folder: ``DIR/<person>/*`` (by_person) or all of them
    (label: the path relative to the folder), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{os.fspath(folder)!r} is not a folder of photos")
    out = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in _PHOTO_SUFFIXES or not p.is_file():
            continue
        rel = p.relative_to(root)
        if by_person:
            if len(rel.parts) != 2:
                continue
            out.append((rel.parts[0], str(p)))
        else:
            out.append((str(rel), str(p)))
    if not out:
        layout = "DIR/<person>/<photo>" if by_person else "photos"
        raise InputError(f"no photos found in {os.fspath(folder)!r} (expected {layout})")
    return out


def _rejects(t: PhotoTemplates) -> list[dict[str, Any]]:
    return [{"source": s, "reason": r, "message": m} for _, s, r, m in t.rejects]


def enroll_folder(
    gallery: MultimodalGallery,
    folder: str | os.PathLike[str],
    encoder: PhotoEncoder | ParallelPhotoEncoder,
    **options: Any,
) -> dict[str, Any]:
    """Enroll every person of ``DIR/<person>/<photos>`` with all their usable photos."""
    photos = list_photos(folder, by_person=True)
    labels = np.array([a for a, _ in photos])
    t = encoder.encode([p for _, p in photos])
    lab = labels[t.positions]
    enrolled = []
    for person in dict.fromkeys(lab.tolist()):
        rows = lab == person
        gallery.enroll(person, t.embeddings[rows], t.keys[rows], t.key_masks[rows], **options)
        enrolled.append(person)
    return {
        "photos": len(photos),
        "enrolled": enrolled,
        "templates": int(t.positions.size),
        "rejects": _rejects(t),
        "seconds": t.seconds,
    }


def identify_folder(
    gallery: MultimodalGallery,
    folder: str | os.PathLike[str],
    encoder: PhotoEncoder | ParallelPhotoEncoder,
    *,
    k: int = 1,
    threshold: float | None = None,
    purpose: str | None = None,
) -> dict[str, Any]:
    """Identify every photo of a folder by the fused score."""
    photos = list_photos(folder, by_person=False)
    t = encoder.encode([p for _, p in photos])
    res = (
        gallery.identify(t.embeddings, t.keys, t.key_masks, k, threshold, purpose=purpose)
        if t.positions.size
        else []
    )
    rows = []
    for pos, r in zip(t.positions.tolist(), res):
        rows.append(
            {
                "probe": photos[pos][0],
                "identity": r.identity,
                "accepted": r.decision.accepted,
                "threshold": r.decision.threshold,
                "threshold_source": r.decision.source,
                "candidates": [
                    {
                        "identity": c.identity,
                        "fused": round(c.score, 4),
                        "embedding": round(c.embedding, 4),
                        "landmarks": None if np.isnan(c.landmarks) else round(c.landmarks, 4),
                    }
                    for c in r.candidates
                ],
            }
        )
    return {"photos": len(photos), "results": rows, "rejects": _rejects(t), "seconds": t.seconds}


def calibrate_folder(
    gallery: MultimodalGallery,
    folder: str | os.PathLike[str],
    encoder: PhotoEncoder | ParallelPhotoEncoder,
    *,
    fmr: float | None = None,
    fpir: float | None = None,
    method: str = "logistic",
) -> dict[str, Any]:
    """Fit the fusion and its thresholds on a labelled folder ``DIR/<person>/<photos>``
    (best: people not enrolled)."""
    photos = list_photos(folder, by_person=True)
    labels = np.array([a for a, _ in photos])
    t = encoder.encode([p for _, p in photos])
    rep = gallery.fit_fusion(
        t.embeddings, t.keys, t.key_masks, labels[t.positions], method=method, fmr=fmr, fpir=fpir
    )
    return {**rep, "photos": len(photos), "rejects": _rejects(t)}
