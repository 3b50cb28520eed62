"""The Deep Weight Prior (Atanov, Ashukha, Struminsky, Vetrov & Welling, ICLR 2019): priors, the auxiliary KL
bound, and the train steps.

A :class:`~ibnb.core.models.kernel_vae.KernelVAE` (encoder r(z|w), decoder p(w|z), z ~ N(0, I)) is fitted to
the k×k convolution kernels of networks trained on a *source* dataset (:func:`fit_vae`); its marginal
p̂(w) = ∫ p(w|z) p(z) dz is then the prior over every kernel of the same layer of a Bayesian network
(:class:`~ibnb.core.models.bayesian.BayesCNN`) trained on the *target* data. The KL term is intractable and is
replaced by the auxiliary upper bound (:func:`aux_kl_bound`)::

    KL(q(w) ‖ p̂(w)) ≤ −H(q) + E_q(w)[ KL(r(z|w) ‖ p(z)) − E_r(z|w) log p(w|z) ].

Other priors for the same layers: :class:`LogUniformPrior` (the Sparse VD approximation of the KL) and
:class:`GaussianPrior` (N(0, 1), or a Gaussian fitted to the source kernels). The updates are frozen-dataclass
train steps: :class:`VIStep` (the ELBO) and :class:`L2Step` (a deterministic net with a Gaussian MAP penalty).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ibnb.core.models.bayesian import BayesCNN, BayesLayer
from ibnb.core.models.kernel_vae import LOG_2PI, KernelVAE, gaussian_nll, kl_std_normal
from ibnb.core.models.sparse_vd import kl_log_uniform, log_alpha
from ibnb.core.train import StepOutput, autocast


def fit_vae(kernels: torch.Tensor, *, z_dim: int = 2, hidden: int = 64, steps: int = 2000, batch_size: int = 256,
            lr: float = 1e-3, seed: int = 0) -> tuple[KernelVAE, list[float]]:
    """Fit a :class:`KernelVAE` to ``kernels`` (N×k×k) with Adam; returns the (frozen) VAE and the loss per step."""
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


#: Kingma et al. (2015)'s fit of −KL(q ‖ log-uniform) ≈ ½ log α + c1 α + c2 α² + c3 α³ (up to a constant), α ≤ 1
C1, C2, C3 = 1.16145124, -1.50204118, 0.58629921


def kl_log_uniform_truncated(log_alpha_: torch.Tensor) -> torch.Tensor:
    """KL(N(θ, αθ²) ‖ log-uniform) per weight for α ≤ 1 (Kingma et al., 2015), up to the prior's constant."""
    alpha = log_alpha_.exp()
    return -(0.5 * log_alpha_ + C1 * alpha + C2 * alpha ** 2 + C3 * alpha ** 3)


class LogUniformPrior:
    """log-uniform prior. On a truncated-α layer (how the authors train it) the KL is Kingma et al. (2015)'s
    approximation for α ≤ 1; on an additive layer, the Sparse VD approximation (Molchanov et al., 2017), which lets
    α grow without bound."""
    name = "log-uniform"

    def kl(self, layer: BayesLayer) -> torch.Tensor:
        if layer.truncated_alpha:
            return kl_log_uniform_truncated(layer.log_alpha_truncated()).sum()
        return kl_log_uniform(log_alpha(layer.weight, layer.log_sigma2)).sum()


class GaussianPrior:
    """N(mean, var) per weight (``mean``/``var`` broadcast over the kernel: N(0, 1) by default, or fitted
    position by position to the source kernels with :meth:`fit`). Exact KL."""

    def __init__(self, mean=0.0, var=1.0, name: str = "N(0,1)"):
        self.mean, self.var, self.name = torch.as_tensor(mean), torch.as_tensor(var), name

    @classmethod
    def fit(cls, kernels: torch.Tensor, name: str = "learned Gaussian") -> "GaussianPrior":
        """Maximum-likelihood mean and variance of each kernel position over the source kernels (N×k×k)."""
        return cls(kernels.mean(0), kernels.var(0) + 1e-8, name)

    def kl(self, layer: BayesLayer) -> torch.Tensor:
        m, v = self.mean.to(layer.weight.device), self.var.to(layer.weight.device)
        log_s2 = layer.log_variance()
        return 0.5 * (torch.log(v) - log_s2 + (log_s2.exp() + (layer.weight - m) ** 2) / v - 1).sum()


class DWPPrior:
    """The deep weight prior of one conv layer: a fitted :class:`KernelVAE` (frozen), auxiliary KL bound (on the
    weight sample of the current forward pass in training)."""
    name = "DWP"

    def __init__(self, vae: KernelVAE):
        self.vae = vae

    def kl(self, layer: BayesLayer) -> torch.Tensor:
        w = layer.sample if (layer.training and layer.sample is not None) else layer.sampled_weight()
        k = w.shape[-1]
        self.vae.to(w.device)
        return aux_kl_bound(w.reshape(-1, k * k), layer.log_variance(), self.vae.encode, self.vae.decode)


def make_priors(method: str, kernels: dict, vaes: dict, classifier_prior: str = "none") -> list:
    """The priors of a :class:`~ibnb.core.models.bayesian.BayesCNN`: ``method`` on the two conv layers, and on the
    classifier N(0, 1) (``classifier_prior="N(0,1)"``) or none (``"none"``: a deterministic classifier, as in the
    authors' code)."""
    if method == "DWP":
        convs = [DWPPrior(vaes["conv1"]), DWPPrior(vaes["conv2"])]
    elif method == "log-uniform":
        convs = [LogUniformPrior(), LogUniformPrior()]
    elif method == "N(0,1)":
        convs = [GaussianPrior(), GaussianPrior()]
    elif method == "learned Gaussian":
        convs = [GaussianPrior.fit(kernels["conv1"]), GaussianPrior.fit(kernels["conv2"])]
    else:
        raise KeyError(f"unknown prior {method!r}")
    if classifier_prior not in ("none", "N(0,1)"):
        raise KeyError(f"unknown classifier prior {classifier_prior!r}; use 'none' or 'N(0,1)'")
    return convs + ([GaussianPrior()] if classifier_prior == "N(0,1)" else [])


class TargetNet(BayesCNN):
    """The target network: a :class:`~ibnb.core.models.bayesian.BayesCNN` given the priors of
    :func:`make_priors` -- with two priors (conv1, conv2) its classifier is a deterministic ``nn.Linear`` with no
    prior and no KL, as in the authors' code; with three, every layer is variational. A log-uniform prior on the
    convolutions gets the truncated-α posterior, as the authors train it (``bayes-mtrunca`` in their code)."""

    def __init__(self, priors, **kw):
        priors = list(priors)
        deterministic = len(priors) == 2
        kw.setdefault("truncated_alpha", isinstance(priors[0], LogUniformPrior))
        super().__init__(priors + [GaussianPrior()] if deterministic else priors, **kw)
        if deterministic:
            self.fc = nn.Linear(self.fc.weight.shape[1], self.fc.weight.shape[0])
            self.priors = priors  # BayesCNN.kl zips the priors with (conv1, conv2, fc): the classifier drops out


def _penalised_update(model, opt, x, y, penalty, term: str) -> StepOutput:
    """Cross-entropy + ``penalty(model)``, backward, optimiser step; logs ``nll`` and ``term``."""
    with autocast(x.device):
        logits = model(x)
    nll = F.cross_entropy(logits.float(), y)
    reg = penalty(model)
    loss = nll + reg
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return StepOutput(loss.detach(), logits.detach(), {"nll": nll.detach(), term: reg.detach()})


@dataclass(frozen=True)
class VIStep:
    """ELBO update of a :class:`~ibnb.core.models.bayesian.BayesCNN`: mean cross-entropy + KL/N (``model.kl()``
    with the model's priors; ``prior`` names them, for the configuration)."""

    n_train: int
    prior: str = ""

    def __call__(self, model, opt, x, y, epoch):
        return _penalised_update(model, opt, x, y, lambda m: m.kl() / self.n_train, "kl")


@dataclass(frozen=True)
class L2Step:
    """Deterministic net, MAP with a N(0, prior_var) prior on the weights: cross-entropy + ‖w‖²/(2·var·N)."""

    n_train: int
    prior_var: float = 1.0

    def __call__(self, model, opt, x, y, epoch):
        return _penalised_update(model, opt, x, y, lambda m: sum((p ** 2).sum() for p in m.parameters()
                                                                 if p.ndim > 1) / (2 * self.prior_var * self.n_train),
                                 "l2")
