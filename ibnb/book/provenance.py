"""Provenance of an executed notebook: which code, parameters and machine produced a page.

Notebook-side usage (see the contract)::

    run = ibnb.book.provenance.start("01_architectures", params)   # params incl. 'profile'
    ...                                                        # experiments
    info = run.finish()   # shows the provenance box, glues 'prov_wall_min', returns a dict

The box is a small Markdown table with the git commit (``-dirty`` when tracked files
have uncommitted changes), profile, parameters, device, library versions, CPU threads,
start time (UTC), wall time and the ibnb code hash (``code_hash()``).  The runner
(``python -m ibnb``) stores the same code hash in the executed notebook's metadata so
that ``python -m ibnb mark-stale`` can tell when a page no longer matches the code.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ibnb.core.utils import atomic_write, repo_root

__all__ = ["code_hash", "git_commit", "environment", "start", "Run", "format_box"]

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the ibnb package


def code_hash(package_dir: Path | str | None = None, n: int = 12, files: Sequence[str] | None = None) -> str:
    """Short sha256 over ibnb source files (sorted by path relative to the package folder).

    With ``files=None`` every ``*.py`` of the package enters the hash; with ``files`` (relative paths, as
    recorded by :func:`imported_files`) only those do, so a page depends on exactly the modules its
    notebook imported. Path and bytes of each file enter the hash: editing, adding, removing or renaming a
    module that counts changes it (a recorded file that no longer exists hashes as missing).
    ``package_dir`` defaults to the installed ``ibnb`` package folder (tests point it at a temporary copy).
    """
    root = Path(package_dir) if package_dir is not None else PACKAGE_DIR
    if files is None:
        rels = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    else:
        rels = sorted(set(files))
    h = hashlib.sha256()
    for rel in rels:
        path = root / rel
        h.update(rel.encode() + b"\0")
        h.update((path.read_bytes() if path.is_file() else b"<missing>") + b"\0")
    return h.hexdigest()[:n]


def imported_files() -> list[str]:
    """Relative paths of the ibnb modules loaded in this process (what a notebook's results depend on)."""
    out = set()
    for module in list(sys.modules.values()):
        f = getattr(module, "__file__", None)
        if f and Path(f).resolve().is_relative_to(PACKAGE_DIR):
            out.add(Path(f).resolve().relative_to(PACKAGE_DIR).as_posix())
    return sorted(out)


def _git(args: list[str], cwd: Path) -> str | None:
    """Run ``git args`` in ``cwd``; stripped stdout, or None when git fails or is missing."""
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit(repo: Path | str | None = None) -> str:
    """``git rev-parse --short HEAD`` of ``repo`` (default: the ibnb repo).

    Suffix ``-dirty`` when tracked source files differ from HEAD (untracked files are ignored,
    like ``git describe --dirty``; so are the book's generated outputs, ``book/experiments`` and
    ``book/results``, which a run rewrites by design).  Returns ``'unknown'`` outside a git checkout or
    before the first commit.
    """
    cwd = Path(repo) if repo is not None else repo_root()
    sha = _git(["rev-parse", "--short", "HEAD"], cwd)
    if not sha:
        return "unknown"
    status = _git(["status", "--porcelain", "--untracked-files=no", "--", ".",
                   ":(exclude)book/experiments", ":(exclude)book/results"], cwd)
    return f"{sha}-dirty" if status else sha


def _device_description() -> str:
    """Human-readable compute device: ``cuda (NVIDIA H100 ...)``, ``mps`` or ``cpu``."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard requirement
        return "cpu (torch not installed)"
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        name = torch.cuda.get_device_name(0)
        return f"cuda ({name})" + (f" x{n}" if n > 1 else "")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps (Apple GPU)"
    return f"cpu ({platform.processor() or platform.machine()})"


def _version(module: str) -> str:
    """``module.__version__`` or ``'not installed'``."""
    try:
        mod = __import__(module)
    except ImportError:
        return "not installed"
    return str(getattr(mod, "__version__", "unknown"))


def environment() -> dict[str, Any]:
    """Versions, device and thread counts of the running process."""
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        threads = None
    return {
        "python": platform.python_version(),
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "numpy": _version("numpy"),
        "platform": platform.platform(terse=True),
        "device": _device_description(),
        "torch_threads": threads,
        "cpu_count": os.cpu_count(),
    }


def _compact_params(params: dict[str, Any]) -> str:
    """``a=1, b='x'`` for the box, sorted by name, ``profile`` left out (it has its own row)."""
    items = [(k, v) for k, v in sorted(params.items()) if k != "profile"]
    return ", ".join(f"{k}={v!r}" for k, v in items) or "(profile defaults)"


def _fmt_wall(seconds: float) -> str:
    """``42.1 s`` or ``3 min 05 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s"


def format_box(info: dict[str, Any]) -> str:
    """Markdown provenance box (a two-column table) for the dict returned by ``Run.finish``."""
    env = info["environment"]
    threads = f"{env['torch_threads']} torch threads / {env['cpu_count']} CPUs"
    rows = [
        ("notebook", f"`{info['notebook']}`"),
        ("commit", f"`{info['commit']}`"),
        ("ibnb code hash", f"`{info['code_hash']}`"),
        ("profile", f"`{info['profile']}`"),
        ("parameters", f"`{_compact_params(info['params'])}`"),
        ("device", env["device"]),
        ("python / torch / torchvision / numpy",
         f"{env['python']} / {env['torch']} / {env['torchvision']} / {env['numpy']}"),
        ("CPU threads", threads),
        ("started (UTC)", info["started_utc"]),
        ("wall time", _fmt_wall(info["wall_s"])),
    ]
    lines = ["**Provenance of this page**", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    return "\n".join(lines)


def _in_ipython() -> bool:
    """True inside an IPython kernel / shell."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


@dataclass
class Run:
    """One execution of a notebook; create with :func:`start`, close with :meth:`finish`."""

    notebook: str
    params: dict[str, Any]
    started_utc: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc)
                             .strftime("%Y-%m-%d %H:%M:%S"))
    _t0: float = field(default_factory=time.perf_counter, repr=False)
    info: dict[str, Any] | None = None

    def finish(self, display: bool = True) -> dict[str, Any]:
        """Stop the clock, show the provenance box and return the provenance dict.

        The box is displayed as Markdown through ``IPython.display`` (printed outside
        IPython).  The wall time in minutes is glued as ``prov_wall_min`` (not displayed)
        when ``myst_nb`` is importable, so prose can cite it.
        """
        wall = time.perf_counter() - self._t0
        info = {
            "notebook": self.notebook,
            "commit": git_commit(),
            "code_hash": code_hash(files=imported_files()),
            "code_files": imported_files(),
            "profile": self.params.get("profile", "unknown"),
            "params": dict(self.params),
            "environment": environment(),
            "started_utc": self.started_utc,
            "wall_s": round(wall, 2),
            "wall_min": round(wall / 60.0, 2),
        }
        self.info = info
        sidecar = os.environ.get("IBNB_PROVENANCE_FILE")
        if sidecar:  # set by the runner: tells it which modules this page depends on
            atomic_write(sidecar, json.dumps({"code_files": info["code_files"], "code_hash": info["code_hash"]}))
        box = format_box(info)
        if display:
            if _in_ipython():
                from IPython.display import Markdown, display as ipy_display

                ipy_display(Markdown(box))
            else:
                print(box)
        try:
            from myst_nb import glue
        except ImportError:
            pass
        else:
            glue("prov_wall_min", info["wall_min"], display=False)
        return info

    def to_json(self) -> str:
        """The provenance dict as JSON (after :meth:`finish`)."""
        if self.info is None:
            raise RuntimeError("Run.to_json() needs run.finish() to be called first.")
        return json.dumps(self.info, indent=2, sort_keys=True, default=str)


def start(notebook: str, params: dict[str, Any] | None = None) -> Run:
    """Start the provenance clock for ``notebook`` (its stem) with resolved ``params``.

    ``params`` should contain every resolved knob including ``'profile'``; values must
    be printable (they are shown with ``repr``).
    """
    if params is not None and not isinstance(params, dict):
        raise TypeError(f"ibnb.book.provenance.start(): params must be a dict, got {type(params).__name__}; "
                        "pass e.g. dict(profile=profile, epochs=epochs).")
    return Run(notebook=notebook, params=dict(params or {}))


if __name__ == "__main__":  # pragma: no cover - manual check
    r = start("manual", {"profile": "smoke"})
    json.dump(r.finish(display=True), sys.stdout, indent=2, default=str)
