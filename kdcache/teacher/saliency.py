"""Integrated-gradient saliency of the teacher's target-speaker logit w.r.t. its fbank input (Captum)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from captum.attr import IntegratedGradients
from torch import nn

from kdcache.data.features import FeatureConfig
from kdcache.errors import KdcacheError


class TargetLogit(nn.Module):
    """fbank [B, T, F] -> margin-free AAM logits ``s * cos`` [B, S] of a model with a ``projection`` head."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.model.projection.cosine_logits(self.model(feats))


def duration_frames(features: FeatureConfig, crop_seconds: float, durations: Sequence[float]) -> list[int]:
    """Frames of each IG segment duration (s) in a crop of ``crop_seconds``; one longer than the crop is the crop."""
    frames = features.frames_for_seconds(crop_seconds)
    return [min(features.frames_for_seconds(d), frames) for d in durations]


def segment_bounds(num_frames: int, segment_frames: int) -> list[tuple[int, int]]:
    """Cut ``num_frames`` into consecutive segments of ``segment_frames``; a remainder joins the last one.

    ``segment_frames >= num_frames`` gives the whole crop as one segment.
    """
    if segment_frames >= num_frames:
        return [(0, num_frames)]
    count = num_frames // segment_frames
    bounds = [(k * segment_frames, (k + 1) * segment_frames) for k in range(count)]
    bounds[-1] = (bounds[-1][0], num_frames)
    return bounds


def integrated_gradients(
    forward: nn.Module,
    feats: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 50,
    internal_batch_size: int | None = None,
) -> torch.Tensor:
    """IG of ``forward(x)[:, target]`` w.r.t. ``feats`` [B, T, F] from a zero baseline.

    Right Riemann sum with ``steps`` points (``method="riemann_right"``); returns float32 [B, T, F].
    Zero is the baseline because, after mean normalisation, it is every bin's mean over time.
    """
    if steps < 2:  # Captum asserts n > 1 for every method
        raise KdcacheError(f"--ig-steps {steps}: integrated gradients need at least 2 steps")
    ig = IntegratedGradients(forward)
    with torch.enable_grad():
        attributions = ig.attribute(
            feats.float().requires_grad_(True),
            baselines=torch.zeros_like(feats, dtype=torch.float32),
            target=targets.long(),
            n_steps=steps,
            method="riemann_right",
            internal_batch_size=internal_batch_size,
        )
    return attributions.detach().float()


def multi_duration_saliency(
    model: nn.Module,
    feats: torch.Tensor,
    targets: torch.Tensor,
    duration_frames: Sequence[int],
    steps: int = 50,
    internal_batch_size: int | None = None,
) -> torch.Tensor:
    """IG maps for several segment durations, laid back on the crop's time axis.

    For each duration d, the crop [B, T, F] is cut into segments of d frames (:func:`segment_bounds`),
    each segment is fed to the teacher alone and attributed; segments of equal length are batched.
    Returns [B, len(duration_frames), T, F] float32.
    """
    forward = TargetLogit(model)
    batch, frames, bins = feats.shape
    maps = torch.zeros(batch, len(duration_frames), frames, bins, dtype=torch.float32, device=feats.device)
    for d_index, d_frames in enumerate(duration_frames):
        by_length: dict[int, list[tuple[int, int]]] = {}
        for lo, hi in segment_bounds(frames, int(d_frames)):
            by_length.setdefault(hi - lo, []).append((lo, hi))
        for bounds in by_length.values():
            pieces = torch.cat([feats[:, lo:hi] for lo, hi in bounds])
            piece_targets = targets.repeat(len(bounds))
            attr = integrated_gradients(forward, pieces, piece_targets, steps, internal_batch_size)
            for k, (lo, hi) in enumerate(bounds):
                maps[:, d_index, lo:hi] = attr[k * batch:(k + 1) * batch]
    return maps
