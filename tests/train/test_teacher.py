"""Teacher training: schedules, checkpoints, resume after kill -9, evaluation from the CLI."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from kdcache.errors import KdcacheError
from kdcache.models.checkpoint import load_model_dir
from kdcache.train.loop import OptimConfig, lr_at
from kdcache.train.teacher import TeacherTrainConfig, train_teacher

TINY = json.dumps({"m_channels": 4, "embed_dim": 32})


def test_schedules_are_wespeakers_scaled_to_the_run():
    cfg = OptimConfig(epochs=150).resolved()
    assert (cfg.warmup_epochs, cfg.margin_start_epoch, cfg.margin_full_epoch) == (6.0, 21, 41)
    short = OptimConfig(epochs=15).resolved()
    assert short.warmup_epochs == pytest.approx(0.6)
    assert (short.margin_start_epoch, short.margin_full_epoch) == (3, 5)
    # exponential decay 0.1 -> 5e-5, linear warm-up
    assert lr_at(150, cfg) == pytest.approx(5e-5)
    assert lr_at(75, cfg) == pytest.approx(0.1 * math.sqrt(5e-5 / 0.1))
    assert lr_at(3, cfg) == pytest.approx(0.5 * 0.1 * math.exp(3 / 150 * math.log(5e-4)))


def test_teacher_model_directory_and_log(tiny_teacher):
    model, config = load_model_dir(tiny_teacher)
    assert config.arch == "resnet34" and config.model_args["m_channels"] == 4
    assert config.speakers == sorted(config.speakers) and len(config.speakers) == 8
    assert config.features["dither"] == 0.0 and config.features["num_mel_bins"] == 80
    log = [json.loads(line) for line in (tiny_teacher / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert {"loss", "acc", "lr", "margin", "rows_per_s"} <= set(log[0])
    assert log[-1]["margin"] == pytest.approx(0.2)


def test_existing_run_needs_resume(tiny_corpus, tiny_teacher, tmp_path):
    with pytest.raises(KdcacheError, match="--resume"):
        train_teacher(TeacherTrainConfig(data=str(tiny_corpus / "train"), arch="resnet34", out=str(tiny_teacher),
                                         epochs=2, batch_size=8, device="cpu", show_progress=False))


def cli_args(corpus, out, epochs):
    return [sys.executable, "-m", "cli.main", "train-teacher", "--data", str(corpus / "train"), "--arch", "resnet34",
            "--model-args", TINY, "--out", str(out), "--epochs", str(epochs), "--batch-size", "8",
            "--crop-seconds", "1.0", "--num-workers", "0", "--device", "cpu"]


def test_resume_after_kill_9_gives_the_uninterrupted_weights(tiny_corpus, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    straight = tmp_path / "straight"
    subprocess.run(cli_args(tiny_corpus, straight, 3), check=True, capture_output=True, env=env)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli_args(tiny_corpus, killed, 3), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    log = killed / "train_log.jsonl"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if log.exists() and log.read_text().count("\n") >= 1:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "config.json").exists()
    result = subprocess.run(cli_args(tiny_corpus, killed, 3) + ["--resume"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    a = torch.load(straight / "model.pt", weights_only=True)
    b = torch.load(killed / "model.pt", weights_only=True)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


def test_evaluate_cli_prints_and_writes_metrics(tiny_corpus, tiny_teacher, tmp_path):
    out = tmp_path / "metrics.json"
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "evaluate", "--model", str(tiny_teacher), "--data", str(tiny_corpus / "test"),
         "--trials", str(tiny_corpus / "test" / "trials.txt"), "--score-norm", "asnorm", "--cohort",
         str(tiny_corpus / "train"), "--top-n", "4", "--out", str(out)],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "EER" in result.stdout and "minDCF" in result.stdout
    metrics = json.loads(out.read_text())
    assert 0 <= metrics["eer"] <= 1 and 0 <= metrics["min_dcf"] <= 1.0 + 1e-9
    assert metrics["score_norm"] == "asnorm"


def test_a_trial_naming_an_unknown_utterance_names_the_line(tiny_corpus, tiny_teacher, tmp_path):
    trials = tmp_path / "trials.txt"
    lines = (tiny_corpus / "test" / "trials.txt").read_text().splitlines()[:3]
    trials.write_text("\n".join(lines + ["1 id99999/abc/00001.wav id99999/abc/00002.wav"]) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "evaluate", "--model", str(tiny_teacher), "--data", str(tiny_corpus / "test"),
         "--trials", str(trials)], capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 2
    assert f"{trials}:4" in result.stderr and "Traceback" not in result.stderr
