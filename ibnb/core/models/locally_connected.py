"""One-layer models that separate the two halves of the convolutional prior.

All three share the same input, output shape and head (ReLU → 2×2 average pool → linear); only the first
layer differs:

* ``conv_layer``: a convolution, local receptive fields **and** one set of weights shared by every position;
* ``locally_connected``: the same local receptive fields, but every output position has its **own** weights;
* ``dense_layer``: a fully connected map from the whole image to the same ``C×H'×W'`` output (neither).

As function classes ``conv_layer ⊂ locally_connected ⊂ dense_layer``: a convolution is a locally connected
layer with tied weights, and a locally connected layer is a dense layer with zeros outside each window.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ibnb.core.models import register


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class LocallyConnected2d(nn.Module):
    """Like ``nn.Conv2d`` but with unshared weights: ``weight[l]`` (``C_out × C_in·k·k``) for each of the
    ``L = H'·W'`` output positions, plus a bias per output unit. Implemented as ``F.unfold`` and one
    batched contraction over positions."""

    def __init__(self, in_channels: int, out_channels: int, image_size: int, kernel_size: int, stride: int = 1,
                 padding: int = 0):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.out_hw = _out_size(image_size, kernel_size, stride, padding)
        positions, fan_in = self.out_hw ** 2, in_channels * kernel_size ** 2
        bound = 1 / math.sqrt(fan_in)  # nn.Conv2d's default init range, per position
        self.weight = nn.Parameter(torch.empty(positions, fan_in, out_channels).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_channels, self.out_hw, self.out_hw).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cols = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)  # (B, C_in·k·k, L)
        out = torch.einsum("bkl,lko->bol", cols, self.weight)  # (B, C_out, L)
        return out.reshape(len(x), self.out_channels, self.out_hw, self.out_hw) + self.bias


class DenseAsMap(nn.Module):
    """A fully connected layer from the flattened image to a ``C_out × H' × W'`` map."""

    def __init__(self, in_features: int, out_channels: int, out_hw: int):
        super().__init__()
        self.out_channels, self.out_hw = out_channels, out_hw
        self.linear = nn.Linear(in_features, out_channels * out_hw * out_hw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(x, 1)).view(len(x), self.out_channels, self.out_hw, self.out_hw)


class OneLayerNet(nn.Module):
    """``first`` layer → ReLU → 2×2 average pool → flatten → linear head."""

    def __init__(self, first: nn.Module, out_channels: int, out_hw: int, num_classes: int):
        super().__init__()
        self.first = first
        self.head = nn.Linear(out_channels * (out_hw // 2) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(F.avg_pool2d(torch.relu(self.first(x)), 2), 1))


@register
def conv_layer(num_classes=10, in_channels=3, image_size=32, channels=8, kernel_size=5, stride=2):
    """One convolution (local + shared weights) → ReLU → avg-pool → linear."""
    pad = kernel_size // 2
    conv = nn.Conv2d(in_channels, channels, kernel_size, stride, pad)
    return OneLayerNet(conv, channels, _out_size(image_size, kernel_size, stride, pad), num_classes)


@register
def locally_connected(num_classes=10, in_channels=3, image_size=32, channels=8, kernel_size=5, stride=2):
    """One locally connected layer (local, unshared weights) → ReLU → avg-pool → linear."""
    pad = kernel_size // 2
    lc = LocallyConnected2d(in_channels, channels, image_size, kernel_size, stride, pad)
    return OneLayerNet(lc, channels, lc.out_hw, num_classes)


@register
def dense_layer(num_classes=10, in_channels=3, image_size=32, channels=8, kernel_size=5, stride=2):
    """One dense layer onto the same ``channels × H' × W'`` map as ``conv_layer`` → ReLU → avg-pool → linear
    (``kernel_size`` only sets the output size, as for the other two)."""
    out_hw = _out_size(image_size, kernel_size, stride, kernel_size // 2)
    return OneLayerNet(DenseAsMap(in_channels * image_size ** 2, channels, out_hw), channels, out_hw, num_classes)
