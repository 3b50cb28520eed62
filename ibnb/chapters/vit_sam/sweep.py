"""Chapter 08's runs: the SAM sweep, batch operations, sharpness measurements, attention maps and the search.

- :func:`run_main` — for a CNN and a ViT, for each base optimiser of ``bases`` (AdamW first, then SGD): the base
  optimiser for ``epochs`` epochs, SAM on top of it at ρ = ``sharp_rho`` and ASAM at ``asam_rho`` (when > 0);
  for the first base also ``2·epochs`` epochs (the same number of gradient evaluations as SAM) and SAM at every
  other ρ of ``rhos``. The base runs and SAM at ``sharp_rho`` get ``seeds`` seeds; ASAM and the other radii the
  first ``extra_seeds`` (a budget knob: fewer seeds leave their rows descriptive);
- :func:`run_mixing` — Mixup / Cutout with SAM(ρ=``mix_rho``) for ``mix_model`` (``seeds`` seeds) and with
  AdamW alone (``extra_seeds``);
- :func:`run_sharpness` — PGA sharpness, top Hessian eigenvalue and a filter-normalised 1-D loss slice of the
  AdamW and SAM(ρ=``sharp_rho``) solutions of the main sweep, at the end of training and **at matched training
  loss** (the run that ends lower is measured at its epoch snapshot whose loss is closest to the other's end);
- :func:`run_rollout` — ViT attention-rollout maps next to the spatial-attention map of a CNN+SA;
- :func:`ibnb.chapters.vit_sam.search.run_search` — per model of ``search_models``, Optuna's seeded TPE over
  (lr, weight decay, ρ) on the validation split, and the chosen setting re-run with every seed
  (:func:`~ibnb.chapters.vit_sam.search.run_chosen`);
- :func:`size_sweep` — ViT vs CNN across training-set sizes, read from chapter 01's results table (not retrained).

Every run validates each epoch on the validation split carved from the training set, so its results row carries
the book's convergence check (``converged`` / ``convergence``); with ``probe``, each cell (model, method) whose
runs fail its tests 1–2 gets one budget-halving probe (:func:`probe_cells`, :mod:`ibnb.core.probes`). With ``workers`` > 1 (CPU) the independent runs
are first trained ``workers`` at a time in worker processes (:mod:`ibnb.core.parallel`) and then loaded here.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ibnb.book.results import read_results, results_path, write_results
from ibnb.chapters.vit_sam.presets import ARCH_NOTEBOOK, LABELS, NOTEBOOK
from ibnb.chapters.vit_sam.rollout import vit_rollout_maps
from ibnb.chapters.vit_sam.sam import SAMStep
from ibnb.chapters.vit_sam.sharpness import loss_slice, pga_sharpness, top_hessian_eigenvalue
from ibnb.core.attention_maps import spatial_attention_maps
from ibnb.core.augment import DeviceLoader
from ibnb.core.batch_ops import MixStep, make_mix
from ibnb.core.data import ImageData, class_balanced_subset
from ibnb.core.models import count_parameters
from ibnb.core.parallel import Run, prefetch
from ibnb.core.probes import probe_failing_cells
from ibnb.core.reference import splits as reference_splits
from ibnb.core.runs import load_snapshots, train_or_load
from ibnb.core.train import TrainConfig, device_name, evaluate

if TYPE_CHECKING:
    from ibnb.chapters.vit_sam.search import Search

ADAMW, ADAMW2 = "adamw", "adamw ×2 epochs"
MATCHED = "matched loss"  # the ``stage`` of sharpness rows measured at matched training loss ("end": final weights)


def method_name(rho: float, adaptive: bool = False, mix: str = "none", base: str = "adamw") -> str:
    """The label of a run: ``adamw``, ``sam ρ=0.05``, ``asam ρ=1`` on AdamW; ``sgd``, ``sgd+sam ρ=0.05`` on SGD;
    ``+mixup`` / ``+cutout`` appended."""
    name = base if rho == 0 else f"{'asam' if adaptive else 'sam'} ρ={rho:g}"
    name = name if base == "adamw" or rho == 0 else f"{base}+{name}"
    return name if mix == "none" else f"{name}+{mix}"


def base_settings(p: dict, base: str) -> dict:
    """The TrainConfig fields of a base optimiser: AdamW at (``lr``, ``weight_decay``), SGD at (``sgd_lr``,
    ``sgd_weight_decay``) with Nesterov momentum 0.9."""
    if base == "adamw":
        return dict(optimizer="adamw", lr=p["lr"], weight_decay=p["weight_decay"])
    return dict(optimizer="sgd", lr=p["sgd_lr"], weight_decay=p["sgd_weight_decay"], momentum=0.9)


def splits(p: dict) -> tuple[ImageData, ImageData, ImageData]:
    """(training pool, validation carved from the training set, test subset)."""
    return reference_splits(p["dataset"], p["val_per_class"], p["test_per_class"])


def train_subset(pool: ImageData, p: dict, seed: int) -> ImageData:
    """The seed's class-balanced training set (``n_per_class`` 0 = the whole pool)."""
    return pool if not p["n_per_class"] else class_balanced_subset(pool, p["n_per_class"], seed=seed)


def make_step(p: dict, data: ImageData, seed: int, rho: float = 0.0, adaptive: bool = False, mix: str = "none"):
    """The train step of a run: :class:`SAMStep` for ρ > 0, :class:`MixStep` for a batch op alone, else the
    default cross-entropy step (``None``)."""
    op = make_mix(mix, seed=seed, num_classes=data.num_classes, mixup_alpha=p["mixup_alpha"],
                  cutout_size=p["cutout_size"], mean=data.mean, std=data.std)
    if rho > 0:
        return SAMStep(rho=float(rho), adaptive=adaptive, mix=op)
    return MixStep(mix=op) if op is not None else None


def run_spec(p: dict, model: str, data: ImageData, val: ImageData | None, *, seed: int, epochs: int,
             rho: float = 0.0, adaptive: bool = False, mix: str = "none", snapshots: bool = False,
             **overrides) -> Run:
    """One run's arguments (``overrides``: other TrainConfig fields, e.g. a base optimiser's ``lr``)."""
    cfg = TrainConfig.from_params(p, epochs=epochs, seed=seed,
                                  **{"precision": p["model_precision"].get(model, "auto"), **overrides})
    return Run(model, data, val, cfg, p["model_kw"][model], make_step(p, data, seed, rho, adaptive, mix), snapshots)


def train(p: dict, model: str, data: ImageData, val: ImageData | None, *, seed: int, epochs: int,
          rho: float = 0.0, adaptive: bool = False, mix: str = "none", trained: set = frozenset(), **overrides):
    """One run through the run cache. Returns ``(model, history, cached)``; a run in ``trained`` (folders that
    :func:`~ibnb.core.parallel.prefetch` trained for this execution) counts as not cached."""
    r = run_spec(p, model, data, val, seed=seed, epochs=epochs, rho=rho, adaptive=adaptive, mix=mix, **overrides)
    net, hist, cached = train_or_load(r.model_name, data, val, config=r.config, model_kw=r.model_kw, step=r.step,
                                      device=p["device"], progress=False, snapshots=r.snapshots)
    return net, hist, cached and (not trained or r.folder().name not in trained)


def _row(p, experiment, model_name, net, data, seed, epochs, hist, ev, cached, **extra) -> dict:
    steps = epochs * max(1, len(data) // p["batch_size"])
    last = hist.last
    return dict(experiment=experiment, model=model_name, dataset=p["dataset"], n_train=len(data), seed=seed,
                epochs=epochs, params=count_parameters(net), test_acc=ev["acc"], test_nll=ev["nll"],
                device=device_name(next(net.parameters()).device), steps=steps,
                grad_evals=steps * (2 if extra.get("rho", 0.0) > 0 else 1), n_test=ev["n"], cached=cached,
                train_loss=last.get("train_loss", math.nan), val_acc=last.get("val_acc", math.nan),
                **hist.columns(), **extra)


def main_configs(p: dict) -> list[dict]:
    """The sweep's methods per base optimiser (see the module docstring), each with the seeds it runs."""
    E, full, extra = p["epochs"], range(p["seeds"]), range(min(p["extra_seeds"], p["seeds"]))
    configs = []
    for i, b in enumerate(p["bases"]):
        sam = dict(rho=float(p["sharp_rho"]), epochs=E, budget="equal steps", base=b, seeds=full)
        configs += [dict(rho=0.0, epochs=E, budget="equal steps", base=b, seeds=full), sam]
        if i == 0:
            configs.append(dict(method=method_name(0.0, base=b) + " ×2 epochs", rho=0.0, epochs=2 * E,
                                budget="equal gradients", base=b, seeds=full))
            configs += [dict(rho=float(r), epochs=E, budget="equal steps", base=b, seeds=extra) for r in p["rhos"]
                        if r != p["sharp_rho"]]
        if p["asam_rho"] > 0:
            configs.append(dict(rho=float(p["asam_rho"]), adaptive=True, epochs=E, budget="equal steps", base=b,
                                seeds=extra))
    for c in configs:
        c.setdefault("method", method_name(c["rho"], c.get("adaptive", False), base=c["base"]))
        c["snapshots"] = c["base"] == p["bases"][0] and c["epochs"] == E and c["rho"] in (0.0, p["sharp_rho"]) \
            and not c.get("adaptive", False)  # the pair the sharpness-at-matched-loss comparison reads
    return configs


def _main_runs(p: dict, pool: ImageData, val: ImageData):
    """``(seed, data, config, kwargs of train)`` of every main-sweep run."""
    for seed in range(p["seeds"]):
        data = train_subset(pool, p, seed)
        for m in p["models"]:
            for c in main_configs(p):
                if seed in c["seeds"]:
                    yield seed, data, m, c, dict(seed=seed, epochs=c["epochs"], rho=c["rho"],
                                                 adaptive=c.get("adaptive", False), snapshots=c["snapshots"],
                                                 **base_settings(p, c["base"]))


def _mix_runs(p: dict, pool: ImageData):
    """``(seed, data, mix, rho)``: each batch op with SAM for every seed, with AdamW alone for ``extra_seeds``."""
    for seed in range(p["seeds"]):
        data = train_subset(pool, p, seed)
        for mix in p["mixes"]:
            for rho in (0.0, float(p["mix_rho"])) if seed < p["extra_seeds"] else (float(p["mix_rho"]),):
                yield seed, data, mix, rho


def main_specs(p: dict, pool: ImageData, val: ImageData) -> list[Run]:
    """The :class:`~ibnb.core.parallel.Run` of every main-sweep run, in :func:`run_main`'s row order."""
    return [run_spec(p, m, data, val, **kw) for _, data, m, _, kw in _main_runs(p, pool, val)]


def mix_specs(p: dict, pool: ImageData, val: ImageData) -> list[Run]:
    """The :class:`~ibnb.core.parallel.Run` of every batch-operation run, in :func:`run_mixing`'s row order."""
    return [run_spec(p, p["mix_model"], data, val, seed=seed, epochs=p["epochs"], rho=rho, mix=mix,
                     **base_settings(p, "adamw")) for seed, data, mix, rho in _mix_runs(p, pool)]


def planned_runs(p: dict, pool: ImageData, val: ImageData) -> list[Run]:
    """Every run of the main sweep, the batch operations and the attention maps, the costliest first (SAM's
    two gradients, then the runs with twice the epochs), for :func:`~ibnb.core.parallel.prefetch`."""
    specs = main_specs(p, pool, val) + mix_specs(p, pool, val)
    specs.append(run_spec(p, p["sa_model"], train_subset(pool, p, 0), val, seed=0, epochs=p["epochs"],
                          **base_settings(p, "adamw")))
    return _costliest_first(specs)


def _costliest_first(specs: list[Run]) -> list[Run]:
    return sorted(specs, key=lambda r: -r.config.epochs * (2 if r.step is not None and hasattr(r.step, "rho") else 1))


def probe_cells(p: dict, frame: pd.DataFrame, specs: list[Run]) -> pd.DataFrame:
    """``frame`` (one row per run of ``specs``) after one budget-halving probe per cell (experiment, model,
    method) whose runs fail tests 1–2 of the convergence check (:mod:`ibnb.core.probes`): the probe is trained for
    the cell's first failing seed, that run's convergence columns are re-checked with it (test 3), and the cell's
    other failing seeds take its verdict if it passed. Adds ``probed``; ``probe`` = False returns ``frame`` as is
    (``probed`` all False)."""
    rows = frame.to_dict("records")
    for r in rows:
        r["probed"] = False
    if not p["probe"] or not rows:
        return pd.DataFrame(rows)
    cells = [(r["experiment"], r["model"], r["method"]) for r in rows]
    probe_failing_cells(rows, cells, specs, p["workers"], p["device"], order=_costliest_first)
    return pd.DataFrame(rows)


def run_main(p: dict, pool: ImageData, val: ImageData, test: ImageData,
             trained: set = frozenset()) -> tuple[pd.DataFrame, dict, dict]:
    """Every model × method × seed. Returns (rows, histories[(model, method, seed)], models[(model, method, seed)])."""
    rows, hists, nets = [], {}, {}
    for seed, data, m, c, kw in _main_runs(p, pool, val):
        net, hist, cached = train(p, m, data, val, trained=trained, **kw)
        rows.append(_row(p, "sam", m, net, data, seed, c["epochs"], hist, evaluate(net, test), cached,
                         method=c["method"], rho=c["rho"], adaptive=kw["adaptive"], mix="none",
                         budget=c["budget"], base=c["base"], lr=kw["lr"], weight_decay=kw["weight_decay"]))
        hists[m, c["method"], seed], nets[m, c["method"], seed] = hist.frame, net
    return pd.DataFrame(rows), hists, nets


def run_mixing(p: dict, pool: ImageData, val: ImageData, test: ImageData, trained: set = frozenset()) -> pd.DataFrame:
    """Mixup / Cutout × {AdamW, SAM(ρ=mix_rho)} for ``mix_model`` (the runs without a batch op are run_main's)."""
    rows, m = [], p["mix_model"]
    for seed, data, mix, rho in _mix_runs(p, pool):
        net, hist, cached = train(p, m, data, val, seed=seed, epochs=p["epochs"], rho=rho, mix=mix, trained=trained,
                                  **base_settings(p, "adamw"))
        rows.append(_row(p, "mixing", m, net, data, seed, p["epochs"], hist, evaluate(net, test), cached,
                         method=method_name(rho, mix=mix), rho=rho, adaptive=False, mix=mix,
                         budget="equal steps", base="adamw"))
    return pd.DataFrame(rows)


def sharpness_batch(pool: ImageData, p: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``sharp_n`` training images of seed 0's training set (normalised, on ``device``), fixed for every model."""
    data = train_subset(pool, p, 0)
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(123))[:p["sharp_n"]]
    return next(iter(DeviceLoader(data.subset(idx), len(idx), shuffle=False, device=device)))


def _measure(net, x, y, p: dict, seed: int) -> dict:
    s = pga_sharpness(net, x, y, rho=p["sharp_rho"], steps=p["pga_steps"])
    h = top_hessian_eigenvalue(net, x, y, iters=p["hessian_iters"], seed=seed)
    return dict(train_loss=s["loss"], pga_sharpness=s["sharpness"], one_step_sharpness=s["one_step"],
                hessian_top=h["eigenvalue"], hessian_iters=h["iters"])


@torch.no_grad()
def batch_loss(net, x, y) -> float:
    """Cross-entropy (nats) of ``net`` in eval mode on the batch."""
    was = net.training
    net.eval()
    loss = float(torch.nn.functional.cross_entropy(net(x).float(), y))
    net.train(was)
    return loss


def matched_snapshot(net, folder, x, y, target: float) -> tuple[int, float]:
    """``(epoch, loss)`` of the epoch snapshot of the run in ``folder`` whose loss on ``(x, y)`` is closest to
    ``target``; ``net`` is left holding that snapshot's weights."""
    losses = []
    for state in load_snapshots(folder):
        net.load_state_dict(state)
        losses.append(batch_loss(net, x, y))
    best = int(np.argmin(np.abs(np.asarray(losses) - target)))
    net.load_state_dict(load_snapshots(folder)[best])
    return best + 1, losses[best]


def run_sharpness(p: dict, pool: ImageData, val: ImageData, nets: dict,
                  main: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(measurements, slices) per model and seed of AdamW vs SAM ρ=sharp_rho (same steps): PGA sharpness at
    ρ=sharp_rho, top Hessian eigenvalue and the loss along a filter-normalised direction of the final weights
    (``stage`` "end"), and PGA sharpness and top eigenvalue at matched training loss (``stage`` :data:`MATCHED`):
    the run whose final loss on the sharpness batch is lower is measured at its epoch snapshot closest to the
    other run's final loss; the other run enters with its final weights. Rows carry their run's ``converged``."""
    sam, E = method_name(p["sharp_rho"]), p["epochs"]
    alphas = np.linspace(-p["slice_range"], p["slice_range"], p["slice_points"])
    conv = main.set_index(["model", "method", "seed"])["converged"]
    rows, slices = [], []
    for m in p["models"]:
        for seed in range(p["seeds"]):
            pair = {meth: nets.get((m, meth, seed)) for meth in (ADAMW, sam)}
            if any(v is None for v in pair.values()):
                continue
            x, y = sharpness_batch(pool, p, next(pair[ADAMW].parameters()).device)
            end = {}
            for method, net in pair.items():
                end[method] = dict(model=m, method=method, seed=seed, epoch=E, converged=bool(conv[m, method, seed]),
                                   **_measure(net, x, y, p, seed))
                rows.append(dict(stage="end", **end[method]))
                sl = loss_slice(net, x, y, alphas, seed=seed)
                slices += [dict(model=m, method=method, seed=seed, alpha=float(a), loss=float(v))
                           for a, v in zip(alphas, sl)]
            lower = min(end, key=lambda k: end[k]["train_loss"])
            other = sam if lower == ADAMW else ADAMW
            net = copy.deepcopy(pair[lower])
            folder = run_spec(p, m, train_subset(pool, p, seed), val, seed=seed, epochs=E,
                              rho=0.0 if lower == ADAMW else float(p["sharp_rho"]), snapshots=True,
                              **base_settings(p, "adamw")).folder()
            epoch, _ = matched_snapshot(net, folder, x, y, end[other]["train_loss"])
            rows.append(dict(stage=MATCHED, **end[other]))
            rows.append(dict(stage=MATCHED, model=m, method=lower, seed=seed, epoch=epoch,
                             converged=end[lower]["converged"], **_measure(net, x, y, p, seed)))
    return pd.DataFrame(rows), pd.DataFrame(slices)


def run_rollout(p: dict, pool: ImageData, val: ImageData, test: ImageData, nets: dict) -> dict:
    """Rollout maps of the seed-0 ViT (AdamW and SAM ρ=sharp_rho) and the mean spatial-attention map of a CNN+SA
    (``sa_model``) trained with AdamW on the same seed-0 training set, on ``rollout_images`` test images (one per
    class, seeded). Maps are rescaled to [0, 1] per image; ``sa_range`` keeps the raw (sigmoid) range."""
    sa, _, _ = train(p, p["sa_model"], train_subset(pool, p, 0), val, seed=0, epochs=p["epochs"],
                     **base_settings(p, "adamw"))
    images = class_balanced_subset(test, 1, seed=7).subset(torch.arange(p["rollout_images"]))
    out = {"images": images, "maps": {}, "pred": {}}
    for method in (ADAMW, method_name(p["sharp_rho"])):
        maps, logits = vit_rollout_maps(nets["vit", method, 0], images)
        out["maps"][f"ViT {method}"], out["pred"][f"ViT {method}"] = maps, logits.argmax(1)
    key = LABELS.get(p["sa_model"], p["sa_model"])
    stages, logits = spatial_attention_maps(sa, images)
    raw = stages.mean(dim=1, keepdim=True)
    lo, hi = raw.amin(dim=(1, 2, 3), keepdim=True), raw.amax(dim=(1, 2, 3), keepdim=True)
    out["sa_range"] = (float(lo.mean()), float(hi.mean()))
    out["maps"][key], out["pred"][key] = (raw - lo) / (hi - lo + 1e-12), logits.argmax(1)
    out["sa_test_acc"] = evaluate(sa, test)["acc"]
    return out


def size_sweep(profile: str, models=("cnn", "vit", "resnet18")) -> pd.DataFrame | None:
    """Chapter 01's runs (original pixels) for ``models`` at ``profile``, or None when its table is missing."""
    if not results_path(ARCH_NOTEBOOK, profile).exists():
        return None
    df = read_results(ARCH_NOTEBOOK, profile)
    df = df[df["model"].isin(models) & ~df["permuted"].astype(bool)]
    return df if len(df) else None


@dataclass
class Outcome:
    """Everything chapter 08 measured."""

    main: pd.DataFrame
    hists: dict
    mix: pd.DataFrame
    sharp: pd.DataFrame
    slices: pd.DataFrame
    rollout: dict
    searches: "dict[str, Search]"  # per model of search_models
    chosen: pd.DataFrame
    arch: pd.DataFrame | None
    n_train: int
    n_val: int
    n_test: int


def run_all(p: dict, progress: bool = False) -> Outcome:
    """Train or load every run and write ``book/results/08_vit_sam/<profile>.csv``."""
    from ibnb.chapters.vit_sam.search import run_chosen, run_searches  # search.py builds on this module's train()

    pool, val, test = splits(p)
    trained = prefetch(planned_runs(p, pool, val), p["workers"], p["device"])
    main, hists, nets = run_main(p, pool, val, test, trained)
    main = probe_cells(p, main, main_specs(p, pool, val))
    mix = probe_cells(p, run_mixing(p, pool, val, test, trained), mix_specs(p, pool, val))
    sharp, slices = run_sharpness(p, pool, val, nets, main)
    ro = run_rollout(p, pool, val, test, nets)
    searches = run_searches(p, pool, val)
    chosen = run_chosen(p, pool, val, test, searches)
    write_results(pd.concat([main, mix, chosen], ignore_index=True), NOTEBOOK, p["profile"])
    return Outcome(main, hists, mix, sharp, slices, ro, searches, chosen, size_sweep(p["arch_profile"]),
                   len(train_subset(pool, p, 0)), len(val), len(test))
