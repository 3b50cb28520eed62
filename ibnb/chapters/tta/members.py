"""The data splits and the deep ensemble of chapter 04.

A validation split is carved from the training set (never from the test set): it fits every temperature, runs
the policy search and is the per-epoch validation set of every member, so each member's convergence check uses
its validation accuracy. The members are trained on the same class-balanced images with different seeds
(initialisation and batch order), with the crop+flip augmentation of ``train_augment``.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ibnb.core.data import ImageData, balanced_indices, class_balanced_subset, load_dataset, split_off
from ibnb.core.models import count_parameters
from ibnb.core.runs import train_or_load
from ibnb.core.train import TrainConfig, device_name


@dataclass
class Splits:
    train: ImageData
    val: ImageData            # carved from the training pool: temperatures, the GPS search, per-epoch validation
    test: ImageData
    ctest: ImageData          # the (nested) test subset that is corrupted
    probe: ImageData          # MeTTA linear-probe training set
    probe_held_out: bool      # probe images are unused by the ensemble (else: its own training images)


def load_splits(p: dict) -> Splits:
    """Train / validation / test / corrupted-test / probe splits of ``p["dataset"]`` (seeded, class-balanced)."""
    pool, val = split_off(load_dataset(p["dataset"], "train"), p["val_per_class"], seed=10_000)
    idx = balanced_indices(pool, p["n_per_class"], seed=0)
    train = pool.subset(idx, n_per_class=p["n_per_class"], subset_seed=0)
    mask = torch.ones(len(pool), dtype=torch.bool)
    mask[idx] = False
    rest = pool.subset(torch.nonzero(mask).flatten())
    held_out = min(rest.class_counts() or [0]) >= p["probe_per_class"]
    n_probe = p["probe_per_class"] if held_out else min(p["probe_per_class"], p["n_per_class"])
    probe = class_balanced_subset(rest if held_out else train, n_probe, seed=1)
    full_test = load_dataset(p["dataset"], "test")
    test = class_balanced_subset(full_test, p["test_per_class"], seed=0) if p["test_per_class"] else full_test
    # the same seed draws nested subsets, so the corrupted images are a subset of the clean test images
    ctest = class_balanced_subset(full_test, p["corrupt_per_class"], seed=0) if p["corrupt_per_class"] else full_test
    return Splits(train, val, test, ctest, probe, held_out)


def member_config(p: dict, seed: int) -> TrainConfig:
    """The training configuration of ensemble member ``seed``."""
    return TrainConfig.from_params(p, augment=p["train_augment"], seed=seed)


def train_members(p: dict, splits: Splits, progress: bool = False):
    """Train (or load from the run cache) the ensemble, validating each epoch on ``splits.val``; returns
    ``(models, one row per member)`` with the member's wall time, throughput and convergence check."""
    models, rows = [], []
    for seed in range(p["members"]):
        model, hist, cached = train_or_load(p["model"], splits.train, splits.val, config=member_config(p, seed),
                                            model_kw=p["model_kw"], device=p["device"], progress=progress)
        models.append(model)
        rows.append(dict(seed=seed, params=count_parameters(model), cached=cached,
                         device=device_name(next(model.parameters()).device), **hist.columns()))
    return models, pd.DataFrame(rows)
