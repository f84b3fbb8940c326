"""The shared epoch loop: gradient clipping."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from kdcache.distributed import DistContext
from kdcache.train.loop import LOG_NAME, OptimConfig, fit


def one_step(tmp_path, grad_clip: float, scale: float) -> tuple[torch.Tensor, torch.Tensor, dict, torch.Tensor]:
    """One SGD step of a linear model on ``scale * sum(W x)``: weights before, after, the log record, x."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3, bias=False)
    before = model.weight.detach().clone()
    x = torch.randn(8, 4)

    def step(batch, progress):
        return scale * model(batch).sum(), {}

    cfg = OptimConfig(epochs=1, lr=0.1, final_lr=0.1, weight_decay=0.0, warmup_epochs=0.0, grad_clip=grad_clip)
    fit(out_dir=tmp_path, modules={"m": model}, head=None, make_batches=lambda epoch: [x], batches_per_epoch=1,
        rows_per_batch=8, step=step, cfg=cfg, ctx=DistContext(), show_progress=False)
    record = json.loads((tmp_path / LOG_NAME).read_text().splitlines()[0])
    return before, model.weight.detach().clone(), record, x


def test_grad_clip_scales_the_step_to_the_clip_norm(tmp_path):
    scale = 100.0
    before, free, _, x = one_step(tmp_path / "free", 0.0, scale)
    _, clipped, record, _ = one_step(tmp_path / "clipped", 5.0, scale)
    grad = scale * x.sum(dim=0).expand(3, 4)  # d/dW of scale * sum(W x) over the batch: every row is sum_b x_b
    norm = float(grad.norm())
    # First Nesterov SGD step without weight decay: W -= lr * (1 + momentum) * g.
    torch.testing.assert_close(before - free, 0.1 * 1.9 * grad)
    torch.testing.assert_close(before - clipped, 0.1 * 1.9 * grad * (5.0 / norm), rtol=1e-5, atol=1e-7)
    assert record["grad_norm"] == pytest.approx(norm, rel=1e-5)  # logged before clipping


def test_grad_clip_above_the_norm_changes_nothing(tmp_path):
    _, free, record_free, _ = one_step(tmp_path / "free", 0.0, 1.0)
    _, loose, record, _ = one_step(tmp_path / "loose", 1e6, 1.0)
    torch.testing.assert_close(loose, free)
    assert "grad_norm" not in record_free and record["grad_norm"] < 1e6
