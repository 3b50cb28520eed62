"""Integrity of the data layer: source-file identity (size, mtime, sha256, checked against ``SHA256SUMS``),
IDX size checks, checks of decoded images against the dataset registry, and the decoded-tensor cache.

Every failure is a :class:`DataError` naming the file, what was expected, what was found and the fix; an
unreadable cache is reported to the operator (``warn_operator``) and rebuilt, never trusted.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch

from ibnb.core.utils import atomic_torch_save, atomic_write, cache_root, env_path, sha256_file, warn_operator

SUMS_FILE = "SHA256SUMS"


class DataError(RuntimeError):
    """Missing or unreadable data; the message says what was looked for, where, and how to fix it."""



def data_cache_dir() -> Path:
    return env_path("IBNB_CACHE", cache_root() / "data")



# ----------------------------------------------------------------------------- source file identity
def _hash_memo_path() -> Path:
    return data_cache_dir() / "file-hashes.json"


def _file_sha256(path: Path) -> str:
    """sha256 of ``path``, memoised on (size, mtime, ctime, inode) so an unchanged file is hashed once; a
    replaced file (new inode or ctime, which no copy can preserve) is hashed again."""
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    memo_file = _hash_memo_path()
    try:
        memo = json.loads(memo_file.read_text())
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    hit = memo.get(str(path.resolve()))
    if isinstance(hit, list) and hit[:4] == stamp:
        return hit[4]
    digest = sha256_file(path)
    memo[str(path.resolve())] = stamp + [digest]
    try:
        atomic_write(memo_file, json.dumps(memo))
    except OSError:
        pass  # a read-only cache only costs re-hashing
    return digest


def _sums(root: Path) -> dict[str, str]:
    """``relative path -> sha256`` from ``<root>/SHA256SUMS`` (``sha256sum`` format; {} when absent)."""
    path = root / SUMS_FILE
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2 and len(parts[0]) == 64:
            out[parts[1].lstrip("*").removeprefix("./")] = parts[0].lower()
    return out


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def source_identity(paths: list[Path], root: Path) -> list[dict]:
    """Identity of the source files (relative path, size, mtime, sha256), each checked against
    ``<root>/SHA256SUMS`` when listed there; a mismatch raises :class:`DataError`."""
    sums = _sums(root)
    out = []
    for p in paths:
        st = p.stat()
        rel = _rel(p, root)
        digest = _file_sha256(p)
        expected = sums.get(rel)
        if expected is not None and expected != digest:
            raise DataError(
                f"{p}: sha256 {digest[:16]}… ({st.st_size:,} bytes) does not match {root / SUMS_FILE}, which "
                f"expects {expected[:16]}…. The file is truncated, corrupt or replaced. Fix: copy it again from "
                f"the offline copy (../shared/data/{rel}) or delete it and download it again, then check with "
                f"`cd {root} && sha256sum -c {SUMS_FILE}`.")
        out.append({"file": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest})
    return out


# ----------------------------------------------------------------------------- checks of decoded data
def _refetch_hint(sources: list[Path]) -> str:
    names = ", ".join(str(s) for s in sources)
    return (f"Fix: copy {names} again from the offline copy (../shared/data, see data/README.md) and check it "
            f"with `sha256sum -c {SUMS_FILE}` in the data root (or delete it and re-download).")


def check_decoded(info, stored_split: str, y: torch.Tensor, classes: list[str], sources: list[Path]) -> None:
    """The decoded labels and class names must match the registry entry ``info`` (a ``DatasetInfo``): count
    per stored split, class set, every class present. A truncated archive fails here even without
    ``SHA256SUMS``."""
    name = info.name
    where = ", ".join(str(s) for s in sources)
    expected_n = info.counts.get(stored_split)
    if expected_n is not None and len(y) != expected_n:
        raise DataError(f"{name} {stored_split}: decoded {len(y):,} images from {where}, expected {expected_n:,} "
                        f"(the dataset registry, ibnb.core.data.DATASETS). The source is truncated or incomplete. "
                        + _refetch_hint(sources))
    if info.classes and tuple(classes) != tuple(info.classes):
        missing = sorted(set(info.classes) - set(classes))
        extra = sorted(set(classes) - set(info.classes))
        raise DataError(f"{name} {stored_split}: the classes in {where} are {list(classes)}, expected "
                        f"{list(info.classes)}" + (f" (missing {missing})" if missing else "")
                        + (f" (unexpected {extra})" if extra else "") + ". " + _refetch_hint(sources))
    present = set(torch.unique(y).tolist()) if len(y) else set()
    absent = [classes[c] for c in range(len(classes)) if c not in present]
    if absent or (present and (min(present) < 0 or max(present) >= len(classes))):
        raise DataError(f"{name} {stored_split}: {where} holds no image of class(es) {absent} or labels outside "
                        f"0..{len(classes) - 1}; expected every one of the {len(classes)} classes. "
                        + _refetch_hint(sources))


# ----------------------------------------------------------------------------- readers
IDX_MAGIC = {0x0801: "labels", 0x0803: "images"}


def check_idx(path: Path) -> tuple[int, ...]:
    """Check an MNIST IDX file's header and that its size matches the dimensions it declares; return them."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
        magic = struct.unpack(">I", head)[0] if len(head) == 4 else None
        if magic not in IDX_MAGIC:
            raise DataError(f"{path}: not an IDX file (magic {head.hex() or 'empty'}, expected 00000801 for labels "
                            f"or 00000803 for images); it is corrupt. " + _refetch_hint([path]))
        ndim = magic & 0xFF
        raw = f.read(4 * ndim)
    if len(raw) != 4 * ndim:
        raise DataError(f"{path}: IDX header cut short ({size} bytes); the file is truncated. " + _refetch_hint([path]))
    dims = struct.unpack(f">{ndim}I", raw)
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if size != expected:
        shape = "×".join(map(str, dims))
        raise DataError(f"{path}: its IDX header declares {IDX_MAGIC[magic]} of shape {shape} ({expected:,} bytes) "
                        f"but the file has {size:,} bytes: it is {'truncated' if size < expected else 'padded'}. "
                        + _refetch_hint([path]))
    return dims



# ----------------------------------------------------------------------------- the decoded cache
def read_decoded_cache(cache_file: Path, identity: list[dict]) -> dict | None:
    """The cached blob when it is readable, well-formed and made from exactly these source files; ``None``
    (rebuild) otherwise. An unreadable or malformed cache is reported to the operator, never trusted."""
    if not cache_file.exists():
        return None
    try:
        blob = torch.load(cache_file, map_location="cpu", weights_only=True)
        x, y = blob["x"], blob["y"]
        ok = (isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.ndim == 4 and isinstance(y, torch.Tensor)
              and len(x) == len(y) and isinstance(blob.get("classes"), list))
        if not ok:
            raise ValueError("tensors of the wrong type or shape")
    except Exception as e:
        warn_operator(f"ignoring unreadable decoded-data cache {cache_file} ({type(e).__name__}: {e}); "
                      "decoding the source files again")
        return None
    if blob.get("identity") != identity:
        if blob.get("identity") is not None:
            warn_operator(f"the source files of {cache_file.name} changed since it was made; decoding them again")
        return None
    return blob


def write_decoded_cache(cache_file: Path, blob: dict) -> None:
    """Save the decoded tensors atomically; an unwritable cache only costs decoding again next time."""
    try:
        atomic_torch_save(blob, cache_file)
    except OSError as e:
        warn_operator(f"could not write the decoded-data cache {cache_file} ({e}); set IBNB_CACHE to a writable "
                      "folder to avoid decoding again next time")
