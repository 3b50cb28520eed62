"""Datasets as uint8 tensors: one registry, torchvision's own classes, a decode-once cache.

``load_dataset(name, split)`` returns an :class:`ImageData` (uint8 ``N×C×H×W`` images, int64 labels).
Data is found under a *data root* (env ``IBNB_DATA``, default ``<repo>/data``):

* ``mnist``: ``<root>/mnist/MNIST/raw/*-ubyte`` read by ``torchvision.datasets.MNIST``.
* ``cifar10``: ``<root>/cifar10/cifar-10-batches-py`` read by ``torchvision.datasets.CIFAR10``, or the
  offline ImageFolder tars ``<root>/cifar10/{train,test}.tar`` read by ``torchvision.datasets.ImageFolder``.
* ``pacs_photo`` / ``pacs_sketch``: ``<root>/pacs/{photo,sketch}.tar`` (ImageFolder tars; 7 classes). PACS has
  no official split: ``train``/``test`` is a seeded, class-stratified 80/20 split of each domain.

With ``IBNB_DOWNLOAD=1`` (or ``download=True``) torchvision downloads MNIST/CIFAR-10 into the same layout.
Decoded tensors are cached in ``IBNB_CACHE`` (default ``~/.cache/ibnb/data``), keyed on the source files.
"""
from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ibnb.core.utils import atomic_torch_save, cache_root, env_path, repo_root

HOW_TO_GET = (
    "Fix: point IBNB_DATA at a folder that holds it (offline copies: ../shared/data, see data/README.md), "
    "or set IBNB_DOWNLOAD=1 to let torchvision download it (MNIST, CIFAR-10)."
)


class DataError(RuntimeError):
    """Missing or unreadable data; the message says what was looked for, where, and how to fix it."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a registered dataset."""

    name: str
    num_classes: int
    channels: int
    image_size: int  # native (or cached) side length
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: tuple[str, ...] = ("train", "test")


_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,)),
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, _CIFAR_MEAN, _CIFAR_STD),
    "pacs_photo": DatasetInfo("pacs_photo", 7, 3, 64, _IMAGENET_MEAN, _IMAGENET_STD, ("train", "test", "all")),
    "pacs_sketch": DatasetInfo("pacs_sketch", 7, 3, 64, _IMAGENET_MEAN, _IMAGENET_STD, ("train", "test", "all")),
}


@dataclass
class ImageData:
    """A labelled image set held as tensors: ``x`` uint8 ``N×C×H×W``, ``y`` int64 ``N``."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.x.dtype != torch.uint8 or self.x.ndim != 4:
            raise ValueError(f"ImageData.x must be uint8 N×C×H×W, got {self.x.dtype} {tuple(self.x.shape)}")
        if len(self.x) != len(self.y):
            raise ValueError(f"{len(self.x)} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])

    def subset(self, index: torch.Tensor, **meta) -> "ImageData":
        """The images at ``index`` (a copy), with extra metadata merged in."""
        index = torch.as_tensor(index, dtype=torch.long)
        return replace(self, x=self.x[index], y=self.y[index], meta={**self.meta, **meta})

    def class_counts(self) -> list[int]:
        return torch.bincount(self.y, minlength=self.num_classes).tolist()


def data_root() -> Path:
    return env_path("IBNB_DATA", repo_root() / "data")


def data_cache_dir() -> Path:
    return env_path("IBNB_CACHE", cache_root() / "data")


def list_datasets() -> list[str]:
    return sorted(DATASETS)


def _download_allowed(download: bool | None) -> bool:
    if download is not None:
        return download
    return os.environ.get("IBNB_DOWNLOAD", "0").lower() in ("1", "true", "yes")


def _signature(paths: list[Path]) -> list:
    """Identity of source files (path, size, mtime): a changed source invalidates the cache."""
    out = []
    for p in paths:
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                st = f.stat()
                out.append([str(f), st.st_size, int(st.st_mtime)])
    return out


def _extract(tar_path: Path, dest: Path) -> Path:
    """Extract an ImageFolder tar once into ``dest`` (atomically: temp dir, then rename)."""
    marker = dest / ".complete"
    if marker.exists():
        return dest
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    try:
        with tarfile.open(tar_path) as t:
            t.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"Could not read {tar_path}: {e}. The file looks corrupt or truncated; "
                        f"re-copy it (check it with `sha256sum -c SHA256SUMS` in the data root).") from e
    (tmp / ".complete").touch()
    if dest.exists():
        import shutil
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def _decode_folder(folder: Path, size: int | None):
    """Decode an ImageFolder tree with torchvision into uint8 RGB tensors (optionally resized)."""
    from PIL import Image
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(folder))
    images = []
    for path, _ in ds.samples:
        try:
            img = ds.loader(path).convert("RGB")
        except Exception as e:  # PIL raises many types for bad files
            raise DataError(f"Could not decode image {path}: {e}. Delete {folder.parent} to re-extract, "
                            "and re-copy the source tar if the error persists.") from e
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        images.append(np.asarray(img, dtype=np.uint8))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor(ds.targets, dtype=torch.long)
    return x, y, list(ds.classes)


def _load_mnist(root: Path, split: str, download: bool):
    from torchvision.datasets import MNIST

    folder = root / "mnist"
    try:
        ds = MNIST(str(folder), train=(split == "train"), download=download)
    except RuntimeError as e:
        raise DataError(f"MNIST not found: looked for {folder}/MNIST/raw/"
                        f"{'train' if split == 'train' else 't10k'}-*-ubyte (torchvision layout). {HOW_TO_GET}") from e
    except Exception as e:
        raise DataError(f"MNIST files under {folder}/MNIST/raw could not be read ({e}); they look corrupt. "
                        "Re-copy them (the offline copy is byte-identical to the official files).") from e
    x = ds.data.unsqueeze(1).contiguous()
    return x, ds.targets.long(), [c.split(" - ")[-1] for c in ds.classes], [folder / "MNIST" / "raw"]


def _load_cifar10(root: Path, split: str, download: bool):
    from torchvision.datasets import CIFAR10

    folder = root / "cifar10"
    tar = folder / f"{split}.tar"
    if (folder / "cifar-10-batches-py").is_dir() or (download and not tar.exists()):
        try:
            ds = CIFAR10(str(folder), train=(split == "train"), download=download)
        except RuntimeError as e:
            raise DataError(f"CIFAR-10 not found or corrupt under {folder}/cifar-10-batches-py: {e}. {HOW_TO_GET}") from e
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor(ds.targets, dtype=torch.long), list(ds.classes), [folder / "cifar-10-batches-py"]
    if not tar.exists():
        raise DataError(f"CIFAR-10 not found: looked for {folder}/cifar-10-batches-py (torchvision CIFAR10) "
                        f"and {tar} (ImageFolder tar). {HOW_TO_GET}")
    tree = _extract(tar, data_cache_dir() / "extracted" / "cifar10" / split)
    x, y, classes = _decode_folder(tree / split, None)
    return x, y, classes, [tar]


def _load_pacs(root: Path, domain: str, size: int):
    tar = root / "pacs" / f"{domain}.tar"
    if not tar.exists():
        raise DataError(f"PACS {domain} not found: looked for {tar} (ImageFolder tar, 7 classes). PACS has no "
                        "torchvision class; copy the tar there (offline copy: ../shared/data/pacs).")
    tree = _extract(tar, data_cache_dir() / "extracted" / "pacs" / domain)
    x, y, classes = _decode_folder(tree / domain, size)
    return x, y, classes, [tar]


def _stratified_split(y: torch.Tensor, test_fraction: float, seed: int):
    """Per-class seeded split of indices into (train, test)."""
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(test_fraction * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(test)).values


def load_dataset(name: str, split: str = "train", *, size: int | None = None,
                 download: bool | None = None, root: Path | str | None = None) -> ImageData:
    """Load a registered dataset split as uint8 tensors (decoded once, then cached).

    ``size`` sets the side length for PACS (default 64); MNIST and CIFAR-10 keep their native size.
    """
    if name not in DATASETS:
        raise KeyError(f"Unknown dataset {name!r}; available: {', '.join(list_datasets())}")
    info = DATASETS[name]
    if split not in info.splits:
        raise ValueError(f"Unknown split {split!r} for {name}; available: {', '.join(info.splits)}")
    root = Path(root).expanduser() if root is not None else data_root()
    download = _download_allowed(download)
    pacs = name.startswith("pacs_")
    size = (size or info.image_size) if pacs else None
    if size is not None and not pacs:
        raise ValueError(f"size= is only supported for PACS; {name} is used at its native size")

    base = "all" if pacs else split
    key = f"{name}-{base}" + (f"-{size}px" if size else "") + ".pt"
    cache_file = data_cache_dir() / key
    blob = None
    if cache_file.exists():
        try:
            blob = torch.load(cache_file, weights_only=False)
            if blob.get("root") != str(root) or blob.get("signature") != _signature([Path(p) for p in blob["sources"]]):
                blob = None
        except Exception:
            blob = None  # unreadable cache: rebuild it
    if blob is None:
        if name == "mnist":
            x, y, classes, sources = _load_mnist(root, split, download)
        elif name == "cifar10":
            x, y, classes, sources = _load_cifar10(root, split, download)
        else:
            x, y, classes, sources = _load_pacs(root, name.split("_", 1)[1], size)
        blob = dict(x=x, y=y, classes=classes, root=str(root), sources=[str(s) for s in sources],
                    signature=_signature(sources))
        atomic_torch_save(blob, cache_file)

    x, y = blob["x"], blob["y"]
    if pacs and split != "all":
        train_idx, test_idx = _stratified_split(y, 0.2, seed=0)
        idx = train_idx if split == "train" else test_idx
        x, y = x[idx], y[idx]
    return ImageData(x=x, y=y, classes=list(blob["classes"]), name=name, mean=info.mean, std=info.std,
                     meta={"dataset": name, "split": split})


def balanced_indices(data: ImageData, n_per_class: int | None = None, *, fraction: float | None = None,
                     seed: int = 0) -> torch.Tensor:
    """Sorted indices of a seeded subset with ``n_per_class`` images per class (or a per-class ``fraction``)."""
    if (n_per_class is None) == (fraction is None):
        raise ValueError("Give exactly one of n_per_class or fraction")
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if n_per_class is not None and n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(data.num_classes):
        idx = torch.nonzero(data.y == c).flatten()
        k = n_per_class if n_per_class is not None else max(1, int(round(fraction * len(idx))))
        if k > len(idx):
            raise ValueError(f"{data.name}: asked for {k} images of class {data.classes[c]!r}, only {len(idx)} exist")
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.sort(torch.cat(chosen)).values


def class_balanced_subset(data: ImageData, n_per_class: int | None = None, *, fraction: float | None = None,
                          seed: int = 0) -> ImageData:
    """A seeded subset with the same number of images per class (``n_per_class``) or a per-class ``fraction``."""
    index = balanced_indices(data, n_per_class, fraction=fraction, seed=seed)
    return data.subset(index, n_per_class=n_per_class, fraction=fraction, subset_seed=seed)


def split_off(data: ImageData, n_per_class: int, *, seed: int = 0) -> tuple[ImageData, ImageData]:
    """Split ``data`` into (rest, held_out) with ``n_per_class`` held-out images per class (e.g. validation)."""
    held = balanced_indices(data, n_per_class, seed=seed)
    mask = torch.ones(len(data), dtype=torch.bool)
    mask[held] = False
    return data.subset(torch.nonzero(mask).flatten()), data.subset(held, held_out=True)


def permute_pixels(data: ImageData, seed: int = 0) -> ImageData:
    """Apply one fixed random permutation of pixel positions (shared by all images and channels).

    It keeps every pixel value but destroys spatial locality: the control of the architecture chapter.
    """
    c, h, w = data.shape
    perm = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed))
    x = data.x.reshape(len(data), c, h * w)[:, :, perm].reshape(len(data), c, h, w).contiguous()
    return replace(data, x=x, meta={**data.meta, "pixel_permutation_seed": seed})
