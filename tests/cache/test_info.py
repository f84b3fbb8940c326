"""cache info's teacher top-1 (on the crops and on the integrated inputs), its warning, and the size."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdcache.cache import TeacherCache, cache_info, format_info
from kdcache.cache.info import integrated_input_warning, teacher_top1
from tests.cache.helpers import rigged_top1_cache


def test_teacher_top1_counts_labelled_rows_of_done_shards(tmp_path: Path) -> None:
    rigged_top1_cache(tmp_path / "c.zarr", [0, 1, 2])
    cache = TeacherCache.open(tmp_path / "c.zarr")
    top1 = teacher_top1(cache, rows=200)
    # rows 10..199: 190 labelled rows; 47 multiples of 4 (12..196), 19 multiples of 10 (10..190)
    assert top1 == {"rows": 190, "teacher_logits": pytest.approx(143 / 190), "integrated_logits": pytest.approx(19 / 190)}

    rigged_top1_cache(tmp_path / "part.zarr", [1])  # shard 0 not done: rows 128..255 only
    top1 = teacher_top1(TeacherCache.open(tmp_path / "part.zarr"), rows=200)
    right = sum(1 for row in range(128, 256) if row % 4)
    assert top1["rows"] == 128 and top1["teacher_logits"] == pytest.approx(right / 128)


def test_cache_info_warns_when_the_teacher_is_mostly_wrong_on_integrated_inputs(tmp_path: Path) -> None:
    rigged_top1_cache(tmp_path / "c.zarr", [0, 1, 2])
    info = cache_info(tmp_path / "c.zarr")
    assert info["teacher_top1"]["rows"] == 290  # all 300 rows but the 10 unlabelled
    text = format_info(info)
    assert "teacher top-1" in text and "WARNING" in text and "--integrated-input weighted" in text
    assert integrated_input_warning({"rows": 9, "teacher_logits": 0.9, "integrated_logits": 0.46}) is None
    assert integrated_input_warning({"rows": 9, "teacher_logits": 0.9, "integrated_logits": 0.44}) is not None
    assert integrated_input_warning({"rows": 9, "teacher_logits": 0.9}) is None
    assert integrated_input_warning(None) is None
    weighted = integrated_input_warning({"rows": 9, "teacher_logits": 0.9, "integrated_logits": 0.1}, "weighted")
    assert "Check the IG settings (--integrated-input weighted)" in weighted


def test_cache_info_reports_bytes_on_disk(tmp_path: Path) -> None:
    """The build command prints the size from this key; it was missing, so the size never showed."""
    rigged_top1_cache(tmp_path / "c.zarr", [0, 1, 2])
    info = cache_info(tmp_path / "c.zarr")
    files = [p for p in (tmp_path / "c.zarr").rglob("*") if p.is_file()]
    assert info["bytes_on_disk"] == sum(p.stat().st_size for p in files) > 0
