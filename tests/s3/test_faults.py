"""Faults of a cache in a real S3 server: a corrupted object, a missing object, a server that dies mid-read."""

from __future__ import annotations

import time

import numpy as np
import pytest

from kdcache.cache import TeacherCache, verify_cache
from kdcache.errors import IntegrityError, KdcacheError
from tests.faults.conftest import one_line_error, run_cli
from tests.faults.test_damage import student_args
from tests.s3.conftest import upload
from tests.s3_server import ADMIN, BUCKET, S3Server


def s3fs_client():
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


def test_a_corrupted_object_is_caught_by_read_verify_and_training(s3_cache, tiny_corpus, tmp_path):
    fs = s3fs_client()
    key = s3_cache.removeprefix("s3://") + "/teacher/logits/c/2/0"
    data = bytearray(fs.cat_file(key))
    data[7] ^= 0x40
    fs.pipe_file(key, bytes(data))

    with pytest.raises(IntegrityError, match="teacher/logits shard 2 "):
        TeacherCache.open(s3_cache).read(["teacher/logits"], np.arange(32, 48))
    report = verify_cache(s3_cache)
    assert len(report.problems) == 1 and "teacher/logits: shard 2 (rows 32-47)" in report.problems[0]
    result = run_cli("cache", "verify", s3_cache)
    assert result.code == 1 and "shard 2" in result.stderr and "Traceback" not in result.stderr
    result = run_cli(*student_args(s3_cache, tiny_corpus, tmp_path / "s", "dkd"))
    assert result.code == 1
    line = one_line_error(result)
    assert s3_cache in line and "teacher/logits shard 2" in line


def test_a_missing_object_is_named_by_read_and_verify(s3_cache, tmp_path):
    s3fs_client().rm_file(s3_cache.removeprefix("s3://") + "/teacher/embedding/c/1/0")
    with pytest.raises(IntegrityError, match="teacher/embedding shard 1 .*marked done but its file is missing"):
        TeacherCache.open(s3_cache).embeddings(np.arange(16, 32))
    result = run_cli("cache", "verify", s3_cache)
    assert result.code == 1
    assert "teacher/embedding: shard 1 (rows 16-31) is marked done but its shard file" in result.stderr


def test_a_server_dying_mid_read_is_one_line_then_reads_resume(fault_cache, tmp_path, monkeypatch):
    server = S3Server(tmp_path / "weed").start()
    try:
        for key, value in server.env(ADMIN).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # botocore's retries, fewer than its default 5: a shorter test
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        url = upload(fault_cache, f"s3://{BUCKET}/dies/cache.zarr")
        cache = TeacherCache.open(url)
        first = cache.logits(np.arange(16))
        server.kill()
        started = time.monotonic()
        with pytest.raises(KdcacheError) as err:
            cache.logits(np.arange(16, 32))
        assert time.monotonic() - started < 60
        assert not isinstance(err.value, IntegrityError)  # the data is not known to be bad
        message = str(err.value)
        assert url in message and "teacher/logits shard 1" in message and "\n" not in message
        with pytest.raises(KdcacheError, match="unreachable, not known to be damaged"):
            verify_cache(cache)
        result = run_cli("cache", "verify", url)
        assert result.code == 2 and url in one_line_error(result)

        server.start()  # the same ports and data: the store is back
        s3fs.S3FileSystem.clear_instance_cache()
        again = TeacherCache.open(url)
        np.testing.assert_array_equal(again.logits(np.arange(16)), first)
        np.testing.assert_array_equal(again.logits(np.arange(64)), TeacherCache.open(fault_cache).logits(np.arange(64)))
    finally:
        server.stop()


@pytest.mark.parametrize("case", ["wrong credentials", "missing bucket", "missing cache"])
def test_reading_with_bad_access_is_one_line_naming_the_url(case, s3_cache, monkeypatch):
    import s3fs

    url = s3_cache
    if case == "wrong credentials":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        expect = "refused the credentials"
    elif case == "missing bucket":
        url = "s3://no-such-bucket-kdcache/cache.zarr"
        expect = "bucket no-such-bucket-kdcache does not exist"
    else:
        url = s3_cache.replace("cache.zarr", "nothing-here.zarr")
        expect = "no kdcache cache there"
    s3fs.S3FileSystem.clear_instance_cache()
    for command in (("cache", "info", url), ("cache", "verify", url)):
        result = run_cli(*command)
        assert result.code == 2, result
        line = one_line_error(result)
        assert url in line and expect in line, line
