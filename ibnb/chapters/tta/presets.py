"""Chapter 04's knobs: one dict per profile (same keys in each) and their validation.

Training settings are named like :class:`ibnb.core.train.TrainConfig` fields (``epochs``, ``batch_size``,
``optimizer``, ``lr``, ``weight_decay``, ``schedule``, ``label_smoothing``, ``compile``) and become one config
per member with ``TrainConfig.from_params(P, augment=P["train_augment"], seed=member)``. ``device`` stays
``"auto"`` here and is resolved once by :func:`ibnb.book.profiles.resolve`.
"""
from __future__ import annotations

from ibnb.book.profiles import require
from ibnb.core.corruptions import CORRUPTIONS, SEVERITIES
from ibnb.core.data import DATASETS
from ibnb.core.models import list_models

NOTEBOOK = "04_test_time_augmentation"

_COMMON = dict(dataset="cifar10", model="cnn", train_augment="crop+flip", optimizer="adamw", lr=2e-3,
               weight_decay=0.05, schedule="cosine", label_smoothing=0.0, corruptions=list(CORRUPTIONS),
               severities=list(SEVERITIES), gps_ops=[2, 3], metta_views=[1, 10, 32],
               metta_alphas=[0.0, 0.25, 0.5, 0.75, 1.0], probe_epochs=100, probe_lr=0.1, ece_bins=15,
               aug_seed=0, device="auto", compile=False, eval_batch_size=256)
PRESETS = {
    "smoke": {**_COMMON, "model_kw": {"width": 4}, "members": 2, "n_per_class": 10, "val_per_class": 4,
              "test_per_class": 4, "corrupt_per_class": 2, "epochs": 1, "batch_size": 32, "tta_samples": [1, 2],
              "corrupt_samples": 2, "gps_pool": 4, "member_subsets": 1, "metta_members": 1,
              "probe_per_class": 4, "probe_epochs": 5},
    "cpu": {**_COMMON, "model_kw": {"width": 8}, "members": 5, "n_per_class": 500, "val_per_class": 50,
            "test_per_class": 0, "corrupt_per_class": 20, "epochs": 12, "batch_size": 128,
            "tta_samples": [1, 2, 4, 8, 16], "corrupt_samples": 4, "gps_pool": 40, "member_subsets": 4,
            "metta_members": 2, "probe_per_class": 50},
    "gpu": {**_COMMON, "model": "resnet18", "model_kw": {"width": 64}, "members": 5, "n_per_class": 4500,
            "val_per_class": 500, "test_per_class": 0, "corrupt_per_class": 200, "epochs": 100, "batch_size": 256,
            "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "tta_samples": [1, 2, 4, 8, 16, 32],
            "corrupt_samples": 8, "gps_pool": 500, "member_subsets": 10, "metta_members": 3,
            "probe_per_class": 500, "eval_batch_size": 2000},
}


def validate(p: dict) -> None:
    """Reject inconsistent parameters with a message naming the knob."""
    require(p["model"] in list_models(), f"unknown model {p['model']!r}; available: {list_models()}")
    require(p["dataset"] in DATASETS, f"unknown dataset {p['dataset']!r}")
    require(p["members"] >= 1 and 1 <= p["metta_members"] <= p["members"], "need 1 <= metta_members <= members")
    require(min(p["n_per_class"], p["val_per_class"], p["epochs"], p["batch_size"], p["gps_pool"],
                p["member_subsets"], p["probe_per_class"], p["corrupt_samples"], p["probe_epochs"]) >= 1,
            "n_per_class, val_per_class, epochs, batch_size, gps_pool, member_subsets, probe_per_class, "
            "probe_epochs and corrupt_samples must be >= 1")
    require(p["probe_lr"] > 0, "probe_lr must be > 0")
    require(p["test_per_class"] >= 0 and p["corrupt_per_class"] >= 0, "test_per_class, corrupt_per_class >= 0")
    t = p["tta_samples"]
    require(len(t) >= 1 and t[0] == 1 and all(a < b for a, b in zip(t, t[1:])),
            "tta_samples must be increasing and start at 1 (the single-sample case)")
    require(p["corrupt_samples"] in t, "corrupt_samples must be one of tta_samples (for the clean reference)")
    require(set(p["corruptions"]) <= set(CORRUPTIONS) and p["corruptions"], f"corruptions must be among {CORRUPTIONS}")
    require(set(p["severities"]) <= set(SEVERITIES) and p["severities"], f"severities must be among {SEVERITIES}")
    require(set(p["gps_ops"]) <= {1, 2, 3, 4} and p["gps_ops"], "gps_ops: sub-policy lengths among 1..4")
    require(all(v >= 1 for v in p["metta_views"]) and 1 in p["metta_views"], "metta_views must include 1")
    require(all(0 <= a <= 1 for a in p["metta_alphas"]), "metta_alphas must lie in [0, 1]")
    require(p["train_augment"] in ("none", "crop+flip", "crop", "flip"), "train_augment: none/crop/flip/crop+flip")
