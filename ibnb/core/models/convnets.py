"""Convolutional models: a small residual CNN (with optional spatial attention) and a CIFAR ResNet-18."""
from __future__ import annotations

import torch
import torch.nn as nn

from ibnb.core.models import register
from ibnb.core.models.layers import ResidualBlock, SpatialAttention


class SmallResNet(nn.Module):
    """Stem conv → ``len(widths)`` stages of residual blocks (each halving the resolution after the first)
    → optional spatial attention after each stage → global average pool → linear head."""

    def __init__(self, num_classes=10, in_channels=3, widths=(32, 64, 128), blocks_per_stage=1,
                 attention: bool = False, attention_kernel: int = 7):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages, c_in = [], widths[0]
        for i, w in enumerate(widths):
            blocks = [ResidualBlock(c_in if j == 0 else w, w, stride=(2 if i > 0 and j == 0 else 1))
                      for j in range(blocks_per_stage)]
            if attention:
                blocks.append(SpatialAttention(attention_kernel))
            stages.append(nn.Sequential(*blocks))
            c_in = w
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@register
def cnn(num_classes=10, in_channels=3, image_size=32, width=32, blocks_per_stage=1, stages=3):
    """Small residual CNN; stage widths ``width·2^i``."""
    return SmallResNet(num_classes, in_channels, tuple(width * 2 ** i for i in range(stages)), blocks_per_stage)


@register
def cnn_sa(num_classes=10, in_channels=3, image_size=32, width=32, blocks_per_stage=1, stages=3, kernel_size=7):
    """The same CNN with CBAM-style spatial attention after every stage."""
    return SmallResNet(num_classes, in_channels, tuple(width * 2 ** i for i in range(stages)), blocks_per_stage,
                       attention=True, attention_kernel=kernel_size)


@register
def resnet18(num_classes=10, in_channels=3, image_size=32, width=64):
    """ResNet-18 (He et al., 2016) with the CIFAR stem: 3×3 conv, no max-pool; stage widths ``width·(1,2,4,8)``."""
    return SmallResNet(num_classes, in_channels, tuple(width * m for m in (1, 2, 4, 8)), blocks_per_stage=2)
