"""An airbench-style fast CNN for CIFAR-10, written from its published description (Jordan, 2024, "94% on
CIFAR-10 in 3.29 seconds on a single GPU", arXiv:2404.00498, and the ``hlb``/``airbench`` repository).

The network: a 2×2 *whitening* convolution with no padding whose filters are the eigenvectors of the covariance
of 2×2 input patches, scaled by their inverse square-root eigenvalues, in both signs (``2·C·4`` channels), frozen,
then GELU; three *conv groups* (3×3 conv → 2×2 max-pool → BatchNorm → GELU → 3×3 conv → BatchNorm → GELU) of
widths ``widths`` (airbench94: 64/256/256); a global max-pool and a bias-free linear head whose logits are scaled
by ``1/9``. BatchNorm uses the paper's momentum (0.6 in its convention, 0.4 in PyTorch's) and keeps its scale
fixed at 1 (only the shift is learnt); the first half of each conv's filters starts as the identity (Dirac).

The whitening filters are computed from training data, so they are set on the first training batch the model
sees (:func:`whiten_init`, a data-dependent initialisation recorded in the ``whitened`` buffer and thus in the
checkpoint), unless :func:`whiten_init` was called before training with other images. The recipe that trains it
(Nesterov SGD, label smoothing, flip + translate, lookahead, flip TTA) is :mod:`ibnb.core.fast_recipe`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ibnb.core.models import register

#: airbench94's widths of the three conv groups
AIRBENCH94_WIDTHS = (64, 256, 256)
WHITEN_KERNEL = 2
LOGIT_SCALE = 1 / 9


class FixedScaleBatchNorm(nn.BatchNorm2d):
    """BatchNorm with the scale frozen at 1 (only the shift is learnt), eps 1e-12, PyTorch momentum 0.4."""

    def __init__(self, num_features: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


class ConvGroup(nn.Module):
    """3×3 conv → 2×2 max-pool → BN → GELU → 3×3 conv → BN → GELU."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.norm1 = FixedScaleBatchNorm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = FixedScaleBatchNorm(c_out)
        for conv in (self.conv1, self.conv2):  # identity start for the first in-channels filters
            k = min(conv.in_channels, conv.out_channels)
            nn.init.dirac_(conv.weight.data[:k])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class FastCNN(nn.Module):
    """Whitening conv → GELU → three :class:`ConvGroup` → global max-pool → linear head × 1/9."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, widths=AIRBENCH94_WIDTHS):
        super().__init__()
        c_white = 2 * in_channels * WHITEN_KERNEL ** 2
        self.whiten = nn.Conv2d(in_channels, c_white, WHITEN_KERNEL, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.register_buffer("whitened", torch.zeros((), dtype=torch.bool))
        groups, c = [], c_white
        for w in widths:
            groups.append(ConvGroup(c, w))
            c = w
        self.groups = nn.Sequential(*groups)
        self.head = nn.Linear(c, num_classes, bias=False)
        self._ready = False  # Python mirror of ``whitened``: one host read of the buffer per model, not per step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self._ready:
            if not bool(self.whitened):
                whiten_init(self, x)
            self._ready = True
        x = self.groups(F.gelu(self.whiten(x)))
        x = torch.amax(x, dim=(2, 3))
        return self.head(x) * LOGIT_SCALE


@torch.no_grad()
def whitening_weights(images: torch.Tensor, kernel: int = WHITEN_KERNEL, eps: float = 5e-4) -> torch.Tensor:
    """The ``2·C·k² × C × k × k`` whitening filters of ``images`` (``N×C×H×W``, as the model sees them): the
    eigenvectors ``V`` of the covariance of all ``k×k`` patches, scaled by ``(λ + eps)^-1/2``, then ``−V``."""
    x = images.float()
    c = x.shape[1]
    patches = F.unfold(x, kernel).transpose(1, 2).reshape(-1, c * kernel ** 2)  # (N·L, C·k²)
    patches = patches - patches.mean(0)
    cov = patches.T @ patches / len(patches)
    eigvals, eigvecs = torch.linalg.eigh(cov.double())
    filters = (eigvecs.T / torch.sqrt(eigvals.clamp_min(0) + eps)[:, None]).float()
    filters = filters.reshape(-1, c, kernel, kernel)
    return torch.cat([filters, -filters])


@torch.no_grad()
def whiten_init(model: FastCNN, images: torch.Tensor) -> None:
    """Set ``model``'s whitening filters from ``images`` (normalised, ``N×C×H×W``) and mark it initialised."""
    w = whitening_weights(images.to(model.whiten.weight.device))
    model.whiten.weight.copy_(w)
    model.whiten.bias.zero_()
    model.whitened.fill_(True)


@register
def fast_cnn(num_classes=10, in_channels=3, image_size=32, widths=AIRBENCH94_WIDTHS):
    """Airbench-style CNN (Jordan, 2024): whitening conv, three conv groups of ``widths``, BN, GELU."""
    return FastCNN(num_classes, in_channels, tuple(widths))
