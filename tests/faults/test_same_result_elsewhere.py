"""A cache trains the same student wherever it and the corpus live: moved paths, a pulled copy, over HTTP."""

from __future__ import annotations

import json
import shutil

import torch

from kdcache.cache.pull import pull_cache
from kdcache.models.checkpoint import WEIGHTS_FILE
from kdcache.train.student import StudentTrainConfig, train_student
from tests.cache.http_server import serve_directory
from tests.faults.conftest import STUDENT_ARGS, run_cli


def train(cache: str, corpus, out, num_workers: int = 0) -> dict:
    return train_student(StudentTrainConfig(
        cache=cache, data=str(corpus / "train"), student="xvector", loss="dkd", out=str(out),
        model_args=dict(STUDENT_ARGS), epochs=1, batch_size=16, lr=0.05, num_workers=num_workers, device="cpu",
        show_progress=False, seed=5,
    ))


def weights(out) -> dict[str, torch.Tensor]:
    return torch.load(out / WEIGHTS_FILE, weights_only=True)


def assert_identical(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_moved_corpus_pulled_cache_and_http_train_identical_students(fault_cache, tiny_corpus, tmp_path):
    reference = train(str(fault_cache), tiny_corpus, tmp_path / "local")

    # "Another machine": the corpus and the cache both live under other paths.
    moved_corpus = tmp_path / "elsewhere" / "corpus"
    shutil.copytree(tiny_corpus, moved_corpus, ignore=shutil.ignore_patterns("noise", "rir"))
    pulled = tmp_path / "elsewhere" / "cache-copy.zarr"
    pull_cache(str(fault_cache), pulled)
    moved = train(str(pulled), moved_corpus, tmp_path / "moved")

    # Over HTTP, read in a DataLoader worker (which opens its own HTTP session).
    with serve_directory(fault_cache.parent) as base:
        remote = train(f"{base}/{fault_cache.name}", tiny_corpus, tmp_path / "http", num_workers=1)
        http_info = json.loads(run_cli("cache", "info", "--json", f"{base}/{fault_cache.name}").stdout)

    # `cache info` shows the fingerprint each student recorded, for the original, the copy and over HTTP.
    text = run_cli("cache", "info", fault_cache).stdout
    assert f"fingerprint    {reference['cache_fingerprint']}" in text
    assert http_info["fingerprint"] == reference["cache_fingerprint"]
    assert json.loads(run_cli("cache", "info", "--json", pulled).stdout)["fingerprint"] == reference["cache_fingerprint"]

    assert reference["cache_fingerprint"] == moved["cache_fingerprint"] == remote["cache_fingerprint"]
    assert_identical(tmp_path / "local", tmp_path / "moved")
    assert_identical(tmp_path / "local", tmp_path / "http")
    for run in ("local", "moved", "http"):
        config = json.loads((tmp_path / run / "config.json").read_text())
        assert config["extra"]["cache_fingerprint"] == reference["cache_fingerprint"]
