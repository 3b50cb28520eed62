"""Test-time augmentation ops with magnitudes, as batched tensor ops on the device.

Every op has the signature ``op(x, m, g) -> x`` for float images ``x`` in ``[0, 1]`` of shape ``N×C×H×W`` (on
any device), a magnitude ``m`` in ``[-1, 1]`` (signed ops: the sign picks the direction) or ``[0, 1]``
(unsigned ops: only ``|m|`` counts), and a ``torch.Generator`` on ``x``'s device for the ops with a random
part (crop offset, cutout position): the same generator state gives the same output. ``m = 0`` is the
identity for every op except ``flip`` and ``autocontrast``, which have no magnitude.

Geometric ops (rotate, shear, translate) build one affine matrix and resample with
``affine_grid``/``grid_sample`` (bilinear, black outside the image, like the zero-padded crops used in
training). Photometric ops follow PIL's ``ImageEnhance`` definitions (blend with a degenerate image).

A :class:`SubPolicy` is a short sequence of ``(op, magnitude)`` pairs, optionally followed by the random
crop+flip the ensemble members were trained with; :func:`random_pool` samples the pool that Greedy Policy
Search chooses from.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ibnb.core.augment import random_crop, random_flip

ROTATE_DEG = 30.0    # |m| = 1 rotates by 30 degrees
SHEAR = 0.3          # |m| = 1 shears by 0.3 (x += 0.3 y)
TRANSLATE = 0.3      # |m| = 1 shifts by 30 % of the side (10 px at 32 px)
ENHANCE = 0.9        # brightness/contrast/colour/sharpness factor 1 + 0.9 m, in [0.1, 1.9]
POSTERIZE_BITS = 4   # |m| = 1 keeps 4 of 8 bits
CUTOUT = 0.5         # |m| = 1 blanks a square of half the side
BLUR_SIGMA = 1.5     # |m| = 1 blurs with a 1.5 px Gaussian
CROP_PAD = 8         # |m| = 1 pads by 8 px before the random crop
_LUMA = (0.299, 0.587, 0.114)


def _affine(x: torch.Tensor, a: float, b: float, c: float, d: float, tx: float = 0.0, ty: float = 0.0):
    """Resample ``x`` through the affine map (normalised coordinates) ``[[a, b, tx], [c, d, ty]]``."""
    theta = torch.tensor([[a, b, tx], [c, d, ty]], dtype=x.dtype, device=x.device).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel luma ``N×1×H×W`` (the image itself when it has one channel)."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL ``ImageEnhance``: ``degenerate + factor·(x − degenerate)``, clipped to ``[0, 1]``."""
    return (degenerate + factor * (x - degenerate)).clamp_(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (reflect padding); ``sigma`` in pixels (``<= 0``: identity)."""
    if sigma <= 0:
        return x
    r = max(1, math.ceil(2 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


# ----------------------------------------------------------------------------- the ops
def identity(x, m=0.0, g=None):
    """The image unchanged."""
    return x


def flip(x, m=0.0, g=None):
    """Left-right mirror (no magnitude)."""
    return x.flip(3)


def crop(x, m, g):
    """Pad by ``round(|m|·8)`` black pixels and crop back at a random offset per image."""
    pad = round(abs(m) * CROP_PAD)
    return random_crop(x, pad, g) if pad > 0 else x


def rotate(x, m, g=None):
    """Rotate by ``m·30`` degrees about the centre."""
    r = math.radians(m * ROTATE_DEG)
    return _affine(x, math.cos(r), -math.sin(r), math.sin(r), math.cos(r)) if m else x


def shear_x(x, m, g=None):
    """Shear horizontally: x += m·0.3·y."""
    return _affine(x, 1.0, m * SHEAR, 0.0, 1.0) if m else x


def shear_y(x, m, g=None):
    """Shear vertically: y += m·0.3·x."""
    return _affine(x, 1.0, 0.0, m * SHEAR, 1.0) if m else x


def translate_x(x, m, g=None):
    """Shift horizontally by ``round(m·0.3·W)`` whole pixels (black fill)."""
    px = round(m * TRANSLATE * x.shape[3])
    return _affine(x, 1.0, 0.0, 0.0, 1.0, tx=2 * px / x.shape[3]) if px else x


def translate_y(x, m, g=None):
    """Shift vertically by ``round(m·0.3·H)`` whole pixels (black fill)."""
    px = round(m * TRANSLATE * x.shape[2])
    return _affine(x, 1.0, 0.0, 0.0, 1.0, ty=2 * px / x.shape[2]) if px else x


def brightness(x, m, g=None):
    """Blend with black: factor ``1 + 0.9 m``."""
    return _blend(torch.zeros_like(x), x, 1 + ENHANCE * m)


def contrast(x, m, g=None):
    """Blend with the image's mean grey level: factor ``1 + 0.9 m``."""
    return _blend(_gray(x).mean((1, 2, 3), keepdim=True).expand_as(x), x, 1 + ENHANCE * m)


def color(x, m, g=None):
    """Saturation: blend with the greyscale image, factor ``1 + 0.9 m``."""
    return _blend(_gray(x).expand_as(x), x, 1 + ENHANCE * m)


def sharpness(x, m, g=None):
    """Blend with PIL's SMOOTH-filtered image (3×3 kernel, centre weight 5): factor ``1 + 0.9 m``."""
    c = x.shape[1]
    k = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    k[1, 1] = 5.0
    k = (k / k.sum()).view(1, 1, 3, 3).expand(c, 1, 3, 3)
    smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)
    return _blend(smooth, x, 1 + ENHANCE * m)


def posterize(x, m, g=None):
    """Keep ``8 − round(|m|·4)`` bits per channel."""
    drop = round(abs(m) * POSTERIZE_BITS)
    if drop == 0:
        return x
    step = 2 ** drop
    return torch.floor(torch.round(x * 255) / step) * step / 255


def solarize(x, m, g=None):
    """Invert the pixels above the threshold ``1 − |m|``."""
    return torch.where(x > 1 - abs(m), 1 - x, x)


def autocontrast(x, m=0.0, g=None):
    """Stretch every channel to the full range (no magnitude)."""
    lo = x.amin((2, 3), keepdim=True)
    hi = x.amax((2, 3), keepdim=True)
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x)


def cutout(x, m, g):
    """Fill a square of side ``round(|m|·0.5·H)`` at a random centre per image with mid-grey."""
    n, _, h, w = x.shape
    side = round(abs(m) * CUTOUT * h)
    if side == 0:
        return x
    cy = torch.randint(0, h, (n, 1, 1), generator=g, device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), generator=g, device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((rows - cy).abs() * 2 < side) & ((cols - cx).abs() * 2 < side)
    return torch.where(inside.unsqueeze(1), torch.full_like(x, 0.5), x)


def blur(x, m, g=None):
    """Gaussian blur with ``sigma = |m|·1.5`` px."""
    return gaussian_blur(x, abs(m) * BLUR_SIGMA)


# name -> (op, signed): signed ops read the sign of m, unsigned ops only |m|
OPS = {
    "identity": (identity, False), "flip": (flip, False), "crop": (crop, False),
    "rotate": (rotate, True), "shear_x": (shear_x, True), "shear_y": (shear_y, True),
    "translate_x": (translate_x, True), "translate_y": (translate_y, True),
    "brightness": (brightness, True), "contrast": (contrast, True), "color": (color, True),
    "sharpness": (sharpness, True), "posterize": (posterize, False), "solarize": (solarize, False),
    "autocontrast": (autocontrast, False), "cutout": (cutout, False), "blur": (blur, False),
}
# the pool Greedy Policy Search draws from (crop and flip follow every sub-policy anyway)
POOL_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "brightness", "contrast", "color",
            "sharpness", "posterize", "solarize", "autocontrast", "cutout", "blur")


def apply_op(x: torch.Tensor, name: str, m: float, g: torch.Generator | None = None) -> torch.Tensor:
    """Apply the registered op ``name`` with magnitude ``m`` (clipped to [-1, 1])."""
    if name not in OPS:
        raise KeyError(f"Unknown TTA op {name!r}; available: {', '.join(OPS)}")
    return OPS[name][0](x, max(-1.0, min(1.0, float(m))), g)


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
