"""Developer tool: rebuild the shipped scheme files from their sources.

Not imported by the library. Run from the repository root::

    pip download --no-deps mediapipe==0.10.21 -d /tmp/mp   # only reads one .py file from it
    python -m pyfacematch.schemes._build /work/shared/data/faces_johns.npz /tmp/mp/mediapipe-0.10.21-*.whl

Sources of each fact recorded in the JSON files:

* iBUG-68 regions and left/right pairs: the published 68-point layout
  (0-16 contour, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth).
* MediaPipe-478 named regions (lips, eyes, brows, irises, face oval, nose):
  the point sets of ``mediapipe/python/solutions/face_mesh_connections.py``
  in the mediapipe 0.10.21 wheel (Apache-2.0). Mesh points that no named set
  lists are assigned by a documented geometric rule (see ``_mp_regions``).
* Left/right pairs of MediaPipe: mirror the Procrustes mean about its
  symmetry axis and match points by optimal assignment.
* Mean shapes: generalised Procrustes analysis (similarity, 2-D or 3-D) of
  the 54 real faces in ``faces_johns.npz``.
* ``mean_depth`` of iBUG-68 (used only by :mod:`pyfacematch.synth` for head
  pose): the depth of the MediaPipe point closest on average to each iBUG
  point on the same 54 photos.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from pyfacematch._similarity import similarity_fit
from pyfacematch.keys.schemes import default_distance_pairs, mirror_name

HERE = Path(__file__).resolve().parent

# Subject's left/right: "right_eye" is the eye on the image's left side.
IBUG_REGIONS = [
    ("contour_right", range(0, 5)),
    ("contour_lower", range(5, 12)),
    ("contour_left", range(12, 17)),
    ("right_brow", range(17, 22)),
    ("left_brow", range(22, 27)),
    ("nose_bridge", range(27, 31)),
    ("nose_lower", range(31, 36)),
    ("right_eye", range(36, 42)),
    ("left_eye", range(42, 48)),
    ("mouth", range(48, 68)),
]
IBUG_PAIRS = (
    [(i, 16 - i) for i in range(8)]
    + [(17 + i, 26 - i) for i in range(5)]
    + [(31, 35), (32, 34)]
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) mapping src (P, D) onto dst; returns mapped src."""
    scale, rot, trans = similarity_fit(src[None], dst)
    return scale[0] * np.asarray(src, np.float64) @ rot[0].T + trans[0]


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0)
    return x / np.sqrt((x**2).sum(1).mean())


def gpa(shapes: np.ndarray, iters: int = 50) -> np.ndarray:
    """Generalised Procrustes mean of shapes (n, P, D): centred, unit RMS radius, upright."""
    ref = _normalise(np.mean([_normalise(s) for s in shapes], axis=0))
    for _ in range(iters):
        aligned = np.stack([_similarity(_normalise(s), ref) for s in shapes])
        new = _normalise(aligned.mean(0))
        new = _similarity(new, ref)  # keep the frame of the first reference (image axes)
        new = _normalise(new)
        if np.abs(new - ref).max() < 1e-10:
            ref = new
            break
        ref = new
    return ref


def _level(mean: np.ndarray, right_eye: list[int], left_eye: list[int]) -> np.ndarray:
    """Rotate in the image plane so that the eye centres lie on a horizontal line."""
    v = mean[left_eye, :2].mean(0) - mean[right_eye, :2].mean(0)
    ang = -np.arctan2(v[1], v[0])
    c, s = np.cos(ang), np.sin(ang)
    out = mean.copy()
    out[:, :2] = mean[:, :2] @ np.array([[c, -s], [s, c]]).T
    return out


_distance_pairs = default_distance_pairs  # the documented rule lives with the loader


def _scheme_dict(
    name: str,
    description: str,
    mean: np.ndarray,
    regions: list[str],
    point_region: list[int],
    pairs: list[tuple[int, int]],
    sources: list[str],
    **extra: object,
) -> dict:
    members = {r: [p for p, q in enumerate(point_region) if q == i] for i, r in enumerate(regions)}
    d = {
        "format": "pyfacematch.scheme",
        "version": 1,
        "name": name,
        "description": description,
        "n_points": int(mean.shape[0]),
        "dims": int(mean.shape[1]),
        "handedness": "subject",
        "regions": regions,
        "point_region": [int(x) for x in point_region],
        "pairs": [[int(a), int(b)] for a, b in sorted((min(p), max(p)) for p in pairs)],
        "distance_pairs": {r: _distance_pairs(mean, members[r]) for r in regions},
        "mean_shape": np.round(mean, 6).tolist(),
        "sources": sources,
    }
    d.update(extra)
    return d


def _read_connections(wheel: str) -> dict[str, set[int]]:
    with zipfile.ZipFile(wheel) as z:
        src = z.read("mediapipe/python/solutions/face_mesh_connections.py").decode()
    ns: dict = {}
    exec(compile(src, "face_mesh_connections.py", "exec"), ns)  # plain data: frozensets of pairs
    return {k: {i for e in v for i in e} for k, v in ns.items() if k.startswith("FACEMESH_")}


def _mp_regions(mean: np.ndarray, conn: dict[str, set[int]]) -> tuple[list[str], list[int]]:
    """Regions of the 478 MediaPipe points.

    Named sets from face_mesh_connections give brows, eyes, irises (+ their centres
    468 and 473), lips (``mouth``), nose and face oval. Geometric rule on the mean shape
    (image axes, y down, subject's right on the image's left):

    * nose split at the mid-height between the nose-bridge top (168) and the tip (1):
      above -> ``nose_bridge``, below -> ``nose_lower`` (a surgical mask covers the latter);
    * face-oval points above the eye line -> ``contour_upper``; below the mouth-corner
      line -> ``contour_lower``; between -> ``contour_right``/``contour_left`` by side;
    * every other mesh point: above the mean brow line -> ``forehead``; below the
      mouth-corner line and between the mouth corners -> ``chin``; within 0.08 (mean-shape
      units, unit RMS radius) of a named point -> that point's region; otherwise a cheek,
      ``cheek_{right,left}_{upper,lower}`` by side and split at the nose-tip height.
    """
    regions = [
        "forehead",
        "right_brow",
        "left_brow",
        "right_eye",
        "left_eye",
        "right_iris",
        "left_iris",
        "nose_bridge",
        "nose_lower",
        "mouth",
        "cheek_right_upper",
        "cheek_left_upper",
        "cheek_right_lower",
        "cheek_left_lower",
        "chin",
        "contour_upper",
        "contour_right",
        "contour_left",
        "contour_lower",
    ]
    rid = {r: i for i, r in enumerate(regions)}
    pr = np.full(478, -1)
    named = {
        "right_brow": conn["FACEMESH_RIGHT_EYEBROW"],
        "left_brow": conn["FACEMESH_LEFT_EYEBROW"],
        "right_eye": conn["FACEMESH_RIGHT_EYE"],
        "left_eye": conn["FACEMESH_LEFT_EYE"],
        "right_iris": conn["FACEMESH_RIGHT_IRIS"] | {468},
        "left_iris": conn["FACEMESH_LEFT_IRIS"] | {473},
        "mouth": conn["FACEMESH_LIPS"],
    }
    for r, s in named.items():
        pr[sorted(s)] = rid[r]
    y = mean[:, 1]
    x = mean[:, 0]
    mid_x = mean[[168, 6, 1], 0].mean()
    nose_split = 0.5 * (y[168] + y[1])
    for p in conn["FACEMESH_NOSE"]:
        pr[p] = rid["nose_bridge"] if y[p] < nose_split else rid["nose_lower"]
    eye_y = mean[[33, 133, 263, 362], 1].mean()
    mouth_y = mean[[61, 291], 1].mean()
    for p in conn["FACEMESH_FACE_OVAL"]:
        if y[p] < eye_y:
            pr[p] = rid["contour_upper"]
        elif y[p] > mouth_y:
            pr[p] = rid["contour_lower"]
        else:
            pr[p] = rid["contour_right"] if x[p] < mid_x else rid["contour_left"]
    brow_y = mean[sorted(conn["FACEMESH_RIGHT_EYEBROW"] | conn["FACEMESH_LEFT_EYEBROW"]), 1].mean()
    labelled = np.flatnonzero(pr >= 0)
    labelled = labelled[labelled < 468]
    mouth_x = sorted(x[[61, 291]])
    for p in (int(v) for v in np.flatnonzero(pr < 0)):
        dist = np.linalg.norm(mean[labelled, :2] - mean[p, :2], axis=1)
        side = "right" if x[p] < mid_x else "left"
        if y[p] < brow_y:
            pr[p] = rid["forehead"]
        elif y[p] > mouth_y and mouth_x[0] < x[p] < mouth_x[1]:
            pr[p] = rid["chin"]
        elif dist.min() < 0.08:
            pr[p] = pr[labelled[np.argmin(dist)]]
        else:
            level = "upper" if y[p] < y[1] else "lower"
            pr[p] = rid[f"cheek_{side}_{level}"]
    return regions, pr.tolist()


def _mirror_pairs(mean: np.ndarray, n_mesh: int) -> list[tuple[int, int]]:
    """Left/right pairs from the mean shape: mirror x about the midline, optimal matching."""
    x = mean[:n_mesh, :2].copy()
    mid = np.median(x[:, 0])
    # refine the midline as the x that best matches the mirrored cloud
    for _ in range(3):
        m = x.copy()
        m[:, 0] = 2 * mid - m[:, 0]
        cost = np.linalg.norm(x[:, None] - m[None], axis=-1)
        r, c = linear_sum_assignment(cost)
        mid = np.mean((x[r, 0] + x[c, 0]) / 2)
    pairs = set()
    for a, b in zip(r, c):
        if a != b and c[b] == a:  # keep only mutual matches (an involution)
            pairs.add((min(a, b), max(a, b)))
    return sorted(pairs)


def build(npz: str, wheel: str) -> None:
    from pyfacematch.core.arrayfile import SafeNpz

    with SafeNpz(npz) as z:  # sizes checked before inflating, no pickles
        data = {k: z[k] for k in ("landmarks", "landmarks_mp478")}
    l68 = data["landmarks"].astype(np.float64)
    l478 = data["landmarks_mp478"].astype(np.float64)
    src_data = "Procrustes mean of the 54 faces of faces_johns.npz (dlib examples/johns photos)"

    # --- ibug68 -------------------------------------------------------------------------
    regions = [r for r, _ in IBUG_REGIONS]
    pr = [0] * 68
    for i, (_, rng) in enumerate(IBUG_REGIONS):
        for p in rng:
            pr[p] = i
    mean68 = _level(gpa(l68), list(range(36, 42)), list(range(42, 48)))
    # depth for synthetic head pose: nearest MediaPipe point on the same photos
    dists = np.linalg.norm(l68[:, :, None, :] - l478[:, None, :468, :2], axis=-1).mean(0)
    nearest = dists.argmin(1)
    mean478 = _level(gpa(l478), [33, 133], [263, 362])
    # express the depth in the ibug mean's units: ratio of the two in-plane RMS radii
    sub = mean478[nearest]
    c2 = sub[:, :2] - sub[:, :2].mean(0)
    scale = np.sqrt((mean68**2).sum() / (c2**2).sum())
    mean_depth = (sub[:, 2] - sub[:, 2].mean()) * scale
    d68 = _scheme_dict(
        "ibug68",
        "iBUG 300-W 68-point layout (dlib shape_predictor_68, 300-W); 2-D. Left/right are the "
        "subject's. mean_depth: approximate depth per point (same units as mean_shape), used "
        "only to synthesise head pose.",
        mean68,
        regions,
        pr,
        IBUG_PAIRS,
        [
            "regions/pairs: published iBUG 68-point layout",
            "mean_shape: " + src_data,
            "mean_depth: nearest MediaPipe mesh point on the same photos",
        ],
        mean_depth=np.round(mean_depth, 6).tolist(),
    )

    # --- mediapipe478 ------------------------------------------------------------------
    conn = _read_connections(wheel)
    regions, pr478 = _mp_regions(mean478, conn)
    pairs = _mirror_pairs(mean478, 468)
    pairs += [(468 + i, 473 + i) for i in range(5)]  # iris centre + 4 iris points
    # make regions mirror-symmetric: the point on the subject's right side (image left)
    # decides, its partner takes the mirrored region
    for a, b in pairs:
        right, left = (a, b) if mean478[a, 0] < mean478[b, 0] else (b, a)
        pr478[left] = regions.index(mirror_name(regions[pr478[right]]))
    d478 = _scheme_dict(
        "mediapipe478",
        "MediaPipe Face Mesh: 468 mesh points + 10 iris points (468-472 right iris, 468 its "
        "centre; 473-477 left iris, 473 its centre); 3-D (x, y image axes, z depth). "
        "Left/right are the subject's. Region rule: see pyfacematch/schemes/_build.py:_mp_regions.",
        mean478,
        regions,
        pr478,
        pairs,
        [
            "named regions: mediapipe 0.10.21 face_mesh_connections (Apache-2.0)",
            "other mesh points: geometric rule on the mean shape (_mp_regions)",
            "pairs: mirrored mean shape + optimal assignment; iris points by index",
            "mean_shape: " + src_data,
        ],
    )

    # --- dense200 ----------------------------------------------------------------------
    named_points = set().union(
        *(
            conn["FACEMESH_" + k]
            for k in (
                "LIPS",
                "LEFT_EYE",
                "RIGHT_EYE",
                "LEFT_EYEBROW",
                "RIGHT_EYEBROW",
                "FACE_OVAL",
                "NOSE",
            )
        )
    )
    d200 = _dense200(mean478, regions, np.array(pr478), pairs, named_points, src_data)

    for d in (d68, d478, d200):
        (HERE / f"{d['name']}.json").write_text(json.dumps(d, separators=(",", ":")) + "\n")
        print(
            d["name"],
            d["n_points"],
            {r: d["point_region"].count(i) for i, r in enumerate(d["regions"])},
        )


def _dense200(mean478, regions478, pr478, pairs478, named_points, src_data) -> dict:
    """200 points of the MediaPipe mesh: every named contour point (brows, eyes, lips, nose,
    face oval: 152 points) + the two iris centres, then farthest-point sampling of the
    remaining mesh points (forehead, cheeks, chin, …), symmetric: each sampled point brings its
    mirror partner."""
    partner = {}
    for a, b in pairs478:
        partner[a] = b
        partner[b] = a
    keep_regions = [r for r in regions478 if r not in ("right_iris", "left_iris")]
    chosen = sorted(named_points)
    chosen_set = set(chosen)
    pts = mean478[:468, :2]
    dmin = np.min(np.linalg.norm(pts[:, None] - pts[chosen][None], axis=-1), axis=1)
    chosen += [468, 473]
    while len(chosen) < 200:
        cand = [p for p in range(468) if p not in chosen_set]
        p = max(cand, key=lambda q: (dmin[q], -q))
        group = [p]
        if p in partner and partner[p] not in chosen_set and len(chosen) <= 198:
            group.append(partner[p])
        for q in group:
            chosen.append(q)
            chosen_set.add(q)
            dmin = np.minimum(dmin, np.linalg.norm(pts - pts[q], axis=1))
    idx = sorted(chosen[:200])
    pos = {p: i for i, p in enumerate(idx)}
    reg_of = []
    for p in idx:
        r = regions478[pr478[p]]
        if r == "right_iris":
            r = "right_eye"
        elif r == "left_iris":
            r = "left_eye"
        reg_of.append(keep_regions.index(r))
    pairs = [(pos[a], pos[b]) for a, b in pairs478 if a in pos and b in pos]
    mean = _normalise(mean478[idx])
    return _scheme_dict(
        "dense200",
        "Dense 200-point layout: a subset of the MediaPipe Face Mesh (subset_of/subset_indices). "
        "All 152 named points (brows, eyes, lips, nose, face oval), the two iris "
        "centres (in the eye regions), and 46 further mesh points chosen by symmetric "
        "farthest-point sampling on the mean shape (forehead, cheeks). 3-D like MediaPipe; "
        "use the first two coordinates of mean_shape for 2-D landmarks. Left/right are the "
        "subject's.",
        mean,
        keep_regions,
        reg_of,
        pairs,
        ["subset and regions: mediapipe478 scheme", "mean_shape: " + src_data],
        subset_of="mediapipe478",
        subset_indices=[int(i) for i in idx],
    )


if __name__ == "__main__":
    build(sys.argv[1], sys.argv[2])
