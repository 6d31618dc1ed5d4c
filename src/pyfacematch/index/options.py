"""Backend options: each one's name, type and range, checked before a value reaches a backend.

A backend declares its options as a tuple of :class:`Option`; :func:`check_options` turns the
keyword options a caller gave (``Gallery(backend_options=…)``, :func:`~pyfacematch.index.make_backend`)
into validated values, or raises :class:`~pyfacematch.errors.BackendOptionError` naming the
backend, the option and its allowed range. Nothing unchecked reaches FAISS: an HNSW degree of 0
aborted the process, 1 crashed it and -1 grew it to 14 GB before these checks.

:func:`checked_int` and :func:`checked_float` check derived values read back from a gallery file
(tuned depths, code centres); they return None for a bad value so the caller can rebuild what is
derived instead of trusting it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyfacematch.errors import BackendOptionError

__all__ = ["Option", "check_options", "checked_float", "checked_int"]


@dataclass(frozen=True)
class Option:
    """One keyword option of a backend.

    Attributes
    ----------
    name : str
    kind : {"int", "float", "choice"}
        Integers accept Python and NumPy integers (not ``bool``); floats accept any finite real
        number (not ``bool``); a choice one of the strings in ``choices``.
    low, high : float
        Inclusive range.
    default : int or float
    doc : str
        What the option sets, in a few words (shown in error messages).
    """

    name: str
    kind: str
    low: float
    high: float
    default: int | float | str
    doc: str
    choices: tuple[str, ...] = ()

    def allowed(self) -> str:
        """The allowed values in words, e.g. ``"an integer in [2, 256]"``."""
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        what = "an integer" if self.kind == "int" else "a finite number"
        return f"{what} in [{_num(self.low)}, {_num(self.high)}]"

    def check(self, backend: str, value: Any) -> int | float | str:
        """``value`` as this option's type, or raise :class:`BackendOptionError`."""
        got: int | float | str | None
        if self.kind == "choice":
            got = value if isinstance(value, str) and value in self.choices else None
        elif self.kind == "int":
            got = checked_int(value, self.low, self.high)
        else:
            got = checked_float(value, self.low, self.high)
        if got is None:
            raise BackendOptionError(
                f"backend {backend!r}: option {self.name!r} ({self.doc}) must be "
                f"{self.allowed()}, got {value!r}",
                backend=backend,
                option=self.name,
            )
        return got


def check_options(backend: str, spec: Sequence[Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """Validate keyword options against a backend's declared options.

    Parameters
    ----------
    backend : str
        Backend name, for messages.
    spec : sequence of Option
        The options the backend knows.
    given : mapping of str to object
        The options the caller passed.

    Returns
    -------
    dict
        Every declared option: the given value converted (``int`` or ``float``), else its default.

    Raises
    ------
    BackendOptionError
        An unknown option (with the known ones and the closest name), or a value of the wrong
        type or outside its range.
    """
    known = {o.name: o for o in spec}
    for name in given:
        if name not in known:
            if known:
                close = difflib.get_close_matches(str(name), list(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                choices = ", ".join(f"{o.name} ({o.allowed()})" for o in spec)
                what = f"its options are {choices}{hint}"
            else:
                what = "it takes no options"
            raise BackendOptionError(
                f"backend {backend!r} has no option {name!r}: {what}",
                backend=backend,
                option=str(name),
            )
    return {o.name: o.check(backend, given[o.name]) if o.name in given else o.default for o in spec}


def checked_int(value: Any, low: float, high: float) -> int | None:
    """``value`` as an ``int`` when it is an integer (not a bool) in ``[low, high]``, else None."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    v = int(value)
    return v if low <= v <= high else None


def checked_float(value: Any, low: float, high: float) -> float | None:
    """``value`` as a ``float`` when it is a finite real number in ``[low, high]``, else None."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        return None
    v = float(value)
    return v if math.isfinite(v) and low <= v <= high else None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
