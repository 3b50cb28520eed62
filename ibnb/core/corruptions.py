"""CIFAR-10-C-style corrupted test sets, generated in code, seeded and cached.

Seven corruptions of Hendrycks & Dietterich (ICLR 2019) at five severities, with the severity parameters of
the CIFAR-10-C generation script (the 32-px variants):

==================  =============================================================  ==============================
corruption          operation on an image ``x`` in [0, 1]                          severity 1 … 5
==================  =============================================================  ==============================
``gaussian_noise``  ``x + N(0, c²)``                                                c = .04 .06 .08 .09 .10
``shot_noise``      ``Poisson(c·x) / c``                                           c = 500 250 100 75 50
``gaussian_blur``   Gaussian blur, σ = c px (reflect padding)                      c = .4 .6 .7 .8 1.0
``contrast``        ``(x − μ)·c + μ``, μ the per-channel image mean                c = .75 .5 .4 .3 .15
``brightness``      ``V += c`` in HSV space (hue and saturation kept)              c = .05 .1 .15 .2 .3
``jpeg``            JPEG round trip (``torchvision.io``) at quality c              c = 80 65 58 50 40
``pixelate``        box-downsample to ``round(c·32)`` px, nearest-upsample back    c = .95 .9 .85 .75 .65
==================  =============================================================  ==============================

Results are clipped and rounded to uint8 like the released files. Noise is drawn from a ``torch.Generator``
seeded with ``(seed, corruption, severity)``, so a corrupted set is a pure function of its inputs; it is
cached under ``IBNB_CACHE/corruptions`` keyed on the source images, the corruption, the severity, the seed
and this file's code.
"""
from __future__ import annotations

import hashlib
import warnings
import zlib
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ibnb.core.data import ImageData, data_cache_dir
from ibnb.core.runs import fingerprint
from ibnb.core.image_ops import gaussian_blur
from ibnb.core.utils import atomic_torch_save

SEVERITIES = (1, 2, 3, 4, 5)
PARAMS = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "jpeg": (80, 65, 58, 50, 40),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
}
CORRUPTIONS = tuple(PARAMS)


def _generator(seed: int, name: str, severity: int) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}/{name}/{severity}".encode()))


def _brightness(x: torch.Tensor, c: float) -> torch.Tensor:
    """Add ``c`` to the HSV value channel: scaling RGB by ``V'/V`` keeps hue and saturation."""
    v = x.amax(1, keepdim=True)
    v_new = (v + c).clamp(max=1.0)
    return torch.where(v > 0, x * (v_new / v.clamp_min(1e-12)), v_new.expand_as(x))


def _jpeg(x_uint8: torch.Tensor, quality: int) -> torch.Tensor:
    with warnings.catch_warnings():  # torchvision >= 0.29 announces a move of its codecs to TorchCodec
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        from torchvision.io import decode_jpeg, encode_jpeg

        encoded = encode_jpeg(list(x_uint8), quality=int(quality))
        return torch.stack(decode_jpeg(encoded))


def _pixelate(x: torch.Tensor, c: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(h * c)), max(1, round(w * c))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest")


def corrupt(x_uint8: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """Corrupt a uint8 batch ``N×C×H×W`` (on the CPU); returns a new uint8 tensor of the same shape."""
    if name not in PARAMS:
        raise KeyError(f"Unknown corruption {name!r}; available: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
    if x_uint8.dtype != torch.uint8 or x_uint8.ndim != 4:
        raise ValueError(f"corrupt() takes uint8 N×C×H×W images, got {x_uint8.dtype} {tuple(x_uint8.shape)}")
    c = PARAMS[name][severity - 1]
    x_uint8 = x_uint8.cpu()
    if name == "jpeg":
        return _jpeg(x_uint8, c)
    x = x_uint8.float() / 255
    g = _generator(seed, name, severity)
    if name == "gaussian_noise":
        x = x + c * torch.randn(x.shape, generator=g)
    elif name == "shot_noise":
        x = torch.poisson(x * c, generator=g) / c
    elif name == "gaussian_blur":
        x = gaussian_blur(x, c)
    elif name == "contrast":
        mu = x.mean((2, 3), keepdim=True)
        x = (x - mu) * c + mu
    elif name == "brightness":
        x = _brightness(x, c)
    elif name == "pixelate":
        x = _pixelate(x, c)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _code_version() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:8]


def corrupted(data: ImageData, name: str, severity: int, seed: int = 0, *, cache: bool = True) -> ImageData:
    """``data`` with corruption ``name`` at ``severity`` (labels unchanged), cached as uint8 tensors."""
    path = (data_cache_dir() / "corruptions" /
            f"{data.name}-{fingerprint(data)}-{len(data)}-{name}-s{severity}-seed{seed}-{_code_version()}.pt")
    x = None
    if cache and path.exists():
        try:
            x = torch.load(path, weights_only=True)
            if x.shape != data.x.shape or x.dtype != torch.uint8:
                x = None
        except Exception:  # an unreadable cache entry is regenerated
            x = None
    if x is None:
        x = corrupt(data.x, name, severity, seed)
        if cache:
            atomic_torch_save(x, path)
    return replace(data, x=x, meta={**data.meta, "corruption": name, "severity": severity, "corruption_seed": seed})
