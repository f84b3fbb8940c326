"""Checkpoint averaging as WeSpeaker's average_model.py: every float entry is the mean, BN included."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdcache.errors import KdcacheError
from kdcache.models.average import (
    average_model_folder,
    average_state_dicts,
    default_num_avg,
    epoch_checkpoints,
    save_epoch_weights,
)


def bn_model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def states_with_values() -> list[dict[str, torch.Tensor]]:
    """Three checkpoints of a Linear + BatchNorm1d with chosen numbers (running stats as after training)."""
    out = []
    for k, (w, mean, var, seen) in enumerate([(1.0, 0.5, 2.0, 10), (2.0, 1.5, 4.0, 20), (6.0, -1.0, 3.0, 30)]):
        state = bn_model().state_dict()
        state["0.weight"] = torch.full((2, 3), w)
        state["0.weight"][0, 0] = w * 10 + k  # one element differs per checkpoint in another pattern
        state["1.running_mean"] = torch.tensor([mean, 2 * mean])
        state["1.running_var"] = torch.tensor([var, var + 1])
        state["1.num_batches_tracked"] = torch.tensor(seen)
        out.append(state)
    return out


def test_one_averaged_tensor_equals_the_hand_computed_mean():
    avg = average_state_dicts(states_with_values())
    # 0.weight[0, 0]: 10+0, 20+1, 60+2 -> 93 / 3 = 31; elsewhere (1 + 2 + 6) / 3 = 3
    assert avg["0.weight"][0, 0].item() == pytest.approx(31.0)
    assert avg["0.weight"][1, 2].item() == pytest.approx(3.0)
    assert avg["0.weight"].dtype == torch.float32


def test_batch_norm_statistics_are_averaged_and_the_counter_is_the_last():
    avg = average_state_dicts(states_with_values())
    # WeSpeaker divides the running statistics too: (0.5 + 1.5 - 1) / 3, (2 + 4 + 3) / 3
    torch.testing.assert_close(avg["1.running_mean"], torch.tensor([1.0 / 3, 2.0 / 3]))
    torch.testing.assert_close(avg["1.running_var"], torch.tensor([3.0, 4.0]))
    # WeSpeaker would give the float 20.0; the integer counter is kept from the last checkpoint instead
    assert avg["1.num_batches_tracked"].dtype == torch.int64
    assert avg["1.num_batches_tracked"].item() == 30
    model = bn_model()
    model.load_state_dict(avg, strict=True)


def test_default_scales_wespeakers_10_of_150_epochs():
    assert [default_num_avg(e) for e in (1, 6, 22, 23, 30, 150, 300)] == [1, 1, 1, 2, 2, 10, 20]


def test_epoch_weights_are_bounded(tmp_path):
    model = bn_model()
    for epoch in range(1, 6):
        save_epoch_weights(model, tmp_path, epoch, keep=3)
    assert [e for e, _ in epoch_checkpoints(tmp_path)] == [3, 4, 5]
    assert not list(tmp_path.glob("*.tmp"))


def test_wespeaker_models_folder_gets_avg_model_pt(tmp_path):
    states = states_with_values()
    for epoch, state in zip((8, 9, 10), states):
        torch.save(state, tmp_path / f"model_{epoch}.pt")
    torch.save(bn_model().state_dict(), tmp_path / "model_2.pt")  # older: not among the last 3
    target, epochs = average_model_folder(tmp_path, 3)
    assert target == tmp_path / "avg_model.pt" and epochs == [8, 9, 10]
    saved = torch.load(target, weights_only=True)
    torch.testing.assert_close(saved["1.running_var"], torch.tensor([3.0, 4.0]))


def test_more_than_there_are_is_one_line_and_writes_nothing(tmp_path):
    for epoch, state in enumerate(states_with_values(), start=1):
        torch.save(state, tmp_path / f"model_{epoch}.pt")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(KdcacheError, match=r"last 4 epoch checkpoints .* there are 3 \(epochs 1-3\)"):
        average_model_folder(tmp_path, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
