"""The exact merge of per-shard top-k lists: one gallery's ranking, ties broken the same way.

Each identity lives in exactly one shard, so the global top-k identities of a probe are among the
union of the shards' top-k lists; sorting that union by (score descending, best template id
ascending) gives the order one gallery holding everything returns: its kernel ranks template rows
by score with ties to the lower row, and a gallery loaded from its file holds rows in template-id
order, which the shards keep (:func:`~pyfacematch.distributed.shards.split_gallery`). Scores are
compared as the float32 values the kernels produced; NaN (nothing comparable) and padding go last.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["merge_topk"]


def merge_topk(
    parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge shards' (scores (M, ki), identities (M, ki), tids (M, ki)) into the top ``k``.

    Returns (scores float32 (M, k'), identities object (M, k'), tids int64 (M, k')) with
    k' = min(k, sum of ki); padding is (NaN, None, -1).
    """
    m = parts[0][0].shape[0] if parts else 0
    s = np.concatenate([p[0].astype(np.float32, copy=False) for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    tids = np.concatenate([p[2].astype(np.int64, copy=False) for p in parts], axis=1)
    width = min(int(k), s.shape[1])
    if s.shape[1] == 0:
        return s, ids.reshape(m, 0), tids
    valid = (tids >= 0) & ~np.isnan(s)
    key_s = np.where(valid, -s, np.float32(np.inf))  # descending score, invalid last
    key_t = np.where(valid, tids, np.iinfo(np.int64).max)
    order = np.lexsort((key_t, key_s), axis=1)[:, :width]
    out_s = np.take_along_axis(s, order, 1)
    out_i = np.take_along_axis(ids, order, 1)
    out_t = np.take_along_axis(tids, order, 1)
    ok = np.take_along_axis(valid, order, 1)
    out_s = np.where(ok, out_s, np.float32(np.nan)).astype(np.float32)
    out_i = out_i.copy()
    out_i[~ok] = None
    out_t = np.where(ok, out_t, -1)
    return out_s, out_i, out_t
