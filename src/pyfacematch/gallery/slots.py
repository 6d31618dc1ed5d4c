"""Identity slot → template ids, without a Python list per identity until one is touched.

A gallery of a million identities with one template each opened with a dict of a million
one-element lists: about a second (several on a busy machine) before the first answer.
:class:`SlotTids` holds that layout as one int64 array (slot ``i`` → ``[base[i]]``) and makes a
list for a slot only when it is read for a change or looked up; it behaves as the dict it replaces.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import numpy as np

__all__ = ["NameSlots", "SlotTids"]


class SlotTids(MutableMapping[int, list[int]]):
    """``slot → list of template ids`` over an int64 array (one template per base slot).

    Parameters
    ----------
    base : int64 array, shape (S,)
        Template id of slots ``0 … S-1`` (one each). Later slots, and any slot whose list is
        read (and may then be changed in place), live in an ordinary dict.
    """

    def __init__(self, base: np.ndarray) -> None:
        self._base = np.asarray(base, np.int64)
        self._over: dict[int, list[int]] = {}
        self._gone: set[int] = set()  # base slots deleted

    def _in_base(self, k: object) -> bool:
        return (
            isinstance(k, (int, np.integer))
            and not isinstance(k, bool)
            and 0 <= int(k) < self._base.shape[0]
            and int(k) not in self._gone
        )

    def __getitem__(self, k: int) -> list[int]:
        v = self._over.get(k)
        if v is not None:
            return v
        if self._in_base(k):
            v = [int(self._base[int(k)])]
            self._over[int(k)] = v  # the caller may change it in place
            return v
        raise KeyError(k)

    def __setitem__(self, k: int, v: list[int]) -> None:
        self._gone.discard(int(k))
        self._over[int(k)] = v

    def __delitem__(self, k: int) -> None:
        if self._in_base(k):
            self._over.pop(int(k), None)
            self._gone.add(int(k))
        else:
            del self._over[k]

    def __iter__(self) -> Iterator[int]:
        for i in range(self._base.shape[0]):
            if i not in self._gone and i not in self._over:
                yield i
        yield from list(self._over)

    def __len__(self) -> int:
        n = self._base.shape[0]
        extra = sum(1 for k in self._over if not 0 <= k < n)
        return n - len(self._gone) + extra

    def values(self) -> Iterator[list[int]]:  # type: ignore[override]
        """The lists, without storing one per base slot (the tuning scan reads them all)."""
        for i in range(self._base.shape[0]):
            if i not in self._gone and i not in self._over:
                yield [int(self._base[i])]
        yield from list(self._over.values())


class NameSlots(MutableMapping[str, int]):
    """``identity name → slot`` for names known to be distinct, built at its first use.

    The dict of a million names costs about a second to build; a gallery that only identifies
    (the answers map slots to names through a list) never needs it. Any lookup or change builds
    it once from ``names`` (slot ``i`` ↔ ``names[i]``); afterwards it is that dict.
    """

    def __init__(self, names: list[Any]) -> None:
        self._names: list[Any] | None = names
        self._d: dict[str, int] | None = None

    def _dict(self) -> dict[str, int]:
        d = self._d
        if d is None:
            names = self._names or []
            d = self._d = dict(zip(names, range(len(names))))
            self._names = None
        return d

    def __getitem__(self, k: str) -> int:
        return self._dict()[k]

    def get(self, k: str, default: Any = None) -> Any:
        return self._dict().get(k, default)

    def __contains__(self, k: object) -> bool:
        return k in self._dict()

    def __setitem__(self, k: str, v: int) -> None:
        self._dict()[k] = v

    def __delitem__(self, k: str) -> None:
        del self._dict()[k]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())
