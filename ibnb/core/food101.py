"""Food-101 as uint8 tensors at a chosen resolution, read by ``torchvision.datasets.Food101``.

``load_food101(split, size=128)`` returns an :class:`ibnb.core.data.ImageData` (101 classes, ImageNet
normalisation statistics). The data lives under ``<IBNB_DATA>/food101/food-101/`` in torchvision's layout
(``images/<class>/<id>.jpg`` and ``meta/{train,test}.json``, ``meta/classes.txt``); with ``IBNB_DOWNLOAD=1`` (or
``download=True``) torchvision downloads the 5 GB archive there. Every image is decoded once — its shorter side
resized to ``size`` and the centre ``size``×``size`` square kept — and the tensors are cached in ``IBNB_CACHE``
(``food101-<split>-<size>px.pt``), keyed on the identity (size, mtime, sha256) of the split's metadata file;
the decoded count and class count are checked (75,750 / 25,250 images, 101 classes) before use.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ibnb.core.data import (_IMAGENET_MEAN, _IMAGENET_STD, DataError, ImageData, _download_allowed, _download_switch,
                            data_cache_dir, data_root, read_decoded_cache, source_identity, write_decoded_cache)

NUM_CLASSES = 101
SPLITS = ("train", "test")
COUNTS = {"train": 75750, "test": 25250}


def food101_dir(root: Path | str | None = None) -> Path:
    """The folder handed to ``torchvision.datasets.Food101`` (it holds ``food-101/``)."""
    return (Path(root).expanduser() if root is not None else data_root()) / "food101"


def decode_square(path: str | Path, size: int) -> np.ndarray:
    """Decode an image as RGB, resize its shorter side to ``size`` (bilinear) and centre-crop a square."""
    from PIL import Image

    with Image.open(path) as img:
        img.draft("RGB", (size, size))  # JPEG: let the decoder downscale by a power of two first (fast)
        img = img.convert("RGB")
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _decode_split(folder: Path, split: str, size: int, download: bool | None, workers: int):
    from torchvision.datasets import Food101

    allowed = _download_allowed(download)
    try:
        ds = Food101(str(folder), split=split, download=allowed, loader=str)  # loader=str: items are paths
    except RuntimeError as e:
        if allowed:
            raise DataError(f"Food-101 is not under {folder}/food-101 and downloading it failed "
                            f"({_download_switch(download)}): {e}. Fix: check this machine's network access, or "
                            f"copy food-101/ (images/ and meta/) into {folder}.") from None
        raise DataError(f"Food-101 not found: looked for {folder}/food-101/images and {folder}/food-101/meta "
                        f"(torchvision Food101 layout). Set IBNB_DOWNLOAD=1 to let torchvision download it "
                        f"(about 5 GB) into {folder}, or point IBNB_DATA at a folder holding food101/.") from None
    except Exception as e:  # URLError, socket errors
        raise DataError(f"Food-101 is not under {folder}/food-101 and downloading it failed "
                        f"({_download_switch(download)}): {type(e).__name__}: {e}. Fix: check this machine's "
                        f"network access, or copy food-101/ (images/ and meta/) into {folder}.") from None
    items = [ds[i] for i in range(len(ds))]

    def decode(path):
        try:
            return decode_square(path, size)
        except Exception as e:  # PIL raises many types for bad files
            raise DataError(f"Could not decode Food-101 image {path} ({type(e).__name__}: {e}); expected a "
                            "readable JPEG. Fix: copy that file again (or delete food-101/ and re-download).") from None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(decode, [p for p, _ in items], chunksize=64))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([label for _, label in items], dtype=torch.long)
    return x, y, list(ds.classes)


def load_food101(split: str = "train", *, size: int = 128, root: Path | str | None = None,
                 download: bool | None = None, workers: int = 8) -> ImageData:
    """Food-101 ``split`` ("train": 75,750 images, "test": 25,250) as ``size``×``size`` uint8 tensors."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r} for food101; available: {', '.join(SPLITS)}")
    folder = food101_dir(root)
    cache_file = data_cache_dir() / f"food101-{split}-{size}px.pt"
    meta = folder / "food-101" / "meta" / f"{split}.json"
    identity = source_identity([meta], folder) if meta.exists() else None
    blob = read_decoded_cache(cache_file, identity) if identity is not None else None
    if blob is None:
        x, y, classes = _decode_split(folder, split, size, download, workers)
        identity = source_identity([meta], folder)
        blob = dict(x=x, y=y, classes=list(classes), identity=identity)
        _check(blob, split, meta)
        write_decoded_cache(cache_file, blob)
    _check(blob, split, meta)
    return ImageData(x=blob["x"], y=blob["y"], classes=list(blob["classes"]), name="food101",
                     mean=_IMAGENET_MEAN, std=_IMAGENET_STD, meta={"dataset": "food101", "split": split, "size": size})


def _check(blob: dict, split: str, meta: Path) -> None:
    """Decoded images must match Food-101's published split sizes and class count."""
    n, k = len(blob["y"]), len(blob["classes"])
    if n != COUNTS[split] or k != NUM_CLASSES:
        raise DataError(f"Food-101 {split}: decoded {n:,} images of {k} classes (listed in {meta}), expected "
                        f"{COUNTS[split]:,} images of {NUM_CLASSES} classes. The copy is incomplete. Fix: copy "
                        f"food-101/ again (or delete it and re-download with IBNB_DOWNLOAD=1).")
