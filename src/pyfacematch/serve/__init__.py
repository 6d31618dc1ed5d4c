"""The HTTP matching service (``pyfacematch serve``).

One module per concern: ``config`` (flags and the TOML file), ``auth`` (hashed API keys, scopes,
rate limits), ``bodies`` (request bodies to validated arrays), ``problems`` (errors as RFC 9457
``application/problem+json``), ``batching`` (concurrent requests gathered into one gallery call),
``app`` (the Starlette application, metrics, OpenAPI schema) and ``server`` (uvicorn, logs).
The Python client lives in :mod:`pyfacematch.client`.
"""

from __future__ import annotations

from pyfacematch.serve.app import build_app
from pyfacematch.serve.auth import KeyStore, new_api_key
from pyfacematch.serve.config import ServeConfig, load_config
from pyfacematch.serve.server import run_server

__all__ = ["KeyStore", "ServeConfig", "build_app", "load_config", "new_api_key", "run_server"]
