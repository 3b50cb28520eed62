"""One readable training loop: ``fit`` and ``evaluate``.

GPU-first and CPU-fast: the data lives on the device (:class:`~ibnb.core.augment.DeviceLoader`), metrics are
accumulated as device tensors (one host sync per epoch, plus a non-finite check every ``check_every`` steps),
optimisers use multi-tensor (foreach) updates, and each run's *fast path* (:func:`fast_path`: bf16
autocast and the channels-last memory format) is decided once from ``TrainConfig.precision`` /
``TrainConfig.channels_last``, the model and the device, and recorded in the run's history and results row.

The rule and the bf16 context live in :mod:`ibnb.core.precision` (re-exported here).

Configuration travels typed, once: a :class:`TrainConfig` (built from a chapter's resolved parameters with
:meth:`TrainConfig.from_params`) says everything about a run; a custom update (SAM, an ELBO, a self-supervised
loss) is a *frozen dataclass* with ``__call__(model, opt, x, y, epoch) -> StepOutput`` whose fields are its
settings, so its ``repr`` names it in the configuration and keys the run cache (:func:`step_key`).
"""
from __future__ import annotations

import math
import time
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ibnb.core.convergence import Convergence, check_convergence
from ibnb.core.augment import DeviceLoader, parse_augment
from ibnb.core.data import ImageData
from ibnb.core.precision import (PRECISIONS, FastPath, _ACTIVE, autocast, cpu_has_bf16, fast_path,  # noqa: F401
                                 is_conv_net, using)
from ibnb.core.utils import atomic_torch_save, seed_everything

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "plateau", "constant", "linear")


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss."""


def default_device() -> torch.device:
    """CUDA if available, else Apple MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The device a run uses: ``"auto"``/``None`` picks :func:`default_device`; anything else is checked."""
    if spec is None or spec == "auto":
        return default_device()
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={spec!r} but CUDA is not available here; use device='auto' or 'cpu'.")
    return device


def device_name(device: torch.device | None = None) -> str:
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved with checkpoints and used as the cache key)."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: str = "none"
    step: str = "CrossEntropyStep(label_smoothing=0.0)"  # set by fit from the step (step_key); keys the cache
    seed: int = 0
    compile: bool = False
    precision: str = "auto"  # "auto" (the rule in the module docstring) | "bf16" | "fp32"
    channels_last: bool | None = None  # None: the rule; True/False forces the memory format

    @classmethod
    def from_params(cls, params: dict, **overrides) -> "TrainConfig":
        """The fields of a chapter's resolved parameters that are training settings, with ``overrides``."""
        fields = {k: v for k, v in params.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(overrides) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"TrainConfig has no field(s) {unknown}; fields: {', '.join(cls.__dataclass_fields__)}")
        return cls(**{**fields, **overrides}).validate()

    def validate(self) -> "TrainConfig":
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.optimizer!r}; available: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule {self.schedule!r}; available: {', '.join(SCHEDULES)}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {self.precision!r}; available: {', '.join(PRECISIONS)}")
        parse_augment(self.augment)
        return self


@dataclass
class History:
    """Per-epoch record of a run: ``frame`` has one row per epoch (train/val loss and accuracy, lr,
    wall seconds, images/s); ``config`` is the :class:`TrainConfig` as a dict."""

    frame: pd.DataFrame
    config: dict = field(default_factory=dict)
    #: the per-epoch frame of this run's budget-halving probe, when one was trained (convergence test 3)
    probe: pd.DataFrame | None = None

    @property
    def wall_s(self) -> float:
        """Total training wall time (seconds, training steps and per-epoch validation)."""
        return float(self.frame["wall_s"].sum()) if len(self.frame) else 0.0

    @property
    def images_per_s(self) -> float:
        """Training throughput: images processed per second of training steps, over all epochs."""
        f = self.frame
        return float(f["train_images"].sum() / f["train_s"].sum()) if len(f) else float("nan")

    @property
    def convergence(self) -> Convergence:
        """The book's convergence check on this run (:mod:`ibnb.core.convergence`)."""
        return check_convergence(self.frame, probe=self.probe)

    @property
    def precision(self) -> str:
        """The precision the run actually used (``"bf16"`` / ``"fp32"``; ``""`` for runs older than the field)."""
        return str(self.frame["precision"].iloc[-1]) if "precision" in self.frame and len(self.frame) else ""

    @property
    def channels_last(self) -> bool | None:
        """Whether the run used the channels-last memory format (``None`` for runs older than the field)."""
        f = self.frame
        return bool(f["channels_last"].iloc[-1]) if "channels_last" in f and len(f) else None

    def columns(self) -> dict:
        """Results-table columns every training run reports: wall time, throughput, convergence, and the fast
        path it used (precision, channels_last)."""
        return {"wall_s": self.wall_s, "images_per_s": self.images_per_s, **self.convergence.columns(),
                "precision": self.precision, "channels_last": self.channels_last}

    @property
    def last(self) -> dict:
        return self.frame.iloc[-1].to_dict() if len(self.frame) else {}


#: ``foreach=True``: multi-tensor updates. ``fused=True`` would be faster, but a fused AdamW resumed from its
#: ``state_dict`` on the CPU does not continue bit-identically (PyTorch 2.15; ``tests/test_train.py``).
_KERNEL = {"foreach": True}


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov momentum), multi-tensor updates; no weight decay on biases and normalisation
    parameters (empty groups are dropped)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]] or groups[:1]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **_KERNEL)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, **_KERNEL)


def build_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Returns ``(scheduler, per_step)``; ``per_step`` False means it is stepped once per epoch."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total), True
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=2), False
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if cfg.schedule == "linear":  # warm-up then a straight line to zero (airbench's triangle)
            return 1.0 - progress
        return 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor), True


def sync(device: torch.device) -> None:
    """Wait for the device (timing only; CPU needs nothing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepOutput(NamedTuple):
    """What one training step returns: the (detached) loss, logits for train accuracy (or ``None``), and
    named loss terms (detached scalar tensors) that ``fit`` averages per epoch as ``train_<name>`` columns."""
    loss: torch.Tensor
    logits: torch.Tensor | None = None
    terms: dict[str, torch.Tensor] = {}


#: ``train_step(model, optimizer, x, y, epoch) -> StepOutput`` does one whole update (zero_grad, backward,
#: step). ``epoch`` is the fractional position in training (2.5 = half-way through the third epoch), for
#: schedules such as a KL warm-up. Custom steps (SAM, ELBO, self-supervised losses) plug in here.
TrainStep = Callable[[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor, float], StepOutput]


@dataclass(frozen=True)
class CrossEntropyStep:
    """The default update: cross-entropy (forward under the run's :func:`autocast`, loss in fp32), backward,
    optimiser step."""

    label_smoothing: float = 0.0

    def __call__(self, model, opt, x, y, epoch):
        with autocast(x.device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return StepOutput(loss.detach(), logits.detach())


def step_key(step) -> str:
    """The name of a train step in the configuration and the run cache: its dataclass ``repr`` (class and
    every field). Steps must be frozen dataclasses, so nothing that changes their behaviour escapes the key."""
    if not (dataclasses.is_dataclass(step) and not isinstance(step, type) and step.__dataclass_params__.frozen):
        raise TypeError(f"a train step must be a frozen dataclass instance (its fields key the run cache), "
                        f"got {type(step).__name__}")
    return repr(step)


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageData, *, batch_size: int = 1000, device=None,
             return_logits: bool = False, precision: str | None = None, channels_last: bool | None = None) -> dict:
    """Accuracy, mean NLL and top-5 accuracy of ``model`` on ``data`` (one host sync at the end).

    The forward passes use the fast path of the run being trained (inside ``fit``), else
    :func:`fast_path` with ``precision`` (default ``"auto"``) and ``channels_last``; logits are fp32."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    active = _ACTIVE.get()
    path = (active if active is not None and precision is None and channels_last is None
            else fast_path(model, device, precision or "auto", channels_last, data.shape))
    loader = DeviceLoader(data, batch_size, shuffle=False, device=device, channels_last=path.channels_last)
    was_training = model.training
    model.eval()
    nll = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    top5 = torch.zeros((), device=device, dtype=torch.long)
    all_logits = []
    with using(path):
        for x, y in loader:
            with autocast(device):
                logits = model(x).float()
            nll += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            k = min(5, logits.shape[1])
            top5 += (logits.topk(k, dim=1).indices == y[:, None]).any(1).sum()
            if return_logits:
                all_logits.append(logits)
    model.train(was_training)
    n = len(data)
    out = {"acc": correct.item() / n, "nll": nll.item() / n, "top5": top5.item() / n, "n": n}
    if return_logits:
        out["logits"] = torch.cat(all_logits)
    return out


def fit(model: nn.Module, train: ImageData, val: ImageData | None = None, config: TrainConfig | None = None, *,
        step=None, device=None, checkpoint: str | Path | None = None, progress: bool = True,
        desc: str | None = None, check_every: int = 50, on_epoch=None, **settings) -> History:
    """Train ``model`` on ``train`` (validating on ``val`` each epoch) and return its :class:`History`.

    ``config`` is the run's :class:`TrainConfig` (or give its fields as keyword ``settings``, not both).
    ``step`` is a custom update (a frozen dataclass, see :func:`step_key`); default
    :class:`CrossEntropyStep` with the config's label smoothing. The run's :class:`FastPath` (bf16 autocast,
    channels-last; :func:`fast_path`) is decided once and recorded in every row of the history (``precision``,
    ``channels_last``). With ``checkpoint`` set, the full state (model, optimiser, scheduler, loader RNG,
    history) is saved atomically after every epoch and a run that finds a checkpoint resumes from it; the
    resumed run is identical to an uninterrupted one; ``on_epoch(epoch, model)`` is called after each epoch
    (1-based). A non-finite loss stops training with :class:`NonFiniteLossError`.
    """
    if config is not None and settings:
        raise TypeError(f"fit: give a TrainConfig or its fields, not both (got config and {sorted(settings)})")
    cfg = config if config is not None else TrainConfig(**settings)
    step = step if step is not None else CrossEntropyStep(cfg.label_smoothing)
    cfg = dataclasses.replace(cfg, step=step_key(step)).validate()
    train_step = step
    epochs, batch_size, seed = cfg.epochs, cfg.batch_size, cfg.seed
    device = torch.device(device) if device is not None else default_device()
    seed_everything(seed)
    model.to(device)
    path = fast_path(model, device, cfg.precision, cfg.channels_last, train.shape)
    if path.channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
    step_model = torch.compile(model) if cfg.compile else model
    loader = DeviceLoader(train, batch_size, shuffle=True, augment=cfg.augment, seed=seed, device=device,
                          drop_last=len(train) > batch_size, channels_last=path.channels_last)
    opt = build_optimizer(model, cfg)
    sched, per_step = build_schedule(opt, cfg, len(loader))
    rows: list[dict] = []
    start_epoch = 0
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state["config"] != asdict(cfg):
            raise ValueError(f"Checkpoint {checkpoint} was written for a different configuration "
                             f"({state['config']}); delete it or choose another checkpoint path.")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        loader.load_state_dict({"generator": state["loader_rng"].cpu()})
        rows, start_epoch = state["rows"], state["epoch"]

    name = desc or type(model).__name__
    for epoch in range(start_epoch, epochs):
        model.train()
        sync(device)
        t0 = time.perf_counter()
        # per step only appends (no arithmetic, no host sync); the sums are taken once per epoch
        losses: list[torch.Tensor] = []
        hits: list[torch.Tensor] = []
        sizes: list[int] = []
        terms: dict[str, list[torch.Tensor]] = {}
        has_logits, bad = True, False
        bar = tqdm(loader, desc=f"{name} ep {epoch + 1}/{epochs}", leave=False, disable=not progress,
                   mininterval=1.0)
        with using(path):
            for i, (x, y) in enumerate(bar):
                out = train_step(step_model, opt, x, y, epoch + i / len(loader))
                if per_step:
                    sched.step()
                losses.append(out.loss.detach())
                sizes.append(len(y))
                for term, value in out.terms.items():
                    terms.setdefault(term, []).append(value.detach())
                if out.logits is None:
                    has_logits = False
                else:
                    hits.append((out.logits.detach().argmax(1) == y).sum())
                if (i + 1) % check_every == 0 and not torch.stack(losses[-check_every:]).isfinite().all().item():
                    bad = True
                    break
            sync(device)
            train_s = time.perf_counter() - t0
            weights = torch.tensor(sizes, device=device, dtype=torch.float32)
            loss_sum = (torch.stack(losses).float() * weights).sum()
            bad = bad or not bool(loss_sum.isfinite().item())
            if bad:
                raise NonFiniteLossError(
                    f"Non-finite training loss in epoch {epoch + 1} of {name} (lr={cfg.lr}, "
                    f"optimizer={cfg.optimizer}). Lower the learning rate or add warm-up; check the inputs for NaN. "
                    + (f"The last good state (epoch {epoch}) is in {checkpoint}." if checkpoint else ""))
            n = loader.num_images
            row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": loss_sum.item() / n,
                   "train_acc": torch.stack(hits).sum().item() / n if has_logits and hits else float("nan"),
                   "train_images": n, "train_s": train_s}
            row.update({f"train_{term}": ((torch.stack(v).float() * weights).sum() / n).item()
                        for term, v in terms.items()})
            if val is not None:
                v = evaluate(model, val, device=device)
                row.update(val_loss=v["nll"], val_acc=v["acc"], val_top5=v["top5"])
        if not per_step:
            sched.step(row.get("val_loss", row["train_loss"]))
        row["wall_s"] = time.perf_counter() - t0
        row["images_per_s"] = n / train_s
        row.update(precision=path.precision, channels_last=path.channels_last)
        rows.append(row)
        bar.close()
        if on_epoch is not None:
            on_epoch(epoch + 1, model)
        if checkpoint is not None:
            atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "loader_rng": loader.generator.get_state(),
                               "rows": rows, "epoch": epoch + 1, "config": asdict(cfg)}, checkpoint)
    return History(pd.DataFrame(rows), asdict(cfg))
