"""Identity slot → template ids, without a Python list per identity until one is touched.

A gallery of a million identities with one template each opened with a dict of a million
one-element lists: about a second (several on a busy machine) before the first answer.
:class:`SlotTids` holds that layout as one int64 array (slot ``i`` → ``[base[i]]``) and makes a
list for a slot only when it is read for a change or looked up; it behaves as the dict it replaces.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping, MutableSequence, Sequence
from typing import Any, overload

import numpy as np

__all__ = ["NameSlots", "SlotNames", "SlotTids"]


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

    def __init__(self, names: Sequence[Any]) -> None:
        self._names: Sequence[Any] | None = names
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


class SlotNames(MutableSequence["str | None"]):
    """``slot → identity name`` over UTF-8 bytes, a name decoded only when it is read.

    A serving folder stores every row's name one after another (``labels.bin``) with its byte
    offset and length; a list of ten million ``str`` would cost seconds and about 60 bytes a
    name before the first answer, while an answer reads k names. Slots appended later, and
    slots changed (a removal sets ``None``), live in ordinary Python containers.

    Parameters
    ----------
    blob : bytes
        The names, UTF-8.
    at : int64 array, shape (S, 2)
        Byte offset and length of slot ``i``'s name in ``blob``.
    """

    def __init__(self, blob: bytes, at: np.ndarray) -> None:
        self._blob = blob
        self._at = np.ascontiguousarray(at, np.int64).reshape(-1, 2)
        self._base = int(self._at.shape[0])
        self._over: dict[int, str | None] = {}
        self._extra: list[str | None] = []

    def __len__(self) -> int:
        return self._base + len(self._extra)

    def _index(self, i: int) -> int:
        n = len(self)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(i)
        return j

    def _base_name(self, j: int) -> str | None:
        if j in self._over:
            return self._over[j]
        start, length = (int(v) for v in self._at[j])
        return self._blob[start : start + length].decode("utf-8")

    @overload
    def __getitem__(self, i: int) -> str | None: ...
    @overload
    def __getitem__(self, i: slice) -> list[str | None]: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        j = self._index(i)
        return self._base_name(j) if j < self._base else self._extra[j - self._base]

    @overload
    def __setitem__(self, i: int, v: str | None) -> None: ...
    @overload
    def __setitem__(self, i: slice, v: Iterable[str | None]) -> None: ...
    def __setitem__(self, i: Any, v: Any) -> None:
        if isinstance(i, slice):
            raise TypeError("slot names are set one slot at a time")
        j = self._index(i)
        if j < self._base:
            self._over[j] = v
        else:
            self._extra[j - self._base] = v

    def __delitem__(self, i: Any) -> None:
        raise TypeError("slots are never deleted (a removed identity's slot holds None)")

    def insert(self, i: int, v: str | None) -> None:
        if int(i) != len(self):
            raise TypeError("slot names are only appended")
        self._extra.append(v)

    def __iter__(self) -> Iterator[str | None]:
        for j in range(self._base):
            yield self._base_name(j)
        yield from list(self._extra)
