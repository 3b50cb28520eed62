"""Chapter 06 — the Deep Weight Prior: presets and the runs.

Source: PACS sketches (all 7 classes, greyscale, inverted to white strokes on black, resized to 28×28). Several
source CNNs (:func:`ibnb.core.models.lenet.dwp_cnn`) are trained on them; a :class:`~ibnb.chapters.deep_weight_prior.method.KernelVAE` is fitted to
the 7×7 kernels of the first and the 5×5 kernels of the second conv layer. Target: MNIST with a few training
images; Bayesian CNNs (:class:`~ibnb.chapters.deep_weight_prior.method.BayesCNN`) with DWP, log-uniform, N(0, 1) or learned-Gaussian priors on
the conv layers, and a deterministic CNN with an L2 penalty. A second experiment compares initialisations.
"""
from __future__ import annotations

import math

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ibnb.chapters.deep_weight_prior import method as dwp
from ibnb.core.data import ImageData, class_balanced_subset, load_dataset, split_off
from ibnb.core.models import count_parameters, create_model
from ibnb.book.profiles import register_presets, require
from ibnb.core.runs import train_or_load
from ibnb.core.train import default_device, device_name, evaluate, fit

NOTEBOOK = "06_deep_weight_prior"
METHODS = ["DWP", "log-uniform", "N(0,1)", "learned Gaussian", "L2 (deterministic)"]
INITS = ["xavier", "learned filters", "DWP samples"]

_COMMON = dict(source="pacs_sketch", width1=16, width2=32, source_batch=64, z_dim=2, vae_hidden=64, lr=1e-3,
               methods=METHODS, inits=INITS, target_batch=50, device="auto")
PRESETS = {
    "smoke": {**_COMMON, "n_source_nets": 2, "source_epochs": 1, "vae_steps": 50, "sizes": [50, 100],
              "seeds": 1, "target_steps": 5, "test_per_class": 20, "init_n_per_class": 10, "init_epochs": 2,
              "init_seeds": 1, "val_per_class": 5},
    "cpu": {**_COMMON, "n_source_nets": 6, "source_epochs": 8, "vae_steps": 1500, "sizes": [50, 100, 200, 500, 1000],
            "seeds": 3, "target_steps": 80, "test_per_class": 100, "init_n_per_class": 100, "init_epochs": 8,
            "init_seeds": 2, "val_per_class": 50},
    "gpu": {**_COMMON, "n_source_nets": 50, "source_epochs": 30, "vae_steps": 20000, "width1": 32, "width2": 128,
            "sizes": [50, 100, 200, 500, 1000], "seeds": 10, "target_steps": 3000, "test_per_class": 0,
            "init_n_per_class": 5000, "init_epochs": 30, "init_seeds": 5, "val_per_class": 100, "vae_hidden": 256},
}


def _validate(p: dict) -> None:
    require(set(p["methods"]) <= set(METHODS), f"methods must be among {METHODS}")
    require(set(p["inits"]) <= set(INITS), f"inits must be among {INITS}")
    require(p["source"] in ("pacs_sketch", "pacs_photo", "cifar10"), "source: pacs_sketch, pacs_photo or cifar10")
    require(all(isinstance(n, int) and n >= 10 and n % 10 == 0 for n in p["sizes"]), "sizes: multiples of 10")
    require(min(p["n_source_nets"], p["source_epochs"], p["vae_steps"], p["seeds"], p["target_steps"],
                p["init_n_per_class"], p["init_epochs"], p["init_seeds"], p["val_per_class"]) >= 1,
            "counts must be >= 1")
    require(p["test_per_class"] >= 0, "test_per_class >= 0 (0 = all)")


register_presets(NOTEBOOK, PRESETS, _validate)


def to_grey28(data: ImageData, invert: bool) -> ImageData:
    """RGB → greyscale (mean of channels), resized to 28×28 (antialiased bilinear), optionally inverted."""
    x = data.x.float().mean(1, keepdim=True)
    x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
    if invert:
        x = 255 - x
    x = x.round().clamp(0, 255).to(torch.uint8)
    m, s = float(x.float().mean() / 255), float(x.float().std() / 255)
    return ImageData(x=x, y=data.y, classes=data.classes, name=data.name + "_grey28", mean=(m,), std=(s,),
                     meta={**data.meta, "grey28": True, "inverted": invert})


def source_data(p: dict) -> ImageData:
    if p["source"].startswith("pacs"):
        return to_grey28(load_dataset(p["source"], "train", size=32), invert=p["source"] == "pacs_sketch")
    return to_grey28(load_dataset(p["source"], "train"), invert=False)


def _model_kw(p):
    return {"width1": p["width1"], "width2": p["width2"]}


def train_source_nets(p: dict, progress: bool = True) -> tuple[list[nn.Module], pd.DataFrame, ImageData]:
    """Train (or load) ``n_source_nets`` CNNs on the source data, one seed each; returns the nets, a table of
    their held-out accuracy on the source task, and the source data."""
    device = None if p["device"] == "auto" else p["device"]
    src = source_data(p)
    train, held = split_off(src, 20, seed=10_000)
    nets, rows = [], []
    for seed in tqdm(range(p["n_source_nets"]), desc="source nets", disable=not progress):
        model, hist, cached = train_or_load("dwp_cnn", train, None, model_kw=_model_kw(p), device=device,
                                            progress=False, epochs=p["source_epochs"], batch_size=p["source_batch"],
                                            lr=p["lr"], seed=seed)
        nets.append(model.cpu())
        rows.append(dict(seed=seed, source_acc=evaluate(model, held)["acc"], wall_s=hist.wall_s, cached=cached))
    return nets, pd.DataFrame(rows), src


def source_kernels(nets: list[nn.Module]) -> dict[str, torch.Tensor]:
    """All k×k kernels of each conv layer over the source nets: {"conv1": N×7×7, "conv2": N×5×5}."""
    convs = [[m for m in net.modules() if isinstance(m, nn.Conv2d)] for net in nets]
    return {f"conv{i + 1}": torch.cat([c[i].weight.detach().reshape(-1, *c[i].weight.shape[-2:]) for c in convs])
            for i in range(2)}


def fit_priors(kernels: dict[str, torch.Tensor], p: dict) -> tuple[dict, dict]:
    """The fitted VAE and its training losses per conv layer."""
    vaes, losses = {}, {}
    for i, (layer, k) in enumerate(kernels.items()):
        vaes[layer], losses[layer] = dwp.fit_vae(k, z_dim=p["z_dim"], hidden=p["vae_hidden"], steps=p["vae_steps"],
                                                 seed=i)
    return vaes, losses


def make_priors(method: str, kernels: dict, vaes: dict) -> list:
    if method == "DWP":
        return [dwp.DWPPrior(vaes["conv1"]), dwp.DWPPrior(vaes["conv2"])]
    if method == "log-uniform":
        return [dwp.LogUniformPrior(), dwp.LogUniformPrior()]
    if method == "N(0,1)":
        return [dwp.GaussianPrior(), dwp.GaussianPrior()]
    if method == "learned Gaussian":
        return [dwp.GaussianPrior.fit(kernels["conv1"]), dwp.GaussianPrior.fit(kernels["conv2"])]
    raise KeyError(method)


def mnist_splits(p: dict):
    pool, val = split_off(load_dataset("mnist", "train"), p["val_per_class"], seed=10_000)
    test = load_dataset("mnist", "test")
    if p["test_per_class"]:
        test = class_balanced_subset(test, p["test_per_class"], seed=0)
    return pool, val, test


def epochs_for(n: int, p: dict) -> int:
    """Epochs so that a run of ``n`` images takes at least ``target_steps`` steps of batch ``target_batch``."""
    return max(1, math.ceil(p["target_steps"] / max(1, n // min(p["target_batch"], n))))


def run_small_data(p: dict, kernels: dict, vaes: dict, progress: bool = True) -> pd.DataFrame:
    """Every method × training-set size × seed on MNIST; one row each."""
    device = torch.device(p["device"]) if p["device"] != "auto" else default_device()
    pool, _, test = mnist_splits(p)
    rows = []
    plan = [(n, s, m) for n in p["sizes"] for s in range(p["seeds"]) for m in p["methods"]]
    for n, seed, method in tqdm(plan, desc="small-data runs", disable=not progress):
        train = class_balanced_subset(pool, n // 10, seed=seed)
        epochs, batch = epochs_for(n, p), min(p["target_batch"], n)
        torch.manual_seed(seed)
        if method.startswith("L2"):
            model = create_model("dwp_cnn", **_model_kw(p))
            kw = dict(train_step=dwp.l2_step(n), step=f"l2(n={n})")
        else:
            model = dwp.BayesCNN(make_priors(method, kernels, vaes), **_model_kw(p))
            kw = dict(train_step=dwp.vi_step(n), step=f"vi(prior={method}, n={n})")
        hist = fit(model, train, None, epochs=epochs, batch_size=batch, lr=p["lr"], weight_decay=0.0,
                   schedule="constant", seed=seed, device=device, progress=False, **kw)
        ev = evaluate(model, test)
        rows.append(dict(experiment="small_data", model=method, dataset="mnist", n_train=n, seed=seed, epochs=epochs,
                         params=count_parameters(model), test_acc=ev["acc"], test_nll=ev["nll"], wall_s=hist.wall_s,
                         images_per_s=hist.images_per_s, device=device_name(device), method=method,
                         steps=epochs * (n // batch), final_nll=hist.frame["train_nll"].iloc[-1],
                         final_reg=hist.frame[[c for c in ("train_kl", "train_l2") if c in hist.frame][0]].iloc[-1],
                         n_test=ev["n"], source=p["source"]))
    return pd.DataFrame(rows)


def initialise(model: nn.Module, init: str, seed: int, nets: list[nn.Module], vaes: dict) -> nn.Module:
    """Replace the conv kernels of a fresh ``dwp_cnn``: Xavier-uniform, a source net's learned filters, or
    samples from the DWP (one sample per kernel)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, conv in enumerate(convs):
            if init == "xavier":
                nn.init.xavier_uniform_(conv.weight, generator=g)
            elif init == "learned filters":
                src = [m for m in nets[seed % len(nets)].modules() if isinstance(m, nn.Conv2d)][i]
                conv.weight.copy_(src.weight)
            elif init == "DWP samples":
                n = conv.weight.shape[0] * conv.weight.shape[1]
                conv.weight.copy_(vaes[f"conv{i + 1}"].sample(n, generator=g).view_as(conv.weight))
            else:
                raise KeyError(init)
            conv.bias.zero_()
    return model


def run_init(p: dict, nets: list, vaes: dict, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Deterministic CNNs on ``init_n_per_class`` MNIST images per class from each initialisation."""
    device = torch.device(p["device"]) if p["device"] != "auto" else default_device()
    pool, val, test = mnist_splits(p)
    rows, hists = [], {}
    for seed in tqdm(range(p["init_seeds"]), desc="init runs", disable=not progress):
        train = class_balanced_subset(pool, p["init_n_per_class"], seed=seed)
        for init in p["inits"]:
            torch.manual_seed(seed)
            model = initialise(create_model("dwp_cnn", **_model_kw(p)), init, seed, nets, vaes)
            hist = fit(model, train, val, epochs=p["init_epochs"], batch_size=p["target_batch"], lr=p["lr"],
                       weight_decay=0.0, schedule="constant", seed=seed, device=device, progress=False)
            ev = evaluate(model, test)
            hists[(init, seed)] = hist.frame
            rows.append(dict(experiment="init", model=f"dwp_cnn ({init})", dataset="mnist", n_train=len(train),
                             seed=seed, epochs=p["init_epochs"], params=count_parameters(model), test_acc=ev["acc"],
                             test_nll=ev["nll"], wall_s=hist.wall_s, images_per_s=hist.images_per_s,
                             device=device_name(device), method=init, n_test=ev["n"], source=p["source"]))
    return pd.DataFrame(rows), hists


def comparison_verdict(n_wins: int, n_total: int, n_losses: int) -> str:
    """Verdict on "DWP beats X": contradicted when DWP is behind by more than one std in any comparison,
    else reproduced / partly reproduced / not reproduced by the number of comparisons it wins."""
    if n_losses:
        return (f"contradicted at this profile (DWP behind by more than one std in {n_losses} and ahead in "
                f"{n_wins} of {n_total} comparisons)")
    if n_wins == n_total:
        return "reproduced at every size"
    if n_wins > 0:
        return f"partly reproduced ({n_wins} of {n_total} comparisons)"
    return "not reproduced at this profile"
