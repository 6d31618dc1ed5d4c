"""Synthetic templates of the gallery benchmark protocol (issue 4), generated in seeded chunks.

Identity ``j`` has a centre ``c_j`` uniform on the unit sphere of dimension d; a template of it
is ``normalise(c_j + 0.734 · g / √d)`` with ``g`` standard normal, so two templates of one
identity have cosine ≈ 0.65 and templates of two identities ≈ 0. The gallery holds one template
per identity; a probe is a fresh template of an enrolled identity (mated) or of an identity that
is not enrolled (non-mated). Centres are regenerated per chunk from the seed, so a
million-identity gallery does not need its centres kept in memory.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["SyntheticIdentities", "NOISE"]

#: noise scale of one template around its identity's centre (cosine ≈ 0.65 between two)
NOISE = 0.734


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


class SyntheticIdentities:
    """``n`` synthetic identities of dimension ``d``.

    Parameters
    ----------
    n : int
        Number of identities (gallery rows ``0 … n-1``).
    d : int
        Template dimension.
    seed : int
        Seed of the centres and of the gallery templates.
    chunk : int
        Identities per generated chunk.
    """

    def __init__(self, n: int, d: int, seed: int = 0, chunk: int = 8192) -> None:
        self.n, self.d, self.seed, self.chunk = int(n), int(d), int(seed), int(chunk)

    def _centres(self, c: int) -> np.ndarray:
        s = c * self.chunk
        m = min(self.chunk, self.n - s)
        rng = np.random.default_rng([self.seed, c, 1])
        return _unit(rng.standard_normal((m, self.d), dtype=np.float32))

    def _noisy(self, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        g = rng.standard_normal(centres.shape, dtype=np.float32)
        return _unit(centres + g * np.float32(NOISE / np.sqrt(self.d)))

    def gallery(self) -> np.ndarray:
        """float32 (n, d): one unit template per identity (row j = identity j)."""
        out = np.empty((self.n, self.d), np.float32)
        for c in range((self.n + self.chunk - 1) // self.chunk):
            s = c * self.chunk
            cen = self._centres(c)
            out[s : s + len(cen)] = self._noisy(cen, np.random.default_rng([self.seed, c, 2]))
        return out

    def probes(
        self, m: int, seed: int, batch: int = 4096
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream ``m`` mated probes in batches.

        Yields
        ------
        probes : float32 (b, d)
            Fresh templates of enrolled identities.
        identity : int64 (b,)
            Gallery row of each probe's identity.
        """
        rng = np.random.default_rng([self.seed, int(seed), 3])
        n_chunks = (self.n + self.chunk - 1) // self.chunk
        done = 0
        while done < m:
            c = int(rng.integers(n_chunks))
            cen = self._centres(c)
            b = min(batch, m - done, len(cen))
            rows = np.sort(rng.choice(len(cen), b, replace=False))
            yield self._noisy(cen[rows], rng), rows.astype(np.int64) + c * self.chunk
            done += b

    def mated_probes(self, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """All of :meth:`probes` at once: float32 (m, d) and int64 (m,)."""
        ps, ids = zip(*self.probes(m, seed))
        return np.concatenate(ps), np.concatenate(ids)
