"""Self-supervised pretraining and its evaluation, on top of :func:`ibnb.core.train.fit`.

* Model (:mod:`ibnb.core.models.ssl`): :class:`~ibnb.core.models.ssl.SSLNet` = encoder → projector (the loss
  sees its output) plus an *online* linear probe on the detached representation (a monitor: no label gradient
  reaches the encoder).
* Training: :class:`SSLStep` is a frozen-dataclass ``fit`` train step (its fields — method, views, number of
  views, loss settings — key the run cache) that logs every loss term and two collapse monitors (``std``: mean
  per-dimension std of the L2-normalised representation × √d, 1 for isotropic and 0 for a collapsed one;
  ``erank``: effective rank of the representation covariance). :func:`pretrain_or_load` caches runs through
  :func:`ibnb.core.runs.load_or_fit`.
* Evaluation: probes of frozen features come from :mod:`ibnb.core.metrics` (linear probe, kNN); here
  :func:`spectrum` of a representation, :func:`fine_tune` of the whole network on a few labels
  (semi-supervised) and :func:`tsne`.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ibnb.chapters.self_supervised.losses import covariance, ssl_loss
from ibnb.chapters.self_supervised.views import ViewAugment
from ibnb.core.data import ImageData
from ibnb.core.models.ssl import Classifier, SSLNet
from ibnb.core.runs import fingerprint, load_or_fit, runs_dir, training_code_hash
from ibnb.core.train import History, StepOutput, TrainConfig, autocast, fit, resolve_device, step_key
from ibnb.core.utils import seed_everything, stable_hash

_HERE = Path(__file__).resolve().parent
#: source files a pretraining run depends on beyond the loop, the backbone and this module (hashed into its key)
_SSL_CODE = (_HERE / "losses.py", _HERE / "views.py", _HERE.parents[1] / "core" / "models" / "ssl.py")


# ----------------------------------------------------------------------------- monitors
def effective_rank(h: torch.Tensor) -> torch.Tensor:
    """exp(entropy of the normalised eigenvalues of the covariance) (Roy & Vetterli, 2007): 1 for a
    representation on a line, d when all d directions carry equal variance."""
    eig = torch.linalg.eigvalsh(covariance(h.float())).clamp(min=0)
    p = eig / eig.sum().clamp(min=1e-12)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())


def normalised_std(h: torch.Tensor) -> torch.Tensor:
    """Mean per-dimension std of the L2-normalised representation, × √d: ≈ 1 when spread over the sphere,
    0 when collapsed to one point."""
    return F.normalize(h.float(), dim=1).std(dim=0).mean() * math.sqrt(h.shape[1])


@torch.no_grad()
def spectrum(f: torch.Tensor) -> np.ndarray:
    """Eigenvalues of the feature covariance, largest first, normalised to sum 1."""
    eig = torch.linalg.eigvalsh(covariance(f.float())).clamp(min=0).flip(0)
    return (eig / eig.sum()).cpu().numpy()


# ----------------------------------------------------------------------------- training step
@dataclass(frozen=True)
class SSLStep:
    """``fit`` train step: ``n_views`` augmented views → encoder → projector → ``method``'s loss (with
    ``loss_kw``, stored as sorted ``(name, value)`` pairs); the online probe (cross-entropy on the detached
    representation of view 1) is optimised alongside and its logits are returned, so ``train_acc`` is the
    online probe's. Terms: every loss term, ``online_probe``, ``std`` and ``erank`` (seed-0 batch monitors)."""

    method: str
    views: ViewAugment
    n_views: int = 2
    loss_kw: tuple = ()

    def __post_init__(self):
        if isinstance(self.loss_kw, dict):
            object.__setattr__(self, "loss_kw", tuple(sorted(self.loss_kw.items())))

    def __call__(self, model, opt, x, y, epoch):
        n = x.shape[0]
        self.views.reseed(epoch, x.device)
        views = torch.cat([self.views(x) for _ in range(self.n_views)])
        with autocast(x.device):
            h = model.encoder(views)
            z = model.projector(h)
            logits = model.head(h[:n].detach())
        out = ssl_loss(self.method, list(z.float().chunk(self.n_views)), generator=self.views.generator(x.device),
                       **dict(self.loss_kw))
        probe = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        (out["loss"] + probe).backward()
        opt.step()
        with torch.no_grad():
            rep = h[:n].detach().float()
            terms = {k: v.detach() for k, v in out.items() if k != "loss"}
            terms.update(online_probe=probe.detach(), std=normalised_std(rep), erank=effective_rank(rep))
        return StepOutput(out["loss"].detach(), logits.detach(), terms)


def _ssl_code_hash() -> str:
    h = hashlib.sha256()
    for f in _SSL_CODE:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:12]


def pretrain_or_load(method: str, train: ImageData, val: ImageData | None = None, *, config: TrainConfig,
                     backbone: str = "n1", backbone_kw: dict | None = None, projector_dims=(1024, 1024, 1024),
                     recipe: str = "study", n_views: int = 2, loss_kw: dict | None = None, device=None,
                     progress: bool = False) -> tuple[SSLNet, History, bool]:
    """Self-supervised pretraining of ``backbone`` with ``method`` through :func:`~ibnb.core.train.fit`
    (``config``: optimiser, learning rate, epochs, batch, seed; its ``augment`` must be ``"none"``, the views
    come from :class:`SSLStep`; AdamW at ``weight_decay=0`` is Adam). ``val`` is scored each epoch by the online
    probe (it feeds the convergence check). Runs are cached under a hash of the step (its ``repr``), the
    config, the backbone and projector, the training and validation data and the code; returns
    ``(model, history, cached)``."""
    if config.augment != "none":
        raise ValueError(f"pretraining draws its own views; config.augment must be 'none', got {config.augment!r}")
    device = resolve_device(device)
    step = SSLStep(method, ViewAugment(recipe, train.mean, train.std, seed=config.seed + 1), n_views,
                   dict(loss_kw or {}))
    cfg = dataclasses.replace(config, step=step_key(step)).validate()
    spec = {"backbone": backbone, "backbone_kw": dict(backbone_kw or {}), "projector": list(projector_dims)}
    key = stable_hash({**spec, "train": asdict(cfg), "data": fingerprint(train),
                       "val": fingerprint(val) if val is not None else None,
                       "code": training_code_hash(backbone, step), "ssl_code": _ssl_code_hash()})
    seed_everything(cfg.seed)
    model = SSLNet(backbone, backbone_kw, projector_dims, train.num_classes, train.shape[0])
    meta = {**spec, "train": asdict(cfg), "n_train": len(train), "n_val": len(val) if val is not None else 0,
            "data": dict(train.meta)}
    return load_or_fit(model, runs_dir() / f"ssl-{method}-{backbone}-{key}", train, val, cfg, step=step,
                       device=device, progress=progress, desc=f"{method}/{backbone}", meta=meta)


# ----------------------------------------------------------------------------- evaluation
def fine_tune(encoder: nn.Module, dim: int, labelled: ImageData, val: ImageData | None = None, *, epochs: int,
              batch_size: int, lr: float, seed: int = 0, device=None) -> tuple[nn.Module, History]:
    """Semi-supervised evaluation: a copy of ``encoder`` + new head, the whole network trained on the labelled
    subset (SGD with Nesterov momentum 0.9, weight decay 5·10⁻⁴, cosine schedule, crop+flip) through
    :func:`~ibnb.core.train.fit`, validated on ``val`` each epoch; returns ``(model, history)``."""
    seed_everything(seed)
    model = Classifier(copy.deepcopy(encoder), dim, labelled.num_classes)
    config = TrainConfig(epochs=epochs, batch_size=min(batch_size, len(labelled)), optimizer="sgd", lr=lr,
                         weight_decay=5e-4, augment="crop+flip", seed=seed).validate()
    history = fit(model, labelled, val, config, device=resolve_device(device), progress=False)
    return model, history


def tsne(features: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-d t-SNE (scikit-learn, PCA initialisation) of standardised features."""
    from sklearn.manifold import TSNE

    f = np.asarray(features, dtype=np.float32)
    f = (f - f.mean(0)) / (f.std(0) + 1e-6)
    return TSNE(2, perplexity=min(perplexity, (len(f) - 1) / 3), init="pca", random_state=seed).fit_transform(f)
