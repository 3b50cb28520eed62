"""Device-resident batching and augmentation as tensor ops.

:class:`DeviceLoader` keeps the whole uint8 dataset on the training device, draws batches with its own
``torch.Generator`` (so a seed fixes every batch and every augmentation), and augments on the device:
random crop with zero padding and horizontal flip (:mod:`ibnb.core.image_ops`), and ``translate`` (airbench's
shift by up to ``translate_pad`` pixels with reflect padding, :func:`random_translate`), batched (no per-image Python).
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F

from ibnb.core.data import ImageData
from ibnb.core.image_ops import random_crop, random_flip

AUGMENTATIONS = ("crop", "flip", "translate")
#: airbench's translation: up to 2 pixels each way, reflect padding (Jordan, 2024)
TRANSLATE_PAD = 2


def random_translate(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by a random offset of up to ``pad`` pixels each way (per image), filling the border by
    reflection (no black edges): reflect-pad by ``pad``, crop back to size with one batched gather."""
    if pad <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=x.device)
    rows = (dy + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    return padded[torch.arange(n, device=x.device).view(n, 1, 1, 1), torch.arange(c, device=x.device).view(1, c, 1, 1),
                  rows, cols]


def parse_augment(augment) -> tuple[str, ...]:
    """``"crop+flip"`` / ``"none"`` / ``None`` / a sequence  ->  a validated tuple of op names."""
    if augment in (None, "", "none", False):
        return ()
    ops = tuple(augment.split("+")) if isinstance(augment, str) else tuple(augment)
    unknown = [o for o in ops if o not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"Unknown augmentation {unknown}; available: {'+'.join(AUGMENTATIONS)} or 'none'")
    return ops


class DeviceLoader:
    """Batches of ``(normalised float images, labels)`` drawn from tensors resident on ``device``.

    Args:
        data: the dataset (uint8 images are moved to the device once).
        batch_size: images per batch.
        shuffle: reshuffle every epoch with the loader's generator.
        augment: ``"crop+flip"``, ``"flip+translate"``, ``"none"``... applied on the device, in pixel space.
        seed: seeds the loader's generator: order and augmentation of every batch.
        drop_last: drop the last incomplete batch.
        channels_last: use the channels-last memory format (default: on CUDA).
        pad: zero padding of ``crop``; translate_pad: the largest shift of ``translate``.
    """

    def __init__(self, data: ImageData, batch_size: int, *, shuffle: bool = True, augment="none",
                 seed: int = 0, device=None, drop_last: bool = False, channels_last: bool | None = None,
                 pad: int = 4, translate_pad: int = TRANSLATE_PAD):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.x = data.x.to(self.device, non_blocking=True)
        self.y = data.y.to(self.device, non_blocking=True)
        c = self.x.shape[1]
        mean = torch.tensor(data.mean, device=self.device).view(1, c, 1, 1)
        std = torch.tensor(data.std, device=self.device).view(1, c, 1, 1)
        # normalise as one fused multiply-subtract on the [0, 255] values: (x/255 - mean)/std
        self.scale, self.shift = 1.0 / (255.0 * std), mean / std
        self.batch_size, self.shuffle, self.drop_last, self.pad = batch_size, shuffle, drop_last, pad
        self.translate_pad = translate_pad
        self.augment = parse_augment(augment)
        self.channels_last = (self.device.type == "cuda") if channels_last is None else channels_last
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_images(self) -> int:
        """Images served per epoch."""
        return len(self) * self.batch_size if self.drop_last else len(self.y)

    def transform(self, x_uint8: torch.Tensor, augment: bool = True) -> torch.Tensor:
        """uint8 batch -> float, augmented (if enabled), normalised, in the loader's memory format."""
        x = x_uint8.float()
        if augment and "crop" in self.augment:  # zero padding in pixel space = black borders
            x = random_crop(x, self.pad, self.generator)
        if augment and "translate" in self.augment:
            x = random_translate(x, self.translate_pad, self.generator)
        if augment and "flip" in self.augment:
            x = random_flip(x, self.generator)
        x = x.mul_(self.scale).sub_(self.shift)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.transform(self.x[idx]), self.y[idx]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
