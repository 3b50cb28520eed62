""""N1": the small five-convolution encoder of the self-supervised chapter.

The study describes N1 only as "5 convolutions, about 403,530 parameters, 256-d output"; its exact layers are
not given. Ours: five 3×3 convolutions (no bias) each followed by BatchNorm and ReLU, with widths
``width·(1, 1, 2, 4, 8)`` = 32, 32, 64, 128, 256 at the default ``width=32``; 2×2 max-pooling after convolutions
2, 3 and 4 (32 → 16 → 8 → 4 px on CIFAR-10), global average pooling to a ``8·width`` = 256-d representation,
and a linear head. Parameters at ``width=32`` with 10 classes: 400,746 (398,176 in the encoder + 2,570 in the
head), 0.7 % below the study's 403,530. ``forward`` returns logits; ``features`` the representation.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ibnb.core.models import register


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class N1(nn.Module):
    """conv-conv-pool-conv-pool-conv-pool-conv (3×3, BN, ReLU) → global average pool → linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 32):
        super().__init__()
        w = [width * m for m in (1, 1, 2, 4, 8)]
        self.body = nn.Sequential(
            *_conv_bn_relu(in_channels, w[0]), *_conv_bn_relu(w[0], w[1]), nn.MaxPool2d(2),
            *_conv_bn_relu(w[1], w[2]), nn.MaxPool2d(2),
            *_conv_bn_relu(w[2], w[3]), nn.MaxPool2d(2),
            *_conv_bn_relu(w[3], w[4]),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = w[4]
        self.head = nn.Linear(w[4], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register
def n1(num_classes=10, in_channels=3, image_size=32, width=32):
    """N1 encoder + linear head; ``width=32`` gives 400,746 parameters (the study's N1: 403,530)."""
    return N1(num_classes, in_channels, width)
