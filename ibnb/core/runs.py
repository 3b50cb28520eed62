"""Load-or-train: a trained model is cached under a hash of everything that defines it.

``train_or_load`` keys a run on the model name and arguments, a fingerprint of the training data, the
:class:`~ibnb.core.train.TrainConfig` and a hash of the training code, so a later notebook (or a re-run) reuses a
model another notebook already trained. Runs live in ``IBNB_RUNS`` (default ``~/.cache/ibnb/runs``), never
in git. An interrupted run resumes from its per-epoch checkpoint.

Faults: an unreadable ``final.pt`` or ``checkpoint.pt`` is reported to the operator (terminal, never the page)
with the run it belongs to, moved aside (``<name>.unreadable-<UTC time>``) and the run retrained; a per-run
file lock (``fcntl.flock`` on ``<run folder>/.lock``) makes a second process wait for a run another one is
training and then reuse it; a non-finite loss stops with a :class:`~ibnb.core.train.NonFiniteLossError` that
names the run (model, model_kw, n_train, seed, augmentation, configuration) and points only at files that exist.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn

from ibnb.core.convergence import probe_config
from ibnb.core.data import ImageData
from ibnb.core.models import create_model
from ibnb.core.train import (CrossEntropyStep, History, NonFiniteLossError, TrainConfig, device_name, fit, resolve_device,
                             step_key)
from ibnb.core.utils import (atomic_torch_save, atomic_write, cache_root, env_path, file_lock, remove_stale_temporaries,
                             seed_everything, stable_hash, utc_stamp, warn_operator)

SNAPSHOTS = "snapshots"  # the per-epoch weights of a snapshots=True run, in its folder
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


def run_key(model_name: str, model_kw: dict, train: ImageData, cfg: TrainConfig, train_step=None,
            val: ImageData | None = None) -> str:
    """The run's identity: model, its arguments, the training *and* validation data (the validation split sets
    the history's validation curve, the convergence check and a ``plateau`` schedule), config and code."""
    return stable_hash({"model": model_name, "model_kw": model_kw, "data": fingerprint(train),
                        "val": fingerprint(val) if val is not None else None,
                        "train": asdict(cfg), "code": training_code_hash(model_name, train_step)})


def prepare_run(model_name: str, train: ImageData, val: ImageData | None, config: TrainConfig,
                model_kw: dict | None = None, step=None) -> tuple[Path, dict, object, TrainConfig]:
    """``(run folder, model_kw, step, config)`` of a run as :func:`train_or_load` resolves them: ``model_kw``
    completed with ``num_classes``/``in_channels``/``image_size`` from ``train``, the default step filled in and
    the config carrying the step's key. The folder is where the run is (or will be) cached."""
    model_kw = dict(model_kw or {})
    model_kw.setdefault("num_classes", train.num_classes)
    model_kw.setdefault("in_channels", train.shape[0])
    model_kw.setdefault("image_size", train.shape[1])
    step = step if step is not None else CrossEntropyStep(config.label_smoothing)
    cfg = dataclasses.replace(config, step=step_key(step)).validate()
    create_model(model_name, **model_kw)  # fails early, with the list of models, on a bad name
    return runs_dir() / f"{model_name}-{run_key(model_name, model_kw, train, cfg, step, val)}", model_kw, step, cfg


def is_cached(folder: Path, snapshots: bool = False) -> bool:
    """Whether the run of ``folder`` is in the cache (with its per-epoch snapshots when ``snapshots``)."""
    return (folder / "final.pt").exists() and (not snapshots or (folder / SNAPSHOTS / "complete").exists())


def train_or_load(model_name: str, train: ImageData, val: ImageData | None = None, *, config: TrainConfig,
                  model_kw: dict | None = None, step=None, device=None, progress: bool = True,
                  probe: bool = False, probe_step=None, snapshots: bool = False) -> tuple[nn.Module, History, bool]:
    """Return ``(model, history, cached)``: the trained model from the run cache, or train it now.

    ``config`` is the run's :class:`~ibnb.core.train.TrainConfig`; ``step`` a custom update (a frozen
    dataclass: its ``repr`` and its module key the run). The model is built with
    ``num_classes``/``in_channels``/``image_size`` taken from ``train`` unless given in ``model_kw``, after
    seeding with ``config.seed`` so that its initialisation is part of the run's identity.

    ``probe=True`` also trains (or loads) the run's *budget-halving probe* — the same run with half the epochs
    and the warm-up scaled alike (:func:`ibnb.core.convergence.half_budget`), a cached run of its own — and
    attaches its history as ``history.probe``, so the convergence check can pass an annealed run whose budget is
    saturated (test 3 of :mod:`ibnb.core.convergence`). ``probe_step`` replaces ``step`` for the probe when the
    update itself counts epochs (a KL warm-up); ``cached`` is that of the run itself. ``snapshots=True`` keeps
    the weights after every epoch (:func:`load_snapshots`); a cached run without them is trained again.
    """
    if probe and (half_config := probe_config(config)) is not None:
        _, probe_history, _ = train_or_load(model_name, train, val, config=half_config, model_kw=model_kw,
                                            step=probe_step if probe_step is not None else step, device=device,
                                            progress=progress)
        model, history, cached = train_or_load(model_name, train, val, config=config, model_kw=model_kw,
                                               step=step, device=device, progress=progress, snapshots=snapshots)
        history.probe = probe_history.frame
        return model, history, cached
    folder, model_kw, step, cfg = prepare_run(model_name, train, val, config, model_kw, step)
    device = resolve_device(device)
    seed_everything(cfg.seed)
    model = create_model(model_name, **model_kw)
    meta = {"model": model_name, "model_kw": model_kw, "train": asdict(cfg), "data": dict(train.meta),
            "n_train": len(train), "code": training_code_hash(model_name, step)}
    return load_or_fit(model, folder, train, val, cfg, step=step, device=device, progress=progress,
                       desc=model_name, meta=meta, snapshots=snapshots)


def load_snapshots(folder: Path) -> list[dict]:
    """The state dicts a ``snapshots=True`` run saved after each of its epochs, in order (CPU tensors)."""
    files = sorted((folder / SNAPSHOTS).glob("epoch-*.pt"))
    return [torch.load(f, map_location="cpu", weights_only=True) for f in files]


CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "loader_rng", "rows", "epoch", "config")


def run_identity(desc: str, meta: dict | None, config: TrainConfig, n_train: int) -> dict:
    """What names a run in messages: model, model_kw, n_train, seed, augmentation and the configuration."""
    meta = meta or {}
    cfg = asdict(config)
    return {"model": meta.get("model", desc), "model_kw": meta.get("model_kw", {}),
            "n_train": meta.get("n_train", n_train), "seed": cfg["seed"], "augment": cfg["augment"],
            "config": {k: v for k, v in cfg.items() if k not in ("seed", "augment")}}


def describe_run(identity: dict, folder: Path) -> str:
    """One line naming a run for the operator."""
    kw = {k: v for k, v in identity["model_kw"].items() if k not in ("num_classes", "in_channels", "image_size")}
    conf = ", ".join(f"{k}={v}" for k, v in identity["config"].items())
    return (f"{identity['model']}" + (f" {kw}" if kw else "") + f" (n_train={identity['n_train']}, "
            f"seed={identity['seed']}, augment={identity['augment']}; {conf}; run folder {folder})")


def _load_final(model: nn.Module, final: Path, device) -> tuple[tuple[nn.Module, History] | None, str | None]:
    """``((model, history), None)`` from a readable ``final.pt``, else ``(None, reason)``; ``model`` is left as
    it was when the file does not fit it."""
    backup = copy.deepcopy(model.state_dict())
    try:
        state = torch.load(final, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        history = History(pd.DataFrame(state["rows"]), state["config"])
    except Exception as e:  # a corrupt cache entry is retrained, not trusted
        model.load_state_dict(backup)
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return (model.to(device), history), None


def _checkpoint_problem(checkpoint: Path, cfg: TrainConfig) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (``None`` when it can)."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if not isinstance(state, dict) or not all(k in state for k in CHECKPOINT_KEYS):
        return "not a training checkpoint (keys missing)"
    if state["config"] != asdict(cfg):
        return "written for a different configuration"
    return None


def _move_aside(path: Path, reason: str, label: str) -> Path:
    """Rename an unusable cache file out of the way and tell the operator (terminal, never the page)."""
    dest = path.with_name(f"{path.name}.unreadable-{utc_stamp()}")
    os.replace(path, dest)
    warn_operator(f"run cache: {path.name} of run {label} is unusable ({reason}); moved it aside to {dest.name} "
                  "in the run folder and training the run again")
    return dest


def load_or_fit(model: nn.Module, folder: Path, train: ImageData, val: ImageData | None, config: TrainConfig, *,
                step=None, device, progress: bool = True, desc: str = "", meta: dict | None = None,
                snapshots: bool = False) -> tuple[nn.Module, History, bool]:
    """The mechanics every cached run shares, whoever computed its key (``folder``): load ``folder/final.pt``
    into ``model`` (an unreadable file is retrained, not trusted), or ``fit`` with a per-epoch checkpoint in
    ``folder`` (resumed after an interruption), then save ``final.pt`` atomically and drop the checkpoint.
    ``meta`` is written to ``folder/config.json`` for humans; ``snapshots`` saves the weights after every epoch
    into ``folder/snapshots`` (a run cached without them is trained again). Returns ``(model, history, cached)``."""
    final, checkpoint = folder / "final.pt", folder / "checkpoint.pt"
    if is_cached(folder, snapshots):
        loaded, _ = _load_final(model, final, device)
        if loaded is not None:
            return (*loaded, True)
    step = step if step is not None else CrossEntropyStep(config.label_smoothing)
    cfg = dataclasses.replace(config, step=step_key(step)).validate()
    identity = run_identity(desc or type(model).__name__, meta, cfg, len(train))
    label = describe_run(identity, folder)
    folder.mkdir(parents=True, exist_ok=True)

    def waiting(holder: str) -> None:
        warn_operator(f"run cache: run {label} is being trained by another process ({holder}); waiting for it "
                      "and then reusing its result")

    with file_lock(folder / ".lock", on_wait=waiting):
        remove_stale_temporaries(folder)  # left by a process killed mid-write
        if is_cached(folder, snapshots):  # trained meanwhile by the process we waited for, or unreadable
            loaded, reason = _load_final(model, final, device)
            if loaded is not None:
                return (*loaded, True)
            _move_aside(final, reason, label)
        final.unlink(missing_ok=True)  # a run cached without the snapshots asked for now is trained again
        if checkpoint.exists() and (reason := _checkpoint_problem(checkpoint, cfg)) is not None:
            _move_aside(checkpoint, reason, label)
        if meta is not None:
            atomic_write(folder / "config.json", json.dumps(meta, indent=2, default=str))
        try:
            history = fit(model, train, val, cfg, step=step, device=device, progress=progress, desc=desc,
                          checkpoint=checkpoint, on_epoch=_snapshot_writer(folder) if snapshots else None)
        except NonFiniteLossError as e:
            raise _named_nan_error(e, identity, label, checkpoint, folder) from None
        atomic_torch_save({"model": {k: v.cpu() for k, v in model.state_dict().items()},
                           "rows": history.frame.to_dict("records"), "config": history.config,
                           "device": device_name(device)}, final)
        checkpoint.unlink(missing_ok=True)
        if snapshots:
            atomic_write(folder / SNAPSHOTS / "complete", f"{cfg.epochs} epochs\n")
    return model, history, False


def _snapshot_writer(folder: Path):
    """``fit``'s ``on_epoch``: the model's weights after epoch ``epoch`` (1-based), atomically."""
    (folder / SNAPSHOTS).mkdir(exist_ok=True)
    (folder / SNAPSHOTS / "complete").unlink(missing_ok=True)

    def write(epoch: int, model: nn.Module) -> None:
        atomic_torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()},
                          folder / SNAPSHOTS / f"epoch-{epoch:03d}.pt")
    return write


def _named_nan_error(e: NonFiniteLossError, identity: dict, label: str, checkpoint: Path,
                     folder: Path) -> NonFiniteLossError:
    """``fit``'s non-finite-loss error with the run's identity, pointing only at files that exist."""
    base = str(e).split(" The last good state")[0].strip()
    if checkpoint.exists():
        epoch = torch.load(checkpoint, map_location="cpu", weights_only=False).get("epoch", "?")
        where = (f"The last good state (after epoch {epoch}) is in {checkpoint}; the same settings resume from it "
                 f"and fail again, so change them (a new run) or delete {folder} to start this one over.")
    else:
        where = "No checkpoint of this run exists (the loss was non-finite before the first epoch ended)."
    err = NonFiniteLossError(f"{base}\n  Run: {label}\n  {where}")
    err.run, err.checkpoint = identity, (checkpoint if checkpoint.exists() else None)
    return err
