"""ResNet speaker models (ResNet34, ResNet293) with WeSpeaker's parameter names.

The input fbank [B, T, F] is treated as a one-channel image [B, 1, F, T]; strides apply to both
frequency and time.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdcache.models.pooling import get_pooling


def _shortcut(in_planes: int, out_planes: int, stride: int | tuple[int, int]) -> nn.Module:
    """1x1 conv + BN projection when the shape changes, identity (no keys) otherwise."""
    if stride != 1 or in_planes != out_planes:
        return nn.Sequential(
            nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_planes),
        )
    return nn.Sequential()


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (expansion 1)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int | tuple[int, int] = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 convs with a residual connection (expansion 4)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int | tuple[int, int] = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _downsampled(n: int, times: int) -> int:
    """Size after `times` stride-2, kernel-3, pad-1 convolutions."""
    for _ in range(times):
        n = (n + 1) // 2
    return n


class ResNet(nn.Module):
    """ResNet trunk + temporal pooling + embedding layer(s).

    forward: fbank [B, T, F] -> embedding [B, embed_dim] (``seg_2`` output when
    ``two_emb_layer`` else ``seg_1``). Needs T >= 9 (the std needs two pooled frames).
    """

    min_frames = 9

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], num_blocks: list[int],
                 m_channels: int = 32, feat_dim: int = 80, embed_dim: int = 128,
                 pooling_func: str = "TSTP", two_emb_layer: bool = False) -> None:
        super().__init__()
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.two_emb_layer = two_emb_layer
        self.in_planes = m_channels
        self.conv1 = nn.Conv2d(1, m_channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m_channels)
        self.layer1 = self._make_layer(block, m_channels, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, m_channels * 2, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, m_channels * 4, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, m_channels * 8, num_blocks[3], stride=2)
        self.stats_dim = _downsampled(feat_dim, 3) * m_channels * 8 * block.expansion
        self.pool = get_pooling(pooling_func, in_dim=self.stats_dim)
        self.seg_1 = nn.Linear(self.pool.get_out_dim(), embed_dim)
        if two_emb_layer:
            self.seg_bn_1: nn.Module = nn.BatchNorm1d(embed_dim, affine=False)
            self.seg_2: nn.Module = nn.Linear(embed_dim, embed_dim)
        else:
            self.seg_bn_1 = nn.Identity()
            self.seg_2 = nn.Identity()

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int,
                    num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.permute(0, 2, 1).unsqueeze(1)  # [B, 1, F, T]
        out = F.relu(self.bn1(self.conv1(out)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        embed = self.seg_1(self.pool(out))
        if self.two_emb_layer:
            embed = self.seg_2(self.seg_bn_1(F.relu(embed)))
        return embed


def ResNet34(feat_dim: int = 80, embed_dim: int = 256, pooling_func: str = "TSTP",
             two_emb_layer: bool = False, m_channels: int = 32) -> ResNet:
    """ResNet34: BasicBlock x [3, 4, 6, 3]."""
    return ResNet(BasicBlock, [3, 4, 6, 3], m_channels=m_channels, feat_dim=feat_dim,
                  embed_dim=embed_dim, pooling_func=pooling_func, two_emb_layer=two_emb_layer)


def ResNet293(feat_dim: int = 80, embed_dim: int = 256, pooling_func: str = "TSTP",
              two_emb_layer: bool = False, m_channels: int = 32) -> ResNet:
    """ResNet293: Bottleneck x [10, 20, 64, 3]."""
    return ResNet(Bottleneck, [10, 20, 64, 3], m_channels=m_channels, feat_dim=feat_dim,
                  embed_dim=embed_dim, pooling_func=pooling_func, two_emb_layer=two_emb_layer)
