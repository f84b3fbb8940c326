"""What a cache offers the trainer: its teacher fields, the methods that can train from it (cache info),
and TeacherCache.read(name, rows) for every output in every logits mode."""

from __future__ import annotations

import numpy as np
import pytest

from kdcache.cache.codecs import factorized_logits
from kdcache.cache.info import format_info
from kdcache.cache.reader import TeacherCache
from kdcache.errors import KdcacheError
from kdcache.train.sources import cache_info_with_methods, cache_methods
from tests.cache.helpers import all_arrays, build, small_layout


@pytest.mark.parametrize("mode", ["dense", "uint8", "factorized"])
def test_a_cache_without_saliency_offers_every_method_but_imlkd(tmp_path, mode):
    path = tmp_path / "c.zarr"
    build(path, small_layout(mode))
    cache = TeacherCache.open(path)
    assert {o.field for o in cache.outputs()} == {"teacher_logits", "teacher_embedding"}
    methods = cache_methods(cache)
    assert [m for m, why in methods.items() if not why][:5] == ["ce", "embedding", "kd", "dkd", "mlkd"]
    assert methods["imlkd"] == "needs saliency (--saliency)"
    text = format_info(cache_info_with_methods(str(path)))
    assert "not built: saliency (--saliency)" in text and "not imlkd: needs saliency (--saliency)" in text
    with pytest.raises(KdcacheError, match="rebuild with --saliency"):
        cache.read("saliency", slice(0, 2))


@pytest.mark.parametrize("mode", ["dense", "uint8", "factorized"])
def test_read_by_output_name_field_or_array_gives_the_decoded_values(tmp_path, mode):
    layout = small_layout(mode, saliency_shape=(2, 10, 8), integrated=True)
    path = tmp_path / "c.zarr"
    build(path, layout)
    cache = TeacherCache.open(path)
    truth = all_arrays(layout)
    rows = np.array([5, 0, 130, 64])
    logits = cache.read("logits", rows)
    assert np.array_equal(logits, cache.read("teacher_logits", rows))
    assert np.array_equal(logits, cache.read("teacher/logits", rows))
    assert np.array_equal(logits, cache.logits(rows))
    if mode == "factorized":  # not stored: s * normalize(embedding) @ head^T
        expected = factorized_logits(truth["embedding"][rows], cache.head, cache.settings["teacher"]["scale"])
    else:
        expected = truth["logits"][rows]
    assert np.abs(logits - expected).max() < {"dense": 0.02, "uint8": 0.2, "factorized": 0.05}[mode]
    emb = cache.read("teacher_embedding", rows)
    assert np.allclose(emb, truth["embedding"][rows], rtol=2e-3, atol=1e-3)
    assert cache.read("saliency", rows).shape == (4, 2, 10, 8)
    assert np.array_equal(cache.read("integrated_embedding", rows), cache.integrated_embeddings(rows))
    assert cache.read("rows/label", rows).dtype == np.int32  # a stored array: as stored
