"""Size and cost of a speaker model: parameters and FLOPs per 2 s crop."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kdcache.models.checkpoint import ModelConfig, build_speaker_model

CROP_FRAMES = 200  # 2 s at the 10 ms frame shift


def embedding_parameters(model: nn.Module) -> int:
    """Parameters of the embedding network, without the training-only AAM head (``projection``)."""
    head = getattr(model, "projection", None)
    head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    return sum(p.numel() for p in model.parameters() if id(p) not in head_ids)


def crop_flops(model: nn.Module, num_mel_bins: int, frames: int = CROP_FRAMES) -> int:
    """FLOPs (a multiply-add counts 2, torch's FlopCounterMode convention) of one embedding forward of
    a ``[1, frames, num_mel_bins]`` fbank crop."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, frames, num_mel_bins))
    return int(counter.get_total_flops())


def model_complexity(config: ModelConfig) -> dict[str, int]:
    """``{"parameters", "flops_per_2s"}`` of the model that ``config`` describes (freshly built weights)."""
    model = build_speaker_model(config)
    bins = int(config.features.get("num_mel_bins", 80))
    return {"parameters": embedding_parameters(model), "flops_per_2s": crop_flops(model, bins)}
