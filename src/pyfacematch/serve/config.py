"""Service configuration: command-line flags and an equivalent TOML file.

A configuration file holds the same settings as the flags (flags given on the command line win)::

    host = "127.0.0.1"
    port = 8080
    keys = "keys.toml"          # API keys file (see pyfacematch.serve.auth); relative to this file
    batching = true
    max_wait_ms = 1.5
    max_batch = 256
    max_inflight = 2            # core calls of one gallery at once (default: the cores)
    max_refill_ms = 20.0        # a freed slot waits this long at most for answered clients' next requests
    max_body_bytes = 8388608
    max_probes = 1024
    threads = 4                 # worker threads running gallery calls
    ssl_certfile = "cert.pem"   # optional TLS
    ssl_keyfile = "key.pem"
    log_level = "info"
    embedder = "dlib"           # photo uploads (multipart): an embedder spec (create_embedder)
    embed_workers = 1           # processes running it (the event loop never decodes a photo)
    max_image_bytes = 10485760  # per uploaded image; 413 beyond
    max_image_pixels = 25000000 # from the image header, before decoding (decompression bombs)
    max_images = 16             # images per request

    [galleries]
    shop = "/data/shop.db"

    [gallery_keys]              # encrypted galleries: master key file per gallery (optional;
    shop = "/secrets/shop.key"  # default: PYFACEMATCH_GALLERY_KEY, else the key file beside the db)
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pyfacematch.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ServeConfig", "load_config", "parse_gallery_flag", "parse_gallery_key_flag"]

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass
class ServeConfig:
    """Settings of a service (see the module docstring for each).

    Attributes
    ----------
    galleries : dict name -> path
        Gallery files to serve, opened for writing (one writer per file).
    keys : str or None
        API keys file; None serves without authentication (loopback hosts only).
    """

    galleries: dict[str, str] = field(default_factory=dict)
    gallery_keys: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8000
    keys: str | None = None
    batching: bool = True
    max_wait_ms: float = 1.5
    max_batch: int = 256
    #: core calls of one gallery at once; None: the machine's cores (each call runs on one core
    #: thread unless ``pyfacematch serve --threads N`` says otherwise)
    max_inflight: int | None = None
    max_refill_ms: float = 20.0
    max_body_bytes: int = 8 * 1024 * 1024
    max_probes: int = 1024
    threads: int = 4
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    log_level: str = "info"
    embedder: str | None = None
    embed_workers: int = 1
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 25_000_000
    max_images: int = 16

    def check(self) -> ServeConfig:
        """Validate; raise :class:`InputError` saying what to change."""
        if not self.galleries:
            raise InputError("no gallery to serve: give --gallery name=path (repeatable)")
        for n in self.galleries:
            if not n or "/" in n:
                raise InputError(f"gallery names are non-empty and have no '/', got {n!r}")
        for n, kf in self.gallery_keys.items():
            if n not in self.galleries:
                raise InputError(
                    f"--gallery-key {n}=… names no served gallery; served: {sorted(self.galleries)}"
                )
            if not os.path.isfile(kf):
                raise InputError(
                    f"key file {kf!r} of gallery {n!r} does not exist: give the file that holds "
                    "the gallery's master key"
                )
        if self.keys is None and self.host not in _LOOPBACK:
            raise InputError(
                f"refusing to serve on {self.host!r} without API keys: give --keys FILE "
                "(only loopback hosts may run without authentication)"
            )
        if self.max_inflight is None:
            self.max_inflight = max(1, os.cpu_count() or 1)
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise InputError("TLS needs both ssl_certfile and ssl_keyfile")
        for name, lo in (
            ("port", 0),
            ("max_batch", 1),
            ("max_inflight", 1),
            ("max_body_bytes", 1),
            ("threads", 1),
            ("embed_workers", 1),
            ("max_image_bytes", 1),
            ("max_image_pixels", 1),
            ("max_images", 1),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise InputError(f"{name} must be an integer >= {lo}, got {v!r}")
        if self.embedder is not None and (not isinstance(self.embedder, str) or not self.embedder):
            raise InputError(
                f"embedder must be a spec such as 'dlib' or 'onnx:/models/face.onnx', got "
                f"{self.embedder!r}"
            )
        if self.max_probes < 1:
            raise InputError(f"max_probes must be >= 1, got {self.max_probes!r}")
        if not 0.0 <= float(self.max_refill_ms) <= 1000.0:
            raise InputError(f"max_refill_ms must be in [0, 1000], got {self.max_refill_ms!r}")
        if not 0.0 <= float(self.max_wait_ms) <= 1000.0:
            raise InputError(f"max_wait_ms must be in [0, 1000], got {self.max_wait_ms!r}")
        return self


def parse_gallery_flag(s: str) -> tuple[str, str]:
    """``name=path`` of ``--gallery`` as ``(name, path)``."""
    name, sep, path = s.partition("=")
    if not sep or not name or not path:
        raise InputError(f"--gallery takes name=path (e.g. shop=/data/shop.db), got {s!r}")
    return name, path


def parse_gallery_key_flag(s: str) -> tuple[str, str]:
    """``name=FILE`` of ``--gallery-key`` as ``(name, file)``."""
    name, sep, path = s.partition("=")
    if not sep or not name or not path:
        raise InputError(f"--gallery-key takes name=FILE (e.g. shop=/secrets/shop.key), got {s!r}")
    return name, path


def load_config(path: str | os.PathLike[str] | None, **overrides: Any) -> ServeConfig:
    """A :class:`ServeConfig` from a TOML file (or defaults), then ``overrides`` not None.

    Relative file paths in the file (galleries, keys, TLS files) are relative to the file.
    """
    cfg = ServeConfig()
    names = {f.name for f in fields(ServeConfig)}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text("utf-8"))
        except OSError as exc:
            raise InputError(f"cannot read the configuration {os.fspath(p)!r}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"configuration {os.fspath(p)!r} is not TOML: {exc}") from exc
        unknown = set(data) - names
        if unknown:
            raise InputError(
                f"{os.fspath(p)}: unknown settings {sorted(unknown)}; known: {sorted(names)}"
            )
        base = p.resolve().parent

        def rel(v: Any) -> str:
            return os.fspath(base / v) if isinstance(v, str) else v

        for k, v in data.items():
            if k in ("galleries", "gallery_keys"):
                if not isinstance(v, dict):
                    raise InputError(f"{os.fspath(p)}: [{k}] must be a table name = path")
                v = {str(n): rel(g) for n, g in v.items()}
            elif k in ("keys", "ssl_certfile", "ssl_keyfile"):
                v = rel(v)
            setattr(cfg, k, v)
    for k, v in overrides.items():
        if k not in names:
            raise InputError(f"unknown setting {k!r}")
        if v is None:
            continue
        if k in ("galleries", "gallery_keys"):
            v = {**getattr(cfg, k), **v}
        setattr(cfg, k, v)
    return cfg.check()
