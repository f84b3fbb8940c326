"""IML-KD's integrated inputs, built from cached integrated-gradient maps (pure tensor functions).

The paper (Yang et al., 2024) leaves the exact construction open; these are documented choices:

- ``weighted`` (the default): the fbank with every time-frequency bin scaled by ``1 + |A| / max|A|``
  (A the mean map over durations): the input, emphasised where the teacher attends.
- ``attribution``: the mean over durations of the IG maps, rescaled per crop to the RMS of the fbank
  it explains, so the network sees inputs of its usual scale. It was the default until the study of
  issue 14 measured that the teacher is mostly wrong on it (top-1 6% against 98% on the crops, with
  low entropy): imlkd then distills wrong speakers; its x-vector students reached 14.35% EER against
  3.92% on ``weighted`` inputs.

Caches built before the mode was recorded used ``attribution`` (:func:`cached_mode`).

Phase 1 and phase 2 call the same function on the float16-rounded maps stored in the cache, so the
student sees exactly the integrated input the teacher's cached outputs were computed on.
"""

from __future__ import annotations

import torch

from kdcache.errors import KdcacheError

INTEGRATED_INPUT_MODES = ("weighted", "attribution")


def cached_mode(settings: dict) -> str:
    """The integrated-input mode a cache with saliency was built with (``attribution`` when unrecorded)."""
    return (settings.get("saliency") or {}).get("integrated_input") or "attribution"


def integrated_inputs(feats: torch.Tensor, saliency: torch.Tensor, mode: str = "weighted") -> torch.Tensor:
    """feats [B, T, F] and saliency [B, n_dur, T, F] -> integrated inputs [B, T, F] float32."""
    if mode not in INTEGRATED_INPUT_MODES:
        raise KdcacheError(f"integrated input mode {mode!r}: choose one of {', '.join(INTEGRATED_INPUT_MODES)}")
    if saliency.dim() != 4 or saliency.shape[0] != feats.shape[0] or saliency.shape[2:] != feats.shape[1:]:
        raise KdcacheError(
            f"saliency of shape {tuple(saliency.shape)} does not fit features of shape {tuple(feats.shape)}"
        )
    feats = feats.float()
    attribution = saliency.float().mean(dim=1)
    if mode == "attribution":
        feat_rms = feats.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
        attr_rms = attribution.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
        return attribution * (feat_rms / attr_rms.clamp_min(1e-12))
    peak = attribution.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return feats * (1.0 + attribution.abs() / peak)
