"""Reference settings of the standard architectures on CIFAR-10 (chapter 02, and chapter 01's ``smoke`` and ``gpu``
sizes; chapter 01's ``cpu`` profile sizes its models itself, for its per-size step budgets).

Two chapters that train the same model with the same settings on the same data share that run through the run
cache (:mod:`ibnb.core.runs`), so what makes two runs identical lives here, once:

* :data:`REFERENCE_SIZES` — the width/depth of each standard architecture at each profile;
* the **step budget rule** — every run takes ``epochs`` passes over its training set, raised so that it takes at
  least ``min_steps`` optimizer steps (:func:`epochs_for`), so the smallest training sets are not starved of
  updates;
* :func:`splits` — the training pool, the validation split (held out of the pool with a fixed seed) and the
  (optionally class-balanced) test set.
"""
from __future__ import annotations

import copy

from ibnb.core.data import ImageData, class_balanced_subset, load_dataset, split_off

#: model name -> constructor arguments, per profile (same sizes in every chapter -> shared cached runs)
REFERENCE_SIZES = {
    "smoke": {"mlp": {"width": 32, "depth": 1},
              "mixer": {"dim": 16, "depth": 1, "token_hidden": 8, "channel_hidden": 16},
              "vit": {"dim": 16, "depth": 1, "heads": 2}, "cnn": {"width": 4}, "cnn_sa": {"width": 4},
              "resnet18": {"width": 2}},
    "cpu": {"mlp": {"width": 256, "depth": 2},
            "mixer": {"dim": 48, "depth": 2, "token_hidden": 32, "channel_hidden": 96},
            "vit": {"dim": 48, "depth": 2, "heads": 3}, "cnn": {"width": 8}, "cnn_sa": {"width": 8},
            "resnet18": {"width": 4}},
    "gpu": {"mlp": {"width": 1024, "depth": 3},
            "mixer": {"dim": 256, "depth": 8, "token_hidden": 128, "channel_hidden": 1024},
            "vit": {"dim": 256, "depth": 6, "heads": 8}, "cnn": {"width": 64}, "cnn_sa": {"width": 64},
            "resnet18": {"width": 64}},
}
#: the seed that draws the validation split out of the training set (fixed: every run sees the same split)
VAL_SEED = 10_000


def reference_sizes(profile: str, models=None) -> dict[str, dict]:
    """A copy of :data:`REFERENCE_SIZES` at ``profile``, restricted to ``models`` (default: all)."""
    sizes = copy.deepcopy(REFERENCE_SIZES[profile])
    return sizes if models is None else {m: sizes[m] for m in models}


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps per epoch, as :func:`ibnb.core.train.fit` batches (it drops the last partial batch)."""
    return max(1, n_train // batch_size)


def epochs_for(n_train: int, batch_size: int, epochs: int, min_steps: int) -> int:
    """``epochs`` passes, raised so that the run takes at least ``min_steps`` optimizer steps."""
    return max(epochs, -(-min_steps // steps_per_epoch(n_train, batch_size)))


def splits(dataset: str, val_per_class: int, test_per_class: int = 0) -> tuple[ImageData, ImageData, ImageData]:
    """``(pool, val, test)``: the training set less a class-balanced validation split of ``val_per_class`` images
    per class, that split, and the test set (class-balanced ``test_per_class`` per class; 0 = all of it)."""
    pool, val = split_off(load_dataset(dataset, "train"), val_per_class, seed=VAL_SEED)
    test = load_dataset(dataset, "test")
    if test_per_class:
        test = class_balanced_subset(test, test_per_class, seed=0)
    return pool, val, test


def changes(now: dict[str, str], before: dict[str, str]) -> str:
    """``*claim* (before → now); …`` for every claim whose verdict differs from an earlier record of it (a chapter
    keeps the verdicts of an earlier rule or budget to say which changed); ``"none"`` if none did."""
    changed = [f"*{claim}* ({before[claim]} → {verdict})" for claim, verdict in now.items()
               if claim in before and before[claim] != verdict]
    return "; ".join(changed) if changed else "none"
