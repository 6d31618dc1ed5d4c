"""``pyfacematch demo``: the whole main job on synthetic faces, with no data.

1. A key model is learned on synthetic faces of people who are *not* in the
   gallery (200-point landmarks, several faces each, random occluders).
2. A gallery of ``identities`` synthetic people is enrolled: one clean face
   each → landmarks → key (region blocks + mask).
3. Probes are new faces of enrolled people (other expression, pose, noise):
   clean ones and ones wearing a surgical mask (the lower face hidden, its
   blocks invalid). Each is identified 1:N against the whole gallery.
4. Rank-1 accuracy (the right person first) and throughput are printed; for
   masked probes both masked cosine (only blocks visible in both faces) and
   plain cosine over the whole key are shown.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

from pyfacematch.errors import InputError

__all__ = ["run_demo"]

SCHEME = "dense200"


def _p(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


def run_demo(
    identities: int = 100_000,
    probes: int = 500,
    *,
    seed: int = 0,
    backend: str = "exact",
    gallery: str | os.PathLike[str] | None = None,
    train_identities: int = 400,
    train_faces: int = 10,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the synthetic demo; print a few lines; return the figures.

    Parameters
    ----------
    identities : int
        People enrolled in the gallery.
    probes : int
        Probes per condition (clean, masked); at most ``identities``.
    seed : int
        Seed of everything.
    backend : str
        Gallery search backend.
    gallery : path or None
        Keep the gallery in this SQLite file (must not exist); None: in memory.
    train_identities, train_faces : int
        Synthetic people (and faces each) the key model is learned on.
    quiet : bool
        Print nothing.

    Returns
    -------
    dict
        ``rank1_clean``, ``rank1_masked``, ``rank1_masked_plain_cosine``,
        ``probes_per_second``, ``enroll_per_second``, timings (seconds).
    """
    import pyfacematch as pf
    from pyfacematch.gallery.gallery import Gallery
    from pyfacematch.keys.model import KeyModel
    from pyfacematch.keys.synth import FaceSynthesizer

    if identities < 1 or probes < 1:
        raise InputError("--identities and --probes must be >= 1")
    if gallery is not None and os.path.exists(gallery):
        raise InputError(f"demo gallery {os.fspath(gallery)!r} exists: give a new file name")
    probes = min(probes, identities)
    t_all = time.monotonic()
    _p(quiet, f"pyfacematch demo: synthetic faces ({SCHEME}, 200 landmarks), no data needed")

    # 1. key model, learned on other people
    t = time.monotonic()
    tr = FaceSynthesizer(SCHEME, train_identities, seed=seed + 1000)
    labels = np.repeat(np.arange(train_identities), train_faces)
    faces = tr.sample(labels, seed=seed + 1001, occluder="random")
    km = KeyModel.fit(faces.landmarks, faces.identities, scheme=SCHEME, visibility=faces.visibility)
    t_fit = time.monotonic() - t
    _p(
        quiet,
        f"  key model  learned on {len(labels):,} faces of {train_identities} other synthetic "
        f"people: {km.dim}-number keys in {km.n_blocks} face-region blocks ({t_fit:.1f} s)",
    )

    # 2. gallery
    t = time.monotonic()
    people = FaceSynthesizer(SCHEME, identities, seed=seed)
    names = [f"person-{i:06d}" for i in range(identities)]
    g = Gallery(dim=km.dim, path=gallery, blocks=km.blocks, backend=backend)
    try:
        step = 50_000
        gallery_keys = np.empty((identities, km.dim), np.float32)
        for a in range(0, identities, step):
            b = min(identities, a + step)
            f = people.sample(np.arange(a, b), seed=seed + 1, chunk=step)
            keys, masks = km.encode(f.landmarks, f.visibility, on_error="raise")
            g.enroll_many(names[a:b], keys, masks)
            gallery_keys[a:b] = keys
        t_enroll = time.monotonic() - t
        _p(
            quiet,
            f"  gallery    {identities:,} people enrolled (landmarks → key → {backend} index) "
            f"in {t_enroll:.1f} s, {identities / t_enroll:,.0f} people/s",
        )

        # 3. probes: new faces of enrolled people, clean and masked
        rng = np.random.default_rng(seed + 2)
        who = rng.choice(identities, probes, replace=False)
        truth = np.array([names[i] for i in who], object)
        res: dict[str, Any] = {}
        t_search = 0.0
        n_search = 0
        for cond, occ in (("clean", "none"), ("masked", "mask")):
            f = people.sample(who, seed=seed + 3, occluder=occ)
            keys, masks, status = km.encode(
                f.landmarks, f.visibility, on_error="flag", return_status=True
            )
            ok = status == 0
            t = time.monotonic()
            r = g.identify_arrays(keys[ok], k=1, masks=masks[ok])
            t_search += time.monotonic() - t
            n_search += int(ok.sum())
            hits = np.zeros(probes, bool)
            hits[ok] = r.identities[:, 0] == truth[ok]
            res[cond] = float(hits.mean())
            if cond == "masked":
                # plain cosine over the whole key (hidden blocks count as zeros)
                _, idx = pf.topk(keys[ok], gallery_keys, 1)
                plain = np.zeros(probes, bool)
                plain[ok] = idx[:, 0] == who[ok]
                res["masked_plain"] = float(plain.mean())
        rate = n_search / t_search if t_search > 0 else float("nan")
        _p(quiet, f"  identify   each probe searched 1:N against all {identities:,} people")
        _p(
            quiet,
            f"             {probes:,} clean probes:  right person ranked first "
            f"{100 * res['clean']:.1f} %",
        )
        line = (
            f"             {probes:,} masked probes: right person ranked first "
            f"{100 * res['masked']:.1f} % (masked cosine"
        )
        if "masked_plain" in res:
            line += f"; plain cosine {100 * res['masked_plain']:.1f} %"
        _p(quiet, line + ")")
        threads = pf.get_num_threads()
        _p(
            quiet,
            f"  speed      {rate:,.0f} probes/s on {threads} thread{'s' * (threads != 1)} "
            f"({n_search:,} searches in {t_search:.1f} s)",
        )
        info = g.index_info()
    finally:
        g.close()
    total = time.monotonic() - t_all
    _p(quiet, f"  total      {total:.1f} s" + (f"; gallery kept in {gallery}" if gallery else ""))
    return {
        "command": "demo",
        "scheme": SCHEME,
        "identities": identities,
        "probes_per_condition": probes,
        "key_dim": km.dim,
        "key_blocks": km.n_blocks,
        "backend": info.get("backend"),
        "rank1_clean": res["clean"],
        "rank1_masked": res["masked"],
        "rank1_masked_plain_cosine": res.get("masked_plain"),
        "probes_per_second": rate,
        "enroll_per_second": identities / t_enroll,
        "seconds_fit": t_fit,
        "seconds_enroll": t_enroll,
        "seconds_search": t_search,
        "seconds_total": total,
        "threads": pf.get_num_threads(),
        "python": sys.version.split()[0],
    }
