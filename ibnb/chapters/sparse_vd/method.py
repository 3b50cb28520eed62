"""The Sparse VD objective: the ELBO update with the KL warm-up (Molchanov et al., 2017).

The layers and the KL approximation are in :mod:`ibnb.core.models.sparse_vd`; this module is the training
objective, a frozen-dataclass train step for :func:`ibnb.core.train.fit` (its fields key the run cache).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ibnb.core.models.sparse_vd import model_kl, svdo_layers
from ibnb.core.train import StepOutput, autocast


def kl_weight(epoch: float, zero_epochs: float = 5.0, full_epoch: float = 20.0) -> float:
    """KL weight: 0 for ``zero_epochs`` epochs, then linear up to 1 at ``full_epoch`` (and 1 after)."""
    if epoch < zero_epochs:
        return 0.0
    if full_epoch <= zero_epochs:
        return 1.0
    return min(1.0, (epoch - zero_epochs) / (full_epoch - zero_epochs))


@dataclass(frozen=True)
class ELBOStep:
    """ELBO update: mean cross-entropy + β(epoch)·KL/N over ``n_train`` training images, with the KL warm-up of
    :func:`kl_weight`. Logs the terms ``nll``, ``kl`` (per training image, unweighted), ``beta`` and the
    sparsity (fraction of weights with log α > 3) of every Sparse VD layer as ``sp<i>``."""

    n_train: int
    kl_zero_epochs: float = 5.0
    kl_full_epochs: float = 20.0

    def __call__(self, model, opt, x, y, epoch):
        beta = kl_weight(epoch, self.kl_zero_epochs, self.kl_full_epochs)
        with autocast(x.device):
            logits = model(x)
        nll = F.cross_entropy(logits.float(), y)
        kl = model_kl(model) / self.n_train
        loss = nll + beta * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        terms = {"nll": nll.detach(), "kl": kl.detach(), "beta": torch.tensor(beta, device=x.device)}
        with torch.no_grad():
            for i, (_, m) in enumerate(svdo_layers(model)):
                terms[f"sp{i}"] = (m.log_alpha > m.threshold).float().mean()
        return StepOutput(loss.detach(), logits.detach(), terms)
