"""Every array round-trips in all three logits modes; layout and codecs are as documented."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from kdcache.cache import CacheLayout, TeacherCache, cache_info, factorized_logits, format_info
from kdcache.cache import schema as sc
from kdcache.errors import KdcacheError
from tests.cache.helpers import SCALE, all_arrays, build, make_inputs, small_layout


@pytest.mark.parametrize("mode", ["dense", "uint8", "factorized"])
def test_round_trip_every_array(caches: dict[str, Path], mode: str) -> None:
    c = TeacherCache.open(caches[mode])
    lay = c.layout
    truth = all_arrays(lay)
    inputs = make_inputs(lay)
    assert len(c) == 300 and lay.logits_mode == mode and c.is_complete and c.missing_shards() == []

    def unit_half(x: np.ndarray) -> np.ndarray:
        """Embeddings are stored as float16 unit vectors times a float32 norm."""
        norm = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
        return (x / norm).astype(np.float16).astype(np.float32) * norm.astype(np.float32)

    emb = c.embeddings(slice(None))
    np.testing.assert_allclose(emb, unit_half(truth["embedding"]), rtol=1e-6, atol=1e-7)
    assert np.all(np.abs(emb - truth["embedding"]) <= np.linalg.norm(truth["embedding"], axis=1, keepdims=True) * 2**-11)
    logits = c.logits(slice(None))
    assert logits.dtype == np.float32 and logits.shape == (300, 37)
    if mode == "dense":
        np.testing.assert_array_equal(logits, truth["logits"].astype(np.float16).astype(np.float32))
        assert np.all(np.abs(logits - truth["logits"]) <= np.abs(truth["logits"]) * 2**-11 + 1e-7)  # half an ulp
    elif mode == "uint8":
        x = truth["logits"]
        step = (x.max(1) - x.min(1)) / 255
        assert np.all(np.abs(logits - x) <= step[:, None] / 2 + 1e-4)
    else:
        head = inputs["head"] / np.linalg.norm(inputs["head"], axis=1, keepdims=True)
        np.testing.assert_allclose(c.head, head, rtol=1e-6, atol=1e-7)
        e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        np.testing.assert_allclose(logits, SCALE * e @ head.T, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(logits, factorized_logits(emb, c.head, SCALE))
        with pytest.raises(KdcacheError, match="teacher/logits"):
            c.read([sc.LOGITS], [0])

    half = lambda k: truth[k].astype(np.float16).astype(np.float32)  # noqa: E731
    np.testing.assert_array_equal(c.saliency(slice(None)), half("saliency"))
    np.testing.assert_array_equal(c.integrated_logits(slice(None)), half("integrated_logits"))
    np.testing.assert_allclose(c.integrated_embeddings(slice(None)), unit_half(truth["integrated_embedding"]),
                               rtol=1e-6, atol=1e-7)

    rec = c.recipes(slice(None))
    for key, value in inputs["rows"].items():
        np.testing.assert_array_equal(rec[key], value)
    np.testing.assert_array_equal(rec["input_crc"], truth["input_crc"])
    assert rec["utterance_id"] == [inputs["utterance_ids"][u] for u in inputs["rows"]["utterance"]]
    assert c.settings["teacher"] == {"arch": "toy", "scale": SCALE}
    assert c.settings["format_version"] == sc.FORMAT_VERSION


def test_strings_round_trip(caches: dict[str, Path]) -> None:
    c = TeacherCache.open(caches["dense"])
    inputs = make_inputs(c.layout)
    assert c.speakers == inputs["speakers"] and c.speakers[-1] == "spk_ÄÖ-日本"
    ids, spk, lens = c.utterances()
    assert ids == inputs["utterance_ids"] and spk == inputs["utterance_speakers"]
    np.testing.assert_array_equal(lens, inputs["utterance_num_samples"])


def test_plain_zarr_opens_it_with_documented_names(caches: dict[str, Path]) -> None:
    g = zarr.open_group(caches["uint8"], mode="r")
    for name in [sc.SPEAKERS, *sc.UTTERANCE_ARRAYS, *(n for n, _ in sc.RECIPE_ARRAYS.values()), sc.ROW_INPUT_CRC,
                 sc.LOGITS, sc.LOGITS_SCALE, sc.LOGITS_OFFSET, sc.EMBEDDING, sc.HEAD, sc.SALIENCY,
                 sc.INTEGRATED_LOGITS, sc.INTEGRATED_EMBEDDING, sc.DONE]:
        assert isinstance(g[name], zarr.Array), name
    assert g[sc.LOGITS].dtype == np.uint8 and g[sc.LOGITS_SCALE].dtype == np.float32
    assert g[sc.EMBEDDING].dtype == np.float16 and g[sc.HEAD].dtype == np.float32
    assert g[sc.SALIENCY].shape == (300, 2, 10, 8)
    assert g[sc.DONE].shape == (3,) and g[sc.DONE].chunks == (1,) and g[sc.DONE].dtype == bool
    assert g[sc.SPEAKERS].metadata.to_dict()["data_type"] == "string"  # zarr's variable-length UTF-8
    assert g.attrs["kdcache"]["format_version"] == 1
    factorized = zarr.open_group(caches["factorized"], mode="r")
    assert sc.LOGITS not in factorized["teacher"]


def _codecs(meta: dict) -> list[dict]:
    return meta["codecs"]


def test_codec_pipelines_end_in_crc32c(caches: dict[str, Path]) -> None:
    root = caches["dense"]
    metas = {p.parent.relative_to(root).as_posix(): json.loads(p.read_text()) for p in root.rglob("zarr.json")}
    arrays = {k: m for k, m in metas.items() if m["node_type"] == "array"}
    assert len(arrays) == 20  # dense mode, with saliency, integrated arrays, embedding norms and rows/bad
    for name, meta in arrays.items():
        codecs = _codecs(meta)
        assert codecs[-1]["name"] in ("crc32c", "sharding_indexed"), name
        if codecs[-1]["name"] == "sharding_indexed":
            assert len(codecs) == 1
            conf = codecs[0]["configuration"]
            assert [c["name"] for c in conf["codecs"]] == ["bytes", "crc32c"], name  # no compressor
            assert [c["name"] for c in conf["index_codecs"]] == ["bytes", "crc32c"], name
            assert meta["chunk_grid"]["configuration"]["chunk_shape"][0] == 128
            assert conf["chunk_shape"][0] == 16
        else:
            assert not name.startswith(("teacher/logits", "teacher/embedding", "rows/")), name
    assert arrays["teacher/logits"]["data_type"] == "float16"


def test_defaults_layout_4096_64(tmp_path: Path) -> None:
    lay = CacheLayout(num_rows=4096 + 100, num_classes=5, embed_dim=4)
    assert (lay.shard_rows, lay.chunk_rows, lay.num_shards) == (4096, 64, 2)
    build(tmp_path / "c.zarr", lay)
    c = TeacherCache.open(tmp_path / "c.zarr")
    truth = all_arrays(lay)
    np.testing.assert_array_equal(c.logits(slice(None)), truth["logits"].astype(np.float16).astype(np.float32))
    arr = c.array(sc.LOGITS)
    assert arr.shards == (4096, 5) and arr.chunks == (64, 5)
    rows = np.r_[4032:4160]  # two blocks across the shard boundary
    np.testing.assert_array_equal(c.logits(rows), c.logits(slice(4032, 4160)))


def test_block_batch_equals_row_by_row(caches: dict[str, Path]) -> None:
    c = TeacherCache.open(caches["uint8"])
    rng = np.random.default_rng(3)
    rows = rng.permutation(np.r_[16:32, 112:144, 288:300])  # runs across chunk and shard boundaries
    one_by_one = np.concatenate([c.logits([r]) for r in rows])
    np.testing.assert_array_equal(c.logits(rows), one_by_one)
    scattered = rng.choice(300, 100, replace=False)  # many runs: orthogonal-selection path
    np.testing.assert_array_equal(c.logits(scattered), c.logits(slice(None))[scattered])
    dup = np.array([5, 5, -1, 0])
    np.testing.assert_array_equal(c.embeddings(dup), c.embeddings(slice(None))[[5, 5, 299, 0]])
    rec = c.recipes(rows)
    full = c.recipes(slice(None))
    np.testing.assert_array_equal(rec["start"], full["start"][rows])
    assert c.logits(np.array([], dtype=np.int64)).shape == (0, 37)
    with pytest.raises(IndexError):
        c.logits([300])


def test_missing_optional_array_names_the_option(tmp_path: Path) -> None:
    build(tmp_path / "c.zarr", small_layout())
    c = TeacherCache.open(tmp_path / "c.zarr")
    with pytest.raises(KdcacheError, match="--saliency"):
        c.saliency([0])
    with pytest.raises(KdcacheError, match="integrated_logits"):
        c.integrated_logits([0])


def test_unknown_format_version_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.zarr"
    build(path, small_layout(), finalize=False)
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["kdcache"]["format_version"] = 99
    meta.pop("consolidated_metadata", None)
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(KdcacheError, match=r"version 99.*version 1"):
        TeacherCache.open(path)


def test_not_a_cache(tmp_path: Path) -> None:
    with pytest.raises(KdcacheError, match="not a kdcache cache"):
        TeacherCache.open(tmp_path)
    zarr.open_group(tmp_path / "g.zarr", mode="w")
    with pytest.raises(KdcacheError, match="not a kdcache cache"):
        TeacherCache.open(tmp_path / "g.zarr")


def test_cache_info(caches: dict[str, Path]) -> None:
    info = cache_info(caches["dense"])
    assert info["complete"] and info["rows_done"] == 300 and info["shards_done"] == 3
    logits = info["arrays"]["teacher/logits"]
    assert logits["bytes_per_row"] >= 37 * 2 and logits["shards"] == [128, 37]
    text = format_info(info)
    assert "teacher/logits" in text and "300 of 300" in text and "toy" in text
