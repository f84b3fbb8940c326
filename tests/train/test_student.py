"""Phase 2: every loss trains a student from the cache alone; bad input is refused in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kdcache.distill import losses as L
from kdcache.errors import KdcacheError
from kdcache.models.checkpoint import load_model_dir
from kdcache.teacher.build import BuildConfig, build_teacher_cache
from kdcache.train.student import StudentTrainConfig, student_loss, train_student

STUDENT_ARGS = {"hid_dim": 32, "stats_dim": 48, "embed_dim": 24}


@pytest.fixture(scope="module")
def caches(tiny_corpus, tiny_teacher, tmp_path_factory):
    """A dense cache and one with saliency, built from copies of the teacher that are then deleted."""
    root = tmp_path_factory.mktemp("student_caches")
    teacher = root / "teacher"
    shutil.copytree(tiny_teacher, teacher)
    common = dict(data=str(tiny_corpus / "train"), teacher=str(teacher), crops_per_utt=4, crop_seconds=1.0,
                  shard_rows=64, chunk_rows=16, batch_size=16, num_workers=0, device="cpu", show_progress=False)
    build_teacher_cache(BuildConfig(out=str(root / "dense.zarr"), **common))
    build_teacher_cache(BuildConfig(out=str(root / "sal.zarr"), saliency=True, ig_steps=2, ig_durations=(1.0, 0.5),
                                    **common))
    shutil.rmtree(teacher)  # phase 2 must not need the teacher
    return {"dense": root / "dense.zarr", "saliency": root / "sal.zarr"}


def run_student(cache: Path, corpus: Path, out: Path, loss: str, **overrides) -> dict:
    cfg = dict(cache=str(cache), data=str(corpus / "train"), student="xvector", loss=loss, out=str(out),
               model_args=dict(STUDENT_ARGS), epochs=2, batch_size=32, lr=0.05, num_workers=0, device="cpu",
               show_progress=False, beta=8.0)
    cfg.update(overrides)
    return train_student(StudentTrainConfig(**cfg))


@pytest.mark.parametrize("loss", ["ce", "embedding", "kd", "dkd", "mlkd", "imlkd"])
def test_every_loss_trains_a_student_from_the_cache_alone(caches, tiny_corpus, tmp_path, loss):
    cache = caches["saliency" if loss == "imlkd" else "dense"]
    result = run_student(cache, tiny_corpus, tmp_path / loss, loss)
    model, config = load_model_dir(tmp_path / loss)
    assert config.arch == "xvector" and config.extra["cache_fingerprint"] == result["cache_fingerprint"]
    assert len(config.speakers) == 8
    log = [json.loads(line) for line in (tmp_path / loss / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    expected_terms = {"ce": {"ce"}, "embedding": {"ce", "emb"}, "kd": {"ce", "kd"}, "dkd": {"ce", "tckd", "nckd"},
                      "mlkd": {"ce", "instance", "class", "batch"}, "imlkd": {"ce", "instance", "class", "batch"}}[loss]
    assert expected_terms <= set(log[0])
    assert all(np.isfinite(r["loss"]) for r in log)
    with torch.no_grad():
        assert model(torch.randn(2, 100, 80)).shape == (2, 24)


def test_dkd_loss_term_is_mdistiller_dkd_on_margin_logits():
    """The trainer's dkd term is alpha*TCKD + beta*NCKD of the student AAM logits against the cached
    teacher logits with the teacher margin put back on the target, ramped per step by min(progress/warmup, 1)."""
    from kdcache.distill.methods import RunInfo, build

    torch.manual_seed(0)
    cfg = StudentTrainConfig(cache="c", data="d", student="xvector", loss="dkd", out="o", alpha=1.0, beta=8.0,
                             temperature=1.0, epochs=30, teacher_margin=0.2)
    dkd = build("dkd", cfg.method_options(), RunInfo(epochs=30))
    assert dkd.warmup_epochs == 4
    assert [dkd.ramp(p) for p in (0.0, 1.0, 3.0, 4.0, 9.5)] == [0.0, 0.25, 0.75, 1.0, 1.0]
    assert build("dkd", {}, RunInfo(epochs=6)).warmup_epochs == 0.8
    assert build("dkd", {"kd_warmup_epochs": 0}, RunInfo(epochs=6)).ramp(0.0) == 1.0
    with pytest.raises(KdcacheError, match="--kd-warmup-epochs"):
        StudentTrainConfig(cache="c", data="d", student="x", loss="dkd", out="o", kd_warmup_epochs=-1).check()
    cos_t = torch.rand(6, 10) * 2 - 1
    labels = torch.tensor([0, 3, 9, 2, 2, 5])
    out = {"logits": 32 * (torch.rand(6, 10) * 2 - 1), "projected": torch.randn(6, 4), "embedding": torch.randn(6, 4)}
    batch = {"label": labels, "teacher_logits": 32 * cos_t, "teacher_embedding": torch.randn(6, 4)}
    total, logs = student_loss(cfg, out, batch, progress=2.0, teacher_scale=32.0)
    t_margin = L.apply_teacher_margin(32 * cos_t, labels, 0.2, 32.0)
    tckd, nckd = L.dkd_terms(out["logits"], t_margin, labels, 1.0)
    ramp = 2 / 4
    assert logs["tckd"] == pytest.approx(ramp * tckd.item(), rel=1e-6)
    assert logs["nckd"] == pytest.approx(ramp * 8 * nckd.item(), rel=1e-6)
    ce = torch.nn.functional.cross_entropy(out["logits"], labels)
    assert total.item() == pytest.approx(ce.item() + ramp * (tckd.item() + 8 * nckd.item()), rel=1e-6)


def test_imlkd_needs_a_cache_with_saliency(caches, tiny_corpus, tmp_path):
    with pytest.raises(KdcacheError, match="--saliency"):
        run_student(caches["dense"], tiny_corpus, tmp_path / "s", "imlkd")


def test_verify_inputs_refuses_a_corpus_whose_audio_changed(caches, tiny_corpus, tmp_path):
    moved = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, moved, ignore=shutil.ignore_patterns("noise", "rir"))
    run_student(caches["dense"], moved, tmp_path / "ok", "ce", epochs=1, verify_inputs=16)
    for wav in (moved / "wav").rglob("*.wav"):
        data = bytearray(wav.read_bytes())
        data[-2000:] = bytes(2000)  # same length, different samples
        wav.write_bytes(bytes(data))
    with pytest.raises(KdcacheError, match="replayed input differs"):
        run_student(caches["dense"], moved, tmp_path / "bad", "ce", epochs=1, verify_inputs=64)


def test_a_corpus_that_differs_from_the_cache_manifest_lists_the_differences(caches, tiny_corpus, tmp_path):
    with pytest.raises(KdcacheError, match="does not match the cache.*not in the cache"):
        run_student(caches["dense"], tiny_corpus, tmp_path / "s", "ce", data=str(tiny_corpus / "test"))


def test_an_incomplete_cache_is_refused_unless_allowed(caches, tiny_corpus, tmp_path):
    from tests.cache.helpers import set_done

    partial = tmp_path / "partial.zarr"
    shutil.copytree(caches["dense"], partial)
    set_done(partial, 1, False)
    with pytest.raises(KdcacheError, match="incomplete.*--allow-incomplete"):
        run_student(partial, tiny_corpus, tmp_path / "s", "ce", epochs=1)
    run_student(partial, tiny_corpus, tmp_path / "s2", "ce", epochs=1, allow_incomplete=True)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.mark.parametrize("option, value", [("--beta", "0"), ("--temperature", "-1"), ("--eta", "0")])
def test_non_positive_hyper_parameters_are_one_line_errors(caches, tiny_corpus, tmp_path, option, value):
    result = cli("train-student", "--cache", str(caches["dense"]), "--data", str(tiny_corpus / "train"),
                 "--loss", "dkd", "--out", str(tmp_path / "s"), option, value)
    assert result.returncode == 2
    assert option in result.stderr and "Traceback" not in result.stderr
    # refused by the option's range at the command line: click's usage line, hint and one Error: line
    errors = [line for line in result.stderr.splitlines() if line.startswith(("Error:", "kdcache: error:"))]
    assert len(errors) == 1 and option in errors[0], result.stderr


def test_train_student_cli_as_written_with_evaluation(caches, tiny_corpus, tmp_path):
    out = tmp_path / "student"
    result = cli("train-student", "--cache", str(caches["dense"]), "--data", str(tiny_corpus / "train"),
                 "--student", "xvector", "--model-args", json.dumps(STUDENT_ARGS), "--loss", "dkd", "--beta", "8",
                 "--out", str(out), "--epochs", "1", "--batch-size", "32", "--num-workers", "1", "--device", "cpu",
                 "--trials", str(tiny_corpus / "test" / "trials.txt"), "--eval-data", str(tiny_corpus / "test"))
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["eer"] <= 1.0 and metrics["loss"] == "dkd"
    assert metrics["cache_fingerprint"] == json.loads((out / "config.json").read_text())["extra"]["cache_fingerprint"]


def test_two_rank_torchrun_training(caches, tiny_corpus, tmp_path):
    out = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531",
         "-m", "cli.main", "train-student", "--cache", str(caches["dense"]), "--data", str(tiny_corpus / "train"),
         "--student", "xvector", "--model-args", json.dumps(STUDENT_ARGS), "--loss", "dkd", "--out", str(out),
         "--epochs", "2", "--batch-size", "32", "--num-workers", "0", "--device", "cpu", "--grad-clip", "5"],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    # 128 rows, 2 ranks x 32 rows per step: 2 steps per epoch on each rank
    assert [r["iterations"] for r in log] == [2, 4]
    assert all(r["grad_norm"] > 0 for r in log)  # --grad-clip reached the loop (the norm before clipping)
    assert json.loads((out / "config.json").read_text())["extra"]["training"]["grad_clip"] == 5.0
    load_model_dir(out)


def test_a_batch_pairs_each_replayed_crop_with_its_own_teacher_row(caches, tiny_corpus, tiny_teacher):
    """The phase-2 data path: the teacher re-run on a batch's replayed crops gives that batch's cached
    outputs, for rows out of order and across shards (a misaligned batch would teach the wrong crop)."""
    from kdcache.cache.reader import TeacherCache
    from kdcache.data.corpus import load_corpus
    from kdcache.data.features import FeatureConfig
    from kdcache.train.student import CacheBatches

    cache = TeacherCache.open(str(caches["dense"]))
    batches = CacheBatches(cache, load_corpus(tiny_corpus / "train"),
                           FeatureConfig.from_dict(cache.settings["features"]), None, with_saliency=False)
    rows = np.array([len(cache) - 1, 70, 5, 100, 0, 64, 33])  # 64 rows per shard
    batch = batches[rows]
    labels = cache.recipes(slice(None))["label"]
    assert batch["label"].tolist() == labels[rows].tolist()
    teacher, _ = load_model_dir(tiny_teacher)
    with torch.no_grad():
        embedding = teacher(batch["feats"])
        logits = teacher.projection.cosine_logits(embedding)
    assert (logits - batch["teacher_logits"]).abs().max() < 0.05  # float16 storage of |logits| <= 32
    cos = torch.nn.functional.cosine_similarity(embedding, batch["teacher_embedding"], dim=1)
    assert cos.min() > 0.999
    shuffled = batches[rows[::-1]]  # same rows, other order: same pairs
    assert torch.equal(shuffled["teacher_logits"], batch["teacher_logits"].flip(0))
    assert torch.equal(shuffled["feats"], batch["feats"].flip(0))
