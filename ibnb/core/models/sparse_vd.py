"""Sparse Variational Dropout (Molchanov, Ashukha & Vetrov, ICML 2017).

Each weight has a Gaussian posterior q(w) = N(θ, σ²) in the *additive* parameterisation (θ and log σ² are the
parameters; α = σ²/θ² is derived), the prior is log-uniform, p(|w|) ∝ 1/|w|, and the KL term uses the
approximation of the paper::

    −KL(q‖p) ≈ k1·sigmoid(k2 + k3·log α) − 0.5·log(1 + 1/α) − k1,   k1, k2, k3 = 0.63576, 1.87320, 1.48695.

Training uses the local reparameterisation trick (sample pre-activations, not weights): for a linear layer
b ~ N(x θ, x² σ²); for a convolution b ~ N(conv(x, θ), conv(x², σ²)). At test time the mean θ is used and
weights with log α > 3 are set to zero. The ELBO update (a frozen-dataclass train step) lives with its chapter,
``ibnb/chapters/sparse_vd/method.py``.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_CLIP = 8.0  # log α is clipped to [-8, 8], as in the authors' code
THRESHOLD = 3.0  # weights with log α > 3 are zeroed at test time
LOG_SIGMA2_INIT = -10.0


def log_alpha(theta: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
    """log α = log σ² − log θ² of a Gaussian N(θ, σ²) per weight, clipped to [−8, 8] (as in the authors' code)."""
    return (log_sigma2 - torch.log(theta * theta + 1e-16)).clamp(-LOG_ALPHA_CLIP, LOG_ALPHA_CLIP)


def kl_log_uniform(log_alpha: torch.Tensor) -> torch.Tensor:
    """The paper's approximation of KL(N(θ, αθ²) ‖ log-uniform), per weight, up to the prior's constant
    (it tends to 0 as log α → +∞)."""
    neg_kl = K1 * torch.sigmoid(K2 + K3 * log_alpha) - 0.5 * F.softplus(-log_alpha) - K1
    return -neg_kl


class _SVDO(nn.Module):
    """Shared machinery of the Sparse VD layers: θ (``weight``), log σ², log α, the mask and the KL."""

    weight: nn.Parameter
    threshold = THRESHOLD

    def _init_svdo(self, shape, bias: bool, fan_in: int):
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.log_sigma2 = nn.Parameter(torch.full(shape, LOG_SIGMA2_INIT))
        self.bias = nn.Parameter(torch.empty(shape[0]).uniform_(-bound, bound)) if bias else None

    @property
    def log_alpha(self) -> torch.Tensor:
        """log α = log σ² − log θ², clipped to [−8, 8]."""
        return log_alpha(self.weight, self.log_sigma2)

    def mask(self) -> torch.Tensor:
        """Boolean mask of the weights kept at test time (log α ≤ threshold)."""
        return self.log_alpha <= self.threshold

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask().to(self.weight.dtype)

    def kl(self) -> torch.Tensor:
        """Sum over the layer's weights of the approximate KL to the log-uniform prior."""
        return kl_log_uniform(self.log_alpha).sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:  # posterior mean with the weights of large log α removed
            return self._op(x, self.masked_weight(), self.bias)
        mean = self._op(x, self.weight, self.bias)
        var = self._op(x * x, torch.exp(self.log_sigma2), None)
        return mean + torch.sqrt(var + 1e-8) * torch.randn_like(mean)

    def _op(self, x, weight, bias):
        raise NotImplementedError


class LinearSVDO(_SVDO):
    """Fully-connected Sparse VD layer (local reparameterisation in training, masked mean at eval)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_svdo((out_features, in_features), bias, in_features)

    def _op(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class Conv2dSVDO(_SVDO):
    """Convolutional Sparse VD layer: pre-activation mean conv(x, θ) and variance conv(x², σ²)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding = stride, padding
        self._init_svdo((out_channels, in_channels, kernel_size, kernel_size), bias,
                        in_channels * kernel_size * kernel_size)

    def _op(self, x, weight, bias):
        return F.conv2d(x, weight, bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


def svdo_layers(model: nn.Module) -> list[tuple[str, _SVDO]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _SVDO)]


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose weights count for compression: Sparse VD layers and plain Linear/Conv2d."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (_SVDO, nn.Linear, nn.Conv2d))]


def model_kl(model: nn.Module) -> torch.Tensor:
    terms = [m.kl() for _, m in svdo_layers(model)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def compression(masks: list[torch.Tensor]) -> float:
    """|W| / |W ≠ 0| over all layers' masks (True = weight kept); inf when nothing is kept."""
    total = sum(int(m.numel()) for m in masks)
    kept = sum(int(m.sum()) for m in masks)
    return total / kept if kept else float("inf")


@torch.no_grad()
def layer_masks(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, kept-weight mask) per weight layer; a dense layer's mask is its non-zero weights."""
    out = []
    for name, m in weight_layers(model):
        out.append((name, m.mask() if isinstance(m, _SVDO) else m.weight != 0))
    return out


@torch.no_grad()
def sparsity_report(model: nn.Module) -> dict:
    """Per-layer sparsity (% of weights removed), total weights, kept weights and compression."""
    masks = layer_masks(model)
    return {"layers": [n for n, _ in masks],
            "sparsity": [100.0 * (1 - float(m.float().mean())) for _, m in masks],
            "weights": sum(int(m.numel()) for _, m in masks),
            "kept": sum(int(m.sum()) for _, m in masks),
            "compression": compression([m for _, m in masks])}


@torch.no_grad()
def to_dense(model: nn.Module) -> nn.Module:
    """A copy with every Sparse VD layer replaced by a plain ``nn.Linear``/``nn.Conv2d`` holding θ·mask:
    an independent check that the zeroed network gives the error reported for the Sparse VD model."""
    dense = copy.deepcopy(model)
    for name, m in svdo_layers(dense):
        if isinstance(m, LinearSVDO):
            new = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        else:
            new = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                            bias=m.bias is not None)
        new.weight.copy_(m.masked_weight())
        if m.bias is not None:
            new.bias.copy_(m.bias)
        parent = dense.get_submodule(name.rsplit(".", 1)[0]) if "." in name else dense
        setattr(parent, name.rsplit(".", 1)[-1], new.to(m.weight.device))
    return dense
