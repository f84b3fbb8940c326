"""Deletion and insertion curves: how faithful a model's own integrated-gradient map is in time.

For a crop's fbank ``x`` [T, F] and its speaker (the target class), frames are ranked by the model's
IG map of the margin-free target logit ``s * cos`` (:mod:`kdcache.teacher.saliency`, zero baseline),
summed over the mel bins of each frame. Then, for ``k`` = 0 .. T frames:

- **deletion**: the ``k`` most salient frames are *removed* from ``x``;
- **insertion**: only the ``k`` most salient frames are *put back* into an input that is all removed,

and the target-class probability ``softmax(s * cos)[target]`` (all classes of the model's AAM head,
no margin) is recorded. The x axis is the fraction ``k / T`` of frames; the area under each curve is
the trapezoid rule over it (0..1). A faithful map makes the deletion curve fall fast (low AUC) and the
insertion curve rise fast (high AUC).

What "remove" means after cepstral mean normalisation: every bin of a removed frame is set to 0,
the IG baseline. After CMN, 0 is each bin's mean over the crop, so a removed frame carries the crop's
average spectrum and no frame-specific evidence. It keeps the input length (the pooling still sees T
frames), and it is the point the IG path starts from, so deletion with all frames removed gives the
baseline's probability and IG's completeness links the two ends of the curves.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from kdcache.errors import KdcacheError
from kdcache.teacher.saliency import integrated_gradients

__all__ = [
    "FRAME_SCORES", "frame_scores", "frame_ranks", "frame_counts", "target_probability",
    "deletion_insertion_curves", "area_under_curve", "saliency_curves", "map_correlation",
]

FRAME_SCORES = ("sum", "abs")
LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def frame_scores(attributions: torch.Tensor, mode: str = "sum") -> torch.Tensor:
    """Per-frame saliency [B, T] of IG maps [B, T, F].

    ``sum``: the signed sum over bins, the frame's contribution to the target logit (IG is additive,
    so removing the top frames removes the most evidence *for* the target first). ``abs``: the sum of
    absolute values (evidence for or against).
    """
    if mode == "sum":
        return attributions.sum(dim=2)
    if mode == "abs":
        return attributions.abs().sum(dim=2)
    raise KdcacheError(f"--frame-score {mode}: choose one of {', '.join(FRAME_SCORES)}")


def frame_ranks(scores: torch.Tensor) -> torch.Tensor:
    """[B, T] int64 rank of each frame, 0 = most salient; ties go to the earlier frame first."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return ranks


def frame_counts(frames: int, points: int) -> np.ndarray:
    """Distinct frame counts ``round(f * frames)`` for ``points`` fractions f evenly spaced in [0, 1]."""
    if points < 2:
        raise KdcacheError(f"--points {points}: need at least 2 (fractions 0 and 1)")
    if frames < 1:
        raise KdcacheError("saliency-eval: crops have no frames")
    return np.unique(np.round(np.linspace(0.0, 1.0, points) * frames).astype(np.int64))


def target_probability(logits_fn: LogitsFn, feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[B] float64 softmax probability of ``targets`` [B] under ``logits_fn(feats)`` [B, C]."""
    logits = logits_fn(feats).double()
    return torch.softmax(logits, dim=1).gather(1, targets.long().view(-1, 1)).squeeze(1)


@torch.no_grad()
def deletion_insertion_curves(
    logits_fn: LogitsFn, feats: torch.Tensor, targets: torch.Tensor, ranks: torch.Tensor, counts: np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target probabilities ``(deletion, insertion)``, each [B, K] float64 for the K ``counts``.

    ``feats`` [B, T, F] (after CMN), ``ranks`` [B, T] from :func:`frame_ranks`. At count k the frames of
    rank < k are set to 0 (deletion) or are the only ones kept, the rest 0 (insertion).
    """
    deletion, insertion = [], []
    for k in counts:
        top = (ranks < int(k)).unsqueeze(2)  # [B, T, 1]
        zero = torch.zeros((), dtype=feats.dtype, device=feats.device)
        deletion.append(target_probability(logits_fn, torch.where(top, zero, feats), targets))
        insertion.append(target_probability(logits_fn, torch.where(top, feats, zero), targets))
    return torch.stack(deletion, dim=1).cpu(), torch.stack(insertion, dim=1).cpu()


def area_under_curve(fractions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Trapezoid rule over ``fractions`` [K] (0..1) of ``values`` [..., K]; returns [...]."""
    v = np.asarray(values, dtype=np.float64)
    x = np.asarray(fractions, dtype=np.float64)
    return ((v[..., 1:] + v[..., :-1]) * 0.5 * np.diff(x)).sum(axis=-1)


def map_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per row of a and b [B, ...] over all their entries; float64 [B] (NaN without spread)."""
    a = a.reshape(a.shape[0], -1).double()
    b = b.reshape(b.shape[0], -1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    norm = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(norm > 0, (a * b).sum(1) / norm.clamp_min(1e-300), torch.full_like(norm, float("nan")))


def saliency_curves(
    logits_fn: LogitsFn,
    feats: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 50,
    points: int = 21,
    frame_score: str = "sum",
    internal_batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """IG map, frame saliency and both curves for a batch of crops ``feats`` [B, T, F].

    Returns numpy arrays: ``fractions`` [K], ``frame_scores`` [B, T], ``deletion`` and ``insertion``
    [B, K] (target probabilities), ``auc_deletion`` and ``auc_insertion`` [B].
    """
    if feats.dim() != 3:
        raise KdcacheError(f"saliency-eval: expected fbank [B, T, F], got shape {list(feats.shape)}")
    attributions = integrated_gradients(logits_fn, feats, targets, steps, internal_batch_size)
    scores = frame_scores(attributions, frame_score)
    counts = frame_counts(feats.shape[1], points)
    deletion, insertion = deletion_insertion_curves(logits_fn, feats, targets, frame_ranks(scores), counts)
    fractions = counts / feats.shape[1]
    return {
        "fractions": fractions,
        "frame_scores": scores.cpu().double().numpy(),
        "deletion": deletion.numpy(),
        "insertion": insertion.numpy(),
        "auc_deletion": area_under_curve(fractions, deletion.numpy()),
        "auc_insertion": area_under_curve(fractions, insertion.numpy()),
    }
