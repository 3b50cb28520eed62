"""Chapter 05's knobs per profile (``smoke`` / ``cpu`` / ``gpu``) and their validation.

Training settings are named like :class:`ibnb.core.train.TrainConfig` fields (``batch_size``, ``optimizer``,
``lr``, ``weight_decay``, ``schedule``); ``epochs`` and ``seeds`` are given per network. The KL weight of the
ELBO is 0 for ``kl_zero_epochs`` epochs and rises linearly to 1 at ``kl_full_epochs`` (the paper: 5 and 20).
"""
from __future__ import annotations

from ibnb.book.profiles import require

NOTEBOOK = "05_sparse_vd"
NETWORKS = ["lenet300_100", "lenet5_caffe"]
#: display names
PRETTY = {"lenet300_100": "LeNet-300-100", "lenet5_caffe": "LeNet-5-Caffe"}

_COMMON = dict(dataset="mnist", networks=NETWORKS, batch_size=100, optimizer="adamw", lr=1e-3, weight_decay=0.0,
               schedule="cosine", device="auto")
PRESETS = {
    "smoke": {**_COMMON, "n_per_class": 30, "val_per_class": 5, "test_per_class": 20,
              "epochs": {"lenet300_100": 2, "lenet5_caffe": 1}, "seeds": {"lenet300_100": 1, "lenet5_caffe": 1},
              "kl_zero_epochs": 0.5, "kl_full_epochs": 1.0, "random_label_epochs": 2},
    "cpu": {**_COMMON, "n_per_class": 1000, "val_per_class": 100, "test_per_class": 0,
            "epochs": {"lenet300_100": 10, "lenet5_caffe": 5}, "seeds": {"lenet300_100": 3, "lenet5_caffe": 3},
            "kl_zero_epochs": 1.0, "kl_full_epochs": 4.0, "random_label_epochs": 10},
    "gpu": {**_COMMON, "n_per_class": 0, "val_per_class": 100, "test_per_class": 0,
            "epochs": {"lenet300_100": 200, "lenet5_caffe": 200}, "seeds": {"lenet300_100": 3, "lenet5_caffe": 3},
            "kl_zero_epochs": 5.0, "kl_full_epochs": 20.0, "random_label_epochs": 200},
}


def validate(p: dict) -> None:
    """Fail with a clear message on an inconsistent set of resolved parameters."""
    require(set(p["networks"]) <= set(NETWORKS), f"networks must be among {NETWORKS}")
    require(set(p["epochs"]) >= set(p["networks"]) and set(p["seeds"]) >= set(p["networks"]),
            "epochs and seeds need an entry per network")
    require(all(v >= 1 for v in list(p["epochs"].values()) + list(p["seeds"].values())), "epochs/seeds >= 1")
    require(p["n_per_class"] >= 0 and p["test_per_class"] >= 0 and p["val_per_class"] >= 1,
            "n_per_class >= 0 (0 = all), test_per_class >= 0 (0 = all), val_per_class >= 1")
    require(0 <= p["kl_zero_epochs"] <= p["kl_full_epochs"], "0 <= kl_zero_epochs <= kl_full_epochs")
    require(p["random_label_epochs"] >= 0 and p["batch_size"] >= 1 and p["lr"] > 0, "bad random_label_epochs/batch/lr")
    require(p["random_label_epochs"] == 0 or "lenet300_100" in p["networks"],
            "the random-label control trains LeNet-300-100: keep it in networks or set random_label_epochs = 0")
