"""Chapter 08's runs: the SAM sweep, batch operations, sharpness measurements, attention maps and the search.

- :func:`run_main` — for a CNN and a ViT, ``seeds`` seeds: the base optimiser (AdamW) for ``epochs`` epochs and
  for ``2·epochs`` epochs (the same number of gradient evaluations as SAM), and SAM (base AdamW) for ``epochs``
  epochs at every ρ in ``rhos`` (plus ASAM at ``asam_rho`` when > 0);
- :func:`run_mixing` — Mixup / Cutout × {AdamW, SAM(ρ=``mix_rho``)} for ``mix_model``;
- :func:`run_sharpness` — PGA sharpness, top Hessian eigenvalue and a filter-normalised 1-D loss slice of the
  AdamW and SAM(ρ=``sharp_rho``) solutions of the main sweep;
- :func:`run_rollout` — ViT attention-rollout maps next to the spatial-attention map of a CNN+SA;
- :func:`ibnb.chapters.vit_sam.search.run_search` — Optuna's seeded TPE over (lr, weight decay, ρ) on the
  validation split, and the chosen setting re-run with every seed (:func:`~ibnb.chapters.vit_sam.search.run_chosen`);
- :func:`size_sweep` — ViT vs CNN across training-set sizes, read from chapter 01's results table (not retrained).

Every run validates each epoch on the validation split carved from the training set, so its results row carries
the book's convergence check (``converged`` / ``convergence``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ibnb.book.results import read_results, results_path, write_results
from ibnb.chapters.vit_sam.mixing import make_mix
from ibnb.chapters.vit_sam.presets import ARCH_NOTEBOOK, LABELS, NOTEBOOK
from ibnb.chapters.vit_sam.rollout import vit_rollout_maps
from ibnb.chapters.vit_sam.sam import MixStep, SAMStep
from ibnb.chapters.vit_sam.sharpness import loss_slice, pga_sharpness, top_hessian_eigenvalue
from ibnb.core.attention_maps import spatial_attention_maps
from ibnb.core.augment import DeviceLoader
from ibnb.core.data import ImageData, class_balanced_subset
from ibnb.core.models import count_parameters
from ibnb.core.reference import splits as reference_splits
from ibnb.core.runs import train_or_load
from ibnb.core.train import TrainConfig, device_name, evaluate

if TYPE_CHECKING:
    from ibnb.chapters.vit_sam.search import Search

ADAMW, ADAMW2 = "adamw", "adamw ×2 epochs"


def method_name(rho: float, adaptive: bool = False, mix: str = "none") -> str:
    """The label of a run: ``adamw``, ``sam ρ=0.05``, ``asam ρ=1``; ``+mixup`` / ``+cutout`` appended."""
    base = ADAMW if rho == 0 else f"{'asam' if adaptive else 'sam'} ρ={rho:g}"
    return base if mix == "none" else f"{base}+{mix}"


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


def train(p: dict, model: str, data: ImageData, val: ImageData | None, *, seed: int, epochs: int,
          rho: float = 0.0, adaptive: bool = False, mix: str = "none", **overrides):
    """One run through the run cache (``overrides``: other TrainConfig fields, e.g. ``lr``). Returns
    ``(model, history, cached)``."""
    cfg = TrainConfig.from_params(p, epochs=epochs, seed=seed, **overrides)
    return train_or_load(model, data, val, config=cfg, model_kw=p["model_kw"][model],
                         step=make_step(p, data, seed, rho, adaptive, mix), device=p["device"], progress=False)


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
    """The sweep's methods: AdamW at equal steps and at equal gradient evaluations, SAM at every ρ, ASAM."""
    E = p["epochs"]
    configs = [dict(method=ADAMW, rho=0.0, epochs=E, budget="equal steps"),
               dict(method=ADAMW2, rho=0.0, epochs=2 * E, budget="equal gradients")]
    configs += [dict(method=method_name(r), rho=float(r), epochs=E, budget="equal steps") for r in p["rhos"]]
    if p["asam_rho"] > 0:
        configs.append(dict(method=method_name(p["asam_rho"], True), rho=float(p["asam_rho"]), adaptive=True,
                            epochs=E, budget="equal steps"))
    return configs


def run_main(p: dict, pool: ImageData, val: ImageData, test: ImageData) -> tuple[pd.DataFrame, dict, dict]:
    """Every model × method × seed. Returns (rows, histories[(model, method, seed)], models[(model, method, seed)])."""
    rows, hists, nets = [], {}, {}
    for seed in range(p["seeds"]):
        data = train_subset(pool, p, seed)
        for m in p["models"]:
            for c in main_configs(p):
                adaptive = c.get("adaptive", False)
                net, hist, cached = train(p, m, data, val, seed=seed, epochs=c["epochs"], rho=c["rho"],
                                          adaptive=adaptive)
                rows.append(_row(p, "sam", m, net, data, seed, c["epochs"], hist, evaluate(net, test), cached,
                                 method=c["method"], rho=c["rho"], adaptive=adaptive, mix="none",
                                 budget=c["budget"]))
                hists[m, c["method"], seed], nets[m, c["method"], seed] = hist.frame, net
    return pd.DataFrame(rows), hists, nets


def run_mixing(p: dict, pool: ImageData, val: ImageData, test: ImageData) -> pd.DataFrame:
    """Mixup / Cutout × {AdamW, SAM(ρ=mix_rho)} for ``mix_model`` (the runs without a batch op are run_main's)."""
    rows, m = [], p["mix_model"]
    for seed in range(p["seeds"]):
        data = train_subset(pool, p, seed)
        for mix in p["mixes"]:
            for rho in (0.0, float(p["mix_rho"])):
                net, hist, cached = train(p, m, data, val, seed=seed, epochs=p["epochs"], rho=rho, mix=mix)
                rows.append(_row(p, "mixing", m, net, data, seed, p["epochs"], hist, evaluate(net, test), cached,
                                 method=method_name(rho, mix=mix), rho=rho, adaptive=False, mix=mix,
                                 budget="equal steps"))
    return pd.DataFrame(rows)


def sharpness_batch(pool: ImageData, p: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``sharp_n`` training images of seed 0's training set (normalised, on ``device``), fixed for every model."""
    data = train_subset(pool, p, 0)
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(123))[:p["sharp_n"]]
    return next(iter(DeviceLoader(data.subset(idx), len(idx), shuffle=False, device=device)))


def run_sharpness(p: dict, pool: ImageData, nets: dict, main: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(measurements, slices) per model, seed and method (AdamW vs SAM ρ=sharp_rho, same steps): PGA sharpness at
    ρ=sharp_rho, top Hessian eigenvalue, the loss along a filter-normalised direction. Each measurement row
    carries its run's ``converged`` flag."""
    sam = method_name(p["sharp_rho"])
    alphas = np.linspace(-p["slice_range"], p["slice_range"], p["slice_points"])
    conv = main.set_index(["model", "method", "seed"])["converged"]
    rows, slices = [], []
    for (m, method, seed), net in nets.items():
        if method not in (ADAMW, sam):
            continue
        x, y = sharpness_batch(pool, p, next(net.parameters()).device)
        s = pga_sharpness(net, x, y, rho=p["sharp_rho"], steps=p["pga_steps"])
        h = top_hessian_eigenvalue(net, x, y, iters=p["hessian_iters"], seed=seed)
        sl = loss_slice(net, x, y, alphas, seed=seed)
        rows.append(dict(model=m, method=method, seed=seed, train_loss=s["loss"], pga_sharpness=s["sharpness"],
                         one_step_sharpness=s["one_step"], hessian_top=h["eigenvalue"], hessian_iters=h["iters"],
                         converged=bool(conv[m, method, seed])))
        slices += [dict(model=m, method=method, seed=seed, alpha=float(a), loss=float(v)) for a, v in zip(alphas, sl)]
    return pd.DataFrame(rows), pd.DataFrame(slices)


def run_rollout(p: dict, pool: ImageData, val: ImageData, test: ImageData, nets: dict) -> dict:
    """Rollout maps of the seed-0 ViT (AdamW and SAM ρ=sharp_rho) and the mean spatial-attention map of a CNN+SA
    (``sa_model``) trained with AdamW on the same seed-0 training set, on ``rollout_images`` test images (one per
    class, seeded). Maps are rescaled to [0, 1] per image; ``sa_range`` keeps the raw (sigmoid) range."""
    sa, _, _ = train(p, p["sa_model"], train_subset(pool, p, 0), val, seed=0, epochs=p["epochs"])
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
    search: "Search"
    chosen: pd.DataFrame
    arch: pd.DataFrame | None
    n_train: int
    n_val: int
    n_test: int


def run_all(p: dict, progress: bool = False) -> Outcome:
    """Train or load every run and write ``book/results/08_vit_sam/<profile>.csv``."""
    pool, val, test = splits(p)
    main, hists, nets = run_main(p, pool, val, test)
    mix = run_mixing(p, pool, val, test)
    sharp, slices = run_sharpness(p, pool, nets, main)
    ro = run_rollout(p, pool, val, test, nets)
    from ibnb.chapters.vit_sam.search import run_chosen, run_search  # search.py builds on this module's train()

    search = run_search(p, pool, val)
    chosen = run_chosen(p, pool, val, test, search)
    write_results(pd.concat([main, mix, chosen], ignore_index=True), NOTEBOOK, p["profile"])
    return Outcome(main, hists, mix, sharp, slices, ro, search, chosen, size_sweep(p["arch_profile"]),
                   len(train_subset(pool, p, 0)), len(val), len(test))
