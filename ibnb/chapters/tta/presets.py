"""Chapter 04's knobs: one dict per profile (same keys in each) and their validation.

Training settings are named like :class:`ibnb.core.train.TrainConfig` fields (``epochs``, ``batch_size``,
``optimizer``, ``lr``, ``momentum``, ``weight_decay``, ``schedule``, ``label_smoothing``, ``compile``) and become
one config per member (:func:`ibnb.chapters.tta.members.member_config`), with ``warmup_fraction`` of the epochs
spent warming up and, if ``lookahead``, the fast recipe's lookahead update. Two sets of members are trained:
``ensembles`` independent ensembles of ``members`` with crop+flip (the TTA, ensemble and MeTTA claims) and
``ra_members`` with RandAugment of ``ra_ops`` operations (the GPS claims, as in the GPS paper). ``device`` stays
``"auto"`` here and is resolved once by :func:`ibnb.book.profiles.resolve`.
"""
from __future__ import annotations

from ibnb.book.profiles import require
from ibnb.core.corruptions import CORRUPTIONS, SEVERITIES
from ibnb.core.data import DATASETS
from ibnb.core.models import list_models

NOTEBOOK = "04_test_time_augmentation"

#: the fast CPU recipe (:mod:`ibnb.core.fast_recipe`: Nesterov SGD, label smoothing 0.2, lookahead, warm-up then
#: linear decay, batch 512), with the Pitfalls paper's crop+flip as the training augmentation
_FAST = dict(model="fast_cnn", optimizer="sgd", lr=1.5, momentum=0.85, weight_decay=5e-4, schedule="linear",
             warmup_fraction=0.2, label_smoothing=0.2, lookahead=True, batch_size=512)
_COMMON = dict(dataset="cifar10", **_FAST, train_augment="crop+flip", ensembles=1, ra_members=5, ra_ops=2,
               corruptions=list(CORRUPTIONS), severities=list(SEVERITIES), gps_ops=[2, 3], gps_search_per_class=0,
               metta_views=[1, 4, 8], metta_alphas=[0.0, 0.25, 0.5, 0.75, 1.0], probe_epochs=100, probe_lr=0.1,
               ece_bins=15, aug_seed=0, device="auto", compile=False, eval_batch_size=1000)
PRESETS = {
    "smoke": {**_COMMON, "model_kw": {"widths": [8, 8, 8]}, "members": 2, "ra_members": 2, "n_per_class": 10,
              "val_per_class": 4, "test_per_class": 4, "corrupt_per_class": 2, "epochs": 1, "batch_size": 32,
              "tta_samples": [1, 2], "corrupt_samples": 2, "gps_pool": 4, "member_subsets": 1, "metta_members": 1,
              "metta_views": [1, 2], "probe_per_class": 4, "probe_epochs": 5},
    "cpu": {**_COMMON, "model_kw": {"widths": [32, 64, 64]}, "members": 5, "n_per_class": 4500,
            "val_per_class": 500, "test_per_class": 0, "corrupt_per_class": 100, "epochs": 5,
            "corruptions": ["gaussian_noise", "gaussian_blur", "contrast", "jpeg"], "severities": [1, 3, 5],
            "tta_samples": [1, 2, 4, 8], "corrupt_samples": 4, "gps_pool": 200, "gps_search_per_class": 100,
            "member_subsets": 4, "metta_members": 5, "probe_per_class": 100, "eval_batch_size": 500},
    "gpu": {**_COMMON, "model": "resnet18", "model_kw": {"width": 64}, "members": 5, "ensembles": 3,
            "n_per_class": 4500, "val_per_class": 500, "test_per_class": 0, "corrupt_per_class": 200, "epochs": 100,
            "batch_size": 256, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
            "schedule": "cosine", "warmup_fraction": 0.0, "label_smoothing": 0.0, "lookahead": False,
            "tta_samples": [1, 2, 4, 8, 16, 32], "corrupt_samples": 8, "gps_pool": 500, "member_subsets": 10,
            "metta_members": 5, "metta_views": [1, 10, 32], "probe_per_class": 500, "eval_batch_size": 2000},
}


def validate(p: dict) -> None:
    """Reject inconsistent parameters with a message naming the knob."""
    require(p["model"] in list_models(), f"unknown model {p['model']!r}; available: {list_models()}")
    require(p["dataset"] in DATASETS, f"unknown dataset {p['dataset']!r}")
    require(p["members"] >= 1 and p["ensembles"] >= 1 and 1 <= p["metta_members"] <= p["members"] * p["ensembles"],
            "need members >= 1, ensembles >= 1 and 1 <= metta_members <= members * ensembles")
    require(p["ra_members"] >= 1 and p["ra_ops"] >= 1, "ra_members and ra_ops (RandAugment operations) must be >= 1")
    require(p["gps_search_per_class"] >= 0, "gps_search_per_class must be >= 0 (0: the whole validation split)")
    require(0 <= p["warmup_fraction"] < 1, "warmup_fraction must lie in [0, 1)")
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
