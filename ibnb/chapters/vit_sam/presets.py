"""Chapter 08's knobs per profile (``smoke`` / ``cpu`` / ``gpu``) and their validation.

Training settings are named like :class:`ibnb.core.train.TrainConfig` fields (``epochs``, ``batch_size``,
``optimizer``, ``lr``, ``weight_decay``, ``schedule``, ``augment``, ``compile``) and become one config per run with
``TrainConfig.from_params(P, epochs=..., seed=...)``; SAM, ASAM and the batch operations are train steps
(:mod:`ibnb.chapters.vit_sam.sam`) whose fields key the run cache.
"""
from __future__ import annotations

from ibnb.book.profiles import require
from ibnb.core.data import DATASETS
from ibnb.core.models import list_models

NOTEBOOK = "08_vit_sam"
#: the chapter whose results table the size sweep reads (data, not code: no chapter imports another)
ARCH_NOTEBOOK = "01_architectures"
LABELS = {"cnn": "CNN", "vit": "ViT", "resnet18": "ResNet-18", "cnn_sa": "CNN+SA"}

_SMALL = {"cnn": {"width": 8}, "vit": {"dim": 48, "depth": 2, "heads": 3}, "cnn_sa": {"width": 8}}
_TINY = {"cnn": {"width": 4}, "vit": {"dim": 16, "depth": 1, "heads": 2}, "cnn_sa": {"width": 4}}
_FULL = {"cnn": {"width": 64}, "vit": {"dim": 256, "depth": 6, "heads": 8}, "resnet18": {"width": 64},
         "cnn_sa": {"width": 64}}

_COMMON = dict(dataset="cifar10", optimizer="adamw", schedule="cosine", augment="none", mixup_alpha=1.0,
               cutout_size=8, mixes=["mixup", "cutout"], pga_steps=5, sharp_rho=0.05, mix_rho=0.05,
               asam_rho=0.5, sa_model="cnn_sa", slice_range=1.0, device="auto", compile=False, search_seed=0,
               bases=["adamw", "sgd"], sgd_lr=0.05, sgd_weight_decay=5e-4, search_models=["cnn", "vit"],
               model_precision={}, probe=True)
PRESETS = {
    "smoke": {**_COMMON, "models": ["cnn", "vit"], "model_kw": _TINY, "n_per_class": 6, "val_per_class": 3,
              "test_per_class": 5, "epochs": 1, "batch_size": 16, "seeds": 2, "lr": 2e-3, "weight_decay": 0.05,
              "rhos": [0.02, 0.05, 0.1, 0.2], "mix_model": "vit", "sharp_n": 16, "hessian_iters": 3,
              "slice_points": 5, "rollout_images": 2, "search_trials": 2, "search_epochs": 1,
              "extra_seeds": 1, "workers": 1, "arch_profile": "cpu"},
    # 5,000 training images, batch 32, 13 epochs = 2,028 steps; two runs at a time, one thread each
    "cpu": {**_COMMON, "models": ["cnn", "vit"], "model_kw": _SMALL, "n_per_class": 500, "val_per_class": 50,
            "test_per_class": 0, "epochs": 13, "batch_size": 32, "seeds": 3, "lr": 2e-3, "weight_decay": 0.05,
            "rhos": [0.02, 0.05, 0.1, 0.2], "mix_model": "vit", "sharp_n": 256, "hessian_iters": 10,
            "slice_points": 21, "rollout_images": 4, "search_trials": 20, "search_epochs": 2,
            "extra_seeds": 1, "workers": 2, "arch_profile": "cpu",
            # measured (1 thread, batch 128, Xeon with AMX-BF16): the dim-48 ViT trains at 2,300 img/s in fp32 and
            # 900 img/s under bf16 autocast, so it stays fp32 here (chapter 01 does the same)
            "model_precision": {"vit": "fp32"}},
    "gpu": {**_COMMON, "models": ["resnet18", "vit"], "model_kw": _FULL, "n_per_class": 0, "val_per_class": 500,
            "test_per_class": 0, "epochs": 50, "batch_size": 256, "seeds": 3, "lr": 1e-3, "weight_decay": 0.05,
            "rhos": [0.02, 0.05, 0.1, 0.2, 0.5], "asam_rho": 1.0, "mix_model": "vit", "sharp_n": 2000,
            "hessian_iters": 50, "slice_points": 41, "rollout_images": 6, "search_trials": 30,
            "search_epochs": 30, "search_models": ["resnet18", "vit"], "extra_seeds": 3, "workers": 1,
            "arch_profile": "gpu"},
}


def validate(p: dict) -> None:
    """Fail with a clear message on an inconsistent set of resolved parameters."""
    known = set(list_models())
    require(set(p["models"]) <= known and p["sa_model"] in known, "unknown model name")
    require("vit" in p["models"] and len(p["models"]) == 2,
            "models: one convolutional model and 'vit' (the chapter compares the two)")
    require(p["models"][0] != "vit", "models: the convolutional model first, then 'vit'")
    require(set(p["model_kw"]) >= set(p["models"]) | {p["sa_model"]}, "model_kw needs every model and sa_model")
    require(p["mix_model"] in p["models"] and set(p["search_models"]) <= set(p["models"]) and p["search_models"],
            "mix_model and search_models must be in models")
    require(len(p["bases"]) >= 1 and p["bases"][0] == "adamw" and set(p["bases"]) <= {"adamw", "sgd"}
            and len(set(p["bases"])) == len(p["bases"]), "bases: 'adamw' first, then optionally 'sgd'")
    require(p["sgd_lr"] > 0 and p["sgd_weight_decay"] >= 0, "sgd_lr > 0 and sgd_weight_decay >= 0")
    require(p["workers"] >= 1 and 1 <= p["extra_seeds"] <= p["seeds"], "workers >= 1, 1 <= extra_seeds <= seeds")
    require(p["dataset"] in DATASETS, f"unknown dataset {p['dataset']!r}")
    mp = p["model_precision"]
    require(isinstance(mp, dict) and set(mp) <= set(p["models"]) | {p["sa_model"]}
            and set(mp.values()) <= {"auto", "bf16", "fp32"},
            "model_precision maps models to 'auto', 'bf16' or 'fp32', e.g. {'vit': 'fp32'}")
    require(isinstance(p["probe"], bool), "probe must be True or False")
    require(len(p["rhos"]) >= 1 and all(r > 0 for r in p["rhos"]), "rhos: positive values")
    require(p["sharp_rho"] in p["rhos"] and p["mix_rho"] in p["rhos"], "sharp_rho and mix_rho must be in rhos")
    require(set(p["mixes"]) <= {"mixup", "cutout"}, "mixes: mixup and/or cutout")
    require(min(p["epochs"], p["batch_size"], p["seeds"], p["search_epochs"], p["search_trials"]) >= 1,
            "epochs, batch_size, seeds, search_epochs and search_trials >= 1")
    require(p["n_per_class"] >= 0 and p["val_per_class"] >= 1 and p["test_per_class"] >= 0, "split sizes")
    require(p["slice_points"] >= 3 and p["hessian_iters"] >= 1 and p["pga_steps"] >= 0, "measurement sizes")
