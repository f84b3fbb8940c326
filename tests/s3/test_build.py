"""build-teacher-cache --out s3://: straight into the object store, resumable after kill -9, refused early on bad access."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from kdcache.cache import TeacherCache, verify_cache
from tests.faults.conftest import BUILD_ARGS, REPO, one_line_error, run_cli
from tests.s3_server import ADMIN, BUCKET, READER


def build_args(corpus, teacher, out, *extra) -> list[str]:
    return ["build-teacher-cache", "--data", str(corpus / "train"), "--teacher", str(teacher), "--out", out,
            *BUILD_ARGS, *extra]


def assert_same_arrays(a: str, b) -> None:
    ca, cb = TeacherCache.open(a), TeacherCache.open(b)
    assert ca.is_complete and cb.is_complete
    names = [path for path, node in ca.group.members(max_depth=None) if hasattr(node, "shape")]
    assert sorted(names) == sorted(path for path, node in cb.group.members(max_depth=None) if hasattr(node, "shape"))
    for name in names:
        np.testing.assert_array_equal(np.asarray(ca.group[name][:]), np.asarray(cb.group[name][:]), err_msg=name)


def stored_shards(fs, url: str) -> int:
    try:
        return len(fs.ls(url.removeprefix("s3://") + "/teacher/embedding/c", refresh=True))
    except FileNotFoundError:
        return 0


def test_build_to_s3_equals_a_local_build(fault_cache, tiny_corpus, tiny_teacher, s3_prefix, tmp_path, monkeypatch):
    url = f"{s3_prefix}/cache.zarr"
    monkeypatch.chdir(tmp_path)  # the settings file once landed in ./s3:/BUCKET/... (a URL taken for a path)
    result = run_cli(*build_args(tiny_corpus, tiny_teacher, url))
    assert result.code == 0, result.stderr
    assert "64 rows (4 shards written, 0 already done)" in result.stdout
    assert list(tmp_path.iterdir()) == []
    import fsspec
    import yaml

    with fsspec.open(f"{url}/config.yaml", "r") as f:  # the resolved settings sit in the cache, as locally
        assert yaml.safe_load(f)["out"] == url
    assert_same_arrays(url, fault_cache)
    assert verify_cache(url).ok
    again = run_cli(*build_args(tiny_corpus, tiny_teacher, url))  # nothing left to do
    assert again.code == 0 and "(0 shards written, 4 already done)" in again.stdout, again.stderr


def test_kill_9_mid_build_to_s3_then_resume_gives_the_arrays_of_a_local_build(
        fault_cache, tiny_corpus, tiny_teacher, s3_prefix):
    url = f"{s3_prefix}/killed.zarr"
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    # 16 shards of 8 rows give a window to kill in; the arrays are compared with a local build of the same layout.
    args = build_args(tiny_corpus, tiny_teacher, url)
    args[args.index("--shard-rows") + 1] = "8"
    args[args.index("--crops-per-utt") + 1] = "4"
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and stored_shards(fs, url) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = TeacherCache.open(url)
    done = partial.done()
    assert 0 < done.sum() < len(done) or not done.all()  # a reader sees the half-built cache as incomplete
    refused = run_cli("train-student", "--cache", url, "--data", tiny_corpus / "train", "--out", "unused",
                      "--student", "xvector", "--loss", "ce", "--epochs", "1", "--device", "cpu")
    assert refused.code == 2 and "incomplete" in one_line_error(refused)

    resumed = run_cli(*args)
    assert resumed.code == 0, resumed.stderr
    assert f"{int(done.sum())} already done" in resumed.stdout

    local = fault_cache.parent / "local-8x4.zarr"
    if not local.exists():
        local_args = [a if a != url else str(local) for a in args]
        assert run_cli(*local_args).code == 0
    assert_same_arrays(url, local)


@pytest.mark.parametrize("case", ["wrong credentials", "missing bucket", "read-only credentials"])
def test_bad_access_is_refused_in_one_line_before_any_teacher_work(case, s3_server, s3_env, tiny_corpus, tmp_path,
                                                                   monkeypatch):
    import s3fs

    url = f"s3://{BUCKET}/refused/cache.zarr"
    if case == "wrong credentials":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        expect = "refused the credentials"
    elif case == "missing bucket":
        url = "s3://no-such-bucket-kdcache/cache.zarr"
        expect = "bucket no-such-bucket-kdcache does not exist"
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", READER[0])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", READER[1])
        expect = "access denied"
    s3fs.S3FileSystem.clear_instance_cache()
    # A teacher directory that does not exist: the refusal has to come before the teacher is even loaded.
    result = run_cli(*build_args(tiny_corpus, tmp_path / "no-teacher-here", url))
    assert result.code == 2
    line = one_line_error(result)
    assert url in line and expect in line, line
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(key=ADMIN[0], secret=ADMIN[1], skip_instance_cache=True)
    assert not fs.exists(f"{BUCKET}/refused")  # nothing written


def test_an_object_store_dying_mid_build_is_one_line_and_the_build_resumes_later(
        fault_cache, tiny_corpus, tiny_teacher, tmp_path, monkeypatch):
    import s3fs

    from tests.s3_server import S3Server

    server = S3Server(tmp_path / "weed").start()
    try:
        for key, value in server.env(ADMIN).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # botocore's retries, fewer than its default 5: a shorter test
        s3fs.S3FileSystem.clear_instance_cache()
        url = f"s3://{BUCKET}/dies/cache.zarr"
        args = build_args(tiny_corpus, tiny_teacher, url)
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        deadline = time.monotonic() + 120
        done0 = url.removeprefix("s3://") + "/progress/done/c/0"
        while proc.poll() is None and not fs.exists(done0) and time.monotonic() < deadline:
            fs.invalidate_cache()
            time.sleep(0.02)
        server.kill()
        killed_at = time.monotonic()
        _, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 2, stderr
        assert time.monotonic() - killed_at < 90  # retries are bounded
        errors = [line for line in stderr.splitlines() if line.startswith("kdcache: error:")]
        assert len(errors) == 1 and url in errors[0] and "Traceback" not in stderr, stderr
        assert "rerun" in errors[0]

        server.start()  # the store is back, with what was written before it died
        s3fs.S3FileSystem.clear_instance_cache()
        resumed = run_cli(*args)
        assert resumed.code == 0, resumed.stderr
        assert "already done" in resumed.stdout and " 0 already done" not in resumed.stdout
        assert_same_arrays(url, fault_cache)
    finally:
        server.stop()


def test_two_torchrun_ranks_write_their_own_shards_to_s3(fault_cache, tiny_corpus, tiny_teacher, s3_prefix):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"{s3_prefix}/ddp.zarr"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(port), "-m", "cli.main", *build_args(tiny_corpus, tiny_teacher, url)],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_arrays(url, fault_cache)
