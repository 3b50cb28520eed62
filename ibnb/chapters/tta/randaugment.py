"""RandAugment (Cubuk et al., 2020) for the members behind chapter 04's GPS claims, as a train step.

The GPS paper's CIFAR members are trained with RandAugment, so the sub-policies its search chooses from are in
their training distribution. :class:`RandAugmentStep` gives our members the same: after the loader's crop+flip,
every batch is cut into groups of ``group`` images, and each group gets ``n_ops`` operations drawn uniformly
from the GPS pool's operations (:data:`ibnb.chapters.tta.policies.POOL_OPS`) with magnitudes drawn as the pool
draws them (uniform in [-1, 1] for signed operations, [0, 1] otherwise). The batch is reshuffled every epoch, so
each image meets fresh operations; grouping keeps the augmentation a few batched tensor ops per step (no
per-image Python, no host sync). Then the members' usual update: cross-entropy with label smoothing, with the
fast recipe's lookahead where the profile uses it.

The step is a frozen dataclass, so its fields key the run cache; its random state is derived from a step
counter kept in the optimiser state, so a resumed run draws the same operations as an uninterrupted one.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ibnb.core.fast_recipe import LookaheadStep
from ibnb.core.image_ops import OPS, apply_op
from ibnb.core.train import CrossEntropyStep

#: the operations RandAugment draws from: the GPS pool's (kept in step with policies.POOL_OPS by a test)
RA_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "brightness", "contrast", "color",
          "sharpness", "posterize", "solarize", "autocontrast", "cutout", "blur")


def rand_augment(x: torch.Tensor, rng: random.Random, generator: torch.Generator, *, n_ops: int = 2,
                 group: int = 32, ops: tuple[str, ...] = RA_OPS) -> torch.Tensor:
    """RandAugment of a float ``[0, 1]`` batch ``(N, C, H, W)``: each group of ``group`` consecutive images gets
    ``n_ops`` operations of ``ops`` with random magnitudes (``rng`` draws the operations and magnitudes,
    ``generator`` the randomness inside an operation, e.g. cutout's position)."""
    out = []
    for start in range(0, len(x), group):
        xg = x[start:start + group]
        for _ in range(n_ops):
            name = rng.choice(ops)
            m = rng.uniform(-1, 1) if OPS[name][1] else rng.uniform(0, 1)
            xg = apply_op(xg, name, m, generator)
        out.append(xg)
    return torch.cat(out)


@dataclass(frozen=True)
class RandAugmentStep:
    """RandAugment on the normalised training batch (``mean``/``std`` of the dataset), then the update of the
    other members (:class:`ibnb.core.fast_recipe.LookaheadStep` if ``lookahead``, else cross-entropy)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    n_ops: int = 2
    group: int = 32
    seed: int = 0
    label_smoothing: float = 0.2
    lookahead: bool = True

    def __call__(self, model, opt, x, y, epoch):
        first = opt.state[opt.param_groups[0]["params"][0]]
        first["randaugment_count"] = count = int(first.get("randaugment_count", 0)) + 1
        rng = random.Random(f"{self.seed}/{count}")
        g = torch.Generator(device=x.device)
        g.manual_seed(rng.getrandbits(63))
        c = x.shape[1]
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, c, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, c, 1, 1)
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
            else torch.contiguous_format
        pixels = (x * std + mean).clamp_(0, 1)
        augmented = rand_augment(pixels, rng, g, n_ops=self.n_ops, group=self.group)
        x = ((augmented - mean) / std).contiguous(memory_format=fmt)
        update = LookaheadStep(self.label_smoothing) if self.lookahead else CrossEntropyStep(self.label_smoothing)
        return update(model, opt, x, y, epoch)
