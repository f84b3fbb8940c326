"""--num-avg on training, `kdcache average`, and the resolved config.yaml that reproduces a run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from cli.main import main
from kdcache.models.checkpoint import load_model_dir, read_config

TINY = '{"hid_dim": 16, "stats_dim": 32, "embed_dim": 16}'


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def teacher_args(corpus: Path, out: Path, *extra) -> list:
    return ["train-teacher", "--data", corpus / "train", "--arch", "xvector", "--model-args", TINY, "--out", out,
            "--epochs", "3", "--batch-size", "8", "--crop-seconds", "1.0", "--num-workers", "0", "--device", "cpu",
            *extra]


@pytest.fixture(scope="module")
def averaged_run(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("avg") / "teacher"
    result = run(*teacher_args(tiny_corpus, out, "--num-avg", "2"))
    assert result.exit_code == 0, result.output
    return out


def test_model_is_the_mean_of_the_last_epochs(averaged_run):
    ckpt = averaged_run / "checkpoints"
    assert sorted(p.name for p in ckpt.glob("model_*.pt")) == ["model_2.pt", "model_3.pt"]  # bounded: the last 2
    e2 = torch.load(ckpt / "model_2.pt", weights_only=True)
    e3 = torch.load(ckpt / "model_3.pt", weights_only=True)
    final = torch.load(averaged_run / "model.pt", weights_only=True)
    key = "frame_1.conv_1d.weight"
    torch.testing.assert_close(final[key], (e2[key] + e3[key]) / 2, rtol=0, atol=1e-7)
    bn = "frame_1.bn.running_var"
    torch.testing.assert_close(final[bn], (e2[bn] + e3[bn]) / 2, rtol=0, atol=1e-7)
    assert final["frame_1.bn.num_batches_tracked"] == e3["frame_1.bn.num_batches_tracked"]
    assert read_config(averaged_run).extra["averaged"] == {"epochs": [2, 3], "num": 2}
    load_model_dir(averaged_run)  # the recorded sha256 matches the averaged weights


def test_kdcache_average_gives_the_same_model(averaged_run, tmp_path):
    result = run("average", averaged_run, "--num", "2", "--out", tmp_path / "again")
    assert result.exit_code == 0, result.output
    a = torch.load(averaged_run / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "again" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_num_avg_larger_than_the_run_is_one_line_and_writes_nothing(tiny_corpus, tmp_path):
    out = tmp_path / "teacher"
    result = run(*teacher_args(tiny_corpus, out, "--num-avg", "4"))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "kdcache: error: --num-avg 4 is larger than the number of epochs (3): there will be only 3 epoch "
        "checkpoints to average"]
    assert not out.exists()
    result = run("average", tmp_path, "--num", "2")
    assert result.exit_code == 2 and "there are 0 (none)" in result.stderr


def test_resolved_config_reproduces_the_run(averaged_run, tmp_path):
    resolved = averaged_run / "config.yaml"
    settings = yaml.safe_load(resolved.read_text())
    assert settings["num-avg"] == 2 and settings["model-args"] == {"hid_dim": 16, "stats_dim": 32, "embed_dim": 16}
    again = tmp_path / "again"
    result = run("train-teacher", "--config", resolved, "--out", again)
    assert result.exit_code == 0, result.output
    settings_again = yaml.safe_load((again / "config.yaml").read_text())
    assert settings_again == settings | {"out": str(again)}
    a = torch.load(averaged_run / "model.pt", weights_only=True)
    b = torch.load(again / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same settings, same seed: the same weights
