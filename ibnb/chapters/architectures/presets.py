"""Chapter 01's knobs per profile (``smoke`` / ``cpu`` / ``gpu``) and their validation.

Training settings are named like :class:`ibnb.core.train.TrainConfig` fields (``epochs``, ``batch_size``,
``optimizer``, ``lr``, ``weight_decay``, ``schedule``, ``label_smoothing``, ``compile``) and become one config per
run with ``TrainConfig.from_params(P, epochs=..., augment=..., seed=...)``. Model sizes are the book's reference
sizes (:mod:`ibnb.core.reference`), so chapter 02 reuses these runs through the run cache.
"""
from __future__ import annotations

from ibnb.book.profiles import require
from ibnb.core.data import DATASETS
from ibnb.core.models import list_models
from ibnb.core.reference import reference_sizes

NOTEBOOK = "01_architectures"
MODELS = ["mlp", "mixer", "vit", "cnn", "cnn_sa", "resnet18"]
#: the convolutional models (the calibration row takes the best of them)
CNNS = ("cnn", "cnn_sa", "resnet18")
#: display names
NAMES = {"mlp": "MLP", "mixer": "Mixer", "vit": "ViT", "cnn": "CNN", "cnn_sa": "CNN+SA", "resnet18": "ResNet-18"}

_COMMON = dict(dataset="cifar10", models=MODELS, augment_options=["none", "crop+flip"], optimizer="adamw",
               lr=2e-3, weight_decay=0.05, schedule="cosine", label_smoothing=0.0, permutation_seed=0,
               val_per_class=50, device="auto", compile=False)
PRESETS = {
    "smoke": {**_COMMON, "model_kw": reference_sizes("smoke", MODELS), "n_per_class": [4, 8], "epochs": 1,
              "min_steps": 2, "batch_size": 16, "seeds": 2, "test_per_class": 5, "val_per_class": 2,
              "permute_n_per_class": 8},
    "cpu": {**_COMMON, "model_kw": reference_sizes("cpu", MODELS), "n_per_class": [20, 80, 320], "epochs": 6,
            "min_steps": 100, "batch_size": 64, "seeds": 3, "test_per_class": 0, "permute_n_per_class": 80},
    "gpu": {**_COMMON, "model_kw": reference_sizes("gpu", MODELS), "n_per_class": [50, 500, 4950], "epochs": 40,
            "min_steps": 2000, "batch_size": 256, "seeds": 3, "test_per_class": 0, "permute_n_per_class": 4950,
            "lr": 1e-3},
}


def validate(p: dict) -> None:
    """Fail with a clear message on an inconsistent set of resolved parameters."""
    require(set(p["models"]) <= set(list_models()), f"unknown models {sorted(set(p['models']) - set(list_models()))}")
    require(set(p["model_kw"]) >= set(p["models"]), f"model_kw lacks {sorted(set(p['models']) - set(p['model_kw']))}")
    require(p["dataset"] in DATASETS, f"unknown dataset {p['dataset']!r}")
    require(len(p["n_per_class"]) > 0 and all(isinstance(n, int) and n > 0 for n in p["n_per_class"]),
            "n_per_class must be a non-empty list of positive integers (images per class), e.g. [20, 80, 320]")
    require(p["permute_n_per_class"] in p["n_per_class"] or p["permute_n_per_class"] == 0,
            "permute_n_per_class must be one of n_per_class (or 0 to skip the control)")
    require(min(p["epochs"], p["min_steps"], p["batch_size"], p["seeds"]) >= 1,
            "epochs, min_steps, batch_size and seeds must be >= 1")
    require(p["test_per_class"] >= 0 and p["val_per_class"] >= 1, "test_per_class >= 0 and val_per_class >= 1")
    require(set(p["augment_options"]) <= {"none", "crop", "flip", "crop+flip"},
            "augment_options: none/crop/flip/crop+flip")
    require("none" in p["augment_options"], "augment_options must include 'none' (the claims compare against it)")
