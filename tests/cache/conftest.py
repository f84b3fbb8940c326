"""Fixtures: small caches built once per session (tests that damage a cache build their own)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cache.helpers import build, small_layout


@pytest.fixture(scope="session")
def caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """mode -> path of a complete, finalized cache with saliency and integrated arrays."""
    root = tmp_path_factory.mktemp("caches")
    out = {}
    for mode in ("dense", "uint8", "factorized"):
        out[mode] = root / f"{mode}.zarr"
        build(out[mode], small_layout(mode, saliency_shape=(2, 10, 8), integrated=True))
    return out
