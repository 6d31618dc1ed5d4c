"""Shared fixtures: seeded generators, the SIMD levels this machine can run, the shared data folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import pyfacematch as pf
from pyfacematch.gallery.audit import AUDIT_ENV_VAR
from pyfacematch.gallery.secret import ENV_VAR

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PYFACEMATCH_SHARED_DATA", REPO.parent / "shared" / "data"))
TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Derived models (pyfacematch.embed.cache) go to a temporary folder, not the user's cache;
    the command lines the tests start inherit it."""
    before = os.environ.get("PYFACEMATCH_CACHE_DIR")
    os.environ["PYFACEMATCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("model-cache"))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYFACEMATCH_CACHE_DIR", None)
        else:
            os.environ["PYFACEMATCH_CACHE_DIR"] = before


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No gallery key or audit key from the environment: the security tests say which key they use
    (``pytestmark = pytest.mark.usefixtures("no_key_env")``)."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv(AUDIT_ENV_VAR, raising=False)


@pytest.fixture(params=pf.simd.available())
def simd_level(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs the test once per SIMD level available here, restoring the active level afterwards."""
    before = pf.simd.active()
    pf.simd.set_level(request.param)
    try:
        yield request.param
    finally:
        pf.simd.set_level(before)


# The whole suite's logs and output are scanned for templates (tests/_logscan.py).
from _logscan import (  # noqa: E402, F401
    pytest_configure,
    pytest_runtest_logreport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)
