"""Damaged shard files and a server that dies mid-read: caught on read, by verify and by training, in one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from kdcache.cache import TeacherCache, verify_cache
from kdcache.errors import IntegrityError, KdcacheError
from tests.faults.conftest import STUDENT_ARGS, one_line_error, run_cli
from tests.faults.flaky_server import flaky_server


def student_args(cache, corpus, out, loss: str = "dkd") -> list:
    return ["train-student", "--cache", cache, "--data", corpus / "train", "--out", out, "--student", "xvector",
            "--loss", loss,
            "--model-args", json.dumps(STUDENT_ARGS), "--epochs", "1", "--batch-size", "16", "--num-workers", "0",
            "--device", "cpu"]


def flip(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def truncate(path, offset: int) -> None:
    path.write_bytes(path.read_bytes()[:-(offset + 1)])


@pytest.mark.parametrize("damage, array, shard, loss", [
    (flip, "teacher/logits", 2, "dkd"),
    (flip, "teacher/embedding", 0, "embedding"),
    (flip, "rows/start", 3, "ce"),  # a recipe array: the crop to replay
    (truncate, "teacher/embedding", 1, "embedding"),
    (truncate, "teacher/logits", 3, "kd"),
])
def test_damage_is_caught_by_read_verify_and_training_naming_the_shard(
        fault_cache, tiny_corpus, tmp_path, damage, array, shard, loss):
    """(Training reads the arrays its loss needs: dkd/kd the logits, embedding the embeddings, every loss
    the recipe.)"""
    cache = tmp_path / "c.zarr"
    shutil.copytree(fault_cache, cache)
    target = cache / array / "c" / str(shard)
    target = target / "0" if target.is_dir() else target
    damage(target, int(np.random.default_rng(shard).integers(0, 16)))
    rows = np.arange(shard * 16, shard * 16 + 16)

    with pytest.raises(IntegrityError, match=f"{array} shard {shard} "):
        TeacherCache.open(cache).read([array], rows)
    report = verify_cache(cache)
    assert len(report.problems) == 1 and f"{array}: shard {shard} (rows {rows[0]}-{rows[-1]})" in report.problems[0]

    result = run_cli("cache", "verify", cache)
    assert result.code == 1 and f"shard {shard}" in result.stderr and "Traceback" not in result.stderr

    result = run_cli(*student_args(cache, tiny_corpus, tmp_path / "s", loss))
    assert result.code == 1
    line = one_line_error(result)
    assert f"{array} shard {shard}" in line and "kdcache cache verify" in line


def test_reading_over_http_when_the_server_dies_is_a_clear_error(fault_cache):
    with flaky_server(fault_cache.parent) as server:
        url = f"{server.url}/{fault_cache.name}"
        cache = TeacherCache.open(url)
        cache.logits(np.arange(16))
        server.fail_after(0)
        with pytest.raises(KdcacheError) as err:
            cache.logits(np.arange(16, 32))
        assert not isinstance(err.value, IntegrityError)  # the data is not known to be bad
        message = str(err.value)
        assert url in message and "teacher/logits shard 1" in message and "\n" not in message
        with pytest.raises(KdcacheError, match="unreachable, not known to be damaged"):
            verify_cache(cache)  # opened while the server was up
        result = run_cli("cache", "verify", url)
        assert result.code == 2 and "cannot reach the cache" in one_line_error(result)
        server.heal()
        np.testing.assert_array_equal(cache.logits(np.arange(64)), TeacherCache.open(fault_cache).logits(np.arange(64)))


def test_training_over_http_when_the_server_dies_stops_with_one_line(fault_cache, tiny_corpus, tmp_path):
    with flaky_server(fault_cache.parent) as server:
        url = f"{server.url}/{fault_cache.name}"
        server.fail_after(60)  # opening, the manifest check and a batch or two get through
        result = run_cli(*student_args(url, tiny_corpus, tmp_path / "s"))
        assert result.code == 2
        line = one_line_error(result)
        assert url in line and ("failed" in line or "cannot reach" in line)
        assert server.gets > 60
