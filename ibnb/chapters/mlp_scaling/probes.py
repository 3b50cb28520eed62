"""Shape-versus-texture probes without style transfer: image edits that keep one cue and remove the other.

* :func:`patch_shuffle` cuts each image into a ``g × g`` grid of patches and permutes them (one random,
  non-identity permutation per image): local texture survives inside every patch, global shape does not.
* :func:`low_pass` blurs with a Gaussian: coarse shape and colour survive, fine texture does not.
* :func:`edges` keeps only the outline: Sobel gradient magnitude of the blurred grey image, drawn as dark
  lines on white (after the edge stimuli of Geirhos et al., 2019): shape survives, colour and texture do not.

Every function maps an :class:`~ibnb.core.data.ImageData` (uint8) to a new one of the same shape.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from ibnb.core.data import ImageData
from ibnb.core.image_ops import gaussian_blur
from ibnb.core.train import evaluate


def _with(data: ImageData, x: torch.Tensor, probe: str) -> ImageData:
    return replace(data, x=x.round().clamp(0, 255).to(torch.uint8).contiguous(), meta={**data.meta, "probe": probe})


def patch_shuffle(data: ImageData, grid: int, seed: int = 0) -> ImageData:
    """Split every image into ``grid × grid`` equal patches and shuffle them (a fresh permutation per image)."""
    n, c, h, w = data.x.shape
    if h % grid or w % grid:
        raise ValueError(f"image size {h}×{w} is not divisible by grid {grid}")
    ph, pw = h // grid, w // grid
    patches = data.x.reshape(n, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, ph, pw)
    g = torch.Generator().manual_seed(seed)
    order = torch.argsort(torch.rand(n, grid * grid, generator=g), dim=1)
    if grid > 1:  # never leave an image unshuffled: an identity draw becomes a cyclic shift
        same = (order == torch.arange(grid * grid)).all(dim=1)
        order[same] = order[same].roll(1, dims=1)
    patches = patches[torch.arange(n)[:, None], order]
    x = patches.reshape(n, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)
    return replace(data, x=x.contiguous(), meta={**data.meta, "probe": f"shuffle {grid}x{grid}"})


def low_pass(data: ImageData, sigma: float = 1.5) -> ImageData:
    """Gaussian blur with standard deviation ``sigma`` pixels."""
    return _with(data, gaussian_blur(data.x.float(), sigma), f"low-pass σ={sigma:g}")


def edges(data: ImageData, sigma: float = 0.8) -> ImageData:
    """Dark Sobel edges on a white background, normalised per image, the same in every channel."""
    x = data.x.float()
    grey = x.mean(dim=1, keepdim=True)
    grey = gaussian_blur(grey, sigma)
    sx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([sx, sx.T]).unsqueeze(1)
    grad = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels).norm(dim=1, keepdim=True)
    grad = grad / grad.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    out = 255.0 * (1.0 - grad)
    return _with(data, out.expand(-1, x.shape[1], -1, -1), "edges")


def probe_set(data: ImageData, grids=(2, 4, 8), sigma: float = 1.5, seed: int = 0) -> dict[str, ImageData]:
    """The clean images and every probe, keyed by a short name."""
    out = {"clean": data}
    for g in grids:
        out[f"shuffle {g}×{g}"] = patch_shuffle(data, g, seed=seed)
    out["low-pass"] = low_pass(data, sigma)
    out["edges"] = edges(data)
    return out


def evaluate_probes(model, probes: dict[str, ImageData]) -> dict[str, float]:
    """Test accuracy of ``model`` on every probe set."""
    return {name: evaluate(model, d)["acc"] for name, d in probes.items()}


def retained(acc: float, clean: float, chance: float) -> float:
    """Fraction of the above-chance accuracy kept: ``(acc − chance) / (clean − chance)`` (1 = nothing lost,
    0 = chance)."""
    return (acc - chance) / (clean - chance) if clean > chance else float("nan")
