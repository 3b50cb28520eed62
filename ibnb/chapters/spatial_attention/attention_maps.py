"""Are the attention maps faithful? A masking test on the maps of :mod:`ibnb.core.attention_maps`.

``mask_pixels`` replaces a fraction of pixel positions per image (the most-attended, least-attended or randomly
chosen ones) by the dataset's mean colour (zero after normalisation); ``masking_accuracy`` evaluates models on
such masked copies — if the maps are faithful, hiding the most-attended pixels should cost more accuracy than
hiding random or least-attended ones.
"""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import torch

from ibnb.core.attention_maps import spatial_attention_maps
from ibnb.core.data import ImageData
from ibnb.core.train import evaluate

SELECTIONS = ("most-attended", "random", "least-attended")


def mask_pixels(data: ImageData, saliency: torch.Tensor, fraction: float, selection: str, *,
                seed: int = 0) -> ImageData:
    """Copy of ``data`` with ``round(fraction·H·W)`` pixel positions per image set to the mean colour.

    ``saliency`` is ``N×H×W``; ``selection`` picks the positions: its largest values (``most-attended``), its
    smallest (``least-attended``) or uniformly at random (``random``, seeded)."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    n, c, h, w = data.x.shape
    k = int(round(fraction * h * w))
    if k == 0:
        return data
    score = saliency.reshape(n, h * w).float()
    if selection == "least-attended":
        score = -score
    elif selection == "random":
        score = torch.rand(n, h * w, generator=torch.Generator().manual_seed(seed))
    idx = score.topk(k, dim=1).indices
    mask = torch.zeros(n, h * w, dtype=torch.bool).scatter_(1, idx, True).view(n, 1, h, w)
    fill = torch.tensor([round(255 * m) for m in data.mean], dtype=torch.uint8).view(1, c, 1, 1)
    return replace(data, x=torch.where(mask, fill, data.x), meta={**data.meta, "masked": f"{selection} {fraction:g}"})


def masking_accuracy(attention_model: torch.nn.Module, models: dict[str, torch.nn.Module], data: ImageData,
                     fractions, *, seed: int = 0) -> pd.DataFrame:
    """Accuracy of every model in ``models`` on ``data`` with pixels masked according to the mean (over stages)
    attention map of ``attention_model``; one row per model × selection × fraction (fraction 0 = unmasked)."""
    maps, _ = spatial_attention_maps(attention_model, data)
    saliency = maps.mean(dim=1)
    rows = [dict(model=name, selection="none", fraction=0.0, acc=evaluate(m, data)["acc"]) for name, m in models.items()]
    for fraction in fractions:
        for selection in SELECTIONS:
            masked = mask_pixels(data, saliency, fraction, selection, seed=seed)
            rows += [dict(model=name, selection=selection, fraction=float(fraction), acc=evaluate(m, masked)["acc"])
                     for name, m in models.items()]
    return pd.DataFrame(rows)
