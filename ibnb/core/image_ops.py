"""Every image operation of the book, once: batched tensor ops on the device.

Images are float ``N×C×H×W`` batches in ``[0, 1]`` (the ops that need a random part take a seeded
``torch.Generator`` on the batch's device, so the same generator state gives the same output).

* training augmentation: :func:`random_crop` (zero padding) and :func:`random_flip`;
* magnitude ops ``op(x, m, g)`` with ``m`` in ``[-1, 1]`` (:data:`OPS`, :func:`apply_op`), as the TTA policies use
  them: geometric ops (rotate, shear, translate: one affine resampling, black outside), PIL ``ImageEnhance``
  photometric ops (brightness, contrast, colour, sharpness), posterize, solarize, autocontrast, cutout, blur;
* self-supervised views: :func:`resized_crop_flip` and :func:`colour_jitter`; :func:`grey` and
  :func:`gaussian_blur` serve all of them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Pad each image by ``pad`` zeros and crop back to its size at a random offset (per image)."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=x.device)
    rows = (dy + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chan, rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


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


def grey(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel luma (ITU-R 601) ``N×1×H×W`` (the image itself when it has one channel)."""
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
    return _blend(grey(x).mean((1, 2, 3), keepdim=True).expand_as(x), x, 1 + ENHANCE * m)


def color(x, m, g=None):
    """Saturation: blend with the greyscale image, factor ``1 + 0.9 m``."""
    return _blend(grey(x).expand_as(x), x, 1 + ENHANCE * m)


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
    top, left = cy - side // 2, cx - side // 2  # a side × side square around the centre (clipped at the edges)
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
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
def apply_op(x: torch.Tensor, name: str, m: float, g: torch.Generator | None = None) -> torch.Tensor:
    """Apply the registered op ``name`` with magnitude ``m`` (clipped to [-1, 1])."""
    if name not in OPS:
        raise KeyError(f"Unknown TTA op {name!r}; available: {', '.join(OPS)}")
    return OPS[name][0](x, max(-1.0, min(1.0, float(m))), g)




def _uniform(n, lo, hi, g, device):
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def resized_crop_flip(x: torch.Tensor, g: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """RandomResizedCrop to the input size + horizontal flip (p = 1/2), one affine resampling per image.

    A crop covers a fraction ``s ~ U(scale)`` of the area with aspect ``r`` (log-uniform in ``ratio``); its
    sides are clipped to the image (torchvision instead retries), and it is bilinearly resized back."""
    n, dev = x.shape[0], x.device
    area = _uniform(n, *scale, g, dev)
    log_r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), g, dev)
    w = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)  # crop width / image width
    h = torch.sqrt(area / torch.exp(log_r)).clamp(max=1.0)
    cx = (1 - w) * _uniform(n, -1.0, 1.0, g, dev)  # crop centre in [-1, 1] coordinates
    cy = (1 - h) * _uniform(n, -1.0, 1.0, g, dev)
    flip = torch.where(torch.rand(n, generator=g, device=dev) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour_jitter(x: torch.Tensor, g: torch.Generator, brightness=0.4, contrast=0.4, saturation=0.4,
                  hue=0.1) -> torch.Tensor:
    """Brightness, contrast, saturation, hue (fixed order) with per-image factors, on [0, 1] RGB.
    Hue is a rotation of the chroma plane in YIQ space (an approximation of torchvision's HSV shift)."""
    n, dev = x.shape[0], x.device
    f = lambda a: _uniform(n, 1 - a, 1 + a, g, dev).view(n, 1, 1, 1)
    x = (x * f(brightness)).clamp(0, 1)
    m = grey(x).mean(dim=(2, 3), keepdim=True)
    x = ((x - m) * f(contrast) + m).clamp(0, 1)
    y = grey(x)
    x = ((x - y) * f(saturation) + y).clamp(0, 1)
    angle = 2 * math.pi * _uniform(n, -hue, hue, g, dev)
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=dev)
    yiq = torch.einsum("ij,njhw->nihw", to_yiq, x)
    cos, sin = torch.cos(angle).view(n, 1, 1), torch.sin(angle).view(n, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], 1)
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(to_yiq), yiq).clamp(0, 1)


