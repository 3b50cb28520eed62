"""The data splits and the deep ensemble of chapter 04.

A validation split is carved from the training set (never from the test set): it fits every temperature, runs
the policy search (on its first ``gps_search_per_class`` images per class) and is the per-epoch validation set of
every member, so each member's convergence check uses its validation accuracy. Every member is trained on the same
class-balanced images with its own seed (initialisation and batch order). Two sets (:data:`MEMBER_SETS`):
``ensembles × members`` with the crop+flip of ``train_augment`` (member ``i`` belongs to ensemble ``i // members``),
and ``ra_members`` with RandAugment on top (:mod:`ibnb.chapters.tta.randaugment`), for the GPS claims.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ibnb.chapters.tta.randaugment import RandAugmentStep
from ibnb.core.data import ImageData, balanced_indices, class_balanced_subset, load_dataset, split_off
from ibnb.core.fast_recipe import LookaheadStep
from ibnb.core.models import count_parameters
from ibnb.core.runs import train_or_load
from ibnb.core.train import CrossEntropyStep, TrainConfig, device_name

#: the two sets of members: crop+flip (TTA, ensembles, MeTTA) and RandAugment (GPS)
CROP_FLIP_SET, RA_SET = "crop+flip", "RandAugment"
MEMBER_SETS = (CROP_FLIP_SET, RA_SET)


@dataclass
class Splits:
    train: ImageData
    val: ImageData            # carved from the training pool: temperatures, per-epoch validation
    search: ImageData         # the part of ``val`` the GPS pool is evaluated on (the whole of it by default)
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
    search = class_balanced_subset(val, p["gps_search_per_class"], seed=0) if p["gps_search_per_class"] else val
    return Splits(train, val, search, test, ctest, probe, held_out)


def set_size(p: dict, member_set: str) -> int:
    """How many members ``member_set`` has."""
    return p["ensembles"] * p["members"] if member_set == CROP_FLIP_SET else p["ra_members"]


def member_config(p: dict, seed: int, member_set: str = CROP_FLIP_SET) -> tuple[TrainConfig, object]:
    """``(configuration, train step)`` of member ``seed`` of ``member_set``."""
    cfg = TrainConfig.from_params(p, augment=p["train_augment"], seed=seed,
                                  warmup_epochs=p["warmup_fraction"] * p["epochs"])
    base = LookaheadStep(cfg.label_smoothing) if p["lookahead"] else CrossEntropyStep(cfg.label_smoothing)
    if member_set == CROP_FLIP_SET:
        return cfg, base
    return cfg, RandAugmentStep(mean=tuple(p["data_mean"]), std=tuple(p["data_std"]), n_ops=p["ra_ops"], seed=seed,
                                label_smoothing=cfg.label_smoothing, lookahead=bool(p["lookahead"]))


def train_members(p: dict, splits: Splits, member_set: str = CROP_FLIP_SET, progress: bool = False):
    """Train (or load from the run cache) the members of ``member_set``, validating each epoch on ``splits.val``;
    returns ``(models, one row per member)`` with the member's set, ensemble, wall time, throughput and
    convergence check."""
    models, rows = [], []
    q = dict(p, data_mean=splits.train.mean, data_std=splits.train.std)
    for seed in range(set_size(p, member_set)):
        cfg, step = member_config(q, seed, member_set)
        model, hist, cached = train_or_load(p["model"], splits.train, splits.val, config=cfg, step=step,
                                            model_kw=p["model_kw"], device=p["device"], progress=progress)
        models.append(model)
        rows.append(dict(set=member_set, seed=seed, ensemble=seed // p["members"], params=count_parameters(model),
                         cached=cached, device=device_name(next(model.parameters()).device), **hist.columns()))
    return models, pd.DataFrame(rows)
