"""kdcache cache push DIR s3://...: uploads, verifies in the store, resumes; a half-pushed cache reads as incomplete."""

from __future__ import annotations

import json

import numpy as np
import pytest

import kdcache.cache.push as push_module
from kdcache.cache import TeacherCache
from tests.faults.conftest import one_line_error, run_cli
from tests.s3.test_build import assert_same_arrays


def test_push_uploads_and_verifies_in_the_store(fault_cache, s3_prefix):
    url = f"{s3_prefix}/pushed.zarr"
    result = run_cli("cache", "push", "--no-progress", fault_cache, url)
    assert result.code == 0, result.stderr
    assert "4 shards verified in the store: ok" in result.stdout
    assert_same_arrays(url, fault_cache)
    info = json.loads(run_cli("cache", "info", "--json", url).stdout)
    assert info["complete"] and info["fingerprint"] == json.loads(run_cli("cache", "info", "--json", fault_cache).stdout)["fingerprint"]

    again = run_cli("cache", "push", "--no-progress", fault_cache, url)  # everything is there already
    assert again.code == 0, again.stderr
    assert "already there" in again.stdout and " 0 already there" not in again.stdout


def test_a_half_pushed_cache_is_refused_as_incomplete_and_push_resumes(fault_cache, s3_prefix, tiny_corpus,
                                                                       tmp_path, monkeypatch):
    url = f"{s3_prefix}/half.zarr"
    real = push_module.verify_cache

    def store_dies_before_verification(*args, **kwargs):
        raise OSError("Connection reset by peer")  # the store went away after the chunks were uploaded

    monkeypatch.setattr(push_module, "verify_cache", store_dies_before_verification)
    with pytest.raises(OSError):
        push_module.push_cache(fault_cache, url)
    monkeypatch.setattr(push_module, "verify_cache", real)

    half = TeacherCache.open(url)
    assert not half.is_complete and half.missing_shards() == [0, 1, 2, 3]
    refused = run_cli("train-student", "--cache", url, "--data", tiny_corpus / "train", "--out", tmp_path / "s",
                      "--student", "xvector", "--loss", "ce", "--epochs", "1", "--device", "cpu")
    assert refused.code == 2 and "incomplete" in one_line_error(refused) and url in one_line_error(refused)
    verify = run_cli("cache", "verify", url)
    assert verify.code == 1 and "is not done" in verify.stderr

    # Damage one uploaded object too: the resumed push skips it by size, then catches it by its checksum.
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    key = url.removeprefix("s3://") + "/teacher/logits/c/1/0"
    data = bytearray(fs.cat_file(key))
    data[5] ^= 0x10
    fs.pipe_file(key, bytes(data))
    failed = run_cli("cache", "push", "--no-progress", fault_cache, url)
    assert failed.code == 1
    line = one_line_error(failed)
    assert url in line and "teacher/logits" in line and "rerun the push" in line
    assert not TeacherCache.open(url).is_complete

    resumed = run_cli("cache", "push", "--no-progress", fault_cache, url)
    assert resumed.code == 0, resumed.stderr
    assert "already there" in resumed.stdout and " 0 already there" not in resumed.stdout
    assert_same_arrays(url, fault_cache)
    np.testing.assert_array_equal(TeacherCache.open(url).logits(np.arange(64)),
                                  TeacherCache.open(fault_cache).logits(np.arange(64)))


def test_push_refuses_a_prefix_holding_another_cache(fault_cache, s3_prefix, tmp_path):
    url = f"{s3_prefix}/other.zarr"
    assert run_cli("cache", "push", "--no-progress", fault_cache, url).code == 0
    other = tmp_path / "other.zarr"
    import shutil

    shutil.copytree(fault_cache, other)
    doc = json.loads((other / "zarr.json").read_text())
    doc["attributes"]["kdcache"]["created"] = "2000-01-01T00:00:00+00:00"
    (other / "zarr.json").write_text(json.dumps(doc))
    result = run_cli("cache", "push", "--no-progress", other, url)
    assert result.code == 2 and "holds another cache" in one_line_error(result)
