"""Self-supervised pretraining and its evaluation, on top of :func:`ibnb.core.train.fit`.

* Views: :class:`ViewAugment` draws augmented views of a normalised batch on the device with its own seeded
  generator: the study's recipe (RandomResizedCrop(32) + horizontal flip) or the standard SSL recipe (crop,
  flip, colour jitter, greyscale, solarisation; Gaussian blur is left out at 32×32 px, as in SimCLR's CIFAR
  recipe), all as batched tensor ops.
* Model: :class:`SSLNet` = encoder (a registered backbone without its head) → :class:`Projector` (the loss sees
  its output) plus an *online* linear probe on the detached representation (a monitor: no label gradient
  reaches the encoder).
* Training: :func:`ssl_step` is a ``fit`` train step that logs every loss term and two collapse monitors
  (``std``: mean per-dimension std of the L2-normalised representation × √d, 1 for isotropic and 0 for a
  collapsed one; ``erank``: effective rank of the representation covariance). :func:`pretrain_or_load`
  caches runs like :func:`ibnb.core.runs.train_or_load`.
* Evaluation on frozen features: :func:`linear_probe` (top-1/top-5), :func:`knn_accuracy`,
  :func:`spectrum`; and :func:`fine_tune` of the whole network on a few labels (semi-supervised).
"""
from __future__ import annotations

import copy
import hashlib
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ibnb.core.augment import DeviceLoader
from ibnb.core.metrics import extract_features, knn_accuracy, linear_probe, pixel_features, topk  # noqa: F401
from ibnb.core.image_ops import colour_jitter, grey, resized_crop_flip
from ibnb.core.data import ImageData
from ibnb.core.models import create_model
from ibnb.core.runs import fingerprint, load_or_fit, runs_dir, training_code_hash
from ibnb.chapters.self_supervised.losses import covariance, ssl_loss
from ibnb.core.train import History, StepOutput, default_device, fit
from ibnb.core.utils import seed_everything, stable_hash

# ----------------------------------------------------------------------------- augmentation
RECIPES = {
    # the study: torchvision RandomResizedCrop(32) (scale 0.08-1, aspect 3/4-4/3) + RandomHorizontalFlip
    "study": dict(scale=(0.08, 1.0), jitter_p=0.0, grey_p=0.0, solarize_p=0.0),
    # the usual CIFAR SSL recipe (SimCLR / VICReg / solo-learn): milder crops, colour jitter, greyscale
    "standard": dict(scale=(0.2, 1.0), jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                     grey_p=0.2, solarize_p=0.1),
}
class ViewAugment:
    """Draws augmented views of a *normalised* batch (as served by :class:`~ibnb.core.augment.DeviceLoader`):
    un-normalise to [0, 1], augment with ``recipe``, normalise again. Seeded: the same seed gives the same views."""

    def __init__(self, recipe: str, mean, std, seed: int = 0):
        if recipe not in RECIPES:
            raise KeyError(f"Unknown augmentation recipe {recipe!r}; available: {', '.join(RECIPES)}")
        self.recipe, self.cfg, self.seed = recipe, RECIPES[recipe], seed
        self.mean, self.std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        self.g: torch.Generator | None = None

    def _gen(self, device) -> torch.Generator:
        if self.g is None or self.g.device != torch.device(device):
            self.g = torch.Generator(device=device)
            self.g.manual_seed(self.seed)
        return self.g

    def reseed(self, position: float, device) -> None:
        """Seed the generator from ``(seed, position)`` (the fractional epoch of a training step), so every step's
        views are a function of where it is in training: a run resumed from a checkpoint draws the same views as
        an uninterrupted one."""
        self._gen(device).manual_seed(self.seed * 1_000_003 + int(round(position * 100_000)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        g, c = self._gen(x.device), self.cfg
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        p = (x.float() * std + mean).clamp(0, 1)
        p = resized_crop_flip(p, g, c["scale"])
        n = p.shape[0]
        coin = lambda prob: (torch.rand(n, generator=g, device=p.device) < prob).view(n, 1, 1, 1)
        if p.shape[1] == 3 and c["jitter_p"] > 0:
            jit = colour_jitter(p, g, c["brightness"], c["contrast"], c["saturation"], c["hue"])
            p = torch.where(coin(c["jitter_p"]), jit, p)
        if p.shape[1] == 3 and c["grey_p"] > 0:
            p = torch.where(coin(c["grey_p"]), grey(p).expand_as(p), p)
        if c["solarize_p"] > 0:
            p = torch.where(coin(c["solarize_p"]), torch.where(p >= 0.5, 1 - p, p), p)
        out = (p - mean) / std
        return out.contiguous(memory_format=torch.channels_last) if x.is_cuda else out


# ----------------------------------------------------------------------------- model
class Projector(nn.Sequential):
    """Fully-connected layers with BatchNorm + ReLU between them (none after the last): ``dims`` = the output
    widths, e.g. the study's (1024, 1024, 1024)."""

    def __init__(self, in_dim: int, dims=(1024, 1024, 1024)):
        layers, d = [], in_dim
        for i, out in enumerate(dims):
            layers.append(nn.Linear(d, out, bias=i == len(dims) - 1))
            if i < len(dims) - 1:
                layers += [nn.BatchNorm1d(out), nn.ReLU(inplace=True)]
            d = out
        super().__init__(*layers)


def make_encoder(backbone: str, backbone_kw: dict | None = None, in_channels: int = 3) -> tuple[nn.Module, int]:
    """A registered classifier (``n1``, ``resnet18``...) with its linear head replaced by the identity:
    returns ``(encoder, representation_dim)``."""
    model = create_model(backbone, num_classes=1, in_channels=in_channels, **(backbone_kw or {}))
    dim = model.head.in_features
    model.head = nn.Identity()
    return model, dim


class SSLNet(nn.Module):
    """Encoder → projector (for the loss) and an online linear probe on the detached representation."""

    def __init__(self, backbone: str, backbone_kw: dict | None, projector_dims, num_classes: int = 10,
                 in_channels: int = 3):
        super().__init__()
        self.encoder, self.dim = make_encoder(backbone, backbone_kw, in_channels)
        self.projector = Projector(self.dim, projector_dims)
        self.head = nn.Linear(self.dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # online-probe logits (used by evaluate)
        return self.head(self.encoder(x))


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


# ----------------------------------------------------------------------------- training step
def ssl_step(method: str, augment: ViewAugment, n_views: int = 2, loss_kw: dict | None = None):
    """``fit`` train step: ``n_views`` augmented views → encoder → projector → ``method``'s loss; the online probe
    (cross-entropy on the detached representation of view 1) is optimised alongside and returned as logits."""
    loss_kw = loss_kw or {}

    def step(model, opt, x, y, epoch):
        n = x.shape[0]
        augment.reseed(epoch, x.device)
        views = torch.cat([augment(x) for _ in range(n_views)])
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
            h = model.encoder(views)
            z = model.projector(h)
            logits = model.head(h[:n].detach())
        out = ssl_loss(method, list(z.float().chunk(n_views)), **loss_kw)
        probe = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        (out["loss"] + probe).backward()
        opt.step()
        with torch.no_grad():
            rep = h[:n].detach().float()
            terms = {k: v.detach() for k, v in out.items() if k != "loss"}
            terms.update(online_probe=probe.detach(), std=normalised_std(rep), erank=effective_rank(rep))
        return StepOutput(out["loss"].detach(), logits.detach(), terms)

    return step


def step_name(method: str, recipe: str, n_views: int, loss_kw: dict, projector_dims) -> str:
    kw = ",".join(f"{k}={v}" for k, v in sorted(loss_kw.items()))
    return f"ssl(method={method},recipe={recipe},views={n_views},proj={'-'.join(map(str, projector_dims))}{',' + kw if kw else ''})"


def pretrain_or_load(method: str, train: ImageData, *, backbone: str = "n1", backbone_kw: dict | None = None,
                     projector_dims=(1024, 1024, 1024), recipe: str = "study", n_views: int = 2,
                     loss_kw: dict | None = None, epochs: int = 30, batch_size: int = 256, lr: float = 1e-3,
                     weight_decay: float = 0.0, schedule: str = "cosine", seed: int = 0, device=None,
                     progress: bool = False) -> tuple[SSLNet, History, bool]:
    """Self-supervised pretraining of ``backbone`` with ``method`` (Adam; AdamW with ``weight_decay=0`` is Adam),
    through :func:`~ibnb.core.train.fit` (device, bf16 autocast on CUDA, checkpoints, progress, history). Runs are cached
    in the run cache under a hash of every setting, the data and the code; returns ``(model, history, cached)``."""
    loss_kw = dict(loss_kw or {})
    device = torch.device(device) if device is not None else default_device()
    augment = ViewAugment(recipe, train.mean, train.std, seed=seed + 1)
    step = ssl_step(method, augment, n_views, loss_kw)
    name = step_name(method, recipe, n_views, loss_kw, projector_dims)
    fit_kw = dict(epochs=epochs, batch_size=batch_size, optimizer="adamw", lr=lr, weight_decay=weight_decay,
                  schedule=schedule, seed=seed)
    losses_src = (Path(__file__).resolve().parent / "losses.py").read_bytes()
    key = stable_hash({"step": name, "backbone": backbone, "backbone_kw": backbone_kw or {}, "fit": fit_kw,
                       "data": fingerprint(train), "code": training_code_hash(backbone, step),
                       "losses": hashlib.sha256(losses_src).hexdigest()[:12]})
    folder = runs_dir() / f"ssl-{method}-{backbone}-{key}"
    seed_everything(seed)
    model = SSLNet(backbone, backbone_kw, projector_dims, train.num_classes, train.shape[0])
    meta = {"step": name, "backbone": backbone, "backbone_kw": backbone_kw or {}, "fit": fit_kw,
            "n_train": len(train), "data": dict(train.meta)}
    return load_or_fit(model, folder, train, None, device=device, progress=progress, desc=f"{method}/{backbone}",
                       meta=meta, train_step=step, step=name, **fit_kw)


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
@torch.no_grad()
def spectrum(f: torch.Tensor) -> np.ndarray:
    """Eigenvalues of the feature covariance, largest first, normalised to sum 1."""
    eig = torch.linalg.eigvalsh(covariance(f.float())).clamp(min=0).flip(0)
    return (eig / eig.sum()).cpu().numpy()


class Classifier(nn.Module):
    """A (pretrained) encoder with a fresh linear head: the network fine-tuned on a few labels."""

    def __init__(self, encoder: nn.Module, dim: int, num_classes: int):
        super().__init__()
        self.encoder, self.head = encoder, nn.Linear(dim, num_classes)

    def forward(self, x):
        return self.head(self.encoder(x))


def fine_tune(encoder: nn.Module, dim: int, labelled: ImageData, *, epochs: int, batch_size: int, lr: float,
              seed: int = 0, device=None) -> nn.Module:
    """Semi-supervised evaluation: a copy of ``encoder`` + new head, the whole network trained on the labelled
    subset (SGD with Nesterov momentum, cosine schedule, crop+flip) through :func:`~ibnb.core.train.fit`."""
    seed_everything(seed)
    model = Classifier(copy.deepcopy(encoder), dim, labelled.num_classes)
    fit(model, labelled, None, epochs=epochs, batch_size=min(batch_size, len(labelled)), optimizer="sgd", lr=lr,
        weight_decay=5e-4, augment="crop+flip", seed=seed, device=device, progress=False)
    return model


def tsne(features: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-d t-SNE (scikit-learn, PCA initialisation) of standardised features."""
    from sklearn.manifold import TSNE

    f = np.asarray(features, dtype=np.float32)
    f = (f - f.mean(0)) / (f.std(0) + 1e-6)
    return TSNE(2, perplexity=min(perplexity, (len(f) - 1) / 3), init="pca", random_state=seed).fit_transform(f)
