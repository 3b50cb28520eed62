"""Chapter 05's knobs per profile (``smoke`` / ``cpu`` / ``gpu``) and their validation.

Training settings are named like :class:`ibnb.core.train.TrainConfig` fields (``batch_size``, ``optimizer``,
``lr``, ``weight_decay``, ``schedule``); ``epochs`` and ``seeds`` are given per network. The KL weight of the
ELBO is 0 for the first ``kl_zero_frac`` of a run's epochs and rises linearly to 1 at ``kl_full_frac`` of them: the
paper's 5 and 20 of 200 epochs are 0.025 and 0.1, so every schedule, short or long, has the paper's shape.

The random-label control trains LeNet-300-100, Sparse VD and dense, on ``random_label_per_class`` images per class
with shuffled labels for ``random_label_epochs`` epochs, ``random_label_seeds`` seeds each (the seed draws the
initialisation and the permutation), next to one Sparse VD run on the same images with their true labels.

The ``cpu`` budget (issue 18: chapter ≤ 45 min on 2 cores): measured on the 2-core Zen 4 with ``fit``, batch 100,
Sparse VD LeNet-300-100 trains at ~9,600 images/s, dense ~27,000, dense LeNet-5-Caffe ~6,300 (bf16,
channels-last) and Sparse VD LeNet-5-Caffe ~1,400 (fp32: its layers are not ``nn.Conv2d``; bf16 gained ~10 % and
channels-last lost 40 %, so the rule's fp32 stays). LeNet-300-100 gets the issue's 50 epochs on all 59,000
training images; LeNet-5's Sparse VD at 20 epochs × 3 seeds alone would take ~42 min. With LeNet-5 at 6 epochs
and the random labels on 500 images per class the chapter took 47.9 min (stop 26), so LeNet-5 trains 5 epochs and
the random-label control uses 300 images per class (3,000 images, 100 epochs).
"""
from __future__ import annotations

from ibnb.book.profiles import require

NOTEBOOK = "05_sparse_vd"
NETWORKS = ["lenet300_100", "lenet5_caffe"]
#: display names
PRETTY = {"lenet300_100": "LeNet-300-100", "lenet5_caffe": "LeNet-5-Caffe"}

_COMMON = dict(dataset="mnist", networks=NETWORKS, batch_size=100, optimizer="adamw", lr=1e-3, weight_decay=0.0,
               schedule="linear", kl_zero_frac=0.025, kl_full_frac=0.1, device="auto")
PRESETS = {
    "smoke": {**_COMMON, "n_per_class": 30, "val_per_class": 5, "test_per_class": 20,
              "epochs": {"lenet300_100": 2, "lenet5_caffe": 1}, "seeds": {"lenet300_100": 1, "lenet5_caffe": 1},
              "random_label_per_class": 20, "random_label_epochs": 2, "random_label_seeds": 1},
    "cpu": {**_COMMON, "n_per_class": 0, "val_per_class": 100, "test_per_class": 0,
            "epochs": {"lenet300_100": 50, "lenet5_caffe": 5}, "seeds": {"lenet300_100": 3, "lenet5_caffe": 3},
            "random_label_per_class": 300, "random_label_epochs": 100, "random_label_seeds": 3},
    "gpu": {**_COMMON, "n_per_class": 0, "val_per_class": 100, "test_per_class": 0,
            "epochs": {"lenet300_100": 200, "lenet5_caffe": 200}, "seeds": {"lenet300_100": 3, "lenet5_caffe": 3},
            "random_label_per_class": 0, "random_label_epochs": 200, "random_label_seeds": 3},
}


def validate(p: dict) -> None:
    """Fail with a clear message on an inconsistent set of resolved parameters."""
    require(set(p["networks"]) <= set(NETWORKS), f"networks must be among {NETWORKS}")
    require(set(p["epochs"]) >= set(p["networks"]) and set(p["seeds"]) >= set(p["networks"]),
            "epochs and seeds need an entry per network")
    require(all(v >= 1 for v in list(p["epochs"].values()) + list(p["seeds"].values())), "epochs/seeds >= 1")
    require(p["n_per_class"] >= 0 and p["test_per_class"] >= 0 and p["val_per_class"] >= 1,
            "n_per_class >= 0 (0 = all), test_per_class >= 0 (0 = all), val_per_class >= 1")
    require(0 <= p["kl_zero_frac"] <= p["kl_full_frac"] <= 1, "0 <= kl_zero_frac <= kl_full_frac <= 1")
    require(p["random_label_epochs"] >= 0 and p["batch_size"] >= 1 and p["lr"] > 0, "bad random_label_epochs/batch/lr")
    require(p["random_label_per_class"] >= 0 and p["random_label_seeds"] >= 1,
            "random_label_per_class >= 0 (0 = all training images), random_label_seeds >= 1")
    require(p["random_label_epochs"] == 0 or "lenet300_100" in p["networks"],
            "the random-label control trains LeNet-300-100: keep it in networks or set random_label_epochs = 0")
