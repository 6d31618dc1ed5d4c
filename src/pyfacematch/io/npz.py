"""``.npz`` inputs: named arrays of templates or landmarks, ids, masks, visibility, extra fields.

Arrays: ``ids`` (or the id field name, or ``id``), ``templates`` (or ``template``) or
``landmarks``, optional ``masks`` (uint64 block bitmasks), ``visibility`` (bool ``(n, P)``) and
extra string fields (e.g. ``claim``). An archive is loaded whole, so each member is checked by
:class:`~pyfacematch.core.arrayfile.SafeNpz` first (declared sizes, a cap, zip-bomb ratios, no
pickles); inputs too large for the cap belong in ``.npy`` or Parquet, which are read in chunks.
"""

from __future__ import annotations

from pyfacematch.core.arrayfile import SafeNpz
from pyfacematch.errors import InputError
from pyfacematch.io.npy import ArraySource, check_array_shape
from pyfacematch.io.source import ReadOptions

__all__ = ["NpzSource"]


class NpzSource(ArraySource):
    """The arrays of an ``.npz`` archive, checked before loading."""

    def __init__(self, opts: ReadOptions) -> None:
        super().__init__(opts)
        name = opts.name
        with SafeNpz(opts.path, name) as z:
            keys = set(z.files)
            want = ("templates", "template") if opts.kind == "templates" else ("landmarks",)
            vk = next((k for k in want if k in keys), None)
            if vk is None:
                raise InputError(
                    f"{name}: expected an array named {' or '.join(want)!s}, "
                    f"found {', '.join(sorted(keys)) or 'none'}"
                )
            h = z.header(vk)  # refuse a wrong shape before loading anything
            check_array_shape(name, opts.kind, h.shape, h.dtype)
            self.values = z[vk]
            for k in (opts.id_field, "ids", "id"):
                if k in keys:
                    self.ids = z[k]
                    break
            if "masks" in keys or "mask" in keys:
                self.masks = z["masks" if "masks" in keys else "mask"]
            if opts.kind == "landmarks" and "visibility" in keys:
                self.vis = z["visibility"]
            for f in opts.fields:
                if f in keys:
                    self.extra[f] = z[f]
        self.finish()
