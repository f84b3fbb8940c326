"""TeacherCache pickles cheaply and reopens in other processes; reading over HTTP (Range) equals local."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdcache.cache import TeacherCache, verify_cache
from kdcache.errors import KdcacheError
from tests.cache.http_server import serve_directory

REPO = Path(__file__).resolve().parents[2]
ROWS = np.r_[32:64, 144:160]


def _child_read(cache: TeacherCache, queue: "mp.Queue[object]") -> None:
    queue.put((os.getpid(), cache.logits(ROWS)))


def test_pickle_and_use_in_subprocess(caches: dict[str, Path], tmp_path: Path) -> None:
    c = TeacherCache.open(caches["uint8"])
    expected = c.logits(ROWS)  # the parent has an open handle; pickling drops it
    blob = pickle.dumps(c)
    assert len(blob) < 500
    (tmp_path / "cache.pkl").write_bytes(blob)
    code = (
        "import pickle, sys, numpy as np; c = pickle.load(open(sys.argv[1], 'rb'));"
        "np.save(sys.argv[2], c.logits(np.r_[32:64, 144:160]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache.pkl"), str(tmp_path / "out.npy")],
                   check=True, env=env, cwd=REPO, timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="no fork")
def test_forked_worker_reopens(caches: dict[str, Path]) -> None:
    c = TeacherCache.open(caches["dense"])
    expected = c.logits(ROWS)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_read, args=(c, queue))
    proc.start()
    pid, got = queue.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0 and pid != os.getpid()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("mode", ["dense", "factorized"])
def test_http_equals_local(caches: dict[str, Path], mode: str) -> None:
    local = TeacherCache.open(caches[mode])
    with serve_directory(caches[mode].parent) as base:
        remote = TeacherCache.open(f"{base}/{caches[mode].name}")
        assert remote.is_remote and len(remote) == len(local) and remote.speakers == local.speakers
        rows = np.random.default_rng(0).permutation(ROWS)
        np.testing.assert_array_equal(remote.logits(rows), local.logits(rows))
        np.testing.assert_array_equal(remote.saliency(rows), local.saliency(rows))
        assert remote.recipes(rows)["utterance_id"] == local.recipes(rows)["utterance_id"]
        assert remote.is_complete
        # pickled to a worker, it reopens its own HTTP session
        again = pickle.loads(pickle.dumps(remote))
        np.testing.assert_array_equal(again.embeddings(rows), local.embeddings(rows))
        with pytest.raises(Exception, match="(?i)read.only|read-only"):
            remote.array("teacher/embedding")[0:1] = np.zeros((1, 16), np.float16)
        report = verify_cache(f"{base}/{caches[mode].name}")
        assert report.ok, report.problems


def test_http_without_consolidated_metadata_fails_clearly(caches: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "c.zarr"
    shutil.copytree(caches["dense"], copy)
    meta = json.loads((copy / "zarr.json").read_text())
    meta.pop("consolidated_metadata")
    (copy / "zarr.json").write_text(json.dumps(meta))
    assert TeacherCache.open(copy).logits([0]).shape == (1, 37)  # local: fine without it
    with serve_directory(tmp_path) as base:
        with pytest.raises(KdcacheError, match="consolidated metadata"):
            TeacherCache.open(f"{base}/c.zarr")
        with pytest.raises(KdcacheError, match="no kdcache cache"):
            TeacherCache.open(f"{base}/nothing.zarr")


# The parent reads over HTTP, a forked worker drops the handle it inherited (as a DataLoader worker does),
# collects it and reads on its own; then the parent reads again. Run in a subprocess: a hung read there
# fails this test in a minute instead of blocking the suite for aiohttp's 5-minute timeout.
_PARENT_READS_AFTER_A_FORKED_WORKER = """
import gc, multiprocessing as mp, sys
import numpy as np
from kdcache.cache import TeacherCache
from tests.cache.http_server import serve_directory

def worker(cache, queue):
    rows = cache.logits(np.r_[0:8])  # reopens: drops the inherited handle, and fsspec its filesystems
    gc.collect()  # collects the parent's HTTP session; its finalizer closes the inherited sockets
    queue.put(rows)

root, name = sys.argv[1], sys.argv[2]
with serve_directory(root) as base:
    cache = TeacherCache.open(f"{base}/{name}")
    before = cache.logits(np.r_[0:64])
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=worker, args=(cache, queue))
    proc.start()
    in_child = queue.get(timeout=60)
    proc.join(timeout=60)
    after = cache.logits(np.r_[0:64])  # hung here: the child had unregistered the parent's sockets
    assert proc.exitcode == 0 and np.array_equal(in_child, before[:8]) and np.array_equal(after, before)
print("ok")
"""


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="no fork")
def test_the_parent_still_reads_over_http_after_a_forked_worker_exits(caches: dict[str, Path]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        done = subprocess.run([sys.executable, "-c", _PARENT_READS_AFTER_A_FORKED_WORKER,
                               str(caches["dense"].parent), caches["dense"].name],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("the parent's HTTP read hung after a forked worker exited")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
