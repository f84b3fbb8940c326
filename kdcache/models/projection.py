"""AAM-softmax head (WeSpeaker's ArcMarginProduct) and its margin schedule."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdcache.errors import KdcacheError

_SIN2_FLOOR = 1e-12


def arc_margin_phi(cos_t: torch.Tensor, margin: float, easy_margin: bool = False,
                   sin2_floor: float = _SIN2_FLOOR) -> torch.Tensor:
    """The target cosine with the additive angular margin: ``cos(theta + m)`` (WeSpeaker's rule).

    Non-easy rule: where ``cos > cos(pi - m)`` (theta + m would pass pi) it is ``cos - (1 - cos m)``
    instead; easy rule: ``cos`` where ``cos <= 0``. ``sin`` is ``sqrt(max(1 - cos^2, sin2_floor))``:
    WeSpeaker does not clamp; the floor only acts where ``1 - cos^2 <= 0`` in float32, where WeSpeaker
    gives NaN, and keeps the forward and the gradient finite there. Any shape; the dtype of ``cos_t``.
    The student head and the cached teacher's target logit (``apply_teacher_margin``) both use it.
    """
    sin_t = torch.sqrt((1.0 - cos_t * cos_t).clamp_min(sin2_floor))
    phi = cos_t * math.cos(margin) - sin_t * math.sin(margin)
    if easy_margin:
        return torch.where(cos_t > 0, phi, cos_t)
    return torch.where(cos_t > math.cos(math.pi - margin), phi, cos_t - (1.0 + math.cos(math.pi - margin)))


class ArcMarginProduct(nn.Module):
    """Additive angular margin head: logits = scale * cos(theta), cos(theta + m) on the label.

    One parameter, ``weight`` [C, D] (class-major, no bias). Cosines are always computed in
    float32, also under autocast.
    """

    def __init__(self, in_features: int, out_features: int, scale: float = 32.0,
                 margin: float = 0.0, easy_margin: bool = False) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.scale = float(scale)
        self.easy_margin = easy_margin
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.xavier_uniform_(self.weight)
        self.update(margin)

    def update(self, margin: float) -> None:
        """Set the margin m and recompute the derived constants."""
        self.margin = float(margin)
        self.cos_m = math.cos(self.margin)
        self.sin_m = math.sin(self.margin)
        self.th = math.cos(math.pi - self.margin)
        self.mmm = 1.0 + math.cos(math.pi - self.margin)
        self.mm = math.sin(math.pi - self.margin) * self.margin  # unused, kept for parity

    def normalized_weight(self) -> torch.Tensor:
        """[C, D] class weights with L2-normalised rows (float32)."""
        with torch.autocast(device_type=self.weight.device.type, enabled=False):
            return F.normalize(self.weight.float(), dim=1)

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        """[B, D] embeddings -> [B, C] float32 cosines with every class."""
        with torch.autocast(device_type=emb.device.type, enabled=False):
            return F.linear(F.normalize(emb.float(), dim=1), self.normalized_weight())

    def cosine_logits(self, emb: torch.Tensor) -> torch.Tensor:
        """[B, D] -> [B, C] margin-free logits scale * cos (no label needed)."""
        return self.scale * self.cosine(emb)

    def forward(self, emb: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """[B, D] embeddings, [B] class indices -> [B, C] logits with the margin on the label."""
        cos = self.cosine(emb)
        index = label.long().view(-1, 1)
        phi = arc_margin_phi(cos.gather(1, index), self.margin, easy_margin=self.easy_margin)
        return self.scale * cos.scatter(1, index, phi)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"scale={self.scale}, margin={self.margin}, easy_margin={self.easy_margin}")


SCHEDULE_KINDS = ("exp", "linear")


class MarginScheduler:
    """WeSpeaker's per-iteration margin schedule.

    With E = iterations_per_epoch: margin = initial before iteration (increase_start_epoch-1)*E,
    final from (fix_start_epoch-1)*E on, and an 'exp' or 'linear' ramp in between. Epochs are
    1-based as in WeSpeaker's configs (defaults 20 and 40 of a 150-epoch run).
    """

    def __init__(self, head: ArcMarginProduct, iterations_per_epoch: int,
                 initial_margin: float = 0.0, final_margin: float = 0.2,
                 increase_start_epoch: int = 20, fix_start_epoch: int = 40,
                 kind: str = "exp") -> None:
        if kind not in SCHEDULE_KINDS:
            raise KdcacheError(f"unknown margin schedule {kind!r}; valid: exp, linear")
        if iterations_per_epoch < 1:
            raise KdcacheError(f"iterations_per_epoch must be >= 1, got {iterations_per_epoch}")
        if not 1 <= increase_start_epoch <= fix_start_epoch:
            raise KdcacheError(
                "margin schedule needs 1 <= increase_start_epoch <= fix_start_epoch, got "
                f"{increase_start_epoch} and {fix_start_epoch}")
        self.head = head
        self.initial_margin = float(initial_margin)
        self.final_margin = float(final_margin)
        self.kind = kind
        self.increase_start_iter = (increase_start_epoch - 1) * iterations_per_epoch
        self.fix_start_iter = (fix_start_epoch - 1) * iterations_per_epoch
        self.current_iter = 0

    def get_margin(self, iteration: int) -> float:
        """Margin at a 0-based global iteration (pure; does not touch the head)."""
        if iteration >= self.fix_start_iter:
            return self.final_margin
        if iteration < self.increase_start_iter:
            return self.initial_margin
        t = iteration - self.increase_start_iter
        span = self.fix_start_iter - self.increase_start_iter
        if self.kind == "exp":
            ratio = 1.0 - math.exp((t / span) * math.log(1e-3 / (1.0 + 1e-6)))
        else:
            ratio = t / span
        return self.initial_margin + (self.final_margin - self.initial_margin) * ratio

    def step(self, iteration: int | None = None) -> float:
        """Apply the margin of `iteration` (default: an internal counter) to the head."""
        if iteration is not None:
            self.current_iter = iteration
        margin = self.get_margin(self.current_iter)
        self.head.update(margin)
        self.current_iter += 1
        return margin


def attach_head(model: nn.Module, num_classes: int, scale: float = 32.0,
                margin: float = 0.0, easy_margin: bool = False) -> ArcMarginProduct:
    """Add an ArcMarginProduct as child ``projection`` of a speaker model (key
    ``projection.weight``, as in WeSpeaker checkpoints), on the model's device; replaces an
    existing head. The model's forward is unchanged (it still returns the embedding)."""
    head = ArcMarginProduct(int(model.embed_dim), num_classes, scale=scale, margin=margin,
                            easy_margin=easy_margin)
    first = next(model.parameters(), None)
    if first is not None:
        head.to(device=first.device)
    model.add_module("projection", head)
    return head
