"""Temporal pooling layers (WeSpeaker semantics).

Both layers pool over the last axis (time). 4-D inputs [B, C, F, T] are treated as C*F channels,
flattened C-major (index c*F + f).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kdcache.errors import KdcacheError

# Floor added to variances before the square root (WeSpeaker's value).
VAR_EPS = 1e-7


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and sqrt(unbiased var + eps) over the last axis, keeping the other axes."""
    mean = x.mean(dim=-1)
    std = torch.sqrt(torch.var(x, dim=-1) + VAR_EPS)
    return mean, std


class TSTP(nn.Module):
    """Temporal statistics pooling: [B, C, T] or [B, C, F, T] -> [B, 2*C(*F)] = [means ; stds]."""

    def __init__(self, in_dim: int = 0, **_: object) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = 2 * in_dim

    def get_out_dim(self) -> int:
        return self.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = _stats(x)
        return torch.cat((mean.flatten(start_dim=1), std.flatten(start_dim=1)), dim=1)


class ASTP(nn.Module):
    """Attentive statistics pooling: [B, C, T] or [B, C, F, T] -> [B, 2*in_dim].

    With ``global_context_att`` the attention also sees the utterance mean and std broadcast
    over time (ECAPA "GLOB"). Attention weights are a softmax over time per channel.
    """

    def __init__(self, in_dim: int, bottleneck_dim: int = 128, global_context_att: bool = False,
                 **_: object) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = 2 * in_dim
        self.global_context_att = global_context_att
        att_in = 3 * in_dim if global_context_att else in_dim
        self.linear1 = nn.Conv1d(att_in, bottleneck_dim, kernel_size=1)
        self.linear2 = nn.Conv1d(bottleneck_dim, in_dim, kernel_size=1)

    def get_out_dim(self) -> int:
        return self.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.reshape(x.shape[0], x.shape[1] * x.shape[2], x.shape[3])
        if self.global_context_att:
            mean, std = _stats(x)
            t = x.shape[-1]
            att_in = torch.cat(
                (x, mean.unsqueeze(-1).expand(-1, -1, t), std.unsqueeze(-1).expand(-1, -1, t)),
                dim=1,
            )
        else:
            att_in = x
        alpha = torch.softmax(self.linear2(torch.tanh(self.linear1(att_in))), dim=2)
        mu = torch.sum(alpha * x, dim=2)
        var = torch.sum(alpha * x * x, dim=2) - mu * mu
        std = torch.sqrt(var.clamp(min=VAR_EPS))
        return torch.cat((mu, std), dim=1)


POOLING_NAMES = ("TSTP", "ASTP")


def get_pooling(name: str, in_dim: int, **kwargs: object) -> nn.Module:
    """Build a pooling layer by WeSpeaker name ('TSTP' or 'ASTP')."""
    if name == "TSTP":
        return TSTP(in_dim=in_dim)
    if name == "ASTP":
        return ASTP(in_dim=in_dim, **kwargs)
    raise KdcacheError(
        f"unknown pooling_func {name!r}; valid: {', '.join(POOLING_NAMES)}"
    )
