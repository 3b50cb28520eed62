"""Chapter 01's sweep: model × training-set size × augmentation × seed, plus the pixel-permutation control.

Every run trains from scratch with one :class:`~ibnb.core.train.TrainConfig` built from the resolved parameters,
validates each epoch on a held-out split (so its convergence check reads validation accuracy) and is loaded from
the run cache when an identical run exists. The control trains every model on images whose pixel positions are
shuffled by one fixed permutation (training, validation and test images alike).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from tqdm.auto import tqdm

from ibnb.book import results
from ibnb.chapters.architectures.presets import NOTEBOOK
from ibnb.core.data import DATASETS, class_balanced_subset, permute_pixels
from ibnb.core.models import count_parameters
from ibnb.core.reference import epochs_for, splits, steps_per_epoch
from ibnb.core.runs import train_or_load
from ibnb.core.train import TrainConfig, device_name, evaluate


@dataclass
class Outcome:
    """What :func:`run_sweep` produced: the results table (one row per run), the per-epoch histories keyed by
    ``(model, n_per_class, augment, seed, permuted)``, and the number of classes."""

    df: pd.DataFrame
    histories: dict = field(default_factory=dict)
    num_classes: int = 10


def plan(p: dict) -> list[dict]:
    """All runs of the sweep: model × size × augmentation × seed, plus the permuted-pixel control."""
    runs = [dict(model=m, n_per_class=n, augment=a, seed=s, permuted=False)
            for n in p["n_per_class"] for a in p["augment_options"] for s in range(p["seeds"]) for m in p["models"]]
    if p["permute_n_per_class"]:
        runs += [dict(model=m, n_per_class=p["permute_n_per_class"], augment="none", seed=s, permuted=True)
                 for s in range(p["seeds"]) for m in p["models"]]
    return runs


def run_epochs(n_train: int, p: dict) -> int:
    """The epochs of a run on ``n_train`` images (the book's step-budget rule, :mod:`ibnb.core.reference`)."""
    return epochs_for(n_train, p["batch_size"], p["epochs"], p["min_steps"])


def run_sweep(p: dict, progress: bool = False) -> Outcome:
    """Train (or load from the run cache) every planned model, write the results table, return the outcome."""
    pool, val, test = splits(p["dataset"], p["val_per_class"], p["test_per_class"])
    rows, histories = [], {}
    for run in tqdm(plan(p), desc="runs", disable=not progress):
        train = class_balanced_subset(pool, run["n_per_class"], seed=run["seed"])
        run_val, run_test = val, test
        if run["permuted"]:
            train, run_val, run_test = (permute_pixels(d, p["permutation_seed"]) for d in (train, val, test))
        epochs = run_epochs(len(train), p)
        config = TrainConfig.from_params(p, epochs=epochs, augment=run["augment"], seed=run["seed"])
        model, hist, cached = train_or_load(run["model"], train, run_val, config=config,
                                            model_kw=p["model_kw"][run["model"]], device=p["device"],
                                            progress=False)
        ev = evaluate(model, run_test)
        histories[tuple(run.values())] = hist.frame
        rows.append(dict(experiment="architectures", model=run["model"], dataset=p["dataset"], n_train=len(train),
                         seed=run["seed"], epochs=epochs, params=count_parameters(model), test_acc=ev["acc"],
                         test_nll=ev["nll"], **hist.columns(), device=device_name(next(model.parameters()).device),
                         n_per_class=run["n_per_class"], augment=run["augment"], permuted=run["permuted"],
                         steps=epochs * steps_per_epoch(len(train), p["batch_size"]), batch_size=p["batch_size"],
                         test_top5=ev["top5"], n_test=ev["n"], cached=cached))
    df = pd.DataFrame(rows)
    results.write_results(df, NOTEBOOK, p["profile"])
    return Outcome(df, histories, DATASETS[p["dataset"]].num_classes)
