"""Every method trains exactly as it did before the methods refactor (commit 6f16959): a 1-epoch student
on the legacy fixture cache writes the same train_log.jsonl (seed 0, 1 thread), and the trainer's loss
terms on fixed tensors are bit-equal to the recorded ones (tests/fixtures/legacy/make_legacy.py)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy"
sys.path.insert(0, str(LEGACY))
import make_legacy  # noqa: E402

sys.path.remove(str(LEGACY))


@pytest.fixture(scope="module")
def legacy_corpus(tmp_path_factory) -> Path:
    return make_legacy.make_corpus(tmp_path_factory.mktemp("legacy") / "corpus")


@pytest.mark.parametrize("loss", make_legacy.LOSSES)
def test_a_one_epoch_student_logs_what_it_logged_before(legacy_corpus, tmp_path, loss):
    cache = tmp_path / "cache.zarr"
    shutil.copytree(LEGACY / "cache.zarr", cache)
    log = make_legacy.student_run(cache, legacy_corpus, tmp_path / "student", loss)
    expected = [json.loads(line) for line in (LEGACY / "train_logs" / f"{loss}.jsonl").read_text().splitlines()]
    assert log == expected


def test_the_trainer_loss_of_every_method_is_bit_equal_to_before():
    expected = json.loads((LEGACY / "losses.json").read_text())["trainer"]
    assert make_legacy.trainer_values() == expected


def test_every_loss_function_is_bit_equal_to_before():
    expected = json.loads((LEGACY / "losses.json").read_text())["losses"]
    assert make_legacy.loss_values() == expected


@pytest.mark.parametrize("loss", ["kd", "dkd", "mlkd"])
def test_logit_standardized_kd_trains_through_loss_args(legacy_corpus, tmp_path, loss):
    from kdcache.train.student import StudentTrainConfig, train_student

    out = tmp_path / "student"
    train_student(StudentTrainConfig(
        cache=str(LEGACY / "cache.zarr"), data=str(legacy_corpus / "train"), student="xvector", loss=loss,
        out=str(out), model_args=dict(make_legacy.STUDENT_ARGS), epochs=1, batch_size=8, lr=0.05, num_workers=0,
        device="cpu", show_progress=False, temperature=2.0 if loss != "mlkd" else None,
        loss_args={"logit_stand": True},
    ))
    log = json.loads((out / "train_log.jsonl").read_text())
    plain = json.loads((LEGACY / "train_logs" / f"{loss}.jsonl").read_text())
    assert set(log) - {"seconds", "rows_per_s"} == set(plain) and log["loss"] > 0 and log["loss"] != plain["loss"]
    config = json.loads((out / "config.json").read_text())
    assert config["extra"]["training"]["loss_options"]["logit_stand"] is True
