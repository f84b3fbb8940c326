"""train-student --online-teacher: the teacher runs on each batch's fresh crops; everything else is the
cached path's (methods, loss, schedule, student, checkpoints)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from cli.main import main
from kdcache.cache.fingerprint import cache_fingerprint, fingerprint_inputs
from kdcache.cache.reader import TeacherCache
from kdcache.data.features import FeatureConfig, compute_fbank
from kdcache.distill import methods
from kdcache.distributed import DistContext
from kdcache.errors import KdcacheError
from kdcache.models.checkpoint import load_model_dir, read_config, sha256_file
from kdcache.teacher.build import BuildConfig, build_teacher_cache
from kdcache.train.online import OnlineTeacherSource
from kdcache.train.sources import CacheSource

STUDENT = '{"hid_dim": 16, "stats_dim": 32, "embed_dim": 16}'
CPU = DistContext(device=torch.device("cpu"))


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def source(corpus: Path, teacher: Path, loss: str = "dkd", **kw) -> OnlineTeacherSource:
    options = dict(batch_size=8, ctx=CPU, crop_seconds=1.0, crops_per_utt=2, seed=5) | kw
    src = OnlineTeacherSource(str(teacher), str(corpus), **options)
    src.prepare(methods.get(loss))
    return src


def test_an_online_dkd_student_trains_end_to_end_through_the_cli(tiny_corpus, tiny_teacher, tmp_path):
    out = tmp_path / "student"
    result = run("train-student", "--online-teacher", tiny_teacher, "--data", tiny_corpus / "train",
                 "--student", "xvector", "--model-args", STUDENT, "--loss", "dkd", "--beta", "8", "--temperature", "2",
                 "--out", out, "--epochs", "2", "--batch-size", "8", "--crop-seconds", "1.0", "--crops-per-utt", "2",
                 "--lr", "0.05", "--num-workers", "0", "--device", "cpu",
                 "--trials", tiny_corpus / "test" / "trials.txt", "--eval-data", tiny_corpus / "test")
    assert result.exit_code == 0, result.output
    assert "online teacher fingerprint" in result.output
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    # 8 speakers x 4 utterances x 2 crops = 64 crops per epoch = 8 batches of 8, as a cache of K = 2 rows
    assert [(r["epoch"], r["iterations"]) for r in log] == [(1, 8), (2, 16)]
    assert {"ce", "tckd", "nckd"} <= set(log[0]) and all(np.isfinite(r["loss"]) for r in log)
    assert log[-1]["nckd"] > 0  # the teacher's fields reached the loss
    model, config = load_model_dir(out)
    teacher = read_config(tiny_teacher)
    assert config.speakers == teacher.speakers
    online = config.extra["online_teacher"]
    assert online["weights_sha256"] == sha256_file(tiny_teacher / "model.pt") == teacher.extra["weights_sha256"]
    assert online["crops_per_utt"] == 2 and online["crop_seconds"] == 1.0 and "cache" not in config.extra
    assert config.extra["training"]["online_teacher"] == str(tiny_teacher)
    assert (out / "cache_fingerprint.txt").read_text().strip() == config.extra["cache_fingerprint"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["eer"] <= 1.0 and metrics["teacher_source"] == "online teacher"


def test_online_teacher_fields_are_the_teacher_on_the_batchs_own_crops(tiny_corpus, tiny_teacher):
    """Recompute the first batch by hand: the epoch's permutation, each crop's start from its seeded rng,
    soundfile, fbank, then the teacher's s*cos logits and embedding; the batch must hold exactly these."""
    data = tiny_corpus / "train"
    src = source(data, tiny_teacher)
    batch = next(iter(src.batches(0, 0, torch.device("cpu"))))
    model, tconf = load_model_dir(tiny_teacher)
    features = FeatureConfig.from_dict(tconf.features)
    crop = features.crop_num_samples(1.0)
    utts = src.corpus
    order = np.random.default_rng([5, 0, 7]).permutation(len(utts) * 2)[:8]
    feats, labels = [], []
    for index in order:
        utt = utts[int(index) % len(utts)]
        rng = np.random.default_rng([5, 0, int(index)])
        start = int(rng.integers(0, max(utt.num_samples - crop, 0) + 1))
        wave, _ = soundfile.read(utt.path, dtype="float32", start=start, frames=crop)
        assert len(wave) == crop
        feats.append(compute_fbank(wave, features))
        labels.append(tconf.speakers.index(utt.speaker))
    feats = torch.stack(feats)
    assert torch.equal(batch["feats"], feats)
    assert batch["label"].tolist() == labels
    with torch.no_grad():
        emb = model(feats)
    w = F.normalize(model.projection.weight, dim=1)
    logits = tconf.head_scale * F.normalize(emb, dim=1) @ w.T
    assert set(batch) == {"feats", "label", "teacher_logits"}  # the fields dkd reads, as from a cache
    assert torch.allclose(batch["teacher_logits"], logits, atol=1e-4)
    by_embedding = next(iter(source(data, tiny_teacher, loss="embedding").batches(0, 0, torch.device("cpu"))))
    assert set(by_embedding) == {"feats", "label", "teacher_embedding"}
    assert torch.equal(by_embedding["feats"], feats)
    assert torch.allclose(by_embedding["teacher_embedding"], emb, atol=1e-5)
    # usable in the student's graph (an inference-mode tensor cannot be saved for backward)
    assert not batch["teacher_logits"].is_inference()
    student = torch.zeros_like(logits, requires_grad=True)
    (student * batch["teacher_logits"]).sum().backward()
    # fresh crops every epoch: the same slots hold other crops in epoch 1
    again = next(iter(src.batches(1, 0, torch.device("cpu"))))
    assert not torch.equal(again["feats"], batch["feats"])


def test_online_fields_match_the_cache_built_on_the_same_crops(tiny_corpus, tiny_teacher, tmp_path):
    """The cache build's runner on a cache row's crop gives what the online source gives on the same crop."""
    data = tiny_corpus / "train"
    cache_path = tmp_path / "c.zarr"
    build_teacher_cache(BuildConfig(data=str(data), teacher=str(tiny_teacher), out=str(cache_path), crops_per_utt=1,
                                    crop_seconds=1.0, shard_rows=32, chunk_rows=8, batch_size=8, num_workers=0,
                                    device="cpu", show_progress=False))
    cache = TeacherCache.open(cache_path)
    src = source(data, tiny_teacher)
    rows = np.arange(6)
    recipe = cache.read(["rows/utterance", "rows/start", "rows/num_samples", "rows/label"], rows)
    feats = torch.stack([
        compute_fbank(
            soundfile.read(src.corpus.path(int(u)), dtype="float32", start=int(s), frames=int(n))[0],
            src.features)
        for u, s, n in zip(recipe["rows/utterance"], recipe["rows/start"], recipe["rows/num_samples"])
    ])
    labels = torch.from_numpy(recipe["rows/label"].astype(np.int64))
    logits = src.teacher_fields(feats, labels)["teacher_logits"]
    assert np.abs(logits.numpy() - cache.read("teacher_logits", rows)).max() < 0.05  # the cache's float16
    emb = source(data, tiny_teacher, loss="embedding").teacher_fields(feats, labels)["teacher_embedding"]
    assert np.allclose(emb.numpy(), cache.read("teacher_embedding", rows), rtol=2e-3, atol=2e-3)
    # fingerprint: the cache's inputs, but an online crop plan (never equal to a cache's)
    online, cached = fingerprint_inputs(src.settings), fingerprint_inputs(cache.settings)
    assert {k for k in online if online[k] != cached[k]} == {"crop_plan", "logits"}
    assert online["teacher_weights_sha256"] == sha256_file(tiny_teacher / "model.pt")
    assert src.fingerprint == cache_fingerprint(src.settings) != cache_fingerprint(cache.settings)
    assert source(data, tiny_teacher, crops_per_utt=3).fingerprint != src.fingerprint
    # equal steps: an epoch online with --crops-per-utt K has the batches of an epoch of a cache built with K
    for batch_size in (8, 16, 24):
        cached = CacheSource(str(cache_path), str(data), batch_size=batch_size)
        cached.prepare(methods.get("dkd"))
        assert len(cached) == len(source(data, tiny_teacher, crops_per_utt=1, batch_size=batch_size)) == 32 // batch_size


@pytest.mark.parametrize("args, message", [
    ([], "give exactly one of --cache CACHE and --online-teacher DIR"),
    (["--cache", "c.zarr", "--online-teacher", "t"], "give exactly one of --cache CACHE and --online-teacher DIR"),
    (["--cache", "c.zarr", "--crops-per-utt", "4"], "go with --online-teacher"),
    (["--online-teacher", "t", "--verify-inputs", "4"], "go with --cache; --online-teacher reads no cache"),
])
def test_cache_or_online_teacher_exactly_one(tmp_path, args, message):
    result = run("train-student", *args, "--data", tmp_path, "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert result.output.startswith("kdcache: error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_online_refuses_imlkd_and_unknown_speakers_in_one_line(tiny_corpus, tiny_teacher):
    with pytest.raises(KdcacheError, match=r"--online-teacher: --loss imlkd reads saliency.*--saliency$"):
        source(tiny_corpus / "train", tiny_teacher, loss="imlkd")
    with pytest.raises(KdcacheError, match="not in the teacher's speaker list.*--allow-unknown-speakers"):
        source(tiny_corpus / "test", tiny_teacher)
    src = source(tiny_corpus / "test", tiny_teacher, allow_unknown_speakers=True, batch_size=4)
    batch = next(iter(src.batches(0, 0, torch.device("cpu"))))
    assert (batch["label"] == -1).all() and batch["teacher_logits"].shape == (4, 8)
