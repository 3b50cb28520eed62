"""Chapter 03's knobs per profile (``smoke`` / ``cpu`` / ``gpu``) and their validation.

Training settings are named like :class:`ibnb.core.train.TrainConfig` fields (``optimizer``, ``schedule``,
``label_smoothing``, ``augment``, ``epochs``, ``compile``); each run's learning rate, batch size and weight decay
come from the grid (``grid_*``) and become one config per run with
``TrainConfig.from_params(P, lr=..., batch_size=..., weight_decay=..., seed=...)``. ``probe`` gives a reported run
that fails the plateau test its budget-halving probe (convergence test 3; free for the report's ReduceLROnPlateau,
whose probe is the run's own first half).

The ``cpu`` budget (issue 17: chapter ≤ 30 min on 2 cores). Measured on the 2-core Zen 4 (bf16, batch 64): the
three models train at ~3,900 (plain), ~2,500 (3 blocks) and ~1,750 images/s (3 blocks + attention) at width 16,
and at 2,300 / 910 / 730 at width 32 — one attention run of 20 epochs on 10,000 images takes ~2 min at width 16
and ~4.6 min at width 32. So the ``cpu`` profile uses width 16 (widths 16/32/64; the report's 64/128/256 at the
``gpu`` profile), 10,000 training images, 20 epochs, and a grid of the report's three learning rates at batch 64
and weight decay 1e-4 (the report's 3 × 3 × 2 grid at ``gpu``).
"""
from __future__ import annotations

from ibnb.book.profiles import require
from ibnb.core.data import DATASETS

NOTEBOOK = "03_spatial_attention"
PLAIN, DEEP, SA = "team_cnn_mini", "team_cnn_deep_mini", "team_cnn_sa_mini"
FOOD_PLAIN, FOOD_SA = "team_cnn_food", "team_cnn_sa_food"
MODELS = [PLAIN, DEEP, SA]
LABELS = {PLAIN: "plain (1 block)", DEEP: "3 blocks, no attention", SA: "3 blocks + attention",
          FOOD_PLAIN: "Food-101 plain", FOOD_SA: "Food-101 two-branch + attention"}
COLORS = {PLAIN: "#1f77b4", DEEP: "#7f7f7f", SA: "#d62728", FOOD_PLAIN: "#1f77b4", FOOD_SA: "#d62728"}
#: what the report states (parameter counts; its training setting)
REPORT_PARAMS = {PLAIN: 449_188, SA: 1_173_197, FOOD_PLAIN: "~1 M", FOOD_SA: "~9 M"}
REPORT_SETTING = dict(lr=1e-4, weight_decay=1e-5)

_COMMON = dict(dataset="cifar10", models=MODELS, optimizer="adamw", schedule="plateau", label_smoothing=0.1,
               augment="none", device="auto", compile=False, probe=True, food_lr=1e-4, food_weight_decay=1e-5,
               food_batch_size=64)
PRESETS = {
    "smoke": {**_COMMON, "width": 4, "n_per_class": 8, "val_per_class": 3, "test_per_class": 6, "epochs": 2,
              "seeds": 2, "grid_lr": [1e-3, 1e-2], "grid_batch_size": [32], "grid_weight_decay": [1e-4],
              "pacs_size": 32, "pacs_n_per_class": 8, "pacs_val_per_class": 3, "pacs_epochs": 1,
              "sketch_per_class": 6, "faith_per_class": 4, "faith_fractions": [0.25], "overlay_images": 2,
              "food": False, "food_size": 128, "food_epochs": 1, "food_seeds": 1, "food_val_per_class": 2},
    "cpu": {**_COMMON, "width": 16, "n_per_class": 1000, "val_per_class": 100, "test_per_class": 0, "epochs": 20,
            "seeds": 3, "grid_lr": [1e-2, 1e-3, 1e-4], "grid_batch_size": [64], "grid_weight_decay": [1e-4],
            "pacs_size": 32, "pacs_n_per_class": 0, "pacs_val_per_class": 15, "pacs_epochs": 30,
            "sketch_per_class": 0, "faith_per_class": 50, "faith_fractions": [0.1, 0.3], "overlay_images": 3,
            "food": False, "food_size": 128, "food_epochs": 30, "food_seeds": 2, "food_val_per_class": 50},
    "gpu": {**_COMMON, "width": 64, "n_per_class": 0, "val_per_class": 500, "test_per_class": 0, "epochs": 30,
            "seeds": 3, "grid_lr": [1e-2, 1e-3, 1e-4], "grid_batch_size": [64, 128], "grid_weight_decay": [1e-4, 1e-3],
            "pacs_size": 64, "pacs_n_per_class": 0, "pacs_val_per_class": 15, "pacs_epochs": 40,
            "sketch_per_class": 0, "faith_per_class": 100, "faith_fractions": [0.1, 0.25, 0.5], "overlay_images": 4,
            "food": True, "food_size": 128, "food_epochs": 30, "food_seeds": 2, "food_val_per_class": 50},
}


def validate(p: dict) -> None:
    """Fail with a clear message on an inconsistent set of resolved parameters."""
    require(p["dataset"] in DATASETS, f"unknown dataset {p['dataset']!r}")
    require(set(p["models"]) == set(MODELS), f"models must be {MODELS} (the comparison needs all three)")
    require(p["width"] >= 1 and p["epochs"] >= 1 and p["pacs_epochs"] >= 1, "width and epochs must be >= 1")
    require(p["seeds"] >= 2, "seeds must be >= 2 (the chapter reports intervals over seeds)")
    require(p["n_per_class"] >= 0 and p["pacs_n_per_class"] >= 0, "n_per_class >= 0 (0 = all)")
    require(p["val_per_class"] >= 1 and p["pacs_val_per_class"] >= 1, "val_per_class >= 1")
    require(p["test_per_class"] >= 0 and p["sketch_per_class"] >= 0, "test/sketch_per_class >= 0 (0 = all)")
    require(all(len(p[k]) >= 1 for k in ("grid_lr", "grid_batch_size", "grid_weight_decay")), "empty grid axis")
    require(all(v > 0 for v in p["grid_lr"]) and all(v >= 1 for v in p["grid_batch_size"]), "bad grid values")
    require(all(0 < f < 1 for f in p["faith_fractions"]), "faith_fractions must lie in (0, 1)")
    require(p["faith_per_class"] >= 1 and p["overlay_images"] >= 1, "faith_per_class, overlay_images >= 1")
    require(isinstance(p["probe"], bool), "probe must be True or False")
    require(p["food_seeds"] >= 1 and p["food_epochs"] >= 1 and p["food_val_per_class"] >= 1, "food_* >= 1")
