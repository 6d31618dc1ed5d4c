"""Landmark keys: encode speed against a vectorised numpy pipeline, synthetic accuracy with
occluders, and the real-faces report. A thin entry point: the protocols are
:mod:`pyfacematch.bench.keys` (speed) and :mod:`pyfacematch.bench.accuracy` (accuracy), the same
code ``pyfacematch bench`` runs.

    python bench/keys.py speed      [--n 200000] [--repeat 5]
    python bench/keys.py accuracy   [--identities 10000] [--train 2000]
    python bench/keys.py real
    python bench/keys.py synth      (a million 200-point faces)

Speed: ``KeyModel.encode`` and the numpy pipeline encode the same faces, one warm-up call each,
then ``--repeat`` interleaved rounds; medians of wall-clock faces/s and CPU µs per face.
Accuracy (dense200, 2-D): a key model fitted on ``--train`` identities (5 faces each, disjoint);
the gallery holds one face of each of ``--identities`` identities; mated probes are another face
of the first half, non-mated probes faces of as many identities never enrolled. Per probe
condition (clean, mask, hand, sunglasses): plain cosine (keys ignoring visibility) against masked
cosine (keys from the visible points, region masks, min_fraction 0.3). FNIR at FPIR = 0.01 is
:func:`pyfacematch.metrics.fnir_at_fpir` (mate counted at rank 1).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch.bench.accuracy import measure_key_accuracy
from pyfacematch.bench.keys import measure_key_speed, speed_table
from pyfacematch.bench.report import write_json
from pyfacematch.bench.util import machine, machine_line, table
from pyfacematch.keys import KeyModel
from pyfacematch.keys.synth import FaceSynthesizer


def speed(n: int, repeat: int) -> dict[str, Any]:
    r = measure_key_speed(n, repeat=repeat)
    t = speed_table(r)
    print(f"encode dense200 2-D, d={r['key_dim']}, threads={r['threads']}, random occluders")
    print(table(t["headers"], t["rows"]))
    print(t["note"])
    return r


def accuracy(n_ids: int, n_train: int) -> dict[str, Any]:
    r = measure_key_accuracy(n_ids, n_train, log=lambda s: None)
    r.pop("det")
    n_mated = r["rows"][0]["n_mated"]
    print(f"gallery {n_ids} identities; {n_mated} mated + {n_mated} non-mated probes per condition")
    print(
        table(
            ["probe", "scoring", "rank-1", "FNIR@FPIR=0.01", "FNIR 95 % CI", "shared dims"],
            [
                [
                    x["probe"],
                    x["scoring"],
                    f"{x['rank1']:.4f}",
                    f"{x['fnir_at_fpir_0.01']:.4f}",
                    f"[{x['fnir_ci95'][0]:.4f}, {x['fnir_ci95'][1]:.4f}]",
                    f"{x['shared_fraction']:.2f}",
                ]
                for x in r["rows"]
            ],
        )
    )
    return r


def real() -> dict[str, Any]:
    d = np.load(
        Path(__file__).resolve().parents[1] / "tests" / "data" / "faces_johns_landmarks.npz"
    )
    y = d["labels"]
    out: dict[str, Any] = {}
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
            out[f"{scheme}/{kind}"] = {"rank1": r1 / n, "genuine_mean": float(g.mean())}
            print(
                f"{scheme:<13} {kind:<8} LOO rank-1 {r1}/{n} = {r1 / n:.3f}; genuine mean {g.mean():.3f} "
                f"[min {g.min():.3f}, max {g.max():.3f}]; impostor mean {im.mean():.3f} "
                f"[min {im.min():.3f}, max {im.max():.3f}]"
            )
    return out


def synth_speed() -> dict[str, Any]:
    syn = FaceSynthesizer("dense200", 10000, seed=1)
    ids = np.random.default_rng(0).integers(0, 10000, 1_000_000)
    out = {}
    for dims in (2, 3):
        t = time.perf_counter()
        syn.sample(ids, seed=3, occluder="random", dims=dims)
        out[f"{dims}d_s"] = time.perf_counter() - t
        print(
            f"synth: 1,000,000 dense200 faces, {dims}-D, random occluders: {out[f'{dims}d_s']:.1f} s"
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["speed", "accuracy", "real", "synth"])
    ap.add_argument("--n", type=int, default=200000, help="faces encoded by both engines (speed)")
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds, median reported (speed)")
    ap.add_argument("--identities", type=int, default=10000, help="gallery size (accuracy)")
    ap.add_argument("--train", type=int, default=2000, help="training identities (accuracy)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    info = machine()
    print(machine_line(info))
    r = {
        "speed": lambda: speed(a.n, a.repeat),
        "accuracy": lambda: accuracy(a.identities, a.train),
        "real": real,
        "synth": synth_speed,
    }[a.what]()
    if a.json:
        write_json({"machine": info, a.what: r}, Path(a.json))
    return r


if __name__ == "__main__":
    main()
