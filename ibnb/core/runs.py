"""Load-or-train: a trained model is cached under a hash of everything that defines it.

``train_or_load`` keys a run on the model name and arguments, a fingerprint of the training data, the
:class:`~ibnb.core.train.TrainConfig` and a hash of the training code, so a later notebook (or a re-run) reuses a
model another notebook already trained. Runs live in ``IBNB_RUNS`` (default ``~/.cache/ibnb/runs``), never
in git. An interrupted run resumes from its per-epoch checkpoint.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn

from ibnb.core.data import ImageData
from ibnb.core.models import create_model
from ibnb.core.train import CrossEntropyStep, History, TrainConfig, device_name, fit, resolve_device, step_key
from ibnb.core.utils import atomic_torch_save, atomic_write, cache_root, env_path, seed_everything, stable_hash

_CODE_FILES = ("train.py", "augment.py", "runs.py", "models/__init__.py", "models/layers.py")


def runs_dir() -> Path:
    return env_path("IBNB_RUNS", cache_root() / "runs")


def _source_file(obj) -> Path | None:
    """The file defining a function, class or callable object (``None`` for built-ins)."""
    import inspect

    for o in (obj, getattr(obj, "func", None), type(obj)):
        try:
            return Path(inspect.getsourcefile(o)).resolve()
        except (TypeError, OSError):
            continue
    return None


def training_code_hash(model_name: str, train_step=None) -> str:
    """Hash of the code that determines a trained model: the loop, augmentation, the registry and shared
    layers, the module that defines ``model_name`` (adding another model does not invalidate runs) and the
    module that defines a custom ``train_step``."""
    from ibnb.core.models import _REGISTRY

    pkg = Path(__file__).resolve().parent
    files = [pkg / f for f in _CODE_FILES] + [_source_file(_REGISTRY[model_name])]
    if train_step is not None and _source_file(train_step) is not None:
        files.append(_source_file(train_step))
    h = hashlib.sha256()
    for f in sorted({f for f in files if f is not None}):
        name = f.relative_to(pkg).as_posix() if f.is_relative_to(pkg) else f.name
        h.update(name.encode() + f.read_bytes())
    return h.hexdigest()[:12]


def fingerprint(data: ImageData) -> str:
    """A cheap content hash of a dataset: all labels plus a strided sample of the images."""
    h = hashlib.sha256()
    h.update(data.y.numpy().tobytes())
    step = max(1, len(data) // 256)
    h.update(data.x[::step].numpy().tobytes())
    h.update(str(tuple(data.x.shape)).encode())
    return h.hexdigest()[:16]


def run_key(model_name: str, model_kw: dict, train: ImageData, cfg: TrainConfig, train_step=None) -> str:
    return stable_hash({"model": model_name, "model_kw": model_kw, "data": fingerprint(train),
                        "train": asdict(cfg), "code": training_code_hash(model_name, train_step)})


def train_or_load(model_name: str, train: ImageData, val: ImageData | None = None, *, config: TrainConfig,
                  model_kw: dict | None = None, step=None, device=None,
                  progress: bool = True) -> tuple[nn.Module, History, bool]:
    """Return ``(model, history, cached)``: the trained model from the run cache, or train it now.

    ``config`` is the run's :class:`~ibnb.core.train.TrainConfig`; ``step`` a custom update (a frozen
    dataclass: its ``repr`` and its module key the run). The model is built with
    ``num_classes``/``in_channels``/``image_size`` taken from ``train`` unless given in ``model_kw``, after
    seeding with ``config.seed`` so that its initialisation is part of the run's identity.
    """
    model_kw = dict(model_kw or {})
    model_kw.setdefault("num_classes", train.num_classes)
    model_kw.setdefault("in_channels", train.shape[0])
    model_kw.setdefault("image_size", train.shape[1])
    step = step if step is not None else CrossEntropyStep(config.label_smoothing)
    cfg = dataclasses.replace(config, step=step_key(step)).validate()
    create_model(model_name, **model_kw)  # fails early, with the list of models, on a bad name
    key = run_key(model_name, model_kw, train, cfg, step)
    folder = runs_dir() / f"{model_name}-{key}"
    device = resolve_device(device)
    seed_everything(cfg.seed)
    model = create_model(model_name, **model_kw)
    meta = {"model": model_name, "model_kw": model_kw, "train": asdict(cfg), "data": dict(train.meta),
            "n_train": len(train), "code": training_code_hash(model_name, step)}
    return load_or_fit(model, folder, train, val, cfg, step=step, device=device, progress=progress,
                       desc=model_name, meta=meta)


def load_or_fit(model: nn.Module, folder: Path, train: ImageData, val: ImageData | None, config: TrainConfig, *,
                step=None, device, progress: bool = True, desc: str = "",
                meta: dict | None = None) -> tuple[nn.Module, History, bool]:
    """The mechanics every cached run shares, whoever computed its key (``folder``): load ``folder/final.pt``
    into ``model`` (an unreadable file is retrained, not trusted), or ``fit`` with a per-epoch checkpoint in
    ``folder`` (resumed after an interruption), then save ``final.pt`` atomically and drop the checkpoint.
    ``meta`` is written to ``folder/config.json`` for humans. Returns ``(model, history, cached)``."""
    final = folder / "final.pt"
    if final.exists():
        try:
            state = torch.load(final, map_location="cpu", weights_only=False)
            model.load_state_dict(state["model"])
            return model.to(device), History(pd.DataFrame(state["rows"]), state["config"]), True
        except Exception as e:  # a corrupt cache entry is retrained, not trusted
            print(f"warning: ignoring unreadable cached run {final} ({e}); retraining")
    folder.mkdir(parents=True, exist_ok=True)
    if meta is not None:
        atomic_write(folder / "config.json", json.dumps(meta, indent=2, default=str))
    history = fit(model, train, val, config, step=step, device=device, progress=progress, desc=desc,
                  checkpoint=folder / "checkpoint.pt")
    atomic_torch_save({"model": {k: v.cpu() for k, v in model.state_dict().items()},
                       "rows": history.frame.to_dict("records"), "config": history.config,
                       "device": device_name(device)}, final)
    (folder / "checkpoint.pt").unlink(missing_ok=True)
    return model, history, False
