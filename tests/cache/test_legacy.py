"""A cache written by kdcache before the outputs refactor (commit 6f16959; tests/fixtures/legacy) reads as
it did then: same values, same fingerprint, same arrays, and it passes verification."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kdcache.cache.info import cache_info
from kdcache.cache.reader import TeacherCache
from kdcache.cache.verify import verify_cache

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy"


@pytest.fixture()
def legacy_cache(tmp_path) -> Path:
    copy = tmp_path / "cache.zarr"
    shutil.copytree(LEGACY / "cache.zarr", copy)
    return copy


def test_a_legacy_cache_reads_the_values_it_was_written_with(legacy_cache):
    cache = TeacherCache.open(legacy_cache)
    expected = np.load(LEGACY / "cache_values.npz")
    rows = expected["rows"]
    assert np.array_equal(cache.logits(slice(None)), expected["logits"])
    assert np.array_equal(cache.embeddings(slice(None)), expected["embeddings"])
    assert np.array_equal(cache.saliency(rows), expected["saliency"])
    assert np.array_equal(cache.integrated_logits(slice(None)), expected["integrated_logits"])
    assert np.array_equal(cache.integrated_embeddings(slice(None)), expected["integrated_embeddings"])
    assert np.array_equal(cache.head, expected["head"])
    recipes = cache.recipes(slice(None))
    for key in ("utterance", "start", "num_samples", "label", "aug_seed", "input_crc", "bad"):
        assert np.array_equal(recipes[key], expected[f"recipe_{key}"]), key
        assert recipes[key].dtype == expected[f"recipe_{key}"].dtype, key


def test_a_legacy_cache_keeps_its_fingerprint_and_arrays(legacy_cache):
    info = cache_info(TeacherCache.open(legacy_cache))
    expected = json.loads((LEGACY / "cache_info.json").read_text())
    assert info["fingerprint"] == expected["fingerprint"]
    assert info["complete"] and info["num_rows"] == expected["num_rows"] == 32
    arrays = {name: {k: v for k, v in a.items() if k in ("shape", "dtype", "chunks", "shards")}
              for name, a in info["arrays"].items()}
    assert arrays == expected["arrays"]


def test_a_legacy_cache_passes_verify(legacy_cache):
    report = verify_cache(str(legacy_cache))
    assert report.ok, report
