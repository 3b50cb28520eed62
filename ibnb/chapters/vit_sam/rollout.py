"""Attention rollout for the Vision Transformer (Abnar & Zuidema, 2020).

Each block's attention (averaged over heads) is mixed with the identity to account for the residual
connection, ``Â = ½A + ½I`` (rows renormalised), and the blocks are multiplied from the input up:
``R = Â_L ··· Â_1``. For class-token pooling the map of an image is the class token's row of ``R`` over the
patch tokens; for mean pooling it is the mean of the patch tokens' rows. The patch grid is upsampled
(bilinear) to the input size and scaled to [0, 1] per image, so it can be shown next to the spatial-attention
maps of :mod:`ibnb.chapters.spatial_attention.attention_maps`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ibnb.core.augment import DeviceLoader
from ibnb.core.data import ImageData
from ibnb.core.models.transformers import Attention, ViT


def rollout(attentions: list[torch.Tensor], *, residual: float = 0.5) -> torch.Tensor:
    """``B×N×N`` rollout from per-block attention weights ``B×heads×N×N`` (first block first)."""
    r = None
    for a in attentions:
        a = a.float().mean(dim=1)
        eye = torch.eye(a.shape[-1], device=a.device).expand_as(a)
        a = residual * eye + (1 - residual) * a
        a = a / a.sum(dim=-1, keepdim=True)
        r = a if r is None else a @ r
    return r


@torch.no_grad()
def vit_rollout_maps(model: ViT, data: ImageData, *, batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """``(maps, logits)``: rollout maps ``N×1×H×W`` in [0, 1] (per image) on the CPU, and the logits."""
    device = next(model.parameters()).device
    attn = [m for m in model.modules() if isinstance(m, Attention)]
    was_training, kept = model.training, [m.keep_attention for m in attn]
    model.eval()
    for m in attn:
        m.keep_attention = True
    maps, logits = [], []
    try:
        for x, _ in DeviceLoader(data, batch_size, shuffle=False, device=device):
            logits.append(model(x).float().cpu())
            r = rollout([m.last_attention for m in attn])
            cls = model.pool == "cls"
            patch_rows = r[:, 0, 1:] if cls else r.mean(dim=1)
            side = int(round(patch_rows.shape[-1] ** 0.5))
            grid = patch_rows.reshape(-1, 1, side, side)
            up = F.interpolate(grid, size=x.shape[-2:], mode="bilinear", align_corners=False)
            lo = up.amin(dim=(2, 3), keepdim=True)
            hi = up.amax(dim=(2, 3), keepdim=True)
            maps.append(((up - lo) / (hi - lo + 1e-12)).cpu())
    finally:
        for m, k in zip(attn, kept):
            m.keep_attention = k
        model.train(was_training)
    return torch.cat(maps), torch.cat(logits)
