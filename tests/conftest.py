"""Shared fixtures: tiny datasets written in the real on-disk formats (never real data), and the book built once per session."""
from __future__ import annotations

import io
import shutil
import struct
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from ibnb.core.data import ImageData

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """Every test gets its own data/run caches and results folder."""
    monkeypatch.setenv("IBNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IBNB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("IBNB_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("IBNB_DOWNLOAD", raising=False)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an uint8 array in MNIST's IDX format (magic 0x0801 labels / 0x0803 images, big-endian dims)."""
    magic = 0x0800 | array.ndim
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape))
        f.write(array.astype(np.uint8).tobytes())


def tiny_registry(monkeypatch, name: str, **counts: int) -> None:
    """Point the dataset registry's expected image counts at a tiny synthetic copy (the class set is kept)."""
    from dataclasses import replace

    from ibnb.core import data as D

    monkeypatch.setitem(D.DATASETS, name, replace(D.DATASETS[name], counts=dict(counts)))


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PACS_CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]


@pytest.fixture
def mnist_root(tmp_path, monkeypatch) -> Path:
    """A data root with a tiny MNIST in torchvision's raw layout (40 train, 20 test images); the registry
    expects these counts for the test's duration."""
    tiny_registry(monkeypatch, "mnist", train=40, test=20)
    raw = tmp_path / "data" / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return tmp_path / "data"


def write_image_tar(tar_path: Path, top: str, classes: list[str], per_class: int, size: int, fmt: str = "PNG"):
    """An ImageFolder tar ``top/<class>/<i>.<ext>`` with random images, like the offline copies."""
    from PIL import Image

    rng = np.random.default_rng(1)
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "w") as t:
        for c in classes:
            for i in range(per_class):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format=fmt)
                info = tarfile.TarInfo(f"{top}/{c}/{i:04d}.{fmt.lower()}")
                info.size = buf.tell()
                buf.seek(0)
                t.addfile(info, buf)


@pytest.fixture
def image_tar_root(tmp_path, monkeypatch) -> Path:
    """A data root with tiny CIFAR-10 tars (10 classes × 2) and PACS tars (7 classes × 5, 40 px); the registry
    expects these counts for the test's duration."""
    root = tmp_path / "data"
    for split in ("train", "test"):
        write_image_tar(root / "cifar10" / f"{split}.tar", split, CIFAR_CLASSES, 2, 32, "JPEG")
    write_image_tar(root / "pacs" / "photo.tar", "photo", PACS_CLASSES, 5, 40, "JPEG")
    write_image_tar(root / "pacs" / "sketch.tar", "sketch", PACS_CLASSES, 5, 40, "PNG")
    tiny_registry(monkeypatch, "cifar10", train=20, test=20)
    tiny_registry(monkeypatch, "pacs_photo", all=35)
    tiny_registry(monkeypatch, "pacs_sketch", all=35)
    return root


def toy_data(n_per_class: int = 32, num_classes: int = 4, size: int = 8, seed: int = 0) -> ImageData:
    """A learnable toy image set: each class has its own mean brightness per channel, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    base = (y.float() / max(1, num_classes - 1) * 200 + 20).view(-1, 1, 1, 1)
    x = (base + 20 * torch.randn(len(y), 3, size, size, generator=g)).clamp(0, 255).to(torch.uint8)
    return ImageData(x=x, y=y, classes=[str(i) for i in range(num_classes)], name="toy",
                     mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


# ----------------------------------------------------------------------------- the built book (once per session)
@dataclass
class BuiltBook:
    root: Path        # the copy of the repository that was built
    html: Path        # root/_build/html
    returncode: int
    log: str          # stdout + stderr of jupyter-book
    seconds: float


def committable_files() -> list[str]:
    """Paths git would commit: tracked plus untracked files that are not ignored."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p]


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> BuiltBook:
    """``jupyter-book build -W -n --keep-going`` of a copy of the files a fresh clone would have.

    Built once per session into a temporary folder (never the repo's ``_build``) and shared by
    ``test_book_builds_without_warnings`` (which asserts on the result) and the browser test.
    """
    from ibnb.book.runner import jupyter_book_command

    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: cannot tell which files a fresh clone would have")
    dest = tmp_path_factory.mktemp("book") / "repo"
    for rel in committable_files():
        src = REPO / rel
        if not src.exists():  # deleted in the working tree but still in the index
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    t0 = time.perf_counter()
    proc = subprocess.run([*jupyter_book_command(), "build", str(dest), "-W", "-n", "--keep-going"],
                          cwd=dest, capture_output=True, text=True)
    return BuiltBook(root=dest, html=dest / "_build" / "html", returncode=proc.returncode,
                     log=proc.stdout + proc.stderr, seconds=time.perf_counter() - t0)
