"""A ResNet-style CNN (a ResNet-18 layout at small widths): the model whose stacked strided
convolutions and pools produce the deepest chains of floor divisions in size formulas."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "ResNetStyleCNN"]


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with a residual; a 1x1 strided conv + BatchNorm
    downsamples the shortcut where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y + shortcut)


class ResNetStyleCNN(nn.Module):
    """7x7/2 stem conv (no bias) + BatchNorm + ReLU + 3x3/2 max-pool, then one stage of two
    BasicBlocks per width (the first of each later stage strided), adaptive average pool to
    1x1 and a linear classifier."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), classes: int = 10,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], widths[0]
        for stage, width in enumerate(widths):
            blocks += [BasicBlock(cin, width, 1 if stage == 0 else 2),
                       BasicBlock(width, width, 1)]
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
