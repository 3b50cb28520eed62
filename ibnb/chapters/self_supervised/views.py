"""Augmented views: the inductive bias of joint-embedding self-supervised learning.

:class:`ViewAugment` draws augmented views of a normalised batch on the device with its own seeded generator:
the study's recipe (RandomResizedCrop(32) + horizontal flip) or the standard SSL recipe (crop, flip, colour
jitter, greyscale, solarisation; Gaussian blur is left out at 32×32 px, as in SimCLR's CIFAR recipe), all as
batched tensor ops of :mod:`ibnb.core.image_ops`. It is a frozen dataclass: its fields (recipe, normalisation,
seed) appear in the train step's ``repr`` and so key the run cache; the recipe's settings are in
:data:`RECIPES`, in this file, whose source is hashed into the key as well.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ibnb.core.image_ops import colour_jitter, grey, resized_crop_flip

RECIPES = {
    # the study: torchvision RandomResizedCrop(32) (scale 0.08-1, aspect 3/4-4/3) + RandomHorizontalFlip
    "study": dict(scale=(0.08, 1.0), jitter_p=0.0, grey_p=0.0, solarize_p=0.0),
    # the usual CIFAR SSL recipe (SimCLR / VICReg / solo-learn): milder crops, colour jitter, greyscale
    "standard": dict(scale=(0.2, 1.0), jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                     grey_p=0.2, solarize_p=0.1),
}


@dataclass(frozen=True)
class ViewAugment:
    """Draws augmented views of a *normalised* batch (as served by :class:`~ibnb.core.augment.DeviceLoader`):
    un-normalise to [0, 1], augment with ``recipe``, normalise again. Seeded: the same seed gives the same views."""

    recipe: str
    mean: tuple
    std: tuple
    seed: int = 0
    _generators: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise KeyError(f"Unknown augmentation recipe {self.recipe!r}; available: {', '.join(RECIPES)}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def generator(self, device) -> torch.Generator:
        """This augmenter's generator on ``device`` (also drawn from by losses that need randomness, W-MSE's
        sub-batches, so that a step is a function of its position in training)."""
        device = torch.device(device)
        if str(device) not in self._generators:
            self._generators[str(device)] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[str(device)]

    def reseed(self, position: float, device) -> None:
        """Seed the generator from ``(seed, position)`` (the fractional epoch of a training step), so every step's
        views are a function of where it is in training: a run resumed from a checkpoint draws the same views as
        an uninterrupted one."""
        self.generator(device).manual_seed(self.seed * 1_000_003 + int(round(position * 100_000)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        g, c = self.generator(x.device), RECIPES[self.recipe]
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        p = (x.float() * std + mean).clamp(0, 1)
        p = resized_crop_flip(p, g, c["scale"])
        n = p.shape[0]

        def coin(prob: float) -> torch.Tensor:
            return (torch.rand(n, generator=g, device=p.device) < prob).view(n, 1, 1, 1)

        if p.shape[1] == 3 and c["jitter_p"] > 0:
            jit = colour_jitter(p, g, c["brightness"], c["contrast"], c["saturation"], c["hue"])
            p = torch.where(coin(c["jitter_p"]), jit, p)
        if p.shape[1] == 3 and c["grey_p"] > 0:
            p = torch.where(coin(c["grey_p"]), grey(p).expand_as(p), p)
        if c["solarize_p"] > 0:
            p = torch.where(coin(c["solarize_p"]), torch.where(p >= 0.5, 1 - p, p), p)
        out = (p - mean) / std
        return out.contiguous(memory_format=torch.channels_last) if x.is_cuda else out
