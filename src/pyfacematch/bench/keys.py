"""Landmark keys per second: ``KeyModel.encode`` against the same pipeline in numpy.

Protocol (dense200, 2-D): a key model is fitted on training identities (5 faces each); ``n``
synthetic faces with random occluders (none, mask, hand, sunglasses) are encoded by
``KeyModel.encode`` (C++ core, all threads) and by :func:`numpy_encode`, the same pipeline in
vectorised numpy (alignment and features in float64, projection in float32:
:func:`pyfacematch.keys._reference.reference_keys`, the tests' oracle). Both engines are timed
alike: the **same batch** (the faces that encode without error), one warm-up call each, then
``repeat`` rounds in which the two run in turn; the figure is the **median** of the rounds,
in wall-clock faces/s and in CPU microseconds per face. Their keys are compared.

The accuracy protocol is :mod:`pyfacematch.bench.accuracy`; ``python bench/keys.py`` is the
command-line entry point of both.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import pyfacematch as pf
from pyfacematch.bench.section import Log, require, summary_row
from pyfacematch.errors import InputError

__all__ = [
    "SCHEME",
    "numpy_encode",
    "fit_model",
    "measure_key_speed",
    "section_keys",
    "speed_table",
    "measure_real_keys",
    "measure_synth_speed",
]

SCHEME = "dense200"


def numpy_encode(model: Any, x: np.ndarray, vis: np.ndarray | None) -> np.ndarray:
    """``KeyModel.encode``'s pipeline in vectorised numpy; float32 (n, d) keys.

    The baseline of the benchmark: :func:`~pyfacematch.keys._reference.reference_keys` with the
    projection in float32, as the engine computes it.
    """
    from pyfacematch.keys._reference import reference_keys

    return reference_keys(model, x, vis, projection_dtype=np.float32)


def fit_model(n_train_ids: int, n_total_ids: int, seed: int = 0) -> tuple[Any, Any, float]:
    """A dense200 2-D key model fitted on ``n_train_ids`` identities (5 faces each).

    The training identities are the last ``n_train_ids`` of a synthesizer of ``n_total_ids``;
    returns (model, synthesizer, fit seconds).
    """
    from pyfacematch.keys import KeyModel
    from pyfacematch.keys.synth import FaceSynthesizer

    syn = FaceSynthesizer(SCHEME, n_total_ids, seed=seed)
    ids = np.repeat(np.arange(n_total_ids - n_train_ids, n_total_ids), 5)
    tr = syn.sample(ids, seed=100, dims=2, occluder="none")
    t0 = time.perf_counter()
    model = KeyModel.fit(tr.landmarks, tr.identities, scheme=SCHEME, dim=128)
    return model, syn, time.perf_counter() - t0


def measure_key_speed(
    n: int,
    *,
    repeat: int = 5,
    n_train_ids: int = 500,
    n_face_ids: int = 10_000,
    log: Log = print,
) -> dict[str, Any]:
    """Faces per second of ``KeyModel.encode`` and of :func:`numpy_encode`, timed alike.

    Parameters
    ----------
    n : int
        Faces generated (identities ``arange(n) % n_face_ids``, random occluders); both engines
        encode the same ones (those ``KeyModel.encode`` accepts, status 0).
    repeat : int
        Timed rounds; each round runs pyfacematch then numpy on the whole batch. Medians are
        reported (the machine may be shared), best and worst kept in the data.
    n_train_ids, n_face_ids : int
        Training identities of the model; identities the faces are drawn from.
    log : callable
        Progress lines.

    Returns
    -------
    dict
        ``pyfacematch_faces_per_s``, ``numpy_faces_per_s`` (wall clock, median), ``x_numpy``
        (their ratio), ``*_cpu_us_per_face`` (median CPU time per face, all threads),
        ``x_numpy_cpu``, per-round samples, ``max_abs_key_diff`` and the sizes.
    """
    if repeat < 1:
        raise InputError(f"repeat: expected at least 1 timed round, got {repeat}")
    model, syn, _ = fit_model(n_train_ids, n_face_ids + n_train_ids)
    f = syn.sample(np.arange(n) % n_face_ids, seed=1, dims=2, occluder="random")
    _, _, st = model.encode(f.landmarks, f.visibility, on_error="flag", return_status=True)
    ok = st == 0
    x = np.ascontiguousarray(f.landmarks[ok])
    v = np.ascontiguousarray(f.visibility[ok])
    m = len(x)
    engines = {
        "pyfacematch": lambda: model.encode(x, v, on_error="flag")[0],
        "numpy": lambda: numpy_encode(model, x, v),
    }
    keys = {name: fn() for name, fn in engines.items()}  # warm-up: one full call each
    wall: dict[str, list[float]] = {name: [] for name in engines}
    cpu: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeat):
        for name, fn in engines.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    med = {name: statistics.median(s) for name, s in wall.items()}
    med_cpu = {name: statistics.median(s) for name, s in cpu.items()}
    err = float(np.abs(keys["pyfacematch"] - keys["numpy"]).max()) if m else float("nan")
    out: dict[str, Any] = {
        "scheme": SCHEME,
        "dims": 2,
        "key_dim": model.dim,
        "threads": pf.get_num_threads(),
        "faces": m,
        "faces_rejected": int(n - m),
        "repeat": repeat,
        "timing": "same faces, one warm-up call each, median of interleaved rounds",
        "pyfacematch_faces_per_s": m / med["pyfacematch"],
        "numpy_faces_per_s": m / med["numpy"],
        "pyfacematch_cpu_us_per_face": med_cpu["pyfacematch"] / m * 1e6,
        "numpy_cpu_us_per_face": med_cpu["numpy"] / m * 1e6,
        "wall_s": wall,
        "cpu_s": cpu,
        "max_abs_key_diff": err,
    }
    out["x_numpy"] = med["numpy"] / med["pyfacematch"]
    out["x_numpy_cpu"] = med_cpu["numpy"] / med_cpu["pyfacematch"]
    log(
        f"  encode {SCHEME} 2-D d={model.dim}, {m:,} faces, median of {repeat}: pyfacematch "
        f"{out['pyfacematch_faces_per_s']:,.0f} faces/s, numpy {out['numpy_faces_per_s']:,.0f} "
        f"faces/s (x{out['x_numpy']:.1f} wall, x{out['x_numpy_cpu']:.1f} CPU), max |diff| {err:.1e}"
    )
    return out


def speed_table(r: Mapping[str, Any]) -> dict[str, Any]:
    """The report table of :func:`measure_key_speed`'s result."""
    return {
        "title": None,
        "headers": [
            "engine",
            "faces",
            "faces/s (median)",
            "CPU µs/face",
            "× numpy (wall)",
            "× numpy (CPU)",
        ],
        "rows": [
            [
                "pyfacematch KeyModel.encode",
                r["faces"],
                r["pyfacematch_faces_per_s"],
                r["pyfacematch_cpu_us_per_face"],
                r["x_numpy"],
                r["x_numpy_cpu"],
            ],
            [
                "numpy pipeline",
                r["faces"],
                r["numpy_faces_per_s"],
                r["numpy_cpu_us_per_face"],
                1.0,
                1.0,
            ],
        ],
        "note": f"Key dimension {r['key_dim']}, {r['threads']} threads; both engines on the same "
        f"{r['faces']:,} faces, one warm-up call each, median of {r['repeat']} interleaved rounds; "
        f"largest |key difference| between the two: {r['max_abs_key_diff']:.1e}.",
    }


def section_keys(cfg: Mapping[str, Any], out: Path, log: Log) -> dict[str, Any]:
    """Suite section: :func:`measure_key_speed` with the suite's sizes."""
    for module in ("pyfacematch.keys", "pyfacematch.keys.synth"):
        require(module, "landmark keys are not importable: {exc}")
    r = measure_key_speed(cfg["n"], repeat=cfg.get("repeat", 5), log=log)
    return {
        "description": (
            "`KeyModel.encode` (C++ core: alignment, region features, projection, masks) against the same "
            "pipeline in vectorised numpy, on the same synthetic dense200 2-D faces with random occluders "
            "(none/mask/hand/sunglasses): same batch, one warm-up call each, median of interleaved rounds."
        ),
        "data": r,
        "tables": [speed_table(r)],
        "plots": [],
        "summary": [
            summary_row(
                "keys",
                f"keys/s ({r['scheme']} 2-D, d={r['key_dim']})",
                r["pyfacematch_faces_per_s"],
                "numpy pipeline",
                r["numpy_faces_per_s"],
            )
        ],
    }


def measure_real_keys(landmarks_npz: Path) -> dict[str, dict[str, Any]]:
    """Leave-one-out rank-1 of landmark keys on real photos, untrained and LDA per left-out photo.

    Parameters
    ----------
    landmarks_npz : Path
        ``faces_johns_landmarks.npz``: ``labels`` (n,), ``landmarks`` (n, 68, D) from dlib and
        ``landmarks_mp478`` (n, 478, D) from MediaPipe.

    Returns
    -------
    dict
        ``"<scheme>/<default|loo-lda>"`` -> ``rank1``, ``hits``, ``n`` and genuine / impostor
        cosine mean, min and max.
    """
    from pyfacematch.keys import KeyModel

    d = np.load(landmarks_npz)
    y = d["labels"]
    out: dict[str, dict[str, Any]] = {}
    for scheme, key in (("ibug68", "landmarks"), ("mediapipe478", "landmarks_mp478")):
        x = d[key]
        n = len(x)
        for kind in ("default", "loo-lda"):
            if kind == "default":
                k, _ = KeyModel.default(scheme, dims=x.shape[-1]).encode(x)
                sims = k.astype(np.float64) @ k.T
            else:
                sims = np.empty((n, n))
                for i in range(n):
                    tr = np.arange(n) != i
                    k, _ = KeyModel.fit(x[tr], y[tr], scheme=scheme, dim=64).encode(x)
                    sims[i] = k @ k[i]
            np.fill_diagonal(sims, -np.inf)
            hits = int((y[sims.argmax(1)] == y).sum())
            same = (y[:, None] == y[None]) & ~np.eye(n, dtype=bool)
            g, im = sims[same], sims[y[:, None] != y[None]]
            out[f"{scheme}/{kind}"] = {
                "rank1": hits / n,
                "hits": hits,
                "n": n,
                "genuine_mean": float(g.mean()),
                "genuine_min": float(g.min()),
                "genuine_max": float(g.max()),
                "impostor_mean": float(im.mean()),
                "impostor_min": float(im.min()),
                "impostor_max": float(im.max()),
            }
    return out


def measure_synth_speed(n: int = 1_000_000, n_ids: int = 10_000) -> dict[int, float]:
    """Seconds to synthesise ``n`` dense200 faces with random occluders, in 2-D and in 3-D."""
    from pyfacematch.keys.synth import FaceSynthesizer

    syn = FaceSynthesizer(SCHEME, n_ids, seed=1)
    ids = np.random.default_rng(0).integers(0, n_ids, n)
    out = {}
    for dims in (2, 3):
        t = time.perf_counter()
        syn.sample(ids, seed=3, occluder="random", dims=dims)
        out[dims] = time.perf_counter() - t
    return out
