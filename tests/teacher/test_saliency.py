"""Integrated gradients need at least 2 Riemann steps: one step is a user error, not a Captum assertion."""

import pytest
import torch
from click.testing import CliRunner

from cli.main import main
from kdcache.errors import KdcacheError
from kdcache.teacher.saliency import integrated_gradients


def test_one_ig_step_is_a_user_error():
    forward = torch.nn.Linear(3, 2)
    feats = torch.ones(1, 4, 3)
    with pytest.raises(KdcacheError, match="--ig-steps 1"):
        integrated_gradients(lambda x: forward(x).sum(1), feats, torch.tensor([0]), steps=1)
    assert integrated_gradients(lambda x: forward(x).sum(1), feats, torch.tensor([0]), steps=2).shape == (1, 4, 3)


@pytest.mark.parametrize("command", [["build-teacher-cache", "--data", "d", "--teacher", "t", "--out", "o"],
                                     ["saliency-eval", "--model", "m", "--data", "d", "--out", "o"]])
def test_cli_refuses_one_ig_step(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [*command, "--ig-steps", "1"])
    assert result.exit_code == 2 and "--ig-steps" in result.output and "Traceback" not in result.output
