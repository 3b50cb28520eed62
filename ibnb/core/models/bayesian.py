"""Variational (Bayesian) layers with a fully factorised Gaussian posterior, and the Deep Weight Prior
chapter's Bayesian CNN.

q(w) = N(μ, σ²) per weight (μ = ``weight``, ``log_sigma2`` parameters); in training each forward pass draws one
weight sample per mini-batch (kept in ``layer.sample`` so that a prior's KL bound can reuse it); in evaluation
the posterior mean is used. A *prior* is any object with ``kl(layer) -> tensor`` (the chapter's
``ibnb/chapters/deep_weight_prior/method.py`` defines them); :class:`BayesCNN` holds one per layer.
"""
from __future__ import annotations

import math
from typing import Protocol, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ibnb.core.models.lenet import DWP_KERNELS, pooled_size


class BayesLayer(nn.Module):
    """Fully factorised Gaussian q(w) = N(μ, σ²) over the weights (the bias is a point estimate)."""

    def _init_bayes(self, shape, fan_in: int, log_sigma2_init: float):
        bound = 1.0 / math.sqrt(fan_in)  # PyTorch's default Linear/Conv2d initialisation range
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.log_sigma2 = nn.Parameter(torch.full(shape, float(log_sigma2_init)))
        self.bias = nn.Parameter(torch.zeros(shape[0]))
        self.sample = None

    def sampled_weight(self) -> torch.Tensor:
        """A reparameterised sample w = μ + σ ε."""
        return self.weight + (0.5 * self.log_sigma2).exp() * torch.randn_like(self.weight)

    def current_weight(self) -> torch.Tensor:
        """The weight of this forward pass: a fresh sample in training (stored in ``sample``), μ in evaluation."""
        if not self.training:
            return self.weight
        self.sample = self.sampled_weight()
        return self.sample


class BayesConv2d(BayesLayer):
    """Variational 2-d convolution (valid padding, stride 1)."""

    def __init__(self, in_channels, out_channels, kernel_size, log_sigma2_init: float = -8.0):
        super().__init__()
        self.kernel_size = kernel_size
        self._init_bayes((out_channels, in_channels, kernel_size, kernel_size), in_channels * kernel_size ** 2,
                         log_sigma2_init)

    def forward(self, x):
        return F.conv2d(x, self.current_weight(), self.bias)


class BayesLinear(BayesLayer):
    """Variational fully-connected layer."""

    def __init__(self, in_features, out_features, log_sigma2_init: float = -8.0):
        super().__init__()
        self._init_bayes((out_features, in_features), in_features, log_sigma2_init)

    def forward(self, x):
        return F.linear(x, self.current_weight(), self.bias)


class Prior(Protocol):
    """What :class:`BayesCNN` needs of a prior: a name and the KL (or a bound on it) of a layer's q to it."""

    name: str

    def kl(self, layer: BayesLayer) -> torch.Tensor: ...


class BayesCNN(nn.Module):
    """Variational twin of :func:`ibnb.core.models.lenet.dwp_cnn` (conv 7×7 → pool → conv 5×5 → pool → fc), with
    one prior per layer: ``priors`` = (conv1, conv2, fc)."""

    def __init__(self, priors: Sequence[Prior], num_classes=10, in_channels=1, image_size=28, width1=16, width2=32,
                 log_sigma2_init: float = -8.0):
        super().__init__()
        if len(priors) != 3:
            raise ValueError(f"BayesCNN needs 3 priors (conv1, conv2, fc), got {len(priors)}")
        k1, k2 = DWP_KERNELS
        s = pooled_size(image_size, k1, k2)
        self.conv1 = BayesConv2d(in_channels, width1, k1, log_sigma2_init)
        self.conv2 = BayesConv2d(width1, width2, k2, log_sigma2_init)
        self.fc = BayesLinear(width2 * s * s, num_classes, log_sigma2_init)
        self.priors = list(priors)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))

    def kl(self) -> torch.Tensor:
        """Sum over the layers of KL(q ‖ prior) (or the prior's bound on it)."""
        return sum(p.kl(m) for p, m in zip(self.priors, (self.conv1, self.conv2, self.fc)))
