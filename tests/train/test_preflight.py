"""Preflight: the warning when a cache's integrated-input targets name the wrong speakers."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdcache.cache import TeacherCache
from kdcache.distill import methods
from kdcache.errors import KdcacheError
from kdcache.train.preflight import warn_if_integrated_targets_mislead
from kdcache.train.sources import CacheSource
from tests.cache.helpers import rigged_top1_cache


def test_imlkd_is_warned_of_a_cache_whose_teacher_is_mostly_wrong_on_integrated_inputs(tmp_path: Path, capsys) -> None:
    rigged_top1_cache(tmp_path / "c.zarr", [0, 1, 2])  # top-1 75% on the crops, 10% on the integrated inputs
    cache = TeacherCache.open(tmp_path / "c.zarr")
    assert warn_if_integrated_targets_mislead(cache, ("teacher_logits",)) is None
    assert capsys.readouterr().err == ""
    warning = warn_if_integrated_targets_mislead(cache, methods.get("imlkd").reads)
    assert warning and "10.0% of the integrated inputs" in warning
    assert "kdcache: warning:" in capsys.readouterr().err

    source = CacheSource(str(tmp_path / "c.zarr"), str(tmp_path / "no-corpus"), batch_size=16)
    with pytest.raises(KdcacheError):  # the corpus is checked after the warning
        source.prepare(methods.get("imlkd"))
    assert "imlkd would distill mostly wrong speakers" in capsys.readouterr().err
