"""Batch-level regularisers as on-device ops for a custom ``train_step``: Mixup and Cutout.

Each op is a callable ``op(x, y) -> (x', target)`` on a normalised batch already on the device; ``target`` is
either the integer labels (Cutout) or class probabilities (Mixup), both accepted by ``F.cross_entropy``. Each op
owns a generator seeded at construction (created lazily on the batch's device), so a run is reproducible;
Mixup's mixing weight λ ~ Beta(α, α) is drawn on the host from a seeded NumPy generator (no device sync).
The generators are not part of ``fit``'s checkpoint: a resumed run continues with a fresh op.

- Mixup (Zhang et al., 2018): ``x' = λ x + (1-λ) x[perm]``, target ``λ onehot(y) + (1-λ) onehot(y[perm])``.
- Cutout (DeVries & Taylor, 2017): one ``size``×``size`` square per image, centred uniformly at random
  (clipped at the border), set to 0 — the dataset's mean colour after normalisation.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class _Op:
    def __init__(self, seed: int):
        self.seed = seed
        self._gen: torch.Generator | None = None

    def generator(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(self.seed)
        return self._gen


class Mixup(_Op):
    """Mixup with λ ~ Beta(alpha, alpha), one λ per batch, partner = a random permutation of the batch."""

    def __init__(self, alpha: float = 1.0, num_classes: int = 10, seed: int = 0):
        super().__init__(seed)
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha, self.num_classes = alpha, num_classes
        self.rng = np.random.default_rng(seed)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lam = float(self.rng.beta(self.alpha, self.alpha))
        perm = torch.randperm(len(x), generator=self.generator(x.device), device=x.device)
        onehot = F.one_hot(y, self.num_classes).float()
        return lam * x + (1 - lam) * x[perm], lam * onehot + (1 - lam) * onehot[perm]

    def __repr__(self) -> str:
        return f"mixup(alpha={self.alpha:g})"


class Cutout(_Op):
    """Cutout: zero one ``size``×``size`` square per image (centre uniform over the image, clipped)."""

    def __init__(self, size: int = 8, seed: int = 0):
        super().__init__(seed)
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size

    def mask(self, n: int, h: int, w: int, device) -> torch.Tensor:
        """``n×1×h×w`` float mask: 0 inside each image's square, 1 elsewhere."""
        g = self.generator(torch.device(device))
        cy = torch.randint(0, h, (n, 1, 1), generator=g, device=device)
        cx = torch.randint(0, w, (n, 1, 1), generator=g, device=device)
        ys = torch.arange(h, device=device).view(1, h, 1)
        xs = torch.arange(w, device=device).view(1, 1, w)
        lo = self.size // 2
        inside = (ys >= cy - lo) & (ys < cy - lo + self.size) & (xs >= cx - lo) & (xs < cx - lo + self.size)
        return (~inside).unsqueeze(1).float()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        return x * self.mask(n, h, w, x.device).to(x.dtype), y

    def __repr__(self) -> str:
        return f"cutout(size={self.size})"


def make_mix(name: str, *, seed: int = 0, num_classes: int = 10, mixup_alpha: float = 1.0, cutout_size: int = 8):
    """``"none"`` -> None, ``"mixup"`` -> :class:`Mixup`, ``"cutout"`` -> :class:`Cutout` (seeded)."""
    if name == "none":
        return None
    if name == "mixup":
        return Mixup(mixup_alpha, num_classes, seed)
    if name == "cutout":
        return Cutout(cutout_size, seed)
    raise ValueError(f"unknown batch op {name!r}; use none, mixup or cutout")
