"""Variational (Bayesian) layers with a fully factorised Gaussian posterior, and the Deep Weight Prior
chapter's Bayesian CNN.

q(w) = N(μ, σ²) per weight, in one of two parameterisations, as in the authors' code
(github.com/bayesgroup/deep-weight-prior, ``models/bayes.py``):

* *additive* (``BayesConv2d`` there): μ = ``weight`` and ``log_sigma2`` are free parameters;
* *truncated α* (``MuTruncAlphaFFGConv2d`` there, which the authors train with the log-uniform prior):
  σ² = α μ² with α = sigmoid(``w_alpha``) < 1, so variational dropout cannot drive a weight's noise above its
  mean (Kingma et al., 2015, whose KL approximation for α ≤ 1 goes with it). With the additive form and a
  log-uniform prior the KL of a kept weight is at least ~0.64 nats; over the ~13,600 conv weights and 50 training
  images it outweighs the data term (≤ 2.3 nats per image), every kernel is pushed to pure noise, and our run sat
  at 11.3 % (chance: 10 %) where the paper reports 76.6 %.

:meth:`BayesLayer.log_variance` is log σ² in either form. In training each forward pass draws one weight sample per
mini-batch (kept in ``layer.sample`` so that a prior's KL bound can reuse it); in evaluation the posterior mean is
used, or — inside :func:`weight_samples` — one fresh weight sample per forward pass, for the Monte-Carlo ensemble
(the authors report the accuracy of an ensemble of 10 samples). A *prior* is any object with
``kl(layer) -> tensor`` (the chapter's ``ibnb/chapters/deep_weight_prior/method.py`` defines them);
:class:`BayesCNN` holds one per layer.
"""
from __future__ import annotations

import contextlib
import math
from typing import Protocol, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ibnb.core.models.lenet import DWP_KERNELS, pooled_size


#: initial w_alpha of a truncated-α layer: α = sigmoid(−2) ≈ 0.12 (the authors' value)
TRUNC_ALPHA_INIT = -2.0


class BayesLayer(nn.Module):
    """Fully factorised Gaussian q(w) = N(μ, σ²) over the weights (the bias is a point estimate)."""

    truncated_alpha = False
    sample_in_eval = False  # set by weight_samples(): evaluation draws weights instead of using μ

    def _init_bayes(self, shape, fan_in: int, log_sigma2_init: float, truncated_alpha: bool = False):
        bound = 1.0 / math.sqrt(fan_in)  # PyTorch's default Linear/Conv2d initialisation range
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.truncated_alpha = truncated_alpha
        if truncated_alpha:
            self.w_alpha = nn.Parameter(torch.full(shape, TRUNC_ALPHA_INIT))
        else:
            self.log_sigma2 = nn.Parameter(torch.full(shape, float(log_sigma2_init)))
        self.bias = nn.Parameter(torch.zeros(shape[0]))
        self.sample = None

    def log_alpha_truncated(self) -> torch.Tensor:
        """log α = log sigmoid(w_alpha) ≤ 0 of a truncated-α layer."""
        return -F.softplus(-self.w_alpha)

    def log_variance(self) -> torch.Tensor:
        """log σ² per weight: the parameter (additive form) or log α + log μ² (truncated α)."""
        if self.truncated_alpha:
            return self.log_alpha_truncated() + torch.log(self.weight * self.weight + 1e-16)
        return self.log_sigma2

    def sampled_weight(self) -> torch.Tensor:
        """A reparameterised sample w = μ + σ ε."""
        return self.weight + (0.5 * self.log_variance()).exp() * torch.randn_like(self.weight)

    def current_weight(self) -> torch.Tensor:
        """The weight of this forward pass: a fresh sample in training (stored in ``sample``) or inside
        :func:`weight_samples`, μ in evaluation."""
        if not self.training:
            return self.sampled_weight() if self.sample_in_eval else self.weight
        self.sample = self.sampled_weight()
        return self.sample


@contextlib.contextmanager
def weight_samples(model: nn.Module):
    """Inside the block, every :class:`BayesLayer` of ``model`` in evaluation mode draws a fresh weight sample per
    forward pass (one network of the Monte-Carlo ensemble per pass) instead of using the posterior mean."""
    layers = [m for m in model.modules() if isinstance(m, BayesLayer)]
    for m in layers:
        m.sample_in_eval = True
    try:
        yield model
    finally:
        for m in layers:
            m.sample_in_eval = False


class BayesConv2d(BayesLayer):
    """Variational 2-d convolution (valid padding, stride 1)."""

    def __init__(self, in_channels, out_channels, kernel_size, log_sigma2_init: float = -8.0,
                 truncated_alpha: bool = False):
        super().__init__()
        self.kernel_size = kernel_size
        self._init_bayes((out_channels, in_channels, kernel_size, kernel_size), in_channels * kernel_size ** 2,
                         log_sigma2_init, truncated_alpha)

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
    one prior per layer: ``priors`` = (conv1, conv2, fc); ``truncated_alpha`` gives the two conv layers the
    truncated-α posterior (module docstring)."""

    def __init__(self, priors: Sequence[Prior], num_classes=10, in_channels=1, image_size=28, width1=16, width2=32,
                 log_sigma2_init: float = -8.0, truncated_alpha: bool = False):
        super().__init__()
        if len(priors) != 3:
            raise ValueError(f"BayesCNN needs 3 priors (conv1, conv2, fc), got {len(priors)}")
        k1, k2 = DWP_KERNELS
        s = pooled_size(image_size, k1, k2)
        self.conv1 = BayesConv2d(in_channels, width1, k1, log_sigma2_init, truncated_alpha)
        self.conv2 = BayesConv2d(width1, width2, k2, log_sigma2_init, truncated_alpha)
        self.fc = BayesLinear(width2 * s * s, num_classes, log_sigma2_init)
        self.priors = list(priors)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))

    def kl(self) -> torch.Tensor:
        """Sum over the layers of KL(q ‖ prior) (or the prior's bound on it)."""
        return sum(p.kl(m) for p, m in zip(self.priors, (self.conv1, self.conv2, self.fc)))
