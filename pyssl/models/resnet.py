"""CIFAR-style residual networks (He et al. 2016, the CIFAR variant SimCLR and its successors use).

Anchor: torchvision's ``resnet18`` with the CIFAR stem of SimCLR's appendix B.9 — a 3×3 stride-1
first convolution and no max-pool, so 32×32 inputs keep a 32×32 first stage. Basic blocks, batch
norm, global average pooling; the classifier is left out: the network maps images to features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and an identity (or 1×1 projection) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet mapping ``[B, in_channels, H, W]`` images to ``[B, out_dim]`` features.

    Args:
        layers: number of basic blocks per stage; stage ``i`` has ``width * 2**i`` channels and
            (after the first) halves the resolution. ``(2, 2, 2, 2)`` is ResNet-18.
        width: channels of the first stage (64 in ResNet-18).
        in_channels: image channels.

    ``out_dim = width * 2**(len(layers) - 1)``. Any ``H, W >= 1`` work (global average pooling).
    The last batch norm of each residual branch starts at zero (Goyal et al. 2017), which lets
    short runs train stably.
    """

    def __init__(
        self, layers: Sequence[int] = (2, 2, 2, 2), width: int = 64, in_channels: int = 3
    ) -> None:
        super().__init__()
        if not layers or any(not isinstance(n, int) or n < 1 for n in layers):
            raise ValueError(f"layers: expected a non-empty list of positive ints, got {layers!r}")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width: expected a positive int, got {width!r}")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels: expected a positive int, got {in_channels!r}")
        self.in_channels = in_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        planes = width
        for i, n in enumerate(layers):
            out = width * 2**i
            blocks = [BasicBlock(planes, out, 1 if i == 0 else 2)]
            blocks += [BasicBlock(out, out, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            planes = out
        self.stages = nn.Sequential(*stages)
        self.out_dim = planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward_map(self, x: Tensor) -> Tensor:
        """The last stage's feature map ``[B, out_dim, H', W']``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x: expected [B, {self.in_channels}, H, W] images, got shape {tuple(x.shape)}"
            )
        return self.stages(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        """Globally average-pooled features ``[B, out_dim]``."""
        return self.forward_map(x).mean((2, 3))


def resnet18_cifar(in_channels: int = 3, width: int = 64) -> ResNet:
    """ResNet-18 with the CIFAR stem: 11.2 M parameters at width 64, ``out_dim = 8 * width``."""
    return ResNet((2, 2, 2, 2), width, in_channels)


def resnet_digits(in_channels: int = 3, width: int = 32) -> ResNet:
    """A small three-stage ResNet (one block per stage) for 32×32 digit images:
    0.31 M parameters at width 32, ``out_dim = 4 * width`` (128), about 50 MMAC per 32×32 image."""
    return ResNet((1, 1, 1), width, in_channels)
