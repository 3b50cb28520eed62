"""Networks of self-supervised learning: an encoder (a registered classifier without its head), the projector
the loss sees, the pretraining network with its online probe, and the classifier fine-tuned on a few labels.

* :func:`make_encoder` — a registered backbone (``n1``, ``resnet18`` …) with its linear head replaced by the
  identity; returns ``(encoder, representation_dim)``. :func:`encoder_of` does the same to a trained classifier.
* :class:`Projector` — fully-connected layers with BatchNorm + ReLU between them (the study's 3 × 1024).
* :class:`SSLNet` — encoder → projector (for the loss) plus an *online* linear probe on the detached
  representation; its ``forward`` returns the probe's logits, so :func:`ibnb.core.train.evaluate` measures it.
* :class:`Classifier` — an encoder with a fresh linear head (semi-supervised fine-tuning).

The objectives and the train step that uses these networks live in :mod:`ibnb.chapters.self_supervised`.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ibnb.core.models import create_model


class Projector(nn.Sequential):
    """Fully-connected layers with BatchNorm + ReLU between them (none after the last): ``dims`` = the output
    widths, e.g. the study's (1024, 1024, 1024). Only the last layer has a bias (BatchNorm follows the others)."""

    def __init__(self, in_dim: int, dims=(1024, 1024, 1024)):
        layers, d = [], in_dim
        for i, out in enumerate(dims):
            layers.append(nn.Linear(d, out, bias=i == len(dims) - 1))
            if i < len(dims) - 1:
                layers += [nn.BatchNorm1d(out), nn.ReLU(inplace=True)]
            d = out
        super().__init__(*layers)


def make_encoder(backbone: str, backbone_kw: dict | None = None, in_channels: int = 3) -> tuple[nn.Module, int]:
    """A registered classifier (``n1``, ``resnet18`` …) with its linear head replaced by the identity:
    returns ``(encoder, representation_dim)``."""
    model = create_model(backbone, num_classes=1, in_channels=in_channels, **(backbone_kw or {}))
    dim = model.head.in_features
    model.head = nn.Identity()
    return model, dim


def encoder_of(classifier: nn.Module) -> nn.Module:
    """A copy of a trained registered classifier with its linear head replaced by the identity."""
    enc = copy.deepcopy(classifier)
    enc.head = nn.Identity()
    return enc


class SSLNet(nn.Module):
    """Encoder → projector (for the loss) and an online linear probe on the detached representation."""

    def __init__(self, backbone: str, backbone_kw: dict | None, projector_dims, num_classes: int = 10,
                 in_channels: int = 3):
        super().__init__()
        self.encoder, self.dim = make_encoder(backbone, backbone_kw, in_channels)
        self.projector = Projector(self.dim, projector_dims)
        self.head = nn.Linear(self.dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The online probe's logits (what ``evaluate`` scores); the loss uses ``encoder`` and ``projector``."""
        return self.head(self.encoder(x))


class Classifier(nn.Module):
    """A (pretrained) encoder with a fresh linear head: the network fine-tuned on a few labels."""

    def __init__(self, encoder: nn.Module, dim: int, num_classes: int):
        super().__init__()
        self.encoder, self.head = encoder, nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))
