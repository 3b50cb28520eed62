"""Small shared helpers: repo paths, atomic writes, seeding, hashing."""
from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch


def repo_root() -> Path:
    """The repository root (the folder that holds the ``ibnb`` package)."""
    return Path(__file__).resolve().parents[2]


def env_path(var: str, default: Path | str) -> Path:
    """Path from environment variable ``var`` (``~`` expanded), else ``default``."""
    value = os.environ.get(var)
    return Path(value).expanduser() if value else Path(default).expanduser()


def cache_root() -> Path:
    """Root of ibnb's caches outside the repository (``~/.cache/ibnb``)."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "ibnb"


@contextmanager
def _atomic_target(path: Path | str):
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path`` (normal permissions),
    on any error it is removed. A reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path | str, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    with _atomic_target(path) as tmp:
        with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_torch_save(obj, path: Path | str) -> Path:
    """``torch.save`` through a temporary file and rename (no partial checkpoints)."""
    with _atomic_target(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stable_hash(obj, n: int = 12) -> str:
    """Short sha256 of a JSON-serialisable object (keys sorted), used as a cache key."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]
