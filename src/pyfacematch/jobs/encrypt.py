"""``pyfacematch encrypt``: encrypt an existing plaintext gallery at rest, in place."""

from __future__ import annotations

import os
import time
from typing import Any

from pyfacematch.gallery.secret import FileKeyProvider, KeyProvider
from pyfacematch.jobs.common import open_gallery

__all__ = ["encrypt_gallery"]


def encrypt_gallery(
    gallery: str | os.PathLike[str], key_file: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Encrypt ``gallery`` in place (see :meth:`Gallery.encrypt_in_place`); a summary.

    ``key_file``: the master key file (created 0600 when missing); default
    ``PYFACEMATCH_GALLERY_KEY`` when set, else ``<gallery>.key``.
    """
    keys: KeyProvider | None = None if key_file is None else FileKeyProvider(key_file)
    t0 = time.perf_counter()
    g = open_gallery(gallery, key_provider=keys)
    try:
        n = g.encrypt_in_place()
    finally:
        g.close()
    return {
        "gallery": os.fspath(gallery),
        "encrypted": True,
        "templates": n,
        "master_key": keys.description
        if keys is not None
        else "PYFACEMATCH_GALLERY_KEY if set, else the key file beside the gallery",
        "seconds": round(time.perf_counter() - t0, 3),
    }
