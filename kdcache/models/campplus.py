"""CAM++ speaker model with WeSpeaker's parameter names."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdcache.errors import KdcacheError
from kdcache.models.pooling import get_pooling

SEGMENT_FRAMES = 100


def get_nonlinear(config_str: str, channels: int) -> nn.Sequential:
    """Sequential of named BN/ReLU stages from a '-'-joined config, e.g. 'batchnorm-relu'.

    'batchnorm_' is a BatchNorm1d without affine parameters.
    """
    seq = nn.Sequential()
    for name in config_str.split("-"):
        if name == "relu":
            seq.add_module("relu", nn.ReLU())
        elif name == "prelu":
            seq.add_module("prelu", nn.PReLU(channels))
        elif name == "batchnorm":
            seq.add_module("batchnorm", nn.BatchNorm1d(channels))
        elif name == "batchnorm_":
            seq.add_module("batchnorm", nn.BatchNorm1d(channels, affine=False))
        else:
            raise KdcacheError(f"unknown CAM++ nonlinearity {name!r} in config_str {config_str!r}")
    return seq


def segment_mean(x: torch.Tensor, seg_len: int = SEGMENT_FRAMES) -> torch.Tensor:
    """[B, C, T] -> [B, C, T]: each frame gets the mean of its consecutive seg_len-frame segment.

    The last segment may be partial; it is averaged over its actual frames. Written as WeSpeaker's
    ``seg_pooling`` (ceil-mode average pooling, expanded back), which traces to ONNX with a dynamic T.
    """
    seg = F.avg_pool1d(x, kernel_size=seg_len, stride=seg_len, ceil_mode=True)
    batch, channels, segments = seg.shape
    seg = seg.unsqueeze(-1).expand(batch, channels, segments, seg_len).reshape(batch, channels, -1)
    return seg[..., :x.shape[-1]]


class BasicResBlock(nn.Module):
    """2-D residual block; the stride applies to frequency only."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes * self.expansion:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes * self.expansion, 1, stride=(stride, 1), bias=False),
                nn.BatchNorm2d(planes * self.expansion),
            )
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class FCM(nn.Module):
    """2-D front end: [B, F, T] -> [B, m_channels * F/8, T] (frequency downsampled 8x)."""

    def __init__(self, num_blocks: tuple[int, int] = (2, 2), m_channels: int = 32,
                 feat_dim: int = 80) -> None:
        super().__init__()
        self.in_planes = m_channels
        self.conv1 = nn.Conv2d(1, m_channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m_channels)
        self.layer1 = self._make_layer(m_channels, num_blocks[0], stride=2)
        self.layer2 = self._make_layer(m_channels, num_blocks[1], stride=2)
        self.conv2 = nn.Conv2d(m_channels, m_channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(m_channels)
        freq = feat_dim
        for _ in range(3):
            freq = (freq + 1) // 2
        self.out_channels = m_channels * freq

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(BasicResBlock(self.in_planes, planes, s))
            self.in_planes = planes * BasicResBlock.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = self.layer2(self.layer1(out))
        out = F.relu(self.bn2(self.conv2(out)))
        return out.reshape(out.shape[0], out.shape[1] * out.shape[2], out.shape[3])


class TDNNLayer(nn.Module):
    """Conv1d (no bias) -> nonlinear (BN -> ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = -1, dilation: int = 1, bias: bool = False,
                 config_str: str = "batchnorm-relu") -> None:
        super().__init__()
        if padding < 0:
            padding = (kernel_size - 1) // 2 * dilation
        self.linear = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride,
                                padding=padding, dilation=dilation, bias=bias)
        self.nonlinear = get_nonlinear(config_str, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class CAMLayer(nn.Module):
    """Context-aware masking: local conv output gated by utterance + segment context."""

    def __init__(self, bn_channels: int, out_channels: int, kernel_size: int, stride: int,
                 padding: int, dilation: int, bias: bool, reduction: int = 2) -> None:
        super().__init__()
        self.linear_local = nn.Conv1d(bn_channels, out_channels, kernel_size, stride=stride,
                                      padding=padding, dilation=dilation, bias=bias)
        self.linear1 = nn.Conv1d(bn_channels, bn_channels // reduction, 1)
        self.relu = nn.ReLU()
        self.linear2 = nn.Conv1d(bn_channels // reduction, out_channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear_local(x)
        context = x.mean(dim=-1, keepdim=True) + segment_mean(x)
        context = self.relu(self.linear1(context))
        return y * self.sigmoid(self.linear2(context))


class CAMDenseTDNNLayer(nn.Module):
    """BN-ReLU -> 1x1 bottleneck conv -> BN-ReLU -> CAM layer: [B, Cin, T] -> [B, growth, T]."""

    def __init__(self, in_channels: int, out_channels: int, bn_channels: int, kernel_size: int,
                 stride: int = 1, dilation: int = 1, bias: bool = False,
                 config_str: str = "batchnorm-relu") -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.nonlinear1 = get_nonlinear(config_str, in_channels)
        self.linear1 = nn.Conv1d(in_channels, bn_channels, 1, bias=False)
        self.nonlinear2 = get_nonlinear(config_str, bn_channels)
        self.cam_layer = CAMLayer(bn_channels, out_channels, kernel_size, stride=stride,
                                  padding=padding, dilation=dilation, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseTDNNBlock(nn.ModuleList):
    """Dense block: each layer's output is concatenated to its input (children tdnnd1..N)."""

    def __init__(self, num_layers: int, in_channels: int, out_channels: int, bn_channels: int,
                 kernel_size: int, stride: int = 1, dilation: int = 1, bias: bool = False,
                 config_str: str = "batchnorm-relu") -> None:
        super().__init__()
        for i in range(num_layers):
            layer = CAMDenseTDNNLayer(in_channels + i * out_channels, out_channels, bn_channels,
                                      kernel_size, stride=stride, dilation=dilation, bias=bias,
                                      config_str=config_str)
            self.add_module(f"tdnnd{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = torch.cat((x, layer(x)), dim=1)
        return x


class TransitLayer(nn.Module):
    """BN-ReLU -> 1x1 conv (no bias)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False,
                 config_str: str = "batchnorm-relu") -> None:
        super().__init__()
        self.nonlinear = get_nonlinear(config_str, in_channels)
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class DenseLayer(nn.Module):
    """1x1 conv (no bias) + nonlinear; accepts [B, C] or [B, C, T]."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False,
                 config_str: str = "batchnorm-relu") -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=bias)
        self.nonlinear = get_nonlinear(config_str, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = self.linear(x.unsqueeze(-1)).squeeze(-1)
        else:
            x = self.linear(x)
        return self.nonlinear(x)


class CAMPPlus(nn.Module):
    """CAM++: forward fbank [B, T, F] -> embedding [B, embed_dim].

    Needs T >= 3 (time is halved once; the std needs two frames).
    """

    min_frames = 3

    def __init__(self, feat_dim: int = 80, embed_dim: int = 512, pooling_func: str = "TSTP",
                 growth_rate: int = 32, bn_size: int = 4, init_channels: int = 128,
                 config_str: str = "batchnorm-relu") -> None:
        super().__init__()
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.head = FCM(feat_dim=feat_dim)
        channels = self.head.out_channels
        self.xvector = nn.Sequential()
        self.xvector.add_module(
            "tdnn", TDNNLayer(channels, init_channels, 5, stride=2, dilation=1, padding=-1,
                              config_str=config_str))
        channels = init_channels
        for i, (num_layers, kernel_size, dilation) in enumerate(
                zip((12, 24, 16), (3, 3, 3), (1, 2, 2))):
            block = CAMDenseTDNNBlock(num_layers, channels, growth_rate, bn_size * growth_rate,
                                      kernel_size, dilation=dilation, config_str=config_str)
            self.xvector.add_module(f"block{i + 1}", block)
            channels += num_layers * growth_rate
            self.xvector.add_module(
                f"transit{i + 1}", TransitLayer(channels, channels // 2, config_str=config_str))
            channels //= 2
        self.xvector.add_module("out_nonlinear", get_nonlinear(config_str, channels))
        self.pool = get_pooling(pooling_func, in_dim=channels)
        self.xvector.add_module("stats", self.pool)
        self.xvector.add_module(
            "dense", DenseLayer(self.pool.get_out_dim(), embed_dim, config_str="batchnorm_"))
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.xvector(self.head(x.permute(0, 2, 1)))
