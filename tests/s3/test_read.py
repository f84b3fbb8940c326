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


def test_endpoint_and_keys_from_fsspec_configuration_alone(s3_cache, s3_server):
    """FSSPEC_S3 (fsspec's configuration from the environment) instead of the AWS_* variables."""
    import os
    import subprocess
    import sys

    from tests.faults.conftest import REPO
    from tests.s3_server import ADMIN

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["FSSPEC_S3"] = json.dumps({"key": ADMIN[0], "secret": ADMIN[1],
                                   "client_kwargs": {"endpoint_url": s3_server.endpoint, "region_name": "us-east-1"}})
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    result = subprocess.run([sys.executable, "-m", "cli.main", "cache", "info", "--json", s3_cache], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["complete"]
