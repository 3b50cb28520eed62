"""Chapter 08 — weak architectural priors and flat minima: ViT from scratch and Sharpness-Aware Minimization.

Pieces (each a function returning tidy frames):

- :func:`size_sweep_from_architectures` — ViT vs CNN (vs ResNet-18) across training-set sizes, read from the
  architecture chapter's results table (the same runs, not retrained).
- :func:`run_main` — for a CNN and a ViT, ``seeds`` seeds: the base optimiser (AdamW) for ``epochs`` epochs and
  for ``2·epochs`` epochs (the same number of gradient evaluations as SAM, ≈ the same wall time), and SAM (base
  AdamW) for ``epochs`` epochs at every ρ in ``rhos`` (plus ASAM at ``asam_rho`` when > 0).
- :func:`run_mixing` — Mixup / Cutout × {AdamW, SAM(ρ=``mix_rho``)} for ``mix_model``.
- :func:`run_sharpness` — PGA sharpness, top Hessian eigenvalue and a filter-normalised 1-D loss slice of the
  AdamW and SAM(ρ=``sharp_rho``) solutions of the main sweep.
- :func:`run_rollout` — ViT attention-rollout maps next to the spatial-attention maps of a CNN+SA trained on
  the same images.
- :func:`run_search` — a seeded random search over (lr, weight decay, ρ) on the validation split.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ibnb.core.data import DATASETS, ImageData, class_balanced_subset, load_dataset, split_off
from ibnb.chapters.vit_sam.mixing import make_mix
from ibnb.core.models import count_parameters, list_models
from ibnb.core.models.layers import SpatialAttention
from ibnb.book.profiles import register_presets, require
from ibnb.book.results import read_results, results_path
from ibnb.core.runs import train_or_load
from ibnb.chapters.vit_sam.sam import plain_step, sam_step
from ibnb.chapters.vit_sam.sharpness import loss_slice, pga_sharpness, top_hessian_eigenvalue
from ibnb.core.train import device_name, evaluate
from ibnb.chapters.vit_sam.rollout import vit_rollout_maps

NOTEBOOK = "08_vit_sam"
ARCH_NOTEBOOK = "01_architectures"
LABELS = {"cnn": "CNN", "vit": "ViT", "resnet18": "ResNet-18", "cnn_sa": "CNN+SA"}

_SMALL = {"cnn": {"width": 8}, "vit": {"dim": 48, "depth": 2, "heads": 3}, "cnn_sa": {"width": 8}}
_TINY = {"cnn": {"width": 4}, "vit": {"dim": 16, "depth": 1, "heads": 2}, "cnn_sa": {"width": 4}}
_FULL = {"cnn": {"width": 64}, "vit": {"dim": 256, "depth": 6, "heads": 8}, "resnet18": {"width": 64},
         "cnn_sa": {"width": 64}}

_COMMON = dict(dataset="cifar10", optimizer="adamw", schedule="cosine", augment="none", mixup_alpha=1.0,
               cutout_size=8, mixes=["mixup", "cutout"], pga_steps=5, sharp_rho=0.05, mix_rho=0.05,
               asam_rho=0.0, sa_model="cnn_sa", slice_range=1.0, device="auto", compile=False)
PRESETS = {
    "smoke": {**_COMMON, "models": ["cnn", "vit"], "model_kw": _TINY, "n_per_class": 6, "val_per_class": 3,
              "test_per_class": 5, "epochs": 1, "batch_size": 16, "seeds": 2, "lr": 2e-3, "weight_decay": 0.05,
              "rhos": [0.02, 0.05, 0.1, 0.2], "mix_model": "vit", "sharp_n": 16, "hessian_iters": 3,
              "slice_points": 5, "rollout_images": 2, "search_trials": 2, "search_epochs": 1,
              "search_model": "cnn", "arch_profile": "cpu"},
    "cpu": {**_COMMON, "models": ["cnn", "vit"], "model_kw": _SMALL, "n_per_class": 64, "val_per_class": 50,
            "test_per_class": 100, "epochs": 6, "batch_size": 64, "seeds": 2, "lr": 2e-3, "weight_decay": 0.05,
            "rhos": [0.02, 0.05, 0.1, 0.2], "mix_model": "vit", "sharp_n": 128, "hessian_iters": 10,
            "slice_points": 21, "rollout_images": 4, "search_trials": 4, "search_epochs": 4,
            "search_model": "vit", "arch_profile": "cpu"},
    "gpu": {**_COMMON, "models": ["resnet18", "vit"], "model_kw": _FULL, "n_per_class": 0, "val_per_class": 500,
            "test_per_class": 0, "epochs": 50, "batch_size": 256, "seeds": 3, "lr": 1e-3, "weight_decay": 0.05,
            "rhos": [0.02, 0.05, 0.1, 0.2, 0.5], "asam_rho": 1.0, "mix_model": "vit", "sharp_n": 2000,
            "hessian_iters": 50, "slice_points": 41, "rollout_images": 6, "search_trials": 30,
            "search_epochs": 30, "search_model": "vit", "arch_profile": "gpu"},
}


def _validate(p: dict) -> None:
    known = set(list_models())
    require(set(p["models"]) <= known and p["sa_model"] in known, "unknown model name")
    require("vit" in p["models"], "the chapter compares against the ViT: models must include 'vit'")
    require(set(p["model_kw"]) >= set(p["models"]) | {p["sa_model"]}, "model_kw needs every model and sa_model")
    require(p["mix_model"] in p["models"] and p["search_model"] in p["models"], "mix/search model must be in models")
    require(p["dataset"] in DATASETS, f"unknown dataset {p['dataset']!r}")
    require(len(p["rhos"]) >= 1 and all(r > 0 for r in p["rhos"]), "rhos: positive values")
    require(p["sharp_rho"] in p["rhos"] and p["mix_rho"] in p["rhos"], "sharp_rho and mix_rho must be in rhos")
    require(set(p["mixes"]) <= {"mixup", "cutout"}, "mixes: mixup and/or cutout")
    require(min(p["epochs"], p["batch_size"], p["seeds"], p["search_epochs"]) >= 1, "epochs/batch/seeds >= 1")
    require(p["n_per_class"] >= 0 and p["val_per_class"] >= 1 and p["test_per_class"] >= 0, "split sizes")
    require(p["slice_points"] >= 3 and p["hessian_iters"] >= 1 and p["pga_steps"] >= 0, "measurement sizes")


register_presets(NOTEBOOK, PRESETS, _validate)


# ----------------------------------------------------------------------------- data and training
def _device(p: dict):
    return None if p["device"] == "auto" else p["device"]


def splits(p: dict) -> tuple[ImageData, ImageData, ImageData]:
    """(training pool, validation carved from the training set, test subset)."""
    pool, val = split_off(load_dataset(p["dataset"], "train"), p["val_per_class"], seed=10_000)
    test = load_dataset(p["dataset"], "test")
    if p["test_per_class"]:
        test = class_balanced_subset(test, p["test_per_class"], seed=0)
    return pool, val, test


def train_subset(pool: ImageData, p: dict, seed: int) -> ImageData:
    return pool if not p["n_per_class"] else class_balanced_subset(pool, p["n_per_class"], seed=seed)


def method_name(rho: float, adaptive: bool = False, mix: str = "none") -> str:
    """The label of a run: ``adamw``, ``sam ρ=0.05``, ``asam ρ=1``; ``+mixup`` / ``+cutout`` appended."""
    base = "adamw" if rho == 0 else f"{'asam' if adaptive else 'sam'} ρ={rho:g}"
    return base if mix == "none" else f"{base}+{mix}"


def train(p: dict, model: str, data: ImageData, *, seed: int, epochs: int, rho: float = 0.0,
          adaptive: bool = False, mix: str = "none", lr: float | None = None, weight_decay: float | None = None,
          val: ImageData | None = None):
    """One run through the run cache. ``rho = 0`` is the base optimiser alone (the default step when no
    batch op is used). Returns ``(model, history, cached)``."""
    op = make_mix(mix, seed=seed, num_classes=data.num_classes, mixup_alpha=p["mixup_alpha"],
                  cutout_size=p["cutout_size"])
    mix_desc = repr(op) if op is not None else "none"
    step_kw = {}
    if rho > 0:
        step_kw = dict(train_step=sam_step(rho, adaptive, mix=op),
                       step=f"sam(rho={rho:g},adaptive={adaptive},eta=0.01,mix={mix_desc},seed={seed})")
    elif op is not None:
        step_kw = dict(train_step=plain_step(mix=op), step=f"plain(mix={mix_desc},seed={seed})")
    return train_or_load(model, data, val, model_kw=p["model_kw"][model], device=_device(p), progress=False,
                         epochs=epochs, batch_size=p["batch_size"], optimizer=p["optimizer"],
                         lr=p["lr"] if lr is None else lr,
                         weight_decay=p["weight_decay"] if weight_decay is None else weight_decay,
                         schedule=p["schedule"], augment=p["augment"], seed=seed, compile=p["compile"], **step_kw)


def _row(p, experiment, model_name, net, data, seed, epochs, hist, ev, cached, **extra) -> dict:
    steps = epochs * max(1, len(data) // p["batch_size"])
    rho = extra.get("rho", 0.0)
    return dict(experiment=experiment, model=model_name, dataset=p["dataset"], n_train=len(data), seed=seed,
                epochs=epochs, params=count_parameters(net), test_acc=ev["acc"], test_nll=ev["nll"],
                wall_s=hist.wall_s, images_per_s=hist.images_per_s,
                device=device_name(next(net.parameters()).device), steps=steps,
                grad_evals=steps * (2 if rho > 0 else 1), n_test=ev["n"], cached=cached, **extra)


def run_main(p: dict, pool: ImageData, test: ImageData) -> tuple[pd.DataFrame, dict, dict]:
    """Base optimiser (``epochs`` and ``2·epochs``) vs SAM at every ρ (and ASAM), every model and seed.
    Returns (rows, histories[(model, method, seed)], models[(model, method, seed)])."""
    E = p["epochs"]
    configs = [dict(method="adamw", rho=0.0, epochs=E, budget="equal steps"),
               dict(method="adamw ×2 epochs", rho=0.0, epochs=2 * E, budget="equal gradients")]
    configs += [dict(method=method_name(r), rho=r, epochs=E, budget="equal steps") for r in p["rhos"]]
    if p["asam_rho"] > 0:
        configs.append(dict(method=method_name(p["asam_rho"], True), rho=p["asam_rho"], adaptive=True, epochs=E,
                            budget="equal steps"))
    rows, hists, nets = [], {}, {}
    for seed in range(p["seeds"]):
        data = train_subset(pool, p, seed)
        for m in p["models"]:
            for c in configs:
                adaptive = c.get("adaptive", False)
                net, hist, cached = train(p, m, data, seed=seed, epochs=c["epochs"], rho=c["rho"], adaptive=adaptive)
                rows.append(_row(p, "sam", m, net, data, seed, c["epochs"], hist, evaluate(net, test), cached,
                                 method=c["method"], rho=c["rho"], adaptive=adaptive, mix="none",
                                 budget=c["budget"]))
                hists[m, c["method"], seed], nets[m, c["method"], seed] = hist.frame, net
    return pd.DataFrame(rows), hists, nets


def run_mixing(p: dict, pool: ImageData, test: ImageData) -> pd.DataFrame:
    """Mixup / Cutout × {AdamW, SAM(ρ=mix_rho)} for ``mix_model`` (the no-mixing runs are in run_main)."""
    rows = []
    m = p["mix_model"]
    for seed in range(p["seeds"]):
        data = train_subset(pool, p, seed)
        for mix in p["mixes"]:
            for rho in (0.0, p["mix_rho"]):
                net, hist, cached = train(p, m, data, seed=seed, epochs=p["epochs"], rho=rho, mix=mix)
                rows.append(_row(p, "mixing", m, net, data, seed, p["epochs"], hist, evaluate(net, test), cached,
                                 method=method_name(rho, mix=mix), rho=rho, adaptive=False, mix=mix,
                                 budget="equal steps"))
    return pd.DataFrame(rows)


def sharpness_batch(pool: ImageData, p: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``sharp_n`` training images of seed 0's training set (normalised, on ``device``), fixed for every model."""
    from ibnb.core.augment import DeviceLoader
    data = train_subset(pool, p, 0)
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(123))[:p["sharp_n"]]
    x, y = next(iter(DeviceLoader(data.subset(idx), len(idx), shuffle=False, device=device)))
    return x, y


def run_sharpness(p: dict, pool: ImageData, nets: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(measurements, slices): per model, seed and method (AdamW vs SAM ρ=sharp_rho, same steps): PGA
    sharpness at ρ=sharp_rho, top Hessian eigenvalue, and the loss along a filter-normalised direction."""
    sam = method_name(p["sharp_rho"])
    alphas = np.linspace(-p["slice_range"], p["slice_range"], p["slice_points"])
    rows, slices = [], []
    for (m, method, seed), net in nets.items():
        if method not in ("adamw", sam):
            continue
        device = next(net.parameters()).device
        x, y = sharpness_batch(pool, p, device)
        s = pga_sharpness(net, x, y, rho=p["sharp_rho"], steps=p["pga_steps"])
        h = top_hessian_eigenvalue(net, x, y, iters=p["hessian_iters"], seed=seed)
        sl = loss_slice(net, x, y, alphas, seed=seed)
        rows.append(dict(model=m, method=method, seed=seed, train_loss=s["loss"], pga_sharpness=s["sharpness"],
                         one_step_sharpness=s["one_step"], hessian_top=h["eigenvalue"], hessian_iters=h["iters"]))
        slices += [dict(model=m, method=method, seed=seed, alpha=float(a), loss=float(v)) for a, v in zip(alphas, sl)]
    return pd.DataFrame(rows), pd.DataFrame(slices)


# ----------------------------------------------------------------------------- attention maps
@torch.no_grad()
def spatial_attention_maps(model: torch.nn.Module, data: ImageData) -> torch.Tensor:
    """Mean over the model's :class:`SpatialAttention` layers of their maps, upsampled to the input size,
    ``N×1×H×W`` in [0, 1] (sigmoid weights, not rescaled)."""
    from ibnb.core.augment import DeviceLoader
    import torch.nn.functional as F
    device = next(model.parameters()).device
    layers = [m for m in model.modules() if isinstance(m, SpatialAttention)]
    was = model.training
    model.eval()
    out = []
    for x, _ in DeviceLoader(data, 500, shuffle=False, device=device):
        model(x)
        maps = [F.interpolate(l.last_map.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
                for l in layers]
        out.append(torch.stack(maps).mean(0).cpu())
    model.train(was)
    return torch.cat(out)


def run_rollout(p: dict, pool: ImageData, test: ImageData, nets: dict) -> dict:
    """Rollout maps of the seed-0 ViT (AdamW and SAM ρ=sharp_rho) and the spatial-attention map of a CNN+SA
    (``sa_model``) trained with AdamW on the same seed-0 training set, on ``rollout_images`` test images
    (one per class, seeded). All maps are rescaled to [0, 1] per image; ``sa_range`` keeps the spatial-attention
    maps' raw (sigmoid) minimum and maximum, averaged over the images."""
    data = train_subset(pool, p, 0)
    sa, _, _ = train_or_load(p["sa_model"], data, model_kw=p["model_kw"][p["sa_model"]], device=_device(p),
                             progress=False, epochs=p["epochs"], batch_size=p["batch_size"],
                             optimizer=p["optimizer"], lr=p["lr"], weight_decay=p["weight_decay"],
                             schedule=p["schedule"], augment=p["augment"], seed=0, compile=p["compile"])
    images = class_balanced_subset(test, 1, seed=7).subset(torch.arange(p["rollout_images"]))
    out = {"images": images, "maps": {}, "pred": {}}
    for method in ("adamw", method_name(p["sharp_rho"])):
        maps, logits = vit_rollout_maps(nets["vit", method, 0], images)
        out["maps"][f"ViT {method} (rollout)"], out["pred"][f"ViT {method} (rollout)"] = maps, logits.argmax(1)
    key = f"{LABELS.get(p['sa_model'], p['sa_model'])} (spatial attention)"
    raw = spatial_attention_maps(sa, images)
    lo, hi = raw.amin(dim=(1, 2, 3), keepdim=True), raw.amax(dim=(1, 2, 3), keepdim=True)
    out["sa_range"] = (float(lo.mean()), float(hi.mean()))  # raw sigmoid range, mean over the images
    out["maps"][key] = (raw - lo) / (hi - lo + 1e-12)  # rescaled per image like the rollout maps
    out["pred"][key] = evaluate(sa, images, return_logits=True)["logits"].argmax(1).cpu()
    out["sa_test_acc"] = evaluate(sa, test)["acc"]
    return out


# ----------------------------------------------------------------------------- search
def search_space(trials: int, seed: int = 0) -> list[dict]:
    """``trials`` seeded random draws: lr log-uniform in [3e-4, 1e-2], weight decay log-uniform in
    [1e-3, 0.3], ρ uniform in {0 (AdamW), 0.02, 0.05, 0.1, 0.2}."""
    rng = np.random.default_rng(seed)
    rhos = [0.0, 0.02, 0.05, 0.1, 0.2]
    return [dict(lr=float(10 ** rng.uniform(math.log10(3e-4), -2)),
                 weight_decay=float(10 ** rng.uniform(-3, math.log10(0.3))),
                 rho=float(rhos[rng.integers(len(rhos))])) for _ in range(trials)]


def run_search(p: dict, pool: ImageData, val: ImageData) -> pd.DataFrame:
    """Random search for ``search_model`` on seed 0's training set, scored on the validation split."""
    data = train_subset(pool, p, 0)
    rows = []
    for i, cfg in enumerate(search_space(p["search_trials"])):
        net, hist, cached = train(p, p["search_model"], data, seed=0, epochs=p["search_epochs"], rho=cfg["rho"],
                                  lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        ev = evaluate(net, val)
        rows.append(dict(trial=i, **cfg, val_acc=ev["acc"], val_nll=ev["nll"], wall_s=hist.wall_s, cached=cached))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- reuse of chapter 01
def size_sweep_from_architectures(profile: str, models=("cnn", "vit", "resnet18")) -> pd.DataFrame | None:
    """The architecture chapter's runs (original pixels) for ``models``, or None when its table is missing."""
    if not results_path(ARCH_NOTEBOOK, profile).exists():
        return None
    df = read_results(ARCH_NOTEBOOK, profile)
    df = df[df["model"].isin(models) & ~df["permuted"].astype(bool)]
    return df if len(df) else None


def catch_up(arch: pd.DataFrame, augment: str) -> pd.DataFrame:
    """Per training-set size: ViT minus CNN (and ViT minus ResNet-18) test accuracy, paired by seed."""
    d = arch[arch["augment"] == augment]
    wide = d.pivot_table(index=["n_train", "seed"], columns="model", values="test_acc")
    out = {}
    for other in ("cnn", "resnet18"):
        if other in wide:
            g = (wide["vit"] - wide[other]).groupby(level=0)
            out[f"vit − {other} mean"], out[f"vit − {other} std"] = g.mean(), g.std()
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- verdicts
def verdict(mean: float, std: float, sign: int = 1) -> str:
    """``supported`` when ``sign·mean`` exceeds one standard deviation, ``contradicted`` when it is below minus
    one standard deviation, else ``not resolved (within one std)``."""
    m, s = sign * float(mean), 0.0 if std != std else float(std)
    if m > s:
        return "supported"
    if m < -s:
        return "contradicted"
    return "not resolved (within one std)"


def pm(mean: float, std: float, scale: float = 100.0, digits: int = 1, signed: bool = True) -> str:
    s = 0.0 if std != std else std
    return f"{scale * mean:{'+' if signed else ''}.{digits}f} ± {scale * s:.{digits}f}"
