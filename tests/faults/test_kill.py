"""kill -9 during train-student, twice at random moments, then --resume: the same weights as a run never killed.

(kill -9 during build-teacher-cache then resume is tests/teacher/test_build.py::
test_kill_9_at_random_points_then_resume_gives_identical_arrays.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch

from kdcache.models.checkpoint import WEIGHTS_FILE
from tests.faults.conftest import REPO, STUDENT_ARGS, run_cli

EPOCHS = 6


def args(cache, corpus, out) -> list[str]:
    return ["train-student", "--cache", str(cache), "--data", str(corpus / "train"), "--out", str(out),
            "--student", "xvector", "--model-args", json.dumps(STUDENT_ARGS), "--loss", "dkd", "--epochs",
            str(EPOCHS), "--batch-size", "16", "--lr", "0.05", "--num-workers", "0", "--device", "cpu", "--seed", "3"]


def epochs_done(out) -> int:
    log = out / "train_log.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def kill_after_checkpoint(cmd: list[str], out, after_epochs: int, delay: float) -> int:
    """Start cmd, SIGKILL it `delay` s after the checkpoint of epoch `after_epochs` is logged; returns the
    epochs logged at the kill."""
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and epochs_done(out) < after_epochs and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        assert proc.poll() is None, "training ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return epochs_done(out)


def test_kill_9_twice_then_resume_gives_the_weights_of_an_uninterrupted_run(fault_cache, tiny_corpus, tmp_path):
    reference = run_cli(*args(fault_cache, tiny_corpus, tmp_path / "straight"))
    assert reference.code == 0, reference.stderr

    out = tmp_path / "killed"
    rng = np.random.default_rng(11)
    first = kill_after_checkpoint(args(fault_cache, tiny_corpus, out), out, 1, float(rng.uniform(0, 0.3)))
    assert 1 <= first < EPOCHS
    assert not (out / WEIGHTS_FILE).exists()  # the final model is written only at the end
    second = kill_after_checkpoint(args(fault_cache, tiny_corpus, out) + ["--resume"], out, first + 1,
                                   float(rng.uniform(0, 0.3)))
    assert first < second < EPOCHS

    # Without --resume the interrupted run is not overwritten by accident.
    again = run_cli(*args(fault_cache, tiny_corpus, out))
    assert again.code == 2 and "--resume" in again.stderr

    resumed = run_cli(*args(fault_cache, tiny_corpus, out), "--resume")
    assert resumed.code == 0, resumed.stderr
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, EPOCHS + 1))
    assert [r["iterations"] for r in log] == [4 * e for e in range(1, EPOCHS + 1)]

    a = torch.load(tmp_path / "straight" / WEIGHTS_FILE, weights_only=True)
    b = torch.load(out / WEIGHTS_FILE, weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
