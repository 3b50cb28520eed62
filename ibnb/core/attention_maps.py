"""Reading the maps of :class:`~ibnb.core.models.layers.SpatialAttention` layers, for any model that has them.

Chapter 03 studies the team's attention CNNs layer by layer; chapter 08 shows the same layer's map next to a
ViT's attention rollout. Both call :func:`spatial_attention_maps`, which runs a model over a dataset and returns
every attention layer's last map (sigmoid weights in (0, 1)) bilinearly upsampled to the input size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ibnb.core.augment import DeviceLoader
from ibnb.core.data import ImageData
from ibnb.core.models.layers import SpatialAttention


@torch.no_grad()
def spatial_attention_maps(model: torch.nn.Module, data: ImageData, *,
                           batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """``(maps, logits)``: ``maps`` is ``N×S×H×W`` on the CPU, one channel per :class:`SpatialAttention` layer of
    ``model`` (in module order, i.e. from the input up), upsampled to the input size; ``logits`` is ``N×K``.
    The model runs in eval mode (restored afterwards)."""
    layers = [m for m in model.modules() if isinstance(m, SpatialAttention)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no SpatialAttention layer")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    maps, logits = [], []
    try:
        for x, _ in DeviceLoader(data, batch_size, shuffle=False, device=device):
            logits.append(model(x).float().cpu())
            stages = [F.interpolate(layer.last_map.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
                      for layer in layers]
            maps.append(torch.cat(stages, dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(maps), torch.cat(logits)
