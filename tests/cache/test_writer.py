"""Creation, resume, settings checks and concurrent writers of different shards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdcache.cache import CacheWriter, TeacherCache
from kdcache.cache import schema as sc
from kdcache.errors import IntegrityError, KdcacheError
from tests.cache.helpers import build, make_inputs, shard_arrays, small_layout

REPO = Path(__file__).resolve().parents[2]


def test_resume_lists_pending_shards(tmp_path: Path) -> None:
    path, lay = tmp_path / "c.zarr", small_layout(num_rows=700)  # 6 shards, the last one short
    w = build(path, lay, shards=[0, 3], finalize=False)
    assert w.done_shards() == {0, 3}
    assert w.finalize() is False
    again = CacheWriter.create(path, lay, **make_inputs(lay))  # same settings: reopened, not wiped
    assert again.done_shards() == {0, 3}
    assert again.pending_shards() == [1, 2, 4, 5]
    assert again.pending_shards(rank=0, world_size=2) == [1, 4]  # what is left, dealt out in turn
    assert again.pending_shards(rank=1, world_size=2) == [2, 5]
    assert again.pending_shards(rank=2, world_size=3) == [4]
    resumed = CacheWriter.open_for_resume(path)
    c = TeacherCache.open(path)
    assert not c.is_complete and c.missing_shards() == [1, 2, 4, 5]
    with pytest.raises(IntegrityError, match=r"shard 1 \(rows 128-255\) is not done"):
        c.logits(np.arange(130, 140))
    for s in resumed.pending_shards():
        resumed.write_shard(s, shard_arrays(lay, s))
    assert resumed.finalize() is True
    c = TeacherCache.open(path)
    assert c.is_complete and c.settings["complete"] is True
    assert c.logits(slice(None)).shape == (700, 37)
    with pytest.raises(ValueError, match="rank"):
        resumed.pending_shards(rank=2, world_size=2)


def test_settings_mismatch_is_refused_naming_the_setting(tmp_path: Path) -> None:
    path, lay = tmp_path / "c.zarr", small_layout()
    build(path, lay, shards=[0])
    inputs = make_inputs(lay)
    inputs["attrs"]["teacher"]["scale"] = 30.0
    with pytest.raises(KdcacheError, match=r"teacher\.scale: cache has 32\.0, requested 30\.0"):
        CacheWriter.create(path, lay, **inputs)
    with pytest.raises(KdcacheError, match=r"layout\.logits_mode"):
        CacheWriter.create(path, small_layout("uint8"), **make_inputs(lay))
    other_rows = make_inputs(lay)
    other_rows["rows"]["start"] = other_rows["rows"]["start"] + 1
    with pytest.raises(KdcacheError, match="recipe_sha256"):
        CacheWriter.create(path, lay, **other_rows)
    with pytest.raises(KdcacheError, match="head_sha256"):
        CacheWriter.create(path, lay, **{**make_inputs(lay), "head": make_inputs(lay, seed=1)["head"]})
    # volatile keys do not count
    inputs = make_inputs(lay)
    inputs["attrs"]["created"] = "yesterday"
    assert CacheWriter.create(path, lay, **inputs).done_shards() == {0}


def test_overwrite_recreates(tmp_path: Path) -> None:
    path, lay = tmp_path / "c.zarr", small_layout()
    build(path, lay, shards=[0, 1])
    new = small_layout("uint8")
    w = CacheWriter.create(path, new, **make_inputs(new), overwrite=True)
    assert w.done_shards() == set() and w.layout.logits_mode == "uint8"
    assert TeacherCache.open(path).layout.logits_mode == "uint8"


def test_non_cache_directory_refused(tmp_path: Path) -> None:
    lay = small_layout()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(KdcacheError, match="not a kdcache cache"):
            CacheWriter.create(tmp_path / "data", lay, **make_inputs(lay), overwrite=overwrite)
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    CacheWriter.create(tmp_path / "empty", lay, **make_inputs(lay))  # an empty directory is fine
    with pytest.raises(KdcacheError, match="not a kdcache cache"):
        CacheWriter.open_for_resume(tmp_path / "data")


def test_interrupted_creation_is_redone(tmp_path: Path) -> None:
    path, lay = tmp_path / "c.zarr", small_layout()
    w = build(path, lay, shards=[])
    w._set_attrs(initialized=False)  # as if creation stopped half way
    with pytest.raises(KdcacheError, match="interrupted"):
        CacheWriter.open_for_resume(path)
    assert CacheWriter.create(path, lay, **make_inputs(lay)).settings["initialized"] is True


def test_write_shard_validation(tmp_path: Path) -> None:
    lay = small_layout()
    w = CacheWriter.create(tmp_path / "c.zarr", lay, **make_inputs(lay))
    arrays = shard_arrays(lay, 0)
    with pytest.raises(ValueError, match="missing arrays"):
        w.write_shard(0, {k: v for k, v in arrays.items() if k != "input_crc"})
    with pytest.raises(ValueError, match="shape"):
        w.write_shard(0, {**arrays, "logits": arrays["logits"][:, :5]})
    with pytest.raises(ValueError, match="stores no"):
        w.write_shard(0, {**arrays, "saliency": np.zeros((128, 1, 1, 1), np.float32)})
    with pytest.raises(KdcacheError, match="non-finite"):
        w.write_shard(0, {**arrays, "logits": np.full_like(arrays["logits"], np.nan)})
    with pytest.raises(IndexError):
        w.write_shard(3, arrays)
    assert w.done_shards() == set()
    w.write_shard(0, {f"teacher/{k}" if k != "input_crc" else "rows/input_crc": v for k, v in arrays.items()})
    assert w.done_shards() == {0}


def test_factorized_needs_head_and_scale(tmp_path: Path) -> None:
    lay = small_layout("factorized")
    inputs = make_inputs(lay)
    with pytest.raises(KdcacheError, match="head"):
        CacheWriter.create(tmp_path / "a.zarr", lay, **{**inputs, "head": None})
    with pytest.raises(ValueError, match="scale"):
        CacheWriter.create(tmp_path / "b.zarr", lay, **{**inputs, "attrs": {"teacher": {}}})
    w = CacheWriter.create(tmp_path / "c.zarr", lay, **inputs)
    w.write_shard(0, {k: v for k, v in shard_arrays(lay, 0).items() if k != "logits"})  # logits optional
    assert w.done_shards() == {0}


def test_two_writer_processes_equal_one_writer(tmp_path: Path) -> None:
    lay = small_layout("uint8", num_rows=600, saliency_shape=(1, 4, 3))  # 5 shards
    single = tmp_path / "single.zarr"
    build(single, lay)
    multi = tmp_path / "multi.zarr"
    build(multi, lay, shards=[], finalize=False)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    shares = [CacheWriter.open_for_resume(multi).pending_shards(r, 2) for r in range(2)]  # read before any write
    assert shares == [[0, 2, 4], [1, 3]]
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.cache.helpers", str(multi), ",".join(map(str, share))],
                         cwd=REPO, env=env)
        for share in shares
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert CacheWriter.open_for_resume(multi).finalize() is True
    a, b = TeacherCache.open(single), TeacherCache.open(multi)
    for name in sc.row_array_specs(lay):
        got, want = b.read([name], slice(None))[name], a.read([name], slice(None))[name]
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert b.is_complete


def test_a_complete_cache_is_read_without_its_done_objects(tmp_path: Path) -> None:
    """`complete` (written last) stands for every flag: opening a 10M-row cache over S3 would otherwise
    read 2,442 done objects. `cache verify` still reads the flags themselves."""
    from kdcache.cache.verify import verify_cache

    path, lay = tmp_path / "c.zarr", small_layout(num_rows=700)
    build(path, lay)
    for f in (path / "progress" / "done" / "c").iterdir():
        f.unlink()  # not read any more when the root says complete
    c = TeacherCache.open(path)
    assert c.is_complete and c.missing_shards() == []
    assert c.logits(np.arange(0, 700, 50)).shape == (14, 37)
    report = verify_cache(path)
    assert not report.ok and report.shards_done == 0


def test_rewriting_a_shard_of_a_complete_cache_withdraws_complete_first(tmp_path: Path, monkeypatch) -> None:
    path, lay = tmp_path / "c.zarr", small_layout(num_rows=700)
    build(path, lay)
    w = CacheWriter.open_for_resume(path)
    array = w._array

    def disk_full(name: str):
        if name == sc.EMBEDDING:
            raise OSError("No space left on device")
        return array(name)

    monkeypatch.setattr(w, "_array", disk_full)
    with pytest.raises(OSError):
        w.write_shard(2, shard_arrays(lay, 2, seed=1))  # the rewrite dies halfway
    c = TeacherCache.open(path)
    assert c.settings["complete"] is False and c.missing_shards() == [2]
    monkeypatch.undo()
    w.write_shard(2, shard_arrays(lay, 2, seed=1))
    assert w.finalize() is True and TeacherCache.open(path).is_complete


def test_the_settings_file_inside_a_cache_raises_no_zarr_warning_on_resume_or_pull(tmp_path: Path) -> None:
    """build-teacher-cache writes config.yaml into the cache; zarr warned on every later walk of the
    hierarchy (a resumed build's consolidation, `cache pull`) that it is not a zarr node."""
    import warnings

    from kdcache.cache.pull import list_cache_files

    path = tmp_path / "c.zarr"
    build(path, small_layout())
    (path / "config.yaml").write_text("data: x\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CacheWriter.open_for_resume(path).finalize()
        files, missing = list_cache_files(TeacherCache.open(path))
    assert missing == [] and not any(f.key == "config.yaml" for f in files)
