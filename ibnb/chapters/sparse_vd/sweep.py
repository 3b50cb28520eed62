"""Chapter 05's runs: dense and Sparse VD LeNet-300-100 / LeNet-5-Caffe on (a class-balanced subset of) MNIST,
and the random-label control.

Every run is one :class:`~ibnb.core.train.TrainConfig` built from the resolved parameters, validated each epoch on
a held-out split (so its convergence check reads validation accuracy), and loaded from the run cache when an
identical run exists. The Sparse VD runs minimise the ELBO (:class:`~ibnb.chapters.sparse_vd.method.ELBOStep`).
The random-label control trains LeNet-300-100, Sparse VD and dense, on a class-balanced subset with its labels
shuffled (no validation: the held-out labels are the true ones, so its convergence check reads the training loss),
one run of each per seed, next to one Sparse VD run on the same images with the true labels. The dense runs are
the control's control: they show that the network *can* memorise these labels (Zhang et al. 2017), so Sparse VD
removing its weights is the prior's doing, not a network too small or a schedule too short to fit them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ibnb.book import results
from ibnb.chapters.sparse_vd.method import ELBOStep
from ibnb.chapters.sparse_vd.presets import NOTEBOOK
from ibnb.core.data import ImageData, class_balanced_subset
from ibnb.core.models import count_parameters
from ibnb.core.models import sparse_vd as svd
from ibnb.core.reference import splits
from ibnb.core.runs import train_or_load
from ibnb.core.train import TrainConfig, device_name, evaluate, fast_path

SPARSE, DENSE = "sparse VD", "dense"


@dataclass
class Outcome:
    """The results table (one row per run), the per-epoch histories keyed by
    ``(experiment, network, method, seed, labels)``, and the trained Sparse VD model of seed 0 per network."""

    df: pd.DataFrame
    histories: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)


def load_data(p: dict) -> tuple[ImageData, ImageData, ImageData, ImageData]:
    """``(train, val, test, random_label_train)``: validation carved from the training set; optional
    class-balanced subsets for the main table and for the random-label control."""
    pool, val, test = splits(p["dataset"], p["val_per_class"], p["test_per_class"])
    train = class_balanced_subset(pool, p["n_per_class"], seed=0) if p["n_per_class"] else pool
    rl = p["random_label_per_class"]
    return train, val, test, class_balanced_subset(pool, rl, seed=0) if rl else pool


def shuffled_labels(data: ImageData, seed: int = 0) -> ImageData:
    """The same images with their labels randomly permuted (the random-label control)."""
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return ImageData(x=data.x, y=data.y[perm].clone(), classes=data.classes, name=data.name, mean=data.mean,
                     std=data.std, meta={**data.meta, "shuffled_labels": seed})


def plan(p: dict) -> list[dict]:
    """Every run: network × seed × (dense, Sparse VD); then the random-label control: Sparse VD and dense on
    shuffled labels per seed, and Sparse VD on the true labels (seed 0)."""
    runs = [dict(experiment="table", network=net, method=method, seed=seed, labels="true")
            for net in p["networks"] for seed in range(p["seeds"][net]) for method in (DENSE, SPARSE)]
    if p["random_label_epochs"]:
        rl = dict(experiment="random_labels", network="lenet300_100")
        runs += [dict(rl, method=SPARSE, seed=0, labels="true")]
        runs += [dict(rl, method=method, seed=seed, labels="shuffled")
                 for seed in range(p["random_label_seeds"]) for method in (SPARSE, DENSE)]
    return runs


def kl_ramp(p: dict, epochs: int) -> tuple[float, float]:
    """``(kl_zero_epochs, kl_full_epochs)`` of a run of ``epochs`` epochs: the preset's fractions of the run."""
    return p["kl_zero_frac"] * epochs, p["kl_full_frac"] * epochs


@torch.no_grad()
def unmasked_error(model: nn.Module, test: ImageData) -> float:
    """Test error (%) of the posterior mean with no weight removed (the threshold lifted), for reference."""
    saved = [(m, m.threshold) for _, m in svd.svdo_layers(model)]
    for m, _ in saved:
        m.threshold = float("inf")
    try:
        return 100 * (1 - evaluate(model, test)["acc"])
    finally:
        for m, t in saved:
            m.threshold = t


def run_sweep(p: dict, progress: bool = False) -> Outcome:
    """Train (or load) every planned run, write the results table, return the :class:`Outcome`.

    The error of every Sparse VD model is measured twice: in eval mode (θ with log α > 3 zeroed) and with
    :func:`ibnb.core.models.sparse_vd.to_dense` (plain layers holding the zeroed weights)."""
    train, val, test, rl_train = load_data(p)
    rows, hists, models = [], {}, {}
    for run in tqdm(plan(p), desc="runs", disable=not progress):
        net, sparse, shuffled = run["network"], run["method"] == SPARSE, run["labels"] == "shuffled"
        table_run = run["experiment"] == "table"
        epochs = p["epochs"][net] if table_run else p["random_label_epochs"]
        data = train if table_run else shuffled_labels(rl_train, run["seed"]) if shuffled else rl_train
        config = TrainConfig.from_params(p, epochs=epochs, seed=run["seed"])
        step = ELBOStep(len(data), *kl_ramp(p, epochs)) if sparse else None
        model, hist, cached = train_or_load(net + ("_svd" if sparse else ""), data, None if shuffled else val,
                                            config=config, step=step, device=p["device"], progress=False)
        ev = evaluate(model, test)
        rep = svd.sparsity_report(model)
        row = dict(experiment=run["experiment"], model=net + ("_svd" if sparse else ""), dataset=p["dataset"],
                   n_train=len(data), seed=run["seed"], epochs=epochs, params=count_parameters(model),
                   test_acc=ev["acc"], test_nll=ev["nll"], **hist.columns(),
                   device=device_name(next(model.parameters()).device), network=net, method=run["method"],
                   labels=run["labels"], error_pct=100 * (1 - ev["acc"]), weights=rep["weights"], kept=rep["kept"],
                   compression=rep["compression"], layer_sparsity="-".join(f"{s:.1f}" for s in rep["sparsity"]),
                   n_test=ev["n"], final_train_acc=float(hist.frame["train_acc"].iloc[-1]), cached=cached)
        if sparse:
            row["compression_growth_pct"] = compression_growth(hist.frame, model)
            # the rebuilt plain layers must run the arithmetic of the reported error: left to the rule, a plain
            # conv net evaluates in bf16 on a bf16 CPU while the Sparse VD layers run in fp32
            same = fast_path(model, next(model.parameters()).device, input_shape=test.shape)
            dense = evaluate(svd.to_dense(model), test, precision=same.precision, channels_last=same.channels_last)
            row.update(masked_dense_error_pct=100 * (1 - dense["acc"]),
                       unmasked_error_pct=unmasked_error(model, test))
            if run["experiment"] == "table" and run["seed"] == 0:
                models[net] = model
        rows.append(row)
        hists[tuple(run[k] for k in ("experiment", "network", "method", "seed", "labels"))] = hist.frame
    df = pd.DataFrame(rows)
    results.write_results(df, NOTEBOOK, p["profile"])
    return Outcome(df, hists, models)


def overall_sparsity(frame: pd.DataFrame, model: nn.Module) -> pd.Series:
    """Per-epoch percentage of all weights with log α > 3 (training-time average over the epoch's steps)."""
    sizes = [m.weight.numel() for _, m in svd.svdo_layers(model)]
    cols = [f"train_sp{i}" for i in range(len(sizes))]
    return 100 * sum(frame[c] * n for c, n in zip(cols, sizes)) / sum(sizes)


def compression_growth(frame: pd.DataFrame, model: nn.Module, tail: float = 0.1) -> float:
    """Growth (%) of the training-time compression over the last ``tail`` of the epochs (at least one epoch):
    kept share ``tail`` of the epochs before the end over the kept share at the end, minus 1. NaN for a
    one-epoch run; 0 when nothing was kept at either point (compression stayed infinite), inf when the last
    weights went in the tail."""
    kept = 100 - overall_sparsity(frame, model)
    back = max(1, round(tail * len(kept)))
    if len(kept) <= back:
        return float("nan")
    before, end = float(kept.iloc[-1 - back]), float(kept.iloc[-1])
    if end == 0:
        return 0.0 if before == 0 else float("inf")
    return 100 * (before / end - 1)
