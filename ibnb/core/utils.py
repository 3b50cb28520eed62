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


# ----------------------------------------------------------------------------- operator messages, locks, hashes
OPERATOR_LOG_VAR = "IBNB_OPERATOR_LOG"


def warn_operator(message: str) -> None:
    """A warning for whoever runs the book, never for the published page.

    Under the runner (``python -m ibnb run``) the kernel's stdout/stderr end up in the executed notebook, so
    the runner sets ``IBNB_OPERATOR_LOG`` to a file that it copies to its own terminal; the message is
    appended there. Elsewhere (a script, pytest, an interactive session) it goes to ``sys.stderr``.
    """
    import sys

    line = f"ibnb: {message.rstrip()}\n"
    log = os.environ.get(OPERATOR_LOG_VAR)
    if log:
        try:
            with open(log, "a") as f:
                f.write(line)
            return
        except OSError:
            pass
    sys.stderr.write(line)
    sys.stderr.flush()


@contextmanager
def file_lock(path: Path | str, *, on_wait=None):
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if needed) for the ``with`` block.

    When another process holds it, ``on_wait(holder)`` is called once (``holder``: what that process wrote
    into the lock file, e.g. its pid) and the call blocks until the lock is free. The kernel releases the lock
    when its holder exits, even after ``kill -9``, so a stale lock file never blocks anyone.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(_lock_holder(f))
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}")
            f.flush()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _lock_holder(f, patience: float = 1.0) -> str:
    """What the holder of ``f``'s lock wrote into it. A holder writes its note just after it takes the lock, so a
    process that finds the lock taken may read an empty file for a moment: poll for up to ``patience`` seconds."""
    import time

    deadline = time.monotonic() + patience
    while True:
        f.seek(0)
        note = f.read().strip()
        if note or time.monotonic() > deadline:
            return note or "unknown"
        time.sleep(0.01)


def remove_stale_temporaries(folder: Path | str) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` / :func:`atomic_torch_save` leave behind when their
    process is killed mid-write (``.<name>.*.tmp``). Call it only while holding the folder's lock."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def utc_stamp() -> str:
    """``20250101T120000Z``: a UTC time stamp for file names."""
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
