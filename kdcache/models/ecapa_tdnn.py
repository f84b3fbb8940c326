"""ECAPA-TDNN speaker model with WeSpeaker's parameter names."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdcache.errors import KdcacheError
from kdcache.models.pooling import get_pooling


class Conv1dReluBn(nn.Module):
    """Conv1d (with bias) -> ReLU -> BatchNorm1d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, padding: int = 0, dilation: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, dilation=dilation, bias=bias)
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class Res2Conv1dReluBn(nn.Module):
    """Res2Net unit: `scale` channel chunks, hierarchical convs, last chunk passed through."""

    def __init__(self, channels: int, kernel_size: int = 1, stride: int = 1, padding: int = 0,
                 dilation: int = 1, bias: bool = True, scale: int = 4) -> None:
        super().__init__()
        if channels % scale != 0:
            raise KdcacheError(f"ECAPA channels ({channels}) must be divisible by scale ({scale})")
        self.scale = scale
        self.width = channels // scale
        self.nums = scale if scale == 1 else scale - 1
        self.convs = nn.ModuleList(
            nn.Conv1d(self.width, self.width, kernel_size, stride=stride, padding=padding,
                      dilation=dilation, bias=bias)
            for _ in range(self.nums)
        )
        self.bns = nn.ModuleList(nn.BatchNorm1d(self.width) for _ in range(self.nums))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(x, self.width, dim=1)
        outs = []
        y = chunks[0]
        for i in range(self.nums):
            y = chunks[i] if i == 0 else y + chunks[i]
            y = self.bns[i](F.relu(self.convs[i](y)))
            outs.append(y)
        if self.scale != 1:
            outs.append(chunks[self.nums])
        return torch.cat(outs, dim=1)


class SE_Connect(nn.Module):
    """Squeeze-excitation over channels: [B, C, T] -> [B, C, T]."""

    def __init__(self, channels: int, se_bottleneck_dim: int = 128) -> None:
        super().__init__()
        self.linear1 = nn.Linear(channels, se_bottleneck_dim)
        self.linear2 = nn.Linear(se_bottleneck_dim, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(dim=2)))))
        return x * gate.unsqueeze(2)


class SE_Res2Block(nn.Module):
    """x + (1x1 ConvReluBn -> Res2 unit -> 1x1 ConvReluBn -> SE)(x)."""

    def __init__(self, channels: int, kernel_size: int, stride: int, padding: int,
                 dilation: int, scale: int) -> None:
        super().__init__()
        self.se_res2block = nn.Sequential(
            Conv1dReluBn(channels, channels, kernel_size=1),
            Res2Conv1dReluBn(channels, kernel_size, stride, padding, dilation, scale=scale),
            Conv1dReluBn(channels, channels, kernel_size=1),
            SE_Connect(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.se_res2block(x)


class ECAPA_TDNN(nn.Module):
    """ECAPA-TDNN: forward fbank [B, T, F] -> embedding [B, embed_dim].

    Needs T >= 2 (pooling statistics).
    """

    min_frames = 2

    def __init__(self, channels: int = 512, feat_dim: int = 80, embed_dim: int = 192,
                 pooling_func: str = "ASTP", global_context_att: bool = False,
                 emb_bn: bool = False) -> None:
        super().__init__()
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.layer1 = Conv1dReluBn(feat_dim, channels, kernel_size=5, padding=2)
        self.layer2 = SE_Res2Block(channels, 3, 1, padding=2, dilation=2, scale=8)
        self.layer3 = SE_Res2Block(channels, 3, 1, padding=3, dilation=3, scale=8)
        self.layer4 = SE_Res2Block(channels, 3, 1, padding=4, dilation=4, scale=8)
        out_channels = 512 * 3  # fixed width in WeSpeaker, whatever `channels` is
        self.conv = nn.Conv1d(channels * 3, out_channels, kernel_size=1)
        self.pool = get_pooling(pooling_func, in_dim=out_channels,
                                global_context_att=global_context_att)
        pool_out = self.pool.get_out_dim()
        self.bn = nn.BatchNorm1d(pool_out)
        self.linear = nn.Linear(pool_out, embed_dim)
        self.bn2: nn.Module = nn.BatchNorm1d(embed_dim) if emb_bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.layer1(x.permute(0, 2, 1))
        out2 = self.layer2(out1)
        out3 = self.layer3(out2)
        out4 = self.layer4(out3)
        out = F.relu(self.conv(torch.cat((out2, out3, out4), dim=1)))
        out = self.bn(self.pool(out))
        return self.bn2(self.linear(out))


def ECAPA_TDNN_GLOB_c512(feat_dim: int = 80, embed_dim: int = 192, pooling_func: str = "ASTP",
                         emb_bn: bool = False, channels: int = 512) -> ECAPA_TDNN:
    """ECAPA-TDNN, 512 channels, global-context attentive pooling."""
    return ECAPA_TDNN(channels=channels, feat_dim=feat_dim, embed_dim=embed_dim,
                      pooling_func=pooling_func, global_context_att=True, emb_bn=emb_bn)


def ECAPA_TDNN_GLOB_c1024(feat_dim: int = 80, embed_dim: int = 192, pooling_func: str = "ASTP",
                          emb_bn: bool = False, channels: int = 1024) -> ECAPA_TDNN:
    """ECAPA-TDNN, 1024 channels, global-context attentive pooling."""
    return ECAPA_TDNN(channels=channels, feat_dim=feat_dim, embed_dim=embed_dim,
                      pooling_func=pooling_func, global_context_att=True, emb_bn=emb_bn)
