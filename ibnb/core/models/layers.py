"""Building blocks shared by several models."""
from __future__ import annotations

import torch
import torch.nn as nn


class SpatialAttention(nn.Module):
    """CBAM-style spatial attention (Woo et al., 2018).

    The channel-mean and channel-max maps are concatenated (2 channels), convolved to one channel with a
    ``kernel_size``×``kernel_size`` kernel, squashed by a sigmoid, and multiply the input at every position.
    The last map is kept in ``self.last_map`` for visualisation.
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)
        self.last_map: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        attention = torch.sigmoid(self.conv(pooled))
        self.last_map = attention.detach()
        return x * attention


class ResidualBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN plus a (projected when needed) skip, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.skip(x))
