"""Inverted-bottleneck MLP (Bachmann et al., 2023): the MLP of "Scaling MLPs", still blind to pixel layout."""
from __future__ import annotations

import torch
import torch.nn as nn

from ibnb.core.models import register


class BottleneckBlock(nn.Module):
    """Pre-norm inverted bottleneck with a skip: ``x + Linear(4d→d)(GELU(Linear(d→4d)(LN(x))))``."""

    def __init__(self, dim: int, expansion: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, expansion * dim)
        self.act = nn.GELU()
        self.down = nn.Linear(expansion * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(self.act(self.up(self.norm(x))))


class BottleneckMLP(nn.Module):
    """Flatten → Linear embedding to ``width`` (no patches) → ``depth`` bottleneck blocks → LayerNorm → head."""

    def __init__(self, num_classes: int, in_features: int, width: int, depth: int, expansion: int):
        super().__init__()
        self.embed = nn.Linear(in_features, width)
        self.blocks = nn.Sequential(*[BottleneckBlock(width, expansion) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(torch.flatten(x, 1)))))


@register
def bmlp(num_classes=10, in_channels=3, image_size=32, width=256, depth=4, expansion=4):
    """Inverted-bottleneck MLP: ``depth`` blocks LN → Linear(d→4d) → GELU → Linear(4d→d) + skip, ``d = width``."""
    if width < 1 or depth < 0 or expansion < 1:
        raise ValueError(f"bmlp needs width >= 1, depth >= 0, expansion >= 1; got {width}, {depth}, {expansion}")
    return BottleneckMLP(num_classes, in_channels * image_size * image_size, width, depth, expansion)
