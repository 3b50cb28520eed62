"""Chapter 03's runs: the grid, the seeds, PACS photo → sketch, the masking test and (``gpu``) Food-101.

Three CIFAR-10 models trained with the same data, optimiser and number of epochs: the report's plain one-block
CNN (``team_cnn_mini``), its 3-block CNN with spatial attention (``team_cnn_sa_mini``), and the ablation the
report lacks, the same 3-block CNN without attention (``team_cnn_deep_mini``). A grid over learning rate × batch
size × weight decay is scored on a validation split carved from the training set; the best setting of each model
is then trained for several seeds (seed 0 of the grid *is* the first seed, loaded from the run cache). The same
settings train the models on PACS photos, tested on held-out photos and on sketches. At the ``gpu`` profile the
report's Food-101 models run on torchvision's Food-101 (downloaded with ``IBNB_DOWNLOAD=1``). Every run validates
each epoch, so its results row carries the book's convergence check; with ``probe`` a reported run that fails
the plateau test also gets its budget-halving probe (test 3 of :mod:`ibnb.core.convergence`; see :func:`train`).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import pandas as pd
import torch

from ibnb.book.results import write_results
from ibnb.chapters.spatial_attention.attention_maps import masking_accuracy
from ibnb.chapters.spatial_attention.presets import FOOD_PLAIN, FOOD_SA, NOTEBOOK, SA
from ibnb.core.attention_maps import spatial_attention_maps
from ibnb.core.convergence import half_budget
from ibnb.core.data import ImageData, class_balanced_subset, load_dataset, split_off
from ibnb.core.models import count_parameters
from ibnb.core.reference import VAL_SEED
from ibnb.core.runs import train_or_load
from ibnb.core.train import TrainConfig, device_name, evaluate


def grid_configs(p: dict) -> list[dict]:
    """Every (lr, batch_size, weight_decay) of the grid."""
    return [dict(lr=lr, batch_size=b, weight_decay=wd)
            for lr, b, wd in itertools.product(p["grid_lr"], p["grid_batch_size"], p["grid_weight_decay"])]


def subset(pool: ImageData, n_per_class: int, seed: int) -> ImageData:
    """``n_per_class`` images per class drawn with ``seed`` (0 = the whole pool)."""
    return pool if not n_per_class else class_balanced_subset(pool, n_per_class, seed=seed)


def cifar_splits(p: dict) -> tuple[ImageData, ImageData, ImageData]:
    """(training pool, validation split carved from the training set, test set)."""
    pool, val = split_off(load_dataset(p["dataset"], "train"), p["val_per_class"], seed=VAL_SEED)
    return pool, val, subset(load_dataset(p["dataset"], "test"), p["test_per_class"], 0)


def pacs_splits(p: dict) -> tuple[ImageData, ImageData, ImageData, ImageData]:
    """(photo training pool, photo validation, held-out photos, sketches) at ``pacs_size`` pixels."""
    pool, val = split_off(load_dataset("pacs_photo", "train", size=p["pacs_size"]), p["pacs_val_per_class"],
                          seed=VAL_SEED)
    test = load_dataset("pacs_photo", "test", size=p["pacs_size"])
    sketch = subset(load_dataset("pacs_sketch", "all", size=p["pacs_size"]), p["sketch_per_class"], 0)
    return pool, val, test, sketch


#: schedules that do not depend on a run's length: the budget-halving probe of such a run (without warm-up) is the
#: first half of the run itself, epoch for epoch (same seed, same batches, same learning rates)
LENGTH_FREE_SCHEDULES = ("plateau", "constant")


def train(p: dict, model: str, data: ImageData, val: ImageData | None, cfg: dict, seed: int, epochs: int,
          model_kw: dict | None = None, probe: bool = False):
    """``train_or_load`` with the chapter's optimiser, schedule and label smoothing and the grid setting ``cfg``.

    ``probe`` (with the profile's ``probe`` on): a run that fails the plateau test gets its budget-halving probe
    attached, so that its convergence check can pass through test 3 — read off the run's own first half for a
    length-free schedule (the report's ReduceLROnPlateau), trained as a cached run of its own otherwise."""
    config = TrainConfig.from_params(p, epochs=epochs, seed=seed, **cfg)
    kw = model_kw if model_kw is not None else {"width": p["width"]}
    net, hist, cached = train_or_load(model, data, val, config=config, device=p["device"], progress=False,
                                      model_kw=kw)
    half = half_budget(epochs, config.warmup_epochs)
    if probe and p["probe"] and half is not None and not hist.convergence.passed:
        if config.schedule in LENGTH_FREE_SCHEDULES and not config.warmup_epochs:
            hist.probe = hist.frame.iloc[:half[0]].reset_index(drop=True)
        else:
            half_config = dataclasses.replace(config, epochs=half[0], warmup_epochs=half[1])
            hist.probe = train_or_load(model, data, val, config=half_config, device=p["device"], progress=False,
                                       model_kw=kw)[1].frame
    return net, hist, cached


def _row(experiment: str, model_name: str, model, data: ImageData, seed: int, epochs: int, hist, ev: dict,
         cfg: dict, cached: bool, **extra) -> dict:
    last = hist.last
    return dict(experiment=experiment, model=model_name, dataset=data.name, n_train=len(data), seed=seed,
                epochs=epochs, params=count_parameters(model), test_acc=ev["acc"], test_nll=ev["nll"],
                device=device_name(next(model.parameters()).device), lr=cfg["lr"], batch_size=cfg["batch_size"],
                weight_decay=cfg["weight_decay"], val_acc=last.get("val_acc", math.nan),
                val_loss=last.get("val_loss", math.nan), best_val_acc=float(hist.frame["val_acc"].max()),
                min_val_loss=float(hist.frame["val_loss"].min()), n_test=ev["n"], cached=cached,
                **hist.columns(), **extra)


def run_grid(p: dict, pool: ImageData, val: ImageData) -> pd.DataFrame:
    """Every model × grid setting, seed 0, scored on the validation split (never the test set)."""
    data, rows = subset(pool, p["n_per_class"], 0), []
    for model, cfg in [(m, c) for m in p["models"] for c in grid_configs(p)]:
        _, hist, cached = train(p, model, data, val, cfg, 0, p["epochs"])
        rows.append(dict(model=model, **cfg, val_acc=hist.last["val_acc"], val_loss=hist.last["val_loss"],
                         train_acc=hist.last["train_acc"], cached=cached, **hist.columns()))
    return pd.DataFrame(rows)


def best_configs(grid: pd.DataFrame) -> dict[str, dict]:
    """Per model, the grid setting with the highest final validation accuracy."""
    best = grid.loc[grid.groupby("model", sort=False)["val_acc"].idxmax()]
    return {r.model: dict(lr=float(r.lr), batch_size=int(r.batch_size), weight_decay=float(r.weight_decay))
            for r in best.itertuples()}


def run_seeds(p: dict, pool: ImageData, val: ImageData, test: ImageData, best: dict[str, dict]):
    """Each model with its best setting for ``seeds`` seeds (the seed draws the subset, the initialisation and
    the batch order). Returns (rows, histories[(model, seed)], models[(model, seed)])."""
    rows, histories, models = [], {}, {}
    for seed in range(p["seeds"]):
        data = subset(pool, p["n_per_class"], seed)
        for model in p["models"]:
            net, hist, cached = train(p, model, data, val, best[model], seed, p["epochs"], probe=True)
            rows.append(_row("cifar10", model, net, data, seed, p["epochs"], hist, evaluate(net, test),
                             best[model], cached))
            histories[model, seed], models[model, seed] = hist.frame, net
    return pd.DataFrame(rows), histories, models


def run_pacs(p: dict, best: dict[str, dict]):
    """Train on PACS photos (each model's best CIFAR-10 setting), test on held-out photos and on sketches.
    Returns (rows, majority-class rates {"photo", "sketch"}, sizes {"train", "test", "sketch"}, sketch confusion
    {model: true × predicted counts summed over seeds}, class names)."""
    pool, val, test, sketch = pacs_splits(p)
    k = sketch.num_classes
    rows, confusion = [], {m: torch.zeros(k, k, dtype=torch.long) for m in p["models"]}
    for seed in range(p["seeds"]):
        data = subset(pool, p["pacs_n_per_class"], seed)
        for model in p["models"]:
            net, hist, cached = train(p, model, data, val, best[model], seed, p["pacs_epochs"], probe=True)
            ev, sk = evaluate(net, test), evaluate(net, sketch, return_logits=True)
            pred = sk["logits"].argmax(1).cpu()
            confusion[model] += torch.bincount(sketch.y * k + pred, minlength=k * k).view(k, k)
            votes = torch.bincount(pred, minlength=k)
            rows.append(_row("pacs", model, net, data, seed, p["pacs_epochs"], hist, ev, best[model], cached,
                             sketch_acc=sk["acc"], sketch_nll=sk["nll"], n_sketch=sk["n"],
                             drop=ev["acc"] - sk["acc"], sketch_top_share=float(votes.max() / sk["n"])))
    majority = {"photo": max(test.class_counts()) / len(test), "sketch": max(sketch.class_counts()) / len(sketch)}
    sizes = {"train": len(subset(pool, p["pacs_n_per_class"], 0)), "test": len(test), "sketch": len(sketch)}
    return pd.DataFrame(rows), majority, sizes, {m: c.numpy() for m, c in confusion.items()}, list(sketch.classes)


def run_faithfulness(p: dict, test: ImageData, models: dict) -> pd.DataFrame:
    """For every seed: mask pixels by the attention model's mean map (most-attended / random / least-attended)
    and evaluate all three models of that seed on the same masked images."""
    data = class_balanced_subset(test, p["faith_per_class"], seed=1)
    return pd.concat([masking_accuracy(models[SA, s], {m: models[m, s] for m in p["models"]}, data,
                                       p["faith_fractions"], seed=s).assign(seed=s) for s in range(p["seeds"])],
                     ignore_index=True)


def pick_examples(data: ImageData, model, n: int, limit: int = 500):
    """(images, maps, predictions, right, wrong): ``limit`` images of ``data`` drawn at random (seeded), the
    attention model's stage maps and predictions, and the indices of the first ``n`` right and ``n`` wrong ones."""
    head = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:limit])
    maps, logits = spatial_attention_maps(model, head)
    pred = logits.argmax(1)
    right = torch.nonzero(pred == head.y).flatten()[:n].tolist()
    wrong = torch.nonzero(pred != head.y).flatten()[:n].tolist()
    return head, maps, pred, right, wrong


def run_food(p: dict, *, root=None):
    """The report's Food-101 models at ``food_size`` pixels with the report's setting (AdamW lr 1e-4, wd 1e-5,
    label smoothing 0.1, ReduceLROnPlateau). Returns (rows, histories[(model, seed)])."""
    from ibnb.core.food101 import load_food101

    pool, val = split_off(load_food101("train", size=p["food_size"], root=root), p["food_val_per_class"],
                          seed=VAL_SEED)
    test = load_food101("test", size=p["food_size"], root=root)
    cfg = dict(lr=p["food_lr"], batch_size=p["food_batch_size"], weight_decay=p["food_weight_decay"])
    rows, histories = [], {}
    for seed in range(p["food_seeds"]):
        for model in (FOOD_PLAIN, FOOD_SA):
            net, hist, cached = train(p, model, pool, val, cfg, seed, p["food_epochs"], model_kw={})
            rows.append(_row("food101", model, net, pool, seed, p["food_epochs"], hist, evaluate(net, test), cfg,
                             cached))
            histories[model, seed] = hist.frame
    return pd.DataFrame(rows), histories


@dataclass
class Outcome:
    """Everything chapter 03 measured."""

    grid: pd.DataFrame
    best: dict
    cifar: pd.DataFrame
    histories: dict
    examples: tuple
    faith: pd.DataFrame
    pacs: pd.DataFrame
    majority: dict
    pacs_sizes: dict
    sketch_confusion: dict
    pacs_classes: list
    food: pd.DataFrame | None
    food_histories: dict
    n_train: int
    n_val: int
    n_test: int
    n_faith: int


def run_all(p: dict, progress: bool = False) -> Outcome:
    """Train or load every run and write ``book/results/03_spatial_attention/<profile>.csv``."""
    pool, val, test = cifar_splits(p)
    grid = run_grid(p, pool, val)
    best = best_configs(grid)
    cifar, histories, models = run_seeds(p, pool, val, test, best)
    examples = pick_examples(test, models[SA, 0], p["overlay_images"])
    faith = run_faithfulness(p, test, models)
    pacs, majority, sizes, confusion, classes = run_pacs(p, best)
    food, food_hist = run_food(p) if p["food"] else (None, {})
    write_results(pd.concat([cifar, pacs] + ([food] if food is not None else []), ignore_index=True),
                  NOTEBOOK, p["profile"])
    return Outcome(grid, best, cifar, histories, examples, faith, pacs, majority, sizes, confusion, classes, food,
                   food_hist, len(subset(pool, p["n_per_class"], 0)), len(val), len(test),
                   test.num_classes * p["faith_per_class"])
