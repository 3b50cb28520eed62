"""Test-time sub-policies: short sequences of magnitude ops (:data:`ibnb.core.image_ops.OPS`, applied with
:func:`ibnb.core.image_ops.apply_op` as batched tensor ops on the device), optionally followed by the random
crop+flip the ensemble members were trained with.

A :class:`SubPolicy` is one test-time view of a batch; :data:`CENTRAL` is the image itself and :data:`CROP_FLIP`
the training augmentation; :func:`random_pool` samples the pool (ops :data:`POOL_OPS`) that Greedy Policy Search
chooses from. The same ``torch.Generator`` state gives the same views.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ibnb.core.image_ops import OPS, apply_op, random_crop, random_flip

# the pool Greedy Policy Search draws from (crop and flip follow every sub-policy anyway)
POOL_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "brightness", "contrast", "color",
            "sharpness", "posterize", "solarize", "autocontrast", "cutout", "blur")


@dataclass(frozen=True)
class SubPolicy:
    """A sequence of ``(op, magnitude)`` pairs, then (if ``crop_flip``) a random 4-px crop and a random
    flip per image: one test-time view of a batch."""

    ops: tuple[tuple[str, float], ...] = ()
    crop_flip: bool = True
    pad: int = 4

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        for name, m in self.ops:
            x = apply_op(x, name, m, g)
        if self.crop_flip:
            x = random_flip(random_crop(x, self.pad, g), g)
        return x

    def describe(self) -> str:
        parts = [f"{n}({m:+.2f})" if OPS[n][1] else (f"{n}({abs(m):.2f})" if n not in ("flip", "autocontrast")
                                                     else n) for n, m in self.ops]
        if self.crop_flip:
            parts.append("crop+flip")
        return " → ".join(parts) or "central"


CENTRAL = SubPolicy((), crop_flip=False)
CROP_FLIP = SubPolicy((), crop_flip=True)


def random_pool(n: int, n_ops: tuple[int, ...] = (2, 3), *, seed: int = 0, ops: tuple[str, ...] = POOL_OPS,
                crop_flip: bool = True) -> list[SubPolicy]:
    """``n`` random sub-policies: each draws its length from ``n_ops`` and that many distinct ops from
    ``ops``, with magnitudes uniform in [-1, 1] (signed ops) or [0, 1] (unsigned), rounded to 0.01."""
    rng = random.Random(seed)
    pool = []
    for _ in range(n):
        names = rng.sample(list(ops), rng.choice(list(n_ops)))
        pool.append(SubPolicy(tuple((o, round(rng.uniform(-1, 1) if OPS[o][1] else rng.uniform(0, 1), 2))
                                    for o in names), crop_flip=crop_flip))
    return pool
