"""Batch-level regularisers and the one-gradient train step that applies them: Mixup, Cutout, :class:`MixStep`.

Each op is a callable ``op(x, y) -> (x', target)`` on a *normalised* batch already on the device; ``target`` is
either the integer labels (Cutout) or class probabilities (Mixup), both accepted by ``F.cross_entropy``. The
fields of an op are its settings (and its seed), so its ``repr`` enters the train step's ``repr`` and keys the run
cache. Each op draws from its own generator, seeded from ``seed`` on first use on a device (kept outside the
fields), so a run is reproducible; a resumed run continues with a fresh generator.

- Mixup (Zhang et al., 2018): ``x' = λ x + (1-λ) x[perm]``, target ``λ onehot(y) + (1-λ) onehot(y[perm])``,
  one λ ~ Beta(α, α) per batch (drawn on the host from a seeded NumPy generator: no device sync).
- Cutout (DeVries & Taylor, 2017): one square per image at a uniformly random centre, clipped at the border.
  The square is drawn by the book's one implementation, :func:`ibnb.core.image_ops.cutout` (magnitude
  ``m = size / (CUTOUT·H)``, filled with mid-grey in ``[0, 1]`` pixel space), so the batch is un-normalised with
  the dataset's ``mean`` / ``std``, cut and normalised again.

:class:`MixStep` is the ordinary update (forward under the run's autocast, fp32 loss, backward, step) with an
optional batch op and label smoothing; chapter 08's SAM step builds on :func:`mixed_forward_backward`, and
chapter 02 trains its MLPs with Bachmann et al.'s ingredients (mixup + label smoothing) through it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ibnb.core import image_ops
from ibnb.core.train import StepOutput, autocast


@dataclass(frozen=True)
class _Seeded:
    """A seeded device generator kept outside the dataclass fields (not in ``repr``, not compared)."""

    seed: int = 0
    _state: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def generator(self, device: torch.device) -> torch.Generator:
        g = self._state.get("gen")
        if g is None or g.device != device:
            g = torch.Generator(device=device)
            g.manual_seed(self.seed)
            self._state["gen"] = g
        return g


@dataclass(frozen=True)
class Mixup(_Seeded):
    """Mixup with λ ~ Beta(alpha, alpha), one λ per batch, partner = a random permutation of the batch."""

    alpha: float = 1.0
    num_classes: int = 10

    def __post_init__(self):
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self._state.setdefault("rng", np.random.default_rng(self.seed))
        lam = float(rng.beta(self.alpha, self.alpha))
        perm = torch.randperm(len(x), generator=self.generator(x.device), device=x.device)
        onehot = F.one_hot(y, self.num_classes).float()
        return lam * x + (1 - lam) * x[perm], lam * onehot + (1 - lam) * onehot[perm]


@dataclass(frozen=True)
class Cutout(_Seeded):
    """Cutout of a ``size``-pixel square per image through :func:`ibnb.core.image_ops.cutout`; ``mean`` / ``std``
    are the dataset's normalisation (the op works in ``[0, 1]`` pixel space)."""

    size: int = 8
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.25, 0.25, 0.25)

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, h = x.shape[1], x.shape[2]
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, c, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, c, 1, 1)
        m = min(1.0, self.size / (image_ops.CUTOUT * h))
        cut = image_ops.cutout(x * std + mean, m, self.generator(x.device))
        return (cut - mean) / std, y


def make_mix(name: str, *, seed: int = 0, num_classes: int = 10, mixup_alpha: float = 1.0, cutout_size: int = 8,
             mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)):
    """``"none"`` -> None, ``"mixup"`` -> :class:`Mixup`, ``"cutout"`` -> :class:`Cutout` (seeded)."""
    if name == "none":
        return None
    if name == "mixup":
        return Mixup(seed=seed, alpha=float(mixup_alpha), num_classes=num_classes)
    if name == "cutout":
        return Cutout(seed=seed, size=int(cutout_size), mean=tuple(float(v) for v in mean),
                      std=tuple(float(v) for v in std))
    raise ValueError(f"unknown batch op {name!r}; use none, mixup or cutout")


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy for integer labels or class-probability targets (Mixup), in fp32."""
    return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)


def mixed_forward_backward(model, opt, x, y, mix, label_smoothing):
    """Apply the batch op, forward under autocast, fp32 loss, zero the gradients and back-propagate.
    Returns ``(x, target, logits, loss)`` (the possibly mixed batch and its targets)."""
    target = y
    if mix is not None:
        x, target = mix(x, y)
    with autocast(x.device):
        logits = model(x)
    loss = soft_cross_entropy(logits, target, label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    return x, target, logits, loss


@dataclass(frozen=True)
class MixStep:
    """The ordinary one-gradient update with a batch op (``mix``: :class:`Mixup`, :class:`Cutout` or ``None``) and
    label smoothing; the fields key the run cache."""

    mix: object = None
    label_smoothing: float = 0.0

    def __call__(self, model, opt, x, y, epoch) -> StepOutput:
        _, _, logits, loss = mixed_forward_backward(model, opt, x, y, self.mix, self.label_smoothing)
        opt.step()
        return StepOutput(loss.detach(), logits.detach())
