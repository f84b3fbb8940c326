"""Damage is caught on read and by verify_cache, naming array and shard; readers cannot write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdcache.cache import TeacherCache, sample_rows, verify_cache
from kdcache.errors import IntegrityError
from tests.cache.helpers import build, small_layout


@pytest.fixture()
def cache_path(tmp_path: Path) -> Path:
    path = tmp_path / "c.zarr"
    build(path, small_layout(saliency_shape=(1, 4, 3)))
    return path


def test_verify_ok(cache_path: Path) -> None:
    calls = []
    report = verify_cache(cache_path, progress=lambda i, n: calls.append((i, n)))
    assert report.ok, report.problems
    assert report.shards_checked == report.num_shards == report.shards_done == 3
    assert calls[-1] == (3, 3)
    assert report.bytes_per_row["teacher/logits"] >= 37 * 2
    assert report.bytes_per_row["teacher/saliency"] >= 12 * 2


def test_flipped_byte_caught_on_read_and_by_verify(cache_path: Path) -> None:
    shard = cache_path / "teacher" / "logits" / "c" / "1" / "0"  # rows 128-255
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0x10
    shard.write_bytes(bytes(data))
    c = TeacherCache.open(cache_path)
    c.logits(np.arange(0, 64))  # other shards still read
    with pytest.raises(IntegrityError, match=r"teacher/logits shard 1 \(rows 128-"):
        c.logits(np.arange(128, 256))
    report = verify_cache(cache_path)
    assert not report.ok
    assert len(report.problems) == 1
    assert "teacher/logits" in report.problems[0] and "shard 1 (rows 128-255)" in report.problems[0]


def test_truncated_shard_caught(cache_path: Path) -> None:
    shard = cache_path / "teacher" / "embedding" / "c" / "2" / "0"  # rows 256-299
    shard.write_bytes(shard.read_bytes()[:-7])
    c = TeacherCache.open(cache_path)
    with pytest.raises(IntegrityError, match=r"teacher/embedding shard 2"):
        c.embeddings(np.arange(256, 300))
    problems = verify_cache(cache_path).problems
    assert len(problems) == 1 and "teacher/embedding: shard 2 (rows 256-299)" in problems[0]


def test_missing_or_empty_shard_file_caught(cache_path: Path) -> None:
    (cache_path / "teacher" / "logits" / "c" / "0" / "0").unlink()
    (cache_path / "rows" / "start" / "c" / "1").write_bytes(b"")
    c = TeacherCache.open(cache_path)
    with pytest.raises(IntegrityError, match=r"teacher/logits shard 0 .*file is missing"):
        c.logits([3, 4])
    problems = verify_cache(cache_path).problems
    assert any("teacher/logits: shard 0 (rows 0-127)" in p and "missing" in p for p in problems), problems
    assert any("rows/start: shard 1 (rows 128-255)" in p for p in problems), problems


def test_verify_reports_undone_shards(tmp_path: Path) -> None:
    build(tmp_path / "c.zarr", small_layout(), shards=[0, 2])
    report = verify_cache(tmp_path / "c.zarr")
    assert not report.ok and report.shards_done == 2
    assert report.problems == ["progress/done: shard 1 (rows 128-255) is not done"]
    rows = sample_rows(tmp_path / "c.zarr", 50, seed=1)
    assert len(rows) == 50 and np.all((rows < 128) | (rows >= 256)) and np.all(np.diff(rows) > 0)


def test_reader_cannot_write(cache_path: Path) -> None:
    c = TeacherCache.open(cache_path)
    before = c.logits([0])
    with pytest.raises(Exception, match="(?i)read.only|read-only"):
        c.array("teacher/logits")[0:1] = np.zeros((1, 37), np.float16)
    with pytest.raises(Exception, match="(?i)read.only|read-only"):
        c.group.attrs["kdcache"] = {}
    with pytest.raises(Exception, match="(?i)read.only|read-only"):
        c.group.create_array("x", shape=(1,), dtype="f4")
    np.testing.assert_array_equal(TeacherCache.open(cache_path).logits([0]), before)
