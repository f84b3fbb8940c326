"""Two builders racing on one cache; a disk that fills up mid-build.

(Two ranks of one torchrun build writing disjoint shards: tests/teacher/test_build.py::
test_two_ranks_under_torchrun_equal_one_process; two writer processes: tests/cache/test_writer.py.)
"""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from kdcache.cache import TeacherCache, verify_cache
from kdcache.cache.writer import build_lock
from kdcache.errors import KdcacheError
from tests.cache.helpers import set_done
from tests.faults.conftest import BUILD_ARGS, REPO, build_cache, one_line_error, run_cli

ARRAYS = ["rows/utterance", "rows/start", "rows/aug_seed", "rows/input_crc", "teacher/logits", "teacher/embedding",
          "teacher/embedding_norm"]


def assert_same_values(a: Path, b: Path) -> None:
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    for name in ARRAYS:
        np.testing.assert_array_equal(ga[name][:], gb[name][:], err_msg=name)


def lock_is_held(lock: Path) -> bool:
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # (also drops the lock if this probe got it)
    return False


def test_a_second_builder_is_refused_while_the_first_runs(fault_cache, tiny_corpus, tiny_teacher, tmp_path):
    out = tmp_path / "race.zarr"
    args = ["build-teacher-cache", "--data", tiny_corpus / "train", "--teacher", tiny_teacher, "--out", out, *BUILD_ARGS]
    first = subprocess.Popen([sys.executable, "-m", "cli.main", *map(str, args)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"))
    lock = tmp_path / ".race.zarr.lock"
    deadline = time.monotonic() + 120
    while first.poll() is None and not lock_is_held(lock) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert first.poll() is None, "the first build ended before the race"
    second = run_cli(*args)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert second.code == 2
    line = one_line_error(second)
    assert "another build is writing this cache" in line and str(lock) in line
    assert verify_cache(out).ok
    assert_same_values(out, fault_cache)
    # Once the first is done, the same command is a no-op resume.
    again = run_cli(*args)
    assert again.code == 0 and "0 shards written, 4 already done" in again.stdout


def test_the_lock_is_per_cache_and_released_by_its_holder(tmp_path):
    with build_lock(tmp_path / "a.zarr") as lock:
        assert lock == tmp_path / ".a.zarr.lock" and lock_is_held(lock)
        with pytest.raises(KdcacheError, match="another build"):
            with build_lock(tmp_path / "a.zarr"):
                pass
        with build_lock(tmp_path / "b.zarr"):  # another cache beside it: no conflict
            pass
    assert not lock_is_held(lock)


def full_disk(budget: int):
    """A LocalStore.set that raises ENOSPC after `budget` teacher/logits shard files, leaving the failed
    file empty (open("wb") truncates, then the write fails: what a full disk does)."""
    real = LocalStore.set
    left = [budget]

    async def set_(store: LocalStore, key: str, value) -> None:
        if key.startswith("teacher/logits/c/"):
            if left[0] <= 0:
                path = Path(store.root) / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            left[0] -= 1
        await real(store, key, value)

    return set_


def test_disk_full_mid_build_keeps_finished_shards_and_a_rerun_completes(
        fault_cache, tiny_corpus, tiny_teacher, tmp_path, monkeypatch):
    out = tmp_path / "full.zarr"
    monkeypatch.setattr(LocalStore, "set", full_disk(budget=2))
    with pytest.raises(KdcacheError) as err:
        build_cache(tiny_corpus, tiny_teacher, out)
    message = str(err.value)
    assert "writing shard 2 failed (No space left on device)" in message and "rerun" in message
    cache = TeacherCache.open(out)
    assert cache.missing_shards() == [2, 3]
    report = verify_cache(out)
    assert all("is not done" in p for p in report.problems), report.problems  # finished shards are intact
    np.testing.assert_array_equal(cache.logits(np.arange(32)), TeacherCache.open(fault_cache).logits(np.arange(32)))

    # The same through the CLI: one line, exit 2.
    monkeypatch.setattr(LocalStore, "set", full_disk(budget=0))
    args = ["build-teacher-cache", "--data", tiny_corpus / "train", "--teacher", tiny_teacher, "--out", out,
            *BUILD_ARGS]
    result = run_cli(*args)
    assert result.code == 2 and "No space left on device" in one_line_error(result)

    monkeypatch.undo()  # space freed
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    assert "2 shards written, 2 already done" in result.stdout
    assert verify_cache(out).ok
    assert_same_values(out, fault_cache)


def test_an_empty_progress_entry_left_by_a_full_disk_counts_as_not_done(fault_cache, tmp_path):
    """A full disk can leave the progress/done entry of a shard empty (open truncates, write fails):
    a resume must treat that shard as not done instead of failing to read the progress."""
    import shutil

    from kdcache.cache.writer import CacheWriter

    copy = tmp_path / "c.zarr"
    shutil.copytree(fault_cache, copy)
    set_done(copy, 1, False)  # the root of a cache being written does not say complete
    (copy / "progress" / "done" / "c" / "1").write_bytes(b"")
    writer = CacheWriter.open_for_resume(copy)
    assert writer.pending_shards() == [1]
    assert TeacherCache.open(copy).missing_shards() == [1]
    problems = verify_cache(copy).problems
    assert any("progress/done: the entry of shard 1 is unreadable" in p for p in problems), problems
    result = run_cli("cache", "info", copy)
    assert result.code == 0 and "INCOMPLETE" in result.stdout
