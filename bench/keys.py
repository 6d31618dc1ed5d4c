"""Landmark keys: encode speed vs a vectorised numpy pipeline, synthetic accuracy with occluders,
and the real-faces report.

    python bench/keys.py speed      [--n 200000]
    python bench/keys.py accuracy   [--identities 10000]
    python bench/keys.py real
    python bench/keys.py synth      (a million 200-point faces)

Accuracy protocol (dense200, 2-D): a key model is fitted on 2,000 training identities (5 faces
each, disjoint from everything else); the gallery holds one face of each of 10,000 identities;
mated probes are another face of the first 5,000 of them, non-mated probes faces of 5,000
identities never enrolled. For each probe condition (clean, mask, hand, sunglasses):
plain = keys computed ignoring visibility (all points as the detector returned them, hidden ones
displaced) scored with pyfacematch.topk; masked = keys from the visible points with region masks
scored with pyfacematch.masked_topk (min_fraction 0.3). Rank-1 = mated probes whose mate is
first; FNIR at FPIR = 0.01 = mated probes whose mate is not first with a score at or above the
threshold that 1 % of non-mated probes' top scores exceed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import pyfacematch as pf
from pyfacematch.bench.keys import numpy_encode  # the same numpy pipeline the suite measures
from pyfacematch.keys import KeyModel
from pyfacematch.keys.synth import FaceSynthesizer


def _model(n_train_ids: int = 2000, seed: int = 0) -> tuple[KeyModel, FaceSynthesizer]:
    syn = FaceSynthesizer("dense200", 17000, seed=seed)
    ids = np.repeat(np.arange(15000, 15000 + n_train_ids), 5)
    tr = syn.sample(ids, seed=100, dims=2, occluder="none")
    t = time.perf_counter()
    model = KeyModel.fit(tr.landmarks, tr.identities, scheme="dense200", dim=128)
    print(f"fit: {len(ids)} faces, {time.perf_counter() - t:.1f} s -> {model}")
    return model, syn


def speed(n: int) -> None:
    """Wall-clock faces/s (all threads) and CPU time per face, C++ vs the numpy pipeline.

    CPU time (time.process_time) is reported too because this machine is shared: wall-clock
    throughput depends on what else runs; CPU seconds per face do much less.
    """
    model, syn = _model(500)
    f = syn.sample(np.arange(n) % 10000, seed=1, dims=2, occluder="random")
    model.encode(f.landmarks[:1000], f.visibility[:1000], on_error="flag")
    best, best_cpu = 1e9, 1e9
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        model.encode(f.landmarks, f.visibility, on_error="flag")
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    m = min(n, 20000)
    t, c = time.perf_counter(), time.process_time()
    ref = numpy_encode(model, f.landmarks[:m], f.visibility[:m])
    tn, cn = time.perf_counter() - t, time.process_time() - c
    k, _ = model.encode(f.landmarks[:m], f.visibility[:m], on_error="flag")
    err = float(np.abs(k - ref).max())
    print(f"encode dense200 2-D, d={model.dim}, threads={pf.get_num_threads()}, random occluders")
    print(
        f"  wall: C++ {n / best:,.0f} faces/s ({n} faces, best of 3); numpy {m / tn:,.0f} faces/s "
        f"({m} faces); ratio {(n / best) / (m / tn):.1f}x"
    )
    print(
        f"  CPU:  C++ {best_cpu / n * 1e6:.2f} us/face ({n / best_cpu:,.0f} faces per CPU-second); "
        f"numpy {cn / m * 1e6:.1f} us/face; ratio {(cn / m) / (best_cpu / n):.1f}x"
    )
    print(f"  max |key difference| C++ vs numpy: {err:.2e}")


def _fnir_at_fpir(
    mated_top_ok: np.ndarray, mated_score: np.ndarray, nonmated_top: np.ndarray, fpir: float
) -> float:
    nm = np.where(np.isfinite(nonmated_top), nonmated_top, -np.inf)
    thr = np.quantile(nm, 1 - fpir, method="higher")
    hit = mated_top_ok & (np.nan_to_num(mated_score, nan=-np.inf) > thr)
    return float(1 - hit.mean())


def accuracy(n_ids: int) -> None:
    model, syn = _model()
    n_mated = n_ids // 2
    gal = syn.sample(np.arange(n_ids), seed=200, dims=2)
    gk, gm = model.encode(gal.landmarks)
    truth = np.arange(n_mated)
    print(f"gallery {n_ids} identities; {n_mated} mated + {n_mated} non-mated probes per condition")
    print(f"{'probe':<11} {'scoring':<7} {'rank-1':>7} {'FNIR@FPIR=0.01':>15} {'shared dims':>12}")
    for occ in ("none", "mask", "hand", "sunglasses"):
        mated = syn.sample(truth, seed=300, dims=2, occluder=occ)
        non = syn.sample(np.arange(10000, 10000 + n_mated), seed=400, dims=2, occluder=occ)
        rows = []
        for mode in ("plain", "masked"):
            if mode == "plain":
                mk, _ = model.encode(mated.landmarks, on_error="flag")
                nk, _ = model.encode(non.landmarks, on_error="flag")
                ms, mi = pf.topk(mk, gk, 1)
                ns, _ = pf.topk(nk, gk, 1)
                frac = 1.0
            else:
                mk, mm = model.encode(mated.landmarks, mated.visibility, on_error="flag")
                nk, nmask = model.encode(non.landmarks, non.visibility, on_error="flag")
                ms, mi = pf.masked_topk(mk, gk, 1, mm, gm, model.blocks, min_fraction=0.3)
                ns, _ = pf.masked_topk(nk, gk, 1, nmask, gm, model.blocks, min_fraction=0.3)
                sizes = np.diff(model.blocks)
                bits = (
                    (mm[:, None] >> np.arange(model.n_blocks, dtype=np.uint64)) & np.uint64(1)
                ).astype(bool)
                frac = float((bits * sizes).sum(1).mean() / model.dim)
            ok = mi[:, 0] == truth
            r1 = ok.mean()
            fnir = _fnir_at_fpir(ok, ms[:, 0], ns[:, 0], 0.01)
            rows.append((mode, r1, fnir))
            print(f"{occ:<11} {mode:<7} {r1:7.4f} {fnir:15.4f} {frac:12.2f}")


def real() -> None:
    from pathlib import Path

    d = np.load(
        Path(__file__).resolve().parents[1] / "tests" / "data" / "faces_johns_landmarks.npz"
    )
    y = d["labels"]
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
            r1 = int((y[sims.argmax(1)] == y).sum())
            same = (y[:, None] == y[None]) & ~np.eye(n, dtype=bool)
            g, im = sims[same], sims[y[:, None] != y[None]]
            print(
                f"{scheme:<13} {kind:<8} LOO rank-1 {r1}/{n} = {r1 / n:.3f}; genuine mean {g.mean():.3f} "
                f"[min {g.min():.3f}, max {g.max():.3f}]; impostor mean {im.mean():.3f} "
                f"[min {im.min():.3f}, max {im.max():.3f}]"
            )


def synth_speed() -> None:
    syn = FaceSynthesizer("dense200", 10000, seed=1)
    ids = np.random.default_rng(0).integers(0, 10000, 1_000_000)
    for dims in (2, 3):
        t = time.perf_counter()
        syn.sample(ids, seed=3, occluder="random", dims=dims)
        print(
            f"synth: 1,000,000 dense200 faces, {dims}-D, random occluders: {time.perf_counter() - t:.1f} s"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["speed", "accuracy", "real", "synth"])
    ap.add_argument("--n", type=int, default=200000)
    ap.add_argument("--identities", type=int, default=10000)
    a = ap.parse_args()
    {
        "speed": lambda: speed(a.n),
        "accuracy": lambda: accuracy(a.identities),
        "real": real,
        "synth": synth_speed,
    }[a.what]()
