"""A dry run of a notebook at any profile (``python -m ibnb run NOTEBOOK --profile gpu --dry-run``), in seconds,
on the CPU: the profile's models at their full size, every training run of the plan for one or two steps.

A preset that cannot run (a width that does not divide into heads, a patch size that does not tile the image, a
dataset that is not on disk, a batch size the code cannot take) fails here, with the run it concerns named,
before anyone pays for a GPU. What the dry run changes, and nothing else:

* **Volume knobs** (:data:`ibnb.book.knobs.VOLUME`: images per class, epochs, seeds, search trials, iteration
  counts, the batch of a throughput benchmark) take the ``smoke`` profile's values; every other knob keeps the
  profile's value, so models, optimisers, batch sizes, grids and image sizes are the profile's own. A test checks
  that every knob on which ``smoke`` and ``gpu`` differ is classified in :mod:`ibnb.book.knobs`, as volume or as
  shape, so a new knob cannot slip through.
* **Every training run** (every call of :func:`ibnb.core.train.fit`, which every cached run goes through) trains one
  epoch on at most :data:`MAX_IMAGES` of its real training images (two steps) and validates on as many; the model
  is built at the profile's size (its forward FLOPs per image are counted and logged).
* **Every model build** that fails names the model and its arguments.

Nothing it produces can be mistaken for a result: the notebook runs from a temporary copy (one extra first cell
installs the two wrappers above) with ``IBNB_RUNS``, ``IBNB_RESULTS`` and the provenance side file in a
temporary folder, and the whole folder is deleted afterwards: no executed page, no results table, no run-cache
entry. Synthesis pages (which train nothing) are skipped.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import nbformat

from ibnb.book.guard import KernelStderr, RunnerError
from ibnb.book.knobs import (AT_LEAST, EVAL_ONLY, SHAPE, UNCOUNTED, VAL_KNOB, VOLUME,  # noqa: F401 (re-exported)
                             estimate_swap)

#: training images (and validation images) a dry-run training run sees: two steps of at most 8
MAX_IMAGES = 16
LOG_VAR = "IBNB_DRY_RUN_LOG"


class DryRunError(RuntimeError):
    """A planned run of the profile cannot run (raised inside the notebook, naming the run)."""


@dataclass
class DryRun:
    """What one notebook's dry run did."""

    stem: str
    profile: str
    runs: list[dict]
    wall_s: float
    params: dict

    def summary(self) -> str:
        models = sorted({r["model"] for r in self.runs})
        return (f"{self.stem}: {self.profile} dry run passed in {self.wall_s:.1f} s: {len(self.runs)} training run(s) "
                f"built at full size and trained {MAX_IMAGES} images each ({', '.join(models) or 'none'}); "
                "nothing was written (no page, no results, no run-cache entry)")


def dry_params(stem: str, profile: str, overrides: dict[str, Any] | None = None,
               swap: set[str] | None = None) -> dict[str, Any]:
    """The papermill parameters of a dry run: the profile, the ``smoke`` values of the knobs in ``swap``
    (default: the notebook's volume knobs), then the caller's overrides (a ``-p`` on the command line wins, so a
    broken knob can be tried on purpose)."""
    from ibnb.book.profiles import _module, _presets_of

    if stem not in VOLUME:
        raise RunnerError(f"{stem}: no dry run is defined for it (it trains nothing, or add it to "
                          "ibnb.book.dryrun.VOLUME)")
    presets = _presets_of(_module(stem), stem)
    swap = VOLUME[stem] if swap is None else swap
    params = {"profile": profile, **{k: presets["smoke"][k] for k in sorted(swap)}}
    if stem in AT_LEAST:
        merged = {**presets[profile], **params, **(overrides or {})}
        params.update({k: v for k, v in AT_LEAST[stem](merged).items() if k in swap})
    return {**params, **(overrides or {})}


# ----------------------------------------------------------------------------- inside the kernel
def _short(kw: dict) -> str:
    kw = {k: v for k, v in kw.items() if k not in ("num_classes", "in_channels", "image_size")}
    return json.dumps(kw, default=str, sort_keys=True)


def forward_flops(model, input_shape) -> float | None:
    """Forward FLOPs per image of ``model`` on ``input_shape`` (``torch.utils.flop_counter``, on a copy in eval
    mode, two random images); None when the model's forward cannot be counted that way."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        m = copy.deepcopy(model).cpu().eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            m(torch.randn(2, *input_shape))
        return counter.get_total_flops() / 2
    except Exception:  # a model whose forward needs more than images (or a custom layer the counter misses)
        return None


def make_dry_fit(real_fit, log_path: Path | None, max_images: int = MAX_IMAGES):
    """A stand-in for :func:`ibnb.core.train.fit` that trains one epoch on at most ``max_images`` of the run's
    images (two steps), validates on as many, never checkpoints, and appends the run's plan to ``log_path`` (one
    JSON line: model, training images, epochs, images it would see, parameters, forward and update FLOPs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ibnb.core.train import TrainConfig

    fields = TrainConfig.__dataclass_fields__

    def fit(model, train, val=None, config=None, *, step=None, device=None, checkpoint=None, progress=True,
            desc=None, **settings):
        cfg = config if config is not None else TrainConfig(**{k: v for k, v in settings.items() if k in fields})
        rest = {k: v for k, v in settings.items() if k not in fields}
        label = (f"{desc or type(model).__name__} ({type(model).__name__}, n_train={len(train)}, "
                 f"epochs={cfg.epochs}, batch_size={cfg.batch_size}, seed={cfg.seed}, augment={cfg.augment})")
        n = min(len(train), max_images)
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[:n]
        small_val = val.subset(torch.arange(min(len(val), max_images))) if val is not None else None
        small_cfg = dataclasses.replace(cfg, epochs=1, batch_size=max(2, min(cfg.batch_size, (n + 1) // 2)))
        record = {"model": desc or type(model).__name__, "module": type(model).__name__, "n_train": len(train),
                  "shape": list(train.shape), "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                  "images_seen": cfg.epochs * len(train), "parameters": sum(p.numel() for p in model.parameters()),
                  "forward_flops": forward_flops(model, train.shape), "step": step.__class__.__name__ if step else None}
        counter = FlopCounterMode(display=False)
        t0 = time.perf_counter()
        initial = copy.deepcopy(model.state_dict())
        try:
            with counter:
                hist = real_fit(model, train.subset(pick), small_val, small_cfg, step=step, device=device,
                                checkpoint=None, progress=False, desc=desc, **rest)
        except Exception:  # an update that needs its full batch (W-MSE whitens batch_size > dim samples):
            model.load_state_dict(initial)  # one step at the run's own batch size decides
            n = min(len(train), cfg.batch_size)
            pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[:n]
            small_cfg = dataclasses.replace(cfg, epochs=1)
            counter = FlopCounterMode(display=False)
            try:
                with counter:
                    hist = real_fit(model, train.subset(pick), small_val, small_cfg, step=step, device=device,
                                    checkpoint=None, progress=False, desc=desc, **rest)
            except Exception as e:
                raise DryRunError(f"dry run: training run {label} failed: {type(e).__name__}: {e}") from e
            record["full_batch"] = True
        record["wall_s"] = round(time.perf_counter() - t0, 3)
        # the counted update of n images (its real step: SAM's second pass, both SSL views, Sparse VD's
        # variance path), less the validation forward passes fit made on small_val
        val_flops = (record["forward_flops"] or 0.0) * (len(small_val) if small_val is not None else 0)
        record["train_flops_per_image"] = max(0.0, counter.get_total_flops() - val_flops) / n
        record["n_val"] = len(val) if val is not None else 0
        if log_path is not None:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        return hist

    return fit


def swap_in(swaps) -> Any:
    """Replace ``(module, name, stand_in)`` functions in their module and in every loaded ``ibnb`` module that
    bound the real one with ``from ... import``; returns a function that puts the real ones back."""
    pairs = [(getattr(module, name), stand_in, name) for module, name, stand_in in swaps]

    def rebind(forward: bool) -> None:
        for mod_name, module in list(sys.modules.items()):
            if (mod_name == "ibnb" or mod_name.startswith("ibnb.")) and module is not None:
                for real, fake, attr in pairs:
                    old, new = (real, fake) if forward else (fake, real)
                    if getattr(module, attr, None) is old:
                        setattr(module, attr, new)

    rebind(True)
    return lambda: rebind(False)


def install(log: str | os.PathLike | None = None, max_images: int = MAX_IMAGES):
    """Wrap ``ibnb.core.train.fit`` (:func:`make_dry_fit`) and ``ibnb.core.models.create_model`` (a failure names
    the model and its arguments) for a dry run; returns a function that puts the real ones back. Called by the
    extra first cell of the dry-run copy of a notebook, which runs before the notebook imports anything else."""
    import ibnb.core.models as models_mod
    import ibnb.core.train as train_mod

    real_create = models_mod.create_model

    def create_model(name, **kw):
        try:
            return real_create(name, **kw)
        except Exception as e:
            raise DryRunError(f"dry run: building model {name!r} with {_short(kw)} failed: "
                              f"{type(e).__name__}: {e}") from e

    fit = make_dry_fit(train_mod.fit, Path(log or os.environ[LOG_VAR]), max_images)
    swaps = [(train_mod, "fit", fit), (models_mod, "create_model", create_model)]
    if os.environ.get(ESTIMATE_VAR) == "1":
        import ibnb.core.metrics as metrics_mod

        swaps.append((metrics_mod, "extract_features", make_estimate_features(metrics_mod.extract_features)))
    return swap_in(swaps)


#: set to ``1`` by the cost estimate: evaluation features of large sets are then stand-ins (:func:`make_estimate_features`)
ESTIMATE_VAR = "IBNB_DRY_RUN_ESTIMATE"
#: a cost estimate computes the frozen features of a set this large or smaller in full
ESTIMATE_FEATURES_MAX = 2048


def make_estimate_features(real_extract, max_images: int = ESTIMATE_FEATURES_MAX):
    """A stand-in for :func:`ibnb.core.metrics.extract_features` in a cost estimate: a set of more than
    ``max_images`` images gets the real features of its first :data:`MAX_IMAGES`, repeated to the set's length
    (the shape every probe downstream expects). Chapter 07 extracts the features of its 50,000-image pretraining
    set for every encoder at ``gpu``: an hour of CPU for evaluation the estimate does not count."""
    import torch

    def extract_features(encoder, data, **kw):
        if len(data) <= max_images:
            return real_extract(encoder, data, **kw)
        head = real_extract(encoder, data.subset(torch.arange(MAX_IMAGES)), **kw)
        return head.repeat((len(data) + MAX_IMAGES - 1) // MAX_IMAGES, 1)[:len(data)]

    return extract_features


INSTALL_CELL = "import ibnb.book.dryrun as _ibnb_dry_run\n_ibnb_dry_run.install()  # dry run: see ibnb.book.dryrun"


# ----------------------------------------------------------------------------- the runner side
def execute_copy(src: Path, params: dict[str, Any], install_cell: str, *, env: dict[str, str], cwd: Path, what: str,
                 kernel: str = "python3", progress: bool = False, collect=None):
    """Execute a temporary copy of ``src`` with ``install_cell`` first and ``env`` set (``{tmp}`` in a value is the
    temporary folder), the kernel's stderr kept off the terminal; return ``collect(tmp)`` (None without it) before
    the folder is deleted. A failing cell or a dead kernel raises :class:`RunnerError` naming ``what``."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    nb = nbformat.read(src, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(install_cell))
    tmp = Path(tempfile.mkdtemp(prefix=f"ibnb-copy-{src.stem}-"))
    env = {k: v.format(tmp=tmp) for k, v in env.items()}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    redirect = KernelStderr(tmp / "kernel-stderr.log")
    given = f"\n  Parameters: {json.dumps(params, default=str)}"
    try:
        nbformat.write(nb, tmp / src.name)
        try:
            papermill.execute_notebook(str(tmp / src.name), str(tmp / "out.ipynb"), parameters=params,
                                       kernel_name=kernel, cwd=str(cwd), progress_bar=progress)
        except PapermillExecutionError as err:
            first = err.source.strip().splitlines()[0][:70]
            raise RunnerError(f"{src.stem}: {what} failed in cell {err.exec_count} ({first!r}): "
                              f"{err.ename}: {err.evalue}{given}") from None
        except Exception as err:  # the kernel died (out of memory, most often) or could not start
            raise RunnerError(f"{src.stem}: {what} stopped: {type(err).__name__}: {err} (a kernel that dies has "
                              f"most often run out of memory){given}") from None
        return collect(tmp) if collect is not None else None
    finally:
        redirect.restore()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


def _read_log(tmp: Path) -> list[dict]:
    log = tmp / "runs.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def dry_run_notebook(src: Path, *, profile: str = "gpu", overrides: dict[str, Any] | None = None, cwd: Path,
                     kernel: str = "python3", progress: bool = False, swap: set[str] | None = None,
                     estimate: bool = False) -> DryRun:
    """Execute ``src`` as a dry run at ``profile`` in a temporary folder that is deleted afterwards; raise
    :class:`RunnerError` naming the failing cell (and, from inside it, the run) when a planned run cannot run.
    ``swap``: the knobs taken from ``smoke`` (default: the volume knobs; see :func:`dry_params`); ``estimate``:
    for the cost estimate (large evaluation feature sets are stand-ins, :func:`make_estimate_features`)."""
    from ibnb.book.runner import check_params

    params = dry_params(src.stem, profile, overrides, swap)
    check_params(src, params)
    env = {LOG_VAR: "{tmp}/runs.jsonl", "IBNB_RUNS": "{tmp}/runs", "IBNB_RESULTS": "{tmp}/results",
           "IBNB_PROVENANCE_FILE": "{tmp}/provenance.json", "IBNB_OPERATOR_LOG": "{tmp}/operator.log",
           ESTIMATE_VAR: "1" if estimate else "0"}
    t0 = time.perf_counter()
    runs = execute_copy(src, params, INSTALL_CELL, env=env, cwd=cwd, what=f"the {profile} dry run", kernel=kernel,
                        progress=progress, collect=_read_log)
    return DryRun(src.stem, profile, runs, time.perf_counter() - t0, params)


def dry_run_notebooks(names: Sequence[str], *, profile: str = "gpu", overrides: dict[str, Any] | None = None,
                      paths=None, echo: bool = True) -> list[DryRun]:
    """Dry-run every selected notebook that trains something (default: all); a failure is reported and the next
    notebook tried, and a :class:`RunnerError` at the end lists every notebook that failed."""
    from ibnb.book.runner import Paths, find_notebooks

    paths = paths or Paths.for_repo()
    out, failed = [], []
    for src in find_notebooks(names, paths.notebooks):
        if src.stem not in VOLUME:
            if echo:
                print(f"{src.stem}: skipped (a synthesis page: it trains nothing)", flush=True)
            continue
        if echo:
            print(f"{src.stem}: {profile} dry run ...", flush=True)
        try:
            result = dry_run_notebook(src, profile=profile, overrides=overrides, cwd=paths.repo)
        except RunnerError as err:
            failed.append(str(err))
            if echo:
                print(f"error: {err}", file=sys.stderr, flush=True)
            continue
        if echo:
            print(result.summary(), flush=True)
        out.append(result)
    if failed:
        raise RunnerError(f"the {profile} dry run failed for {len(failed)} notebook(s):\n" + "\n".join(failed))
    return out
