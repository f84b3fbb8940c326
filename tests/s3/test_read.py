"""Reading a cache from a real S3 server: info, verify, pull, and training a student bit-identical to the local one."""

from __future__ import annotations

import json
import shutil

from tests.faults.conftest import run_cli
from tests.faults.test_same_result_elsewhere import assert_identical, train


def test_train_info_verify_pull_from_s3_match_the_local_cache(fault_cache, s3_cache, tiny_corpus, tmp_path):
    reference = train(str(fault_cache), tiny_corpus, tmp_path / "local")

    # Another machine: the corpus lives elsewhere, the cache in the object store, read by a DataLoader worker.
    moved_corpus = tmp_path / "elsewhere" / "corpus"
    shutil.copytree(tiny_corpus, moved_corpus, ignore=shutil.ignore_patterns("noise", "rir"))
    remote = train(s3_cache, moved_corpus, tmp_path / "s3", num_workers=1)
    assert remote["cache_fingerprint"] == reference["cache_fingerprint"]
    assert_identical(tmp_path / "local", tmp_path / "s3")

    info = run_cli("cache", "info", "--json", s3_cache)
    assert info.code == 0, info.stderr
    doc = json.loads(info.stdout)
    assert doc["fingerprint"] == reference["cache_fingerprint"]
    assert doc["complete"] and doc["rows_done"] == doc["num_rows"] == 64
    assert f"fingerprint    {reference['cache_fingerprint']}" in run_cli("cache", "info", s3_cache).stdout

    verify = run_cli("cache", "verify", s3_cache)
    assert verify.code == 0, verify.stderr
    assert "4 shards checked: ok" in verify.stdout

    pulled = tmp_path / "pulled.zarr"
    pull = run_cli("cache", "pull", "--no-progress", s3_cache, pulled)
    assert pull.code == 0, pull.stderr
    assert "4 shards verified: ok" in pull.stdout
    train(str(pulled), moved_corpus, tmp_path / "pulled")
    assert_identical(tmp_path / "local", tmp_path / "pulled")
