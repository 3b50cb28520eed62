"""A variational auto-encoder over convolution kernels: the generative model of the Deep Weight Prior
(Atanov et al., ICLR 2019).

:class:`KernelVAE` has a Gaussian encoder r(z|w) and a Gaussian decoder p(w|z) (small MLPs) over flattened k×k
kernels, with z ~ N(0, I); its marginal p̂(w) = ∫ p(w|z) p(z) dz is the learned prior. Fitting it and using it
as a prior (the auxiliary KL bound) belong to the chapter, ``ibnb/chapters/deep_weight_prior/method.py``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

LOG_2PI = math.log(2 * math.pi)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """−log N(x; mean, exp(logvar)), summed over the last dimension."""
    return 0.5 * (LOG_2PI + logvar + (x - mean) ** 2 / logvar.exp()).sum(-1)


def kl_std_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) ‖ N(0, I)), summed over the last dimension."""
    return 0.5 * (logvar.exp() + mean ** 2 - 1 - logvar).sum(-1)


class KernelVAE(nn.Module):
    """VAE over flattened k×k kernels: Gaussian encoder r(z|w) and Gaussian decoder p(w|z) (MLPs)."""

    def __init__(self, kernel_size: int, z_dim: int = 2, hidden: int = 64):
        super().__init__()
        d = kernel_size * kernel_size
        self.kernel_size, self.z_dim = kernel_size, z_dim
        self.enc = nn.Sequential(nn.Linear(d, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                                 nn.Linear(hidden, 2 * z_dim))
        self.dec = nn.Sequential(nn.Linear(z_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                                 nn.Linear(hidden, 2 * d))

    def encode(self, w: torch.Tensor):
        """``(mean, logvar)`` of r(z|w) for flattened kernels ``w`` (N×k²)."""
        mean, logvar = self.enc(w).chunk(2, -1)
        return mean, logvar.clamp(-12, 6)

    def decode(self, z: torch.Tensor):
        """``(mean, logvar)`` of p(w|z), flattened kernels."""
        mean, logvar = self.dec(z).chunk(2, -1)
        return mean, logvar.clamp(-14, 4)

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per kernel (mean over the batch) — an upper bound on −log p̂(w)."""
        zm, zl = self.encode(w)
        z = zm + (0.5 * zl).exp() * torch.randn_like(zm)
        return (kl_std_normal(zm, zl) + gaussian_nll(w, *self.decode(z))).mean()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, noise: bool = True) -> torch.Tensor:
        """``n`` kernels from the prior p̂(w): z ~ N(0, I), w ~ p(w|z); shape (n, k, k)."""
        dev = next(self.parameters()).device
        z = torch.randn(n, self.z_dim, generator=generator, device=dev)
        mean, logvar = self.decode(z)
        w = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator, device=dev) if noise else mean
        return w.view(n, self.kernel_size, self.kernel_size)
