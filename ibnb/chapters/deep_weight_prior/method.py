"""The Deep Weight Prior (Atanov, Ashukha, Struminsky, Vetrov & Welling, ICLR 2019).

A variational auto-encoder (:class:`KernelVAE`: encoder r(z|w), decoder p(w|z), z ~ N(0, I)) is fitted to the
k×k convolution kernels of networks trained on a *source* dataset; its marginal p̂(w) = ∫ p(w|z) p(z) dz is
then the prior over every kernel of the same layer of a Bayesian network trained on the *target* data. The KL
term is intractable and is replaced by the auxiliary upper bound (:func:`aux_kl_bound`)::

    KL(q(w) ‖ p̂(w)) ≤ −H(q) + E_q(w)[ KL(r(z|w) ‖ p(z)) − E_r(z|w) log p(w|z) ].

Other priors for the same layers (:class:`LogUniformPrior`, :class:`GaussianPrior` — N(0, 1) or a Gaussian
fitted to the source kernels) and the variational layers (:class:`BayesConv2d`, :class:`BayesLinear`: fully
factorised Gaussian q, one weight sample per mini-batch) live here too, with the ELBO step :func:`vi_step`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ibnb.core.models.sparse_vd import LOG_ALPHA_CLIP, kl_log_uniform
from ibnb.core.train import StepOutput, autocast

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
        mean, logvar = self.enc(w).chunk(2, -1)
        return mean, logvar.clamp(-12, 6)

    def decode(self, z: torch.Tensor):
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


def fit_vae(kernels: torch.Tensor, *, z_dim: int = 2, hidden: int = 64, steps: int = 2000, batch_size: int = 256,
            lr: float = 1e-3, seed: int = 0) -> tuple[KernelVAE, list[float]]:
    """Fit a :class:`KernelVAE` to ``kernels`` (N×k×k) with Adam; returns the VAE and the loss per step."""
    torch.manual_seed(seed)
    k = kernels.shape[-1]
    w = kernels.reshape(len(kernels), k * k).float()
    vae = KernelVAE(k, z_dim, hidden)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        batch = w[torch.randint(len(w), (min(batch_size, len(w)),), generator=g)]
        loss = vae.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae, torch.stack(losses).tolist()


def gaussian_entropy(log_sigma2: torch.Tensor) -> torch.Tensor:
    """Entropy of a fully factorised Gaussian with variances exp(log_sigma2)."""
    return 0.5 * (LOG_2PI + 1 + log_sigma2).sum()


def aux_kl_bound(w: torch.Tensor, log_sigma2: torch.Tensor, encode, decode) -> torch.Tensor:
    """One-sample estimate of the auxiliary upper bound on KL(q ‖ p̂) for a set of kernels.

    ``w`` (N×d) is a sample from q = N(μ, exp(log_sigma2)) (reparameterised, so gradients reach μ and σ);
    ``encode(w) -> (mean, logvar)`` of r(z|w), ``decode(z) -> (mean, logvar)`` of p(w|z); p(z) = N(0, I).
    """
    zm, zl = encode(w)
    z = zm + (0.5 * zl).exp() * torch.randn_like(zm)
    per_kernel = kl_std_normal(zm, zl) + gaussian_nll(w, *decode(z))
    return per_kernel.sum() - gaussian_entropy(log_sigma2)


class _Bayes(nn.Module):
    """Fully factorised Gaussian q(w) = N(μ, σ²) over the weights; one weight sample per forward in training
    (kept in ``self.sample`` for the KL bound); the posterior mean at evaluation."""

    def _init_bayes(self, shape, fan_in: int, log_sigma2_init: float):
        bound = 1.0 / math.sqrt(fan_in)  # PyTorch's default Linear/Conv2d initialisation range
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.log_sigma2 = nn.Parameter(torch.full(shape, float(log_sigma2_init)))
        self.bias = nn.Parameter(torch.zeros(shape[0]))
        self.sample = None

    def sampled_weight(self) -> torch.Tensor:
        return self.weight + (0.5 * self.log_sigma2).exp() * torch.randn_like(self.weight)

    def current_weight(self) -> torch.Tensor:
        if not self.training:
            return self.weight
        self.sample = self.sampled_weight()
        return self.sample


class BayesConv2d(_Bayes):
    def __init__(self, in_channels, out_channels, kernel_size, log_sigma2_init: float = -8.0):
        super().__init__()
        self.kernel_size = kernel_size
        self._init_bayes((out_channels, in_channels, kernel_size, kernel_size), in_channels * kernel_size ** 2,
                         log_sigma2_init)

    def forward(self, x):
        return F.conv2d(x, self.current_weight(), self.bias)


class BayesLinear(_Bayes):
    def __init__(self, in_features, out_features, log_sigma2_init: float = -8.0):
        super().__init__()
        self._init_bayes((out_features, in_features), in_features, log_sigma2_init)

    def forward(self, x):
        return F.linear(x, self.current_weight(), self.bias)


class LogUniformPrior:
    """log-uniform prior, through the Sparse VD approximation of the KL (up to its constant)."""
    name = "log-uniform"

    def kl(self, layer: _Bayes) -> torch.Tensor:
        log_alpha = layer.log_sigma2 - torch.log(layer.weight ** 2 + 1e-16)
        return kl_log_uniform(log_alpha.clamp(-LOG_ALPHA_CLIP, LOG_ALPHA_CLIP)).sum()


class GaussianPrior:
    """N(mean, var) per weight (``mean``/``var`` broadcast over the kernel: N(0, 1) by default, or fitted
    position by position to the source kernels with :meth:`fit`). Exact KL."""

    def __init__(self, mean=0.0, var=1.0, name: str = "N(0,1)"):
        self.mean, self.var, self.name = torch.as_tensor(mean), torch.as_tensor(var), name

    @classmethod
    def fit(cls, kernels: torch.Tensor, name: str = "learned Gaussian") -> "GaussianPrior":
        """Maximum-likelihood mean and variance of each kernel position over the source kernels (N×k×k)."""
        return cls(kernels.mean(0), kernels.var(0) + 1e-8, name)

    def kl(self, layer: _Bayes) -> torch.Tensor:
        m, v = self.mean.to(layer.weight.device), self.var.to(layer.weight.device)
        s2 = layer.log_sigma2.exp()
        return 0.5 * (torch.log(v) - layer.log_sigma2 + (s2 + (layer.weight - m) ** 2) / v - 1).sum()


class DWPPrior:
    """The deep weight prior of one conv layer: a fitted :class:`KernelVAE` (frozen), auxiliary KL bound."""
    name = "DWP"

    def __init__(self, vae: KernelVAE):
        self.vae = vae

    def kl(self, layer: _Bayes) -> torch.Tensor:
        w = layer.sample if (layer.training and layer.sample is not None) else layer.sampled_weight()
        k = w.shape[-1]
        self.vae.to(w.device)
        return aux_kl_bound(w.reshape(-1, k * k), layer.log_sigma2, self.vae.encode, self.vae.decode)


class BayesCNN(nn.Module):
    """Variational twin of :func:`ibnb.core.models.lenet.dwp_cnn`, with one prior per conv layer and N(0, 1) on
    the classifier layer."""

    def __init__(self, priors: list, num_classes=10, in_channels=1, image_size=28, width1=16, width2=32,
                 log_sigma2_init: float = -8.0):
        super().__init__()
        s = ((image_size - 6) // 2 - 4) // 2
        self.conv1 = BayesConv2d(in_channels, width1, 7, log_sigma2_init)
        self.conv2 = BayesConv2d(width1, width2, 5, log_sigma2_init)
        self.fc = BayesLinear(width2 * s * s, num_classes, log_sigma2_init)
        self.priors = list(priors) + [GaussianPrior()]

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))

    def kl(self) -> torch.Tensor:
        return sum(p.kl(m) for p, m in zip(self.priors, (self.conv1, self.conv2, self.fc)))


def _penalised_step(penalty, term: str):
    """Cross-entropy + ``penalty(model)`` update for :func:`ibnb.core.train.fit`; logs ``nll`` and ``term``."""
    def step(model, opt, x, y, epoch):
        with autocast(x.device):
            logits = model(x)
        nll = F.cross_entropy(logits.float(), y)
        reg = penalty(model)
        loss = nll + reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return StepOutput(loss.detach(), logits.detach(), {"nll": nll.detach(), term: reg.detach()})
    return step


def vi_step(n_train: int):
    """ELBO update for :func:`ibnb.core.train.fit` (a :class:`BayesCNN`): mean cross-entropy + KL/N."""
    return _penalised_step(lambda model: model.kl() / n_train, "kl")


def l2_step(n_train: int, prior_var: float = 1.0):
    """Deterministic net, MAP with a N(0, prior_var) prior on the weights: cross-entropy + ‖w‖²/(2·var·N)."""
    return _penalised_step(lambda model: sum((p ** 2).sum() for p in model.parameters() if p.ndim > 1)
                           / (2 * prior_var * n_train), "l2")
