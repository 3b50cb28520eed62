"""Datasets as uint8 tensors: one registry, torchvision's own readers, a decode-once cache, integrity checks.

``load_dataset(name, split)`` returns an :class:`ImageData` (uint8 ``N×C×H×W`` images, int64 labels).
Data is found under a *data root* (env ``IBNB_DATA``, default ``<repo>/data``):

* ``mnist``: ``<root>/mnist/MNIST/raw/*-ubyte`` read by ``torchvision.datasets.MNIST``.
* ``cifar10``: ``<root>/cifar10/cifar-10-batches-py`` read by ``torchvision.datasets.CIFAR10``, or the
  offline ImageFolder tars ``<root>/cifar10/{train,test}.tar`` (decoded straight from the tar, in
  ``torchvision.datasets.ImageFolder``'s order and with its image loader).
* ``pacs_photo`` / ``pacs_sketch``: ``<root>/pacs/{photo,sketch}.tar`` (ImageFolder tars; 7 classes). PACS has
  no official split: ``train``/``test`` is a seeded, class-stratified 80/20 split of each domain.

With ``IBNB_DOWNLOAD=1`` (or ``download=True``) torchvision downloads MNIST/CIFAR-10 into the same layout.

Integrity: every source file is checked before use — its sha256 against the data root's ``SHA256SUMS`` when
the file is listed there, an IDX file's size against its own header — and the decoded images always against
the registry (:data:`DATASETS`: image count per split and class set), so a truncated tar is never accepted.
Decoded tensors are cached in ``IBNB_CACHE`` (default ``~/.cache/ibnb/data``) together with the identity
(size, mtime, sha256) of the files they came from: replacing a source file invalidates its cache. A failure
raises :class:`DataError` naming the file, what was expected, what was found and the fix.
"""
from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ibnb.core.integrity import (SUMS_FILE, DataError, _refetch_hint, check_decoded, check_idx,  # noqa: F401
                                 data_cache_dir, read_decoded_cache, source_identity, write_decoded_cache)
from ibnb.core.utils import env_path, repo_root

HOW_TO_GET = (
    "Fix: point IBNB_DATA at a folder that holds it (offline copies: ../shared/data, see data/README.md), "
    "or set IBNB_DOWNLOAD=1 to let torchvision download it (MNIST, CIFAR-10)."
)
@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a registered dataset; ``counts`` (images per stored split) and ``classes`` (class
    names in label order) are what a decoded source must match."""

    name: str
    num_classes: int
    channels: int
    image_size: int  # native (or cached) side length
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: tuple[str, ...] = ("train", "test")
    counts: dict = field(default_factory=dict, compare=False, hash=False)
    classes: tuple[str, ...] = ()


_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_MNIST_CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,), counts={"train": 60000, "test": 10000},
                         classes=_MNIST_CLASSES),
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, _CIFAR_MEAN, _CIFAR_STD, counts={"train": 50000, "test": 10000},
                           classes=_CIFAR_CLASSES),
    "pacs_photo": DatasetInfo("pacs_photo", 7, 3, 64, _IMAGENET_MEAN, _IMAGENET_STD, ("train", "test", "all"),
                              counts={"all": 1670}, classes=_PACS_CLASSES),
    "pacs_sketch": DatasetInfo("pacs_sketch", 7, 3, 64, _IMAGENET_MEAN, _IMAGENET_STD, ("train", "test", "all"),
                               counts={"all": 3929}, classes=_PACS_CLASSES),
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


def list_datasets() -> list[str]:
    return sorted(DATASETS)


def _download_allowed(download: bool | None) -> bool:
    if download is not None:
        return download
    return os.environ.get("IBNB_DOWNLOAD", "0").lower() in ("1", "true", "yes")


def _download_switch(download: bool | None) -> str:
    """How downloading was switched on, for messages (never ask to set what is already set)."""
    return "download=True was passed" if download else "IBNB_DOWNLOAD is set"


def _fetch(what: str, folder: Path, download: bool | None, get) -> None:
    """Run torchvision's downloader ``get()``; any failure becomes a :class:`DataError` that says downloading
    was on (so it never asks to switch it on) and what to do instead."""
    import contextlib
    import sys

    try:
        with contextlib.redirect_stdout(sys.stderr):  # torchvision prints its mirror attempts
            get()
    except Exception as e:  # URLError, socket errors, torchvision's RuntimeError, checksum failures
        raise DataError(f"{what} is not under {folder} and downloading it failed ({_download_switch(download)}): "
                        f"{type(e).__name__}: {e}. Fix: check this machine's network access (proxy settings), or "
                        f"copy the offline files into {folder} (../shared/data, see data/README.md) and point "
                        f"IBNB_DATA at their root.") from None


def _mnist_sources(root: Path, split: str, download: bool | None) -> list[Path]:
    from torchvision.datasets import MNIST

    folder = root / "mnist"
    prefix = "train" if split == "train" else "t10k"
    raw = folder / "MNIST" / "raw"
    files = [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]
    if not all(f.exists() for f in files):
        if not _download_allowed(download):
            missing = ", ".join(f.name for f in files if not f.exists())
            raise DataError(f"MNIST not found: {missing} missing in {raw} (torchvision layout). {HOW_TO_GET}")
        _fetch("MNIST", folder, download, lambda: MNIST(str(folder), train=(split == "train"), download=True))
    return files


def _read_mnist(root: Path, split: str, files: list[Path]):
    from torchvision.datasets import MNIST

    images, labels = (check_idx(f) for f in files)
    if images[0] != labels[0]:
        raise DataError(f"{files[0]} holds {images[0]:,} images but {files[1]} holds {labels[0]:,} labels; expected "
                        "the same number. " + _refetch_hint(files))
    ds = MNIST(str(root / "mnist"), train=(split == "train"), download=False)
    return ds.data.unsqueeze(1).contiguous(), ds.targets.long(), [c.split(" - ")[-1] for c in ds.classes]


_CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _cifar_sources(root: Path, split: str, download: bool | None) -> list[Path]:
    from torchvision.datasets import CIFAR10

    folder = root / "cifar10"
    pickles, tar = folder / "cifar-10-batches-py", folder / f"{split}.tar"
    if pickles.is_dir():
        return [pickles / n for n in _CIFAR_BATCHES[split] + ["batches.meta"]]
    if tar.exists():
        return [tar]
    if not _download_allowed(download):
        raise DataError(f"CIFAR-10 not found: looked for {pickles} (torchvision CIFAR10) and {tar} (ImageFolder "
                        f"tar). {HOW_TO_GET}")
    _fetch("CIFAR-10", folder, download, lambda: CIFAR10(str(folder), train=(split == "train"), download=True))
    return [pickles / n for n in _CIFAR_BATCHES[split] + ["batches.meta"]]


def _read_cifar_pickles(root: Path, split: str, files: list[Path]):
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(str(root / "cifar10"), train=(split == "train"), download=False)
    except RuntimeError as e:
        raise DataError(f"CIFAR-10 pickles under {files[0].parent} fail torchvision's integrity check ({e}). "
                        + _refetch_hint(files)) from None
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(ds.targets, dtype=torch.long), list(ds.classes)


def decode_image_tar(tar_path: Path, top: str, size: int | None):
    """Decode an ImageFolder tar (``top/<class>/<file>``) straight from the archive into uint8 RGB tensors,
    in ``torchvision.datasets.ImageFolder``'s order (classes sorted, files sorted) and with its loader
    (PIL ``convert("RGB")``), optionally resized (bilinear) to ``size``×``size``."""
    from PIL import Image
    from torchvision.datasets.folder import IMG_EXTENSIONS

    try:
        with tarfile.open(tar_path) as t:
            members = [m for m in t.getmembers() if m.isfile()]
            picked = []
            for m in members:
                parts = m.name.removeprefix("./").split("/")
                if len(parts) >= 3 and parts[0] == top and m.name.lower().endswith(IMG_EXTENSIONS):
                    picked.append((parts[1], "/".join(parts[2:]), m))
            if not picked:
                raise DataError(f"{tar_path}: no image files under {top}/<class>/ (found {len(members)} files); "
                                f"expected an ImageFolder tar with one top-level folder {top}/. "
                                + _refetch_hint([tar_path]))
            classes = sorted({c for c, _, _ in picked})
            index = {c: i for i, c in enumerate(classes)}
            picked.sort(key=lambda item: (item[0], item[1]))
            images, labels = [], []
            for cls, _, m in picked:
                blob = t.extractfile(m).read()
                try:
                    img = Image.open(io.BytesIO(blob)).convert("RGB")
                except Exception as e:  # PIL raises many types for bad files
                    raise DataError(f"{tar_path}: member {m.name} is not a readable image ({type(e).__name__}: "
                                    f"{e}); expected every member to decode. " + _refetch_hint([tar_path])) from None
                if size is not None and img.size != (size, size):
                    img = img.resize((size, size), Image.BILINEAR)
                images.append(np.asarray(img, dtype=np.uint8))
                labels.append(index[cls])
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"Could not read {tar_path}: {type(e).__name__}: {e}. The file looks corrupt or truncated. "
                        + _refetch_hint([tar_path])) from None
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.long), classes


def _pacs_sources(root: Path, domain: str) -> list[Path]:
    tar = root / "pacs" / f"{domain}.tar"
    if not tar.exists():
        raise DataError(f"PACS {domain} not found: looked for {tar} (ImageFolder tar, 7 classes). PACS has no "
                        "torchvision class; copy the tar there (offline copy: ../shared/data/pacs).")
    return [tar]


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

    ``size`` sets the side length for PACS (default 64); MNIST and CIFAR-10 keep their native size. The
    source files are checked (``SHA256SUMS``, IDX sizes) and the decoded images matched against the registry
    before use; any problem raises :class:`DataError` naming the file and the fix.
    """
    if name not in DATASETS:
        raise KeyError(f"Unknown dataset {name!r}; available: {', '.join(list_datasets())}")
    info = DATASETS[name]
    if split not in info.splits:
        raise ValueError(f"Unknown split {split!r} for {name}; available: {', '.join(info.splits)}")
    root = Path(root).expanduser() if root is not None else data_root()
    pacs = name.startswith("pacs_")
    size = (size or info.image_size) if pacs else None
    if size is not None and not pacs:
        raise ValueError(f"size= is only supported for PACS; {name} is used at its native size")

    base = "all" if pacs else split
    key = f"{name}-{base}" + (f"-{size}px" if size else "") + ".pt"
    cache_file = data_cache_dir() / key
    if name == "mnist":
        sources = _mnist_sources(root, split, download)
    elif name == "cifar10":
        sources = _cifar_sources(root, split, download)
    else:
        sources = _pacs_sources(root, name.split("_", 1)[1])
    for f in sources:
        if f.name.endswith("-ubyte"):
            check_idx(f)  # cheap; names the truncated file before hashing it
    identity = source_identity(sources, root)
    blob = read_decoded_cache(cache_file, identity)
    if blob is not None:
        check_decoded(info, base, blob["y"], blob["classes"], sources)
    else:
        if name == "mnist":
            x, y, classes = _read_mnist(root, split, sources)
        elif sources[0].suffix == ".tar":
            x, y, classes = decode_image_tar(sources[0], sources[0].stem, size)
        else:
            x, y, classes = _read_cifar_pickles(root, split, sources)
        check_decoded(info, base, y, classes, sources)
        blob = dict(x=x, y=y, classes=list(classes), identity=identity)
        write_decoded_cache(cache_file, blob)

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
