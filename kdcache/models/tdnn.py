"""x-vector (TDNN) speaker model with WeSpeaker's parameter names."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdcache.models.pooling import get_pooling


class TdnnLayer(nn.Module):
    """Conv1d (no padding) -> ReLU -> BatchNorm1d(affine=False): [B, Cin, T] -> [B, Cout, T']."""

    def __init__(self, in_dim: int, out_dim: int, context_size: int, dilation: int = 1,
                 padding: int = 0) -> None:
        super().__init__()
        self.conv_1d = nn.Conv1d(in_dim, out_dim, context_size, dilation=dilation,
                                 padding=padding)
        self.bn = nn.BatchNorm1d(out_dim, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv_1d(x)))


class XVEC(nn.Module):
    """x-vector: five TDNN layers, statistics pooling, two segment layers.

    forward: fbank [B, T, F] -> embedding [B, embed_dim] (the second segment layer).
    Needs T >= 16 with TSTP (the TDNN stack removes 14 frames; the std needs two).
    """

    min_frames = 16

    def __init__(self, feat_dim: int = 80, hid_dim: int = 512, stats_dim: int = 1500,
                 embed_dim: int = 512, pooling_func: str = "TSTP") -> None:
        super().__init__()
        self.feat_dim = feat_dim
        self.stats_dim = stats_dim
        self.embed_dim = embed_dim
        self.frame_1 = TdnnLayer(feat_dim, hid_dim, context_size=5, dilation=1)
        self.frame_2 = TdnnLayer(hid_dim, hid_dim, context_size=3, dilation=2)
        self.frame_3 = TdnnLayer(hid_dim, hid_dim, context_size=3, dilation=3)
        self.frame_4 = TdnnLayer(hid_dim, hid_dim, context_size=1, dilation=1)
        self.frame_5 = TdnnLayer(hid_dim, stats_dim, context_size=1, dilation=1)
        self.pool = get_pooling(pooling_func, in_dim=stats_dim)
        self.seg_1 = nn.Linear(self.pool.get_out_dim(), embed_dim)
        self.seg_bn_1 = nn.BatchNorm1d(embed_dim, affine=False)
        self.seg_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.permute(0, 2, 1)
        for layer in (self.frame_1, self.frame_2, self.frame_3, self.frame_4, self.frame_5):
            out = layer(out)
        embed_a = self.seg_1(self.pool(out))
        return self.seg_2(self.seg_bn_1(F.relu(embed_a)))
