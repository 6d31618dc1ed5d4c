"""Probes prepared once and searched in several galleries (the shards a Dask worker holds).

A gallery checks and normalises every probe batch it is given (float64 norms, a pass over the
batch), and the binary backend packs each probe's signs after centring on the gallery's mean.
A worker that searches one probe chunk in several shards would repeat both per shard although
the result is the same: :class:`PreparedProbes` holds the checked, unit-norm float32 probes and
their block masks once, and memoises the probes' binary codes per centre, so shards that share
a centre (shards split by ``pyfacematch shard split`` carry the source gallery's centre) pack
them once. A shard with a centre of its own gets codes packed with it, so the answer never
depends on what was shared.
"""

from __future__ import annotations

import threading

import numpy as np

from pyfacematch.core import scoring

__all__ = ["PreparedProbes"]


class PreparedProbes:
    """Checked, unit-norm probes and their block masks, with binary codes memoised per centre.

    Make one with :meth:`pyfacematch.gallery.Gallery.prepare_probes` and pass it as the
    ``probes`` of :meth:`~pyfacematch.gallery.Gallery.identify_arrays` of any gallery of the
    same dimension and region blocks.

    Attributes
    ----------
    values : float32 (M, d), C-contiguous
        Unit-norm probes (read-only).
    masks : uint64 (M,) or None
        Probe block masks, checked against ``blocks``.
    blocks : int64 array or None
        The region blocks the masks were checked against.
    """

    __slots__ = ("_codes", "_lock", "blocks", "masks", "values")

    def __init__(
        self, values: np.ndarray, masks: np.ndarray | None, blocks: np.ndarray | None
    ) -> None:
        v = np.ascontiguousarray(values, np.float32)
        v.flags.writeable = False
        self.values = v
        self.masks = masks
        self.blocks = None if blocks is None else np.asarray(blocks, np.int64)
        self._codes: dict[bytes, np.ndarray] = {}
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # sent whole to another process (a Dask worker searching other shards): the checked
        # probes and the codes packed so far, not checked or packed again there
        with self._lock:
            codes = dict(self._codes)
        return (_rebuild, (self.values, self.masks, self.blocks, codes))

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    def codes(self, center: np.ndarray | None) -> np.ndarray:
        """The probes' sign codes after centring on ``center`` (packed once per centre)."""
        c = None if center is None else np.ascontiguousarray(center, np.float32)
        key = b"" if c is None else c.tobytes()
        with self._lock:
            got = self._codes.get(key)
        if got is None:
            got = scoring.pack_signs(self.values, center=c)
            with self._lock:
                got = self._codes.setdefault(key, got)
        return got

    def same_blocks(self, blocks: np.ndarray | None) -> bool:
        """Whether ``blocks`` are the region blocks these probes' masks were checked against."""
        if blocks is None or self.blocks is None:
            return blocks is None and self.blocks is None
        return bool(np.array_equal(np.asarray(blocks, np.int64), self.blocks))


def _rebuild(
    values: np.ndarray,
    masks: np.ndarray | None,
    blocks: np.ndarray | None,
    codes: dict[bytes, np.ndarray],
) -> PreparedProbes:
    """A :class:`PreparedProbes` from its pickled parts (see ``PreparedProbes.__reduce__``)."""
    p = PreparedProbes(values, masks, blocks)
    p._codes.update(codes)
    return p
