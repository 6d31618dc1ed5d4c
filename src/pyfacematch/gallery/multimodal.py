"""Multi-modal galleries: a face embedding and a landmark key per person, one fused decision.

:class:`MultimodalGallery` keeps two :class:`~pyfacematch.gallery.Gallery` objects behind one
facade, each with its own store and index: ``embedding`` (image embeddings, e.g. dlib's 128-d
descriptor) and ``landmarks`` (landmark keys with region blocks, searched with masked cosine so
the blocks an occluder hides do not count). A search takes a shortlist from each index, scores
every candidate of either shortlist in both modalities (best template per identity, exactly),
and fuses the two scores with a :class:`~pyfacematch.fusion.ScoreFusion` fitted on labelled
comparisons; the decision threshold is calibrated on the *fused* impostor scores (FMR for 1:1,
FPIR for 1:N), so the two modalities answer as one matcher.

Why two galleries rather than one concatenated template: each modality keeps its own index
(FAISS or compact codes for embeddings, masked exact search for keys), its own dimension and its
own block layout, and every guarantee of :class:`Gallery` (encryption at rest, consent per
purpose, opt-out tombstones, erasure scrubbing, audit trail) applies to both unchanged.

Both modalities or neither: :meth:`MultimodalGallery.remove` and an opt-out erase the person
from both stores. The two commits are not one transaction, so a crash between them could leave a
person in one store only; opening a writable gallery therefore reconciles them first: a person
found in one store only is erased from it (with a tombstone when the other store holds one: an
opt-out that had not finished), which also rolls back an enrollment that crashed half-way.
Searches only return people present in both stores, so even a read-only gallery opened between
the two commits never answers with a half-erased person.

Files, for a gallery at ``path`` (a folder): ``embedding.db`` and ``landmarks.db`` (each with
its index folder and key file, as :class:`Gallery` makes them), and ``fusion.json`` (the fusion
weights and the calibrated thresholds: no biometric data), written atomically.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.errors import (
    DimensionError,
    GalleryFileError,
    InputError,
    UnknownIdentityError,
)
from pyfacematch.fusion import ScoreFusion
from pyfacematch.gallery.atomic import atomic_write
from pyfacematch.gallery.calibration import ThresholdRecord, calibrate_threshold
from pyfacematch.gallery.gallery import Gallery
from pyfacematch.gallery.results import Decision

__all__ = [
    "DEFAULT_FUSIONS",
    "MODALITIES",
    "DefaultFusion",
    "FusedCandidate",
    "FusedResult",
    "FusedVerifyResult",
    "MultimodalGallery",
    "key_model_id",
    "modality_scores",
]

log = logging.getLogger(__name__)

#: The two modalities, in the order the fusion takes their scores.
MODALITIES = ("embedding", "landmarks")
FUSION_FILE = "fusion.json"
DEFAULT_SHORTLIST = 50


@dataclass(frozen=True)
class DefaultFusion:
    """A fusion measured on known data, used until :meth:`MultimodalGallery.fit_fusion` runs."""

    fusion: dict[str, Any]
    threshold: float
    fmr: float
    note: str


#: Fusions measured on the 54 shared photos (5 people) for a pair of models, by
#: ``(embedder name, key model id)`` (see :func:`key_model_id`). ``dlib_resnet_v1`` +
#: the untrained 2-D ``mediapipe478`` key (stored descriptors and MediaPipe points, full key
#: masks): fused impostor scores -1.31 at most over 1,166 pairs, genuine 1.50 at least over
#: 265; the threshold 0 (log-likelihood ratio 0, equal priors) lies in the gap, so FMR <=
#: 3/1166 = 2.6e-3 at 95 % confidence (rule of three; five people: a loose bound).
DEFAULT_FUSIONS: dict[tuple[str, str], DefaultFusion] = {
    ("dlib_resnet_v1", "default-mediapipe478-2d"): DefaultFusion(
        {
            "method": "logistic",
            "l2": 0.001,
            "weights": [5.820797125834374, 0.295875914368925],
            "bias": -5.651136291144137,
            "impostor_mean": [0.803850021666578, -0.08177406509470589],
            "impostor_std": [0.04347849640083705, 0.38978370726720607],
            "loc": [0.730807288473119, 0.1968842236504076],
            "scale": [1.7815958030621002, 1.1063964155489912],
        },
        0.0,
        3 / 1166,
        "54 shared photos, 5 people: no impostor of 1,166 pairs reaches it",
    )
}


def key_model_id(key_model: Any) -> str:
    """``<kind>-<scheme>-<dims>d`` of a key model (a default model is the same everywhere)."""
    return f"{key_model.kind}-{key_model.scheme.name}-{key_model.dims}d"


@dataclass(frozen=True)
class FusedCandidate:
    """One identity of a fused search: fused score and the two scores it came from.

    ``landmarks`` is NaN when the masked comparison was not possible (too few blocks visible in
    both keys); the fusion then counts it as an average impostor score (it adds nothing).
    """

    identity: str
    score: float
    embedding: float
    landmarks: float


@dataclass(frozen=True)
class FusedResult:
    """The ranked candidates of one probe and the decision on the best one."""

    candidates: list[FusedCandidate]
    decision: Decision

    @property
    def identity(self) -> str | None:
        """The accepted identity, or None (not accepted, or no threshold)."""
        if self.decision.accepted and self.candidates:
            return self.candidates[0].identity
        return None


@dataclass(frozen=True)
class FusedVerifyResult:
    """A fused 1:1 comparison."""

    identity: str
    score: float
    embedding: float
    landmarks: float
    decision: Decision


def _rows(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise DimensionError(f"expected {what} of shape (n, d) or (d,), got shape {a.shape}")
    return a


def modality_scores(
    embeddings: Any,
    keys: Any,
    key_masks: Any,
    blocks: Any,
    *,
    min_fraction: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs scores of a labelled set in both modalities (the fusion's training data).

    Parameters
    ----------
    embeddings : (n, d) float
        Unit-norm (normalised here) embeddings.
    keys : (n, dk) float
        Landmark keys.
    key_masks : (n,) uint64 or None
        Valid blocks of each key (None: all valid).
    blocks : (B+1,) int
        The key model's block offsets.

    Returns
    -------
    (n, n) float64 embedding cosines and (n, n) float64 masked key cosines (NaN: not comparable).
    """
    from pyfacematch.core import scoring

    e = _rows(embeddings, "embeddings").astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    k = np.ascontiguousarray(_rows(keys, "keys"))
    if k.shape[0] != e.shape[0]:
        raise DimensionError(f"{e.shape[0]} embeddings but {k.shape[0]} keys: one of each per face")
    k = k / np.linalg.norm(k, axis=1, keepdims=True)
    m = (
        np.full(k.shape[0], (1 << (len(blocks) - 1)) - 1, np.uint64)
        if key_masks is None
        else np.ascontiguousarray(np.asarray(key_masks, np.uint64).reshape(-1))
    )
    mf = scoring.DEFAULT_MIN_FRACTION if min_fraction is None else float(min_fraction)
    kf = k.astype(np.float32)
    ks = scoring.masked_scores(kf, kf, m, m, np.asarray(blocks, np.int64), mf)
    return e @ e.T, np.asarray(ks, np.float64)


class MultimodalGallery:
    """A gallery of people enrolled with an image embedding and a landmark key.

    Parameters
    ----------
    path : str or os.PathLike or None
        Folder of the gallery (created if missing); None keeps everything in memory.
    embedding_dim : int or None
        Dimension of the embeddings (required for a new gallery).
    key_dim : int or None
        Dimension of the landmark keys (required for a new gallery).
    key_blocks : array_like of int or None
        Region-block offsets of the keys (``KeyModel.blocks``; required for a new gallery).
    backend : str or None
        Index backend of the embedding gallery (see :class:`Gallery`); the landmark gallery is
        searched exactly (masked cosine needs the exact kernel anyway).
    shortlist : int
        Candidates taken from each modality's index per probe before fusing.
    models : mapping or None
        ``{"embedder": name, "key_model": key_model_id(km)}`` of a new gallery, recorded: when
        :data:`DEFAULT_FUSIONS` holds that pair, searches use its fusion and threshold until
        :meth:`fit_fusion` runs (decision source ``"default-<embedder>+<key model>"``).
    key_provider, encrypt, purpose, actor, read_only, cancelable, on_duplicate :
        Passed to both galleries (see :class:`Gallery`): one key provider, so one master key
        encrypts both stores.
    **options :
        Further :class:`Gallery` options for both galleries.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        embedding_dim: int | None = None,
        key_dim: int | None = None,
        key_blocks: Any = None,
        backend: str | None = None,
        shortlist: int = DEFAULT_SHORTLIST,
        read_only: bool = False,
        models: Mapping[str, str] | None = None,
        **options: Any,
    ) -> None:
        if isinstance(shortlist, bool) or not isinstance(shortlist, int) or shortlist < 1:
            raise InputError(f"shortlist must be a positive integer, got {shortlist!r}")
        self.shortlist = shortlist
        self.read_only = bool(read_only)
        self.path = None if path is None else Path(path)
        if self.path is not None:
            if self.path.exists() and not self.path.is_dir():
                raise GalleryFileError(
                    f"{os.fspath(self.path)!r} is a file: a multi-modal gallery is a folder "
                    "(embedding.db, landmarks.db, fusion.json); give a folder path"
                )
            if not self.path.exists():
                if self.read_only:
                    raise GalleryFileError(
                        f"cannot open {os.fspath(self.path)!r} read-only: no gallery there"
                    )
                if embedding_dim is None or key_dim is None or key_blocks is None:
                    raise InputError(
                        "a new multi-modal gallery needs embedding_dim, key_dim and key_blocks "
                        "(the embedder's dimension, KeyModel.dim and KeyModel.blocks)"
                    )
                self.path.mkdir(parents=True, mode=0o700)
        new = self.path is None or not (self.path / "embedding.db").exists()
        if new and (embedding_dim is None or key_dim is None or key_blocks is None):
            raise InputError(
                "a new multi-modal gallery needs embedding_dim, key_dim and key_blocks "
                "(the embedder's dimension, KeyModel.dim and KeyModel.blocks)"
            )
        common = {"read_only": self.read_only, **options}
        self.embedding = Gallery(
            embedding_dim, path=self._file("embedding.db"), backend=backend, **common
        )
        try:
            self.landmarks = Gallery(
                key_dim,
                path=self._file("landmarks.db"),
                backend="exact",
                blocks=key_blocks if new else None,
                **common,
            )
        except BaseException:
            self.embedding.close()
            raise
        if self.landmarks.blocks is None:
            self.close()
            raise InputError("the landmark gallery has no region blocks: key_blocks are required")
        self._fusion: ScoreFusion | None = None
        self._thresholds: dict[str, ThresholdRecord] = {}
        self.models: dict[str, str] = {}
        self._fitted = False
        self._load_fusion()
        if new and models is not None and not self.read_only:
            self.models = {str(k): str(v) for k, v in models.items()}
            self._save_fusion()
        if not self.read_only:
            self.reconcile()

    def _file(self, name: str) -> Path | None:
        return None if self.path is None else self.path / name

    # ------------------------------------------------------------------ consistency
    def reconcile(self) -> list[str]:
        """Erase anyone enrolled in one modality only; returns their ids.

        A person in one store only is what a crash between the two commits of an enrollment or
        an erasure leaves. Either way the right state is "not enrolled": the enrollment was
        never acknowledged, the erasure was asked for. When the other store holds an opt-out
        tombstone for the person, the erasure is an opt-out here too (tombstone written).
        """
        a, b = set(self.embedding.identities()), set(self.landmarks.identities())
        fixed = []
        for name in sorted(a ^ b):
            here, other = (
                (self.embedding, self.landmarks) if name in a else (self.landmarks, self.embedding)
            )
            if other.opted_out(name):
                here.withdraw_consent(name)
            else:
                here.remove(name)
            log.warning("identity enrolled in one modality only after a crash: erased from both")
            fixed.append(name)
        return fixed

    # ------------------------------------------------------------------ fusion state
    def _load_fusion(self) -> None:
        f = self._file(FUSION_FILE)
        if f is None or not f.exists():
            return
        try:
            d = json.loads(f.read_text("utf-8"))
            self._fusion = ScoreFusion.from_dict(d["fusion"]) if d.get("fusion") else None
            self._fitted = self._fusion is not None
            self._thresholds = {k: ThresholdRecord(**v) for k, v in d.get("thresholds", {}).items()}
            self.models = {str(k): str(v) for k, v in d.get("models", {}).items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise GalleryFileError(
                f"{os.fspath(f)!r} is damaged ({type(exc).__name__}): delete it and fit the "
                "fusion again (MultimodalGallery.fit_fusion)"
            ) from exc

    def _save_fusion(self) -> None:
        f = self._file(FUSION_FILE)
        if f is None:
            return
        d = {
            "fusion": None if self._fusion is None else self._fusion.to_dict(),
            "thresholds": {k: vars(v) for k, v in self._thresholds.items()},
            "models": self.models,
        }
        atomic_write(f, json.dumps(d, indent=1).encode())

    @property
    def fusion(self) -> ScoreFusion | None:
        """The fitted score fusion (None until :meth:`fit_fusion`)."""
        return self._fusion

    def threshold(self, kind: str) -> ThresholdRecord | None:
        """The calibrated ``"fmr"`` or ``"fpir"`` threshold on the fused score, or None."""
        return self._thresholds.get(kind)

    def fit_fusion(
        self,
        embeddings: Any,
        keys: Any,
        key_masks: Any,
        labels: Any,
        *,
        method: str = "logistic",
        fmr: float | None = None,
        fpir: float | None = None,
        conservative: bool = False,
    ) -> dict[str, Any]:
        """Fit the fusion on labelled faces and calibrate the fused thresholds.

        Parameters
        ----------
        embeddings, keys, key_masks :
            One row per face of a labelled set (people other than the enrolled ones are best).
        labels : (n,) array
            Person of each face.
        method : {"logistic", "zscore"}
            See :mod:`pyfacematch.fusion`.
        fmr : float or None
            Calibrate the 1:1 threshold on the fused impostor pair scores at this FMR.
        fpir : float or None
            Calibrate the 1:N threshold at this FPIR: each face searched against the other
            people of the set (identity score = best template per modality, then fused), the
            top score of each such non-mated search is an impostor score.

        Returns
        -------
        dict
            Weights, pair counts and the thresholds stored.
        """
        from pyfacematch.fusion import pair_scores

        self._check_writable("fit_fusion")
        lab = np.asarray(labels).reshape(-1)
        es, ks = modality_scores(
            embeddings,
            keys,
            key_masks,
            self.landmarks.blocks,
            min_fraction=self.landmarks.min_fraction,
        )
        if lab.size != es.shape[0]:
            raise DimensionError(f"{es.shape[0]} faces but {lab.size} labels")
        x, gen = pair_scores([es, ks], lab)
        fusion = ScoreFusion(method).fit(x, gen)
        thresholds = {}
        if fmr is not None:
            imp = fusion.fuse(x[~gen])
            thresholds["fmr"] = calibrate_threshold(imp, fmr=fmr, conservative=conservative)
        if fpir is not None:
            top = _nonmated_tops(fusion, es, ks, lab)
            thresholds["fpir"] = calibrate_threshold(
                top, fpir=fpir, conservative=conservative, gallery_size=len(np.unique(lab)) - 1
            )
        self._fusion = fusion
        self._fitted = True
        self._thresholds = thresholds
        self._save_fusion()
        return {
            "method": method,
            "weights": fusion.weights.tolist() if fusion.weights is not None else None,
            "genuine_pairs": int(gen.sum()),
            "impostor_pairs": int((~gen).sum()),
            "thresholds": {k: v.value for k, v in thresholds.items()},
        }

    def _default(self) -> tuple[str, DefaultFusion] | None:
        """The default fusion of this gallery's models, when it has no fitted one."""
        if self._fitted:
            return None
        key = (self.models.get("embedder", ""), self.models.get("key_model", ""))
        d = DEFAULT_FUSIONS.get(key)
        return None if d is None else (f"default-{key[0]}+{key[1]}", d)

    def _fused(self, e: np.ndarray, k: np.ndarray) -> np.ndarray:
        d = self._default()
        if d is not None:
            return np.asarray(ScoreFusion.from_dict(d[1].fusion).fuse([e, k]), np.float64)
        if self._fusion is None:
            raise InputError(
                "this multi-modal gallery has no fusion yet: fit it on labelled faces with "
                "fit_fusion(embeddings, keys, key_masks, labels, fmr=…) "
                "(or `pyfacematch multimodal calibrate`)"
            )
        return np.asarray(self._fusion.fuse([e, k]), np.float64)

    # ------------------------------------------------------------------ writes
    def _check_writable(self, what: str) -> None:
        if self.read_only:
            from pyfacematch.errors import GalleryReadOnlyError

            raise GalleryReadOnlyError(f"{what}: this gallery was opened read-only")

    def enroll(
        self,
        identity_id: str,
        embeddings: Any,
        keys: Any,
        key_masks: Any = None,
        metadata: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        """Enroll a person with embeddings (T, d) and landmark keys (U, dk) (+ key masks (U,)).

        Both modalities or neither: the inputs are checked before anything is written, and if
        the second store refuses, the first enrollment of a new person is undone. ``options``
        (``purpose``, ``consent_source``, ``on_duplicate`` …) go to both (see
        :meth:`Gallery.enroll`).
        """
        self._check_writable("enroll")
        e = _rows(embeddings, "embeddings")
        k = _rows(keys, "keys")
        for g, x, what in ((self.embedding, e, "embeddings"), (self.landmarks, k, "keys")):
            if x.shape[1] != g.dim:
                raise DimensionError(
                    f"expected {what} of dimension {g.dim}, got {x.shape[1]}: was this "
                    "multi-modal gallery made with another embedder or key model?"
                )
        new = identity_id not in self.embedding and identity_id not in self.landmarks
        self.embedding.enroll(identity_id, e, None, metadata, **options)
        try:
            self.landmarks.enroll(identity_id, k, key_masks, metadata, **options)
        except BaseException:
            if new:
                self.embedding.remove(identity_id)
            raise

    def remove(self, identity_id: str) -> None:
        """Erase a person from both modalities (see :meth:`Gallery.remove`).

        Raises
        ------
        UnknownIdentityError
            Enrolled in neither.
        """
        self._check_writable("remove")
        found = False
        for g in (self.landmarks, self.embedding):
            if identity_id in g:
                g.remove(identity_id)
                found = True
        if not found:
            raise UnknownIdentityError(f"identity {identity_id!r} is not enrolled")

    def grant_consent(self, identity_id: str, purpose: str, **options: Any) -> None:
        """Record consent in both modalities (see :meth:`Gallery.grant_consent`)."""
        for g in (self.embedding, self.landmarks):
            g.grant_consent(identity_id, purpose, **options)

    def withdraw_consent(self, identity_id: str, purpose: str | None = None) -> list[str]:
        """Withdraw consent in both modalities; with none left, an opt-out erases both."""
        self.landmarks.withdraw_consent(identity_id, purpose)
        return self.embedding.withdraw_consent(identity_id, purpose)

    # ------------------------------------------------------------------ searches
    def _decision(self, score: float, threshold: float | None, kind: str) -> Decision:
        if threshold is not None:
            thr, src, target = float(threshold), "explicit", None
        else:
            rec = self._thresholds.get(kind) or self._thresholds.get("fmr")
            d = self._default()
            if rec is None and d is not None:
                ok = bool(np.isfinite(score) and score >= d[1].threshold)
                return Decision(ok, d[1].threshold, d[0], d[1].fmr)
            if rec is None:
                return Decision(None, None, "none", None)
            thr, src, target = rec.value, f"calibrated-fused-{rec.name}", rec.target
        return Decision(bool(np.isfinite(score) and score >= thr), thr, src, target)

    def _one_score(
        self, g: Gallery, name: str, probe: np.ndarray, mask: Any, purpose: str | None
    ) -> float | None:
        from pyfacematch.errors import NoConsentError

        try:
            return g.verify(name, probe, 0.0, mask, purpose=purpose).score
        except NoConsentError:
            return None
        except UnknownIdentityError:
            return None

    def identify(
        self,
        embeddings: Any,
        keys: Any,
        key_masks: Any = None,
        k: int = 1,
        threshold: float | None = None,
        *,
        purpose: str | None = None,
    ) -> list[FusedResult]:
        """Identify probes (1:N) by the fused score.

        Parameters
        ----------
        embeddings : (M, d) float
        keys : (M, dk) float
        key_masks : (M,) uint64 or None
            Valid blocks of each probe key (e.g. from the occlusion detector).
        k : int
            Candidates per probe.
        threshold : float or None
            On the fused score; None: the calibrated FPIR threshold (else the FMR one).
        purpose : str or None
            Only people consenting to it (see :meth:`Gallery.identify`).
        """
        e = _rows(embeddings, "embeddings")
        kk = _rows(keys, "keys")
        if e.shape[0] != kk.shape[0]:
            raise DimensionError(f"{e.shape[0]} probe embeddings but {kk.shape[0]} probe keys")
        masks = (
            [None] * kk.shape[0]
            if key_masks is None
            else np.asarray(key_masks, np.uint64).reshape(-1).tolist()
        )
        if len(masks) != kk.shape[0]:
            raise DimensionError(f"{kk.shape[0]} probe keys but {len(masks)} key masks")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        self._fused(np.zeros(1), np.zeros(1))  # refuse early without a fusion
        s = max(int(k), self.shortlist)
        kmask = None if key_masks is None else np.asarray(masks, np.uint64)
        ra = self.embedding.identify_arrays(e, s, 0.0, purpose=purpose)
        rb = self.landmarks.identify_arrays(kk, s, 0.0, kmask, purpose=purpose)
        out = []
        for i in range(e.shape[0]):
            cand: dict[str, list[float | None]] = {}
            for j, res in enumerate((ra, rb)):
                for name, sc in zip(res.identities[i].tolist(), res.scores[i].tolist()):
                    if name is not None:
                        cand.setdefault(name, [None, None])[j] = float(sc)
            names, es, ks = [], [], []
            for name, (a, b) in cand.items():
                if a is None:
                    a = self._one_score(self.embedding, name, e[i], None, purpose)
                if b is None:
                    b = self._one_score(self.landmarks, name, kk[i], masks[i], purpose)
                if a is None or b is None:  # in one store only, or no consent there
                    continue
                names.append(name)
                es.append(a)
                ks.append(b)
            if names:
                f = self._fused(np.array(es), np.array(ks))
                order = np.argsort(-f, kind="stable")[: int(k)]
                cands = [FusedCandidate(names[j], float(f[j]), es[j], ks[j]) for j in order]
            else:
                cands = []
            top = cands[0].score if cands else float("-inf")
            out.append(FusedResult(cands, self._decision(top, threshold, "fpir")))
        return out

    def verify(
        self,
        identity_id: str,
        embedding: Any,
        key: Any,
        key_mask: Any = None,
        threshold: float | None = None,
        *,
        purpose: str | None = None,
    ) -> FusedVerifyResult:
        """Compare a probe with one person (1:1) by the fused score (FMR threshold).

        Raises
        ------
        UnknownIdentityError, NoConsentError
            Not enrolled (in either modality), or no consent for the purpose.
        """
        e = self.embedding.verify(identity_id, embedding, 0.0, purpose=purpose).score
        kscore = self.landmarks.verify(identity_id, key, 0.0, key_mask, purpose=purpose).score
        f = float(self._fused(np.array([e]), np.array([kscore]))[0])
        return FusedVerifyResult(identity_id, f, e, kscore, self._decision(f, threshold, "fmr"))

    # ------------------------------------------------------------------ listing
    def identities(self) -> list[str]:
        """People enrolled in both modalities."""
        b = set(self.landmarks.identities())
        return [x for x in self.embedding.identities() if x in b]

    def __len__(self) -> int:
        return len(self.identities())

    def __contains__(self, identity_id: object) -> bool:
        return identity_id in self.embedding and identity_id in self.landmarks

    def __iter__(self) -> Iterator[str]:
        return iter(self.identities())

    def info(self) -> dict[str, Any]:
        """Counts, dimensions and the fusion state."""
        return {
            "path": None if self.path is None else os.fspath(self.path),
            "identities": len(self),
            "embedding": {"dim": self.embedding.dim, "templates": self.embedding.n_templates},
            "landmarks": {
                "dim": self.landmarks.dim,
                "blocks": int(self.landmarks.blocks.size - 1)
                if self.landmarks.blocks is not None
                else 0,
                "templates": self.landmarks.n_templates,
            },
            "fusion": None if self._fusion is None else self._fusion.to_dict(),
            "thresholds": {k: vars(v) for k, v in self._thresholds.items()},
            "models": self.models,
            "default_fusion": None if (d := self._default()) is None else d[0],
        }

    def close(self) -> None:
        """Close both galleries (idempotent)."""
        for name in ("landmarks", "embedding"):
            g = getattr(self, name, None)
            if g is not None:
                g.close()

    def __enter__(self) -> MultimodalGallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "memory" if self.path is None else os.fspath(self.path)
        return f"MultimodalGallery({where!r}, identities={len(self)})"


def _nonmated_tops(
    fusion: ScoreFusion, es: np.ndarray, ks: np.ndarray, lab: np.ndarray
) -> np.ndarray:
    """Top fused score of each face searched against the other people (identity = best per
    modality over its faces, then fused), as a 1:N search of a person not enrolled sees it."""
    people = np.unique(lab)
    tops = np.full(lab.size, -np.inf)
    for p in people:
        cols = lab == p
        e = es[:, cols].max(1)
        with np.errstate(invalid="ignore"):
            k = np.where(np.isnan(ks[:, cols]), -np.inf, ks[:, cols]).max(1)
        k = np.where(np.isfinite(k), k, np.nan)
        f = fusion.fuse([e, k])
        tops = np.where(lab != p, np.maximum(tops, f), tops)
    return tops
