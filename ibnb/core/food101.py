"""Food-101 as uint8 tensors at a chosen resolution, read by ``torchvision.datasets.Food101``.

``load_food101(split, size=128)`` returns an :class:`ibnb.core.data.ImageData` (101 classes, ImageNet
normalisation statistics). The data lives under ``<IBNB_DATA>/food101/food-101/`` in torchvision's layout
(``images/<class>/<id>.jpg`` and ``meta/{train,test}.json``, ``meta/classes.txt``); with ``IBNB_DOWNLOAD=1`` (or
``download=True``) torchvision downloads the 5 GB archive there. Every image is decoded once — its shorter side
resized to ``size`` and the centre ``size``×``size`` square kept — and the tensors are cached in ``IBNB_CACHE``
(``food101-<split>-<size>px.pt``), keyed on the data root and the split's metadata file.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ibnb.core.data import _IMAGENET_MEAN, _IMAGENET_STD, DataError, ImageData, _download_allowed, _signature, data_cache_dir, data_root
from ibnb.core.utils import atomic_torch_save

NUM_CLASSES = 101
SPLITS = ("train", "test")


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


def _decode_split(folder: Path, split: str, size: int, download: bool, workers: int):
    from torchvision.datasets import Food101

    try:
        ds = Food101(str(folder), split=split, download=download, loader=str)  # loader=str: items are paths
    except RuntimeError as e:
        raise DataError(f"Food-101 not found: looked for {folder}/food-101/images and {folder}/food-101/meta "
                        f"(torchvision Food101 layout). Set IBNB_DOWNLOAD=1 to let torchvision download it "
                        f"(about 5 GB) into {folder}, or point IBNB_DATA at a folder holding food101/.") from e
    items = [ds[i] for i in range(len(ds))]

    def decode(path):
        try:
            return decode_square(path, size)
        except Exception as e:  # PIL raises many types for bad files
            raise DataError(f"Could not decode Food-101 image {path}: {e}. Re-download or re-copy it.") from e

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
    download = _download_allowed(download)
    cache_file = data_cache_dir() / f"food101-{split}-{size}px.pt"
    meta = folder / "food-101" / "meta" / f"{split}.json"
    blob = None
    if cache_file.exists():
        try:
            blob = torch.load(cache_file, weights_only=False)
            if blob.get("root") != str(folder) or blob.get("signature") != _signature([meta]):
                blob = None
        except Exception:
            blob = None  # unreadable cache: rebuild it
    if blob is None:
        x, y, classes = _decode_split(folder, split, size, download, workers)
        blob = dict(x=x, y=y, classes=classes, root=str(folder), signature=_signature([meta]))
        atomic_torch_save(blob, cache_file)
    return ImageData(x=blob["x"], y=blob["y"], classes=list(blob["classes"]), name="food101",
                     mean=_IMAGENET_MEAN, std=_IMAGENET_STD, meta={"dataset": "food101", "split": split, "size": size})
