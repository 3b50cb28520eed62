"""The student team's CNNs with and without CBAM-style spatial attention (chapter 03), plus the ablation.

The report ("Investigating the influence of inductive bias on neural network training") describes:

* ``team_cnn_mini`` — one residual stem [conv3×3-BN-ReLU-conv3×3-BN] + conv3×3 skip, added, ReLU, then
  AvgPool(8) → flatten → linear (Mini-ImageNet: 64×64 inputs, 100 classes → Linear(4096→100)).
* ``team_cnn_sa_mini`` — three blocks [conv-BN-ReLU-conv-BN-ReLU-AvgPool(2)] of widths ``w, 2w, 4w``, each
  followed by :class:`~ibnb.core.models.layers.SpatialAttention` (k=7), global average pool, linear head. At
  ``width=64``, 64×64 inputs and 100 classes it has exactly 1,173,197 parameters, the report's count.
* ``team_cnn_deep_mini`` — the same three blocks *without* attention: the ablation the report lacks (its
  attention model is also 3 blocks deeper than its plain one).
* ``team_cnn_food`` / ``team_cnn_sa_food`` — the Food-101 variants (101 classes, 128×128 inputs by default):
  the plain trunk with a 128-d ReLU feature, and a two-branch net whose second branch applies attention twice.

Every builder takes ``num_classes``, ``in_channels`` and ``image_size``; flatten sizes follow the input size, so
the same models run on 32×32 CIFAR-10 images. All convolutions use padding 1 and biases, as in the report.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ibnb.core.models import register
from ibnb.core.models.layers import SpatialAttention


class ResidualStem(nn.Module):
    """[Conv(c_in→c, 3×3) + BN + ReLU + Conv(c→c, 3×3) + BN] + skip Conv(c_in→c, 3×3), added, then ReLU."""

    def __init__(self, c_in: int, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))
        self.skip = nn.Conv2d(c_in, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def conv_block(c_in: int, c: int) -> nn.Sequential:
    """Conv(c_in→c, 3×3) + BN + ReLU + Conv(c→c, 3×3) + BN + ReLU + AvgPool(2)."""
    return nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                         nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AvgPool2d(2))


def pooled_features(channels: int, image_size: int, pool: int) -> int:
    """Flattened size after ``AvgPool2d(pool)`` of a ``channels``×``image_size``² map (floor, as PyTorch)."""
    side = image_size // pool
    if side < 1:
        raise ValueError(f"image_size {image_size} is smaller than the pooling window {pool}")
    return channels * side * side


class PlainTrunk(nn.Module):
    """Residual stem → AvgPool(``pool``) → flatten → optional ``hidden``-d Linear + ReLU → linear head."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, width: int, pool: int,
                 hidden: int | None = None):
        super().__init__()
        self.stem = ResidualStem(in_channels, width)
        self.pool = nn.AvgPool2d(pool)
        self.in_features = pooled_features(width, image_size, pool)
        self.feature = (nn.Sequential(nn.Linear(self.in_features, hidden), nn.ReLU(inplace=True))
                        if hidden else nn.Identity())
        self.head = nn.Linear(hidden or self.in_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature(torch.flatten(self.pool(self.stem(x)), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BlockNet(nn.Module):
    """``len(widths)`` conv blocks, each followed by spatial attention (or nothing), global average pool,
    linear head. ``attention_maps()`` returns the last map of every attention layer."""

    def __init__(self, num_classes: int, in_channels: int, widths=(64, 128, 256), attention: bool = True,
                 kernel_size: int = 7):
        super().__init__()
        layers, c_in = [], in_channels
        for c in widths:
            layers.append(conv_block(c_in, c))
            layers.append(SpatialAttention(kernel_size) if attention else nn.Identity())
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))

    def attention_maps(self) -> list[torch.Tensor]:
        return [m.last_map for m in self.modules() if isinstance(m, SpatialAttention)]


class TwoBranchFood(nn.Module):
    """The report's Food-101 attention model. Branch 1: the plain trunk up to its ``hidden``-d ReLU feature.
    Branch 2: residual stem → attention → Conv(w→bw, 3×3) + BN + ReLU → attention → AvgPool(``branch_pool``)
    → flatten → Linear(→``branch_hidden``) + ReLU. The two features are concatenated → Linear(→classes)."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, width: int, pool: int, hidden: int,
                 branch_width: int, branch_pool: int, branch_hidden: int, kernel_size: int):
        super().__init__()
        self.plain = PlainTrunk(num_classes, in_channels, image_size, width, pool, hidden)
        del self.plain.head  # only the feature of branch 1 is used
        self.branch = nn.Sequential(
            ResidualStem(in_channels, width), SpatialAttention(kernel_size),
            nn.Conv2d(width, branch_width, 3, padding=1), nn.BatchNorm2d(branch_width), nn.ReLU(inplace=True),
            SpatialAttention(kernel_size), nn.AvgPool2d(branch_pool), nn.Flatten())
        self.branch_in_features = pooled_features(branch_width, image_size, branch_pool)
        self.branch_feature = nn.Sequential(nn.Linear(self.branch_in_features, branch_hidden), nn.ReLU(inplace=True))
        self.head = nn.Linear(hidden + branch_hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = torch.cat([self.plain.features(x), self.branch_feature(self.branch(x))], dim=1)
        return self.head(both)

    def attention_maps(self) -> list[torch.Tensor]:
        return [m.last_map for m in self.modules() if isinstance(m, SpatialAttention)]


@register
def team_cnn_mini(num_classes=100, in_channels=3, image_size=64, width=64, pool=8):
    """The report's plain Mini-ImageNet CNN: residual stem → AvgPool(8) → Linear (4096→100 at 64 px, width 64)."""
    return PlainTrunk(num_classes, in_channels, image_size, width, pool)


@register
def team_cnn_sa_mini(num_classes=100, in_channels=3, image_size=64, width=64, kernel_size=7):
    """The report's attention CNN: 3 conv blocks (``width·(1, 2, 4)``), spatial attention after each, GAP,
    linear. 1,173,197 parameters at the defaults (the report's count)."""
    return BlockNet(num_classes, in_channels, (width, 2 * width, 4 * width), attention=True, kernel_size=kernel_size)


@register
def team_cnn_deep_mini(num_classes=100, in_channels=3, image_size=64, width=64):
    """Ablation: ``team_cnn_sa_mini`` without its attention layers (same depth and widths)."""
    return BlockNet(num_classes, in_channels, (width, 2 * width, 4 * width), attention=False)


@register
def team_cnn_food(num_classes=101, in_channels=3, image_size=128, width=32, pool=8, hidden=128):
    """The report's plain Food-101 CNN: residual stem (32 ch) → AvgPool(8) → Linear(8192→128) + ReLU →
    Linear(128→101) at 128 px."""
    return PlainTrunk(num_classes, in_channels, image_size, width, pool, hidden)


@register
def team_cnn_sa_food(num_classes=101, in_channels=3, image_size=128, width=32, pool=8, hidden=128,
                     branch_width=64, branch_pool=8, branch_hidden=512, kernel_size=7):
    """The report's two-branch Food-101 attention CNN. ``branch_pool=8`` (16×16×64 = 16,384 features at
    128 px) gives the reported ~9 M parameters; the text's AvgPool(4) (``branch_pool=4``) would give ~35 M."""
    return TwoBranchFood(num_classes, in_channels, image_size, width, pool, hidden, branch_width, branch_pool,
                         branch_hidden, kernel_size)
