"""Chapter 02's knobs per profile (``smoke`` / ``cpu`` / ``gpu``) and their validation.

Training settings are named like :class:`ibnb.core.train.TrainConfig` fields and become one config per run with
``TrainConfig.from_params(P, ...)``. The plain MLP, CNN, ViT and ResNet-18 use the book's reference sizes
(:mod:`ibnb.core.reference`), so runs identical to chapter 01's are loaded from the run cache.
"""
from __future__ import annotations

from ibnb.book.profiles import require
from ibnb.core.data import DATASETS
from ibnb.core.models import list_models
from ibnb.core.reference import reference_sizes

NOTEBOOK = "02_mlp_scaling"
SECTIONS = ("ladder", "scaling", "batch", "prior", "probe")
#: learning rate ∝ (batch size)^k
LR_RULES = {"sqrt": 0.5, "linear": 1.0, "constant": 0.0}
ONE_LAYER_MODELS = ("conv_layer", "locally_connected", "dense_layer")


def _model_kw(profile: str, bmlp: dict, one_layer: dict) -> dict:
    """The reference sizes of the shared architectures, the bottleneck MLP and the three one-layer networks."""
    kw = reference_sizes(profile, ("mlp", "cnn", "vit", "resnet18"))
    kw["bmlp"] = bmlp
    kw.update({m: dict(one_layer) for m in ONE_LAYER_MODELS})
    return kw


_LADDER = [["mlp", "none"], ["mlp", "crop+flip"], ["bmlp", "none"], ["bmlp", "crop+flip"], ["cnn", "crop+flip"],
           ["resnet18", "crop+flip"]]
_COMMON = dict(dataset="cifar10", optimizer="adamw", lr=2e-3, weight_decay=0.05, schedule="cosine",
               label_smoothing=0.0, val_per_class=50, ladder=_LADDER, lr_rule="sqrt",
               batch_models=["bmlp", "cnn"], prior_models=list(ONE_LAYER_MODELS),
               probe_models=["mlp", "bmlp", "cnn", "vit", "resnet18"], probe_augment="crop+flip",
               probe_grids=[2, 4, 8], probe_sigma=1.5, scaling_augment="none", device="auto", compile=False)
_ONE_LAYER = {"channels": 8, "kernel_size": 5, "stride": 2}
PRESETS = {
    "smoke": {**_COMMON, "model_kw": _model_kw("smoke", {"width": 16, "depth": 1}, {**_ONE_LAYER, "channels": 2}),
              "ladder_n_per_class": 8, "epochs": 1, "min_steps": 2, "batch_size": 16, "seeds": 1,
              "test_per_class": 5, "val_per_class": 2,
              "scaling_sizes": [[8, 1], [16, 1]], "scaling_n_per_class": [4, 8], "scaling_seeds": 1,
              "batch_sizes": [16, 32], "batch_seeds": 1, "prior_n_per_class": [4], "prior_epochs": 1,
              "throughput_batch": 16, "throughput_steps": 2},
    "cpu": {**_COMMON, "model_kw": _model_kw("cpu", {"width": 256, "depth": 2}, _ONE_LAYER),
            "ladder_n_per_class": 320, "epochs": 6, "min_steps": 100, "batch_size": 64, "seeds": 3,
            "test_per_class": 0,
            "scaling_sizes": [[32, 1], [64, 1], [128, 2], [256, 2], [256, 4]],
            "scaling_n_per_class": [20, 40, 80, 160, 320], "scaling_seeds": 1,
            "batch_sizes": [64, 128, 256, 512], "batch_seeds": 1, "prior_n_per_class": [20, 100], "prior_epochs": 15,
            "throughput_batch": 256, "throughput_steps": 8},
    "gpu": {**_COMMON, "model_kw": _model_kw("gpu", {"width": 1024, "depth": 6}, {**_ONE_LAYER, "channels": 32}),
            "ladder_n_per_class": 4950, "epochs": 40, "min_steps": 2000, "batch_size": 256, "seeds": 3,
            "test_per_class": 0, "lr": 1e-3,
            "scaling_sizes": [[128, 2], [256, 4], [512, 4], [512, 6], [1024, 6], [2048, 6]],
            "scaling_n_per_class": [150, 450, 1350, 2700, 4950], "scaling_seeds": 2,
            "batch_sizes": [64, 256, 1024, 4096], "batch_seeds": 2, "prior_n_per_class": [20, 100, 500],
            "prior_epochs": 40, "throughput_batch": 1024, "throughput_steps": 30},
}


def validate(p: dict) -> None:
    """Fail with a clear message on an inconsistent set of resolved parameters."""
    known = set(list_models())
    used = {m for m, _ in p["ladder"]} | set(p["batch_models"]) | set(p["prior_models"]) | set(p["probe_models"]) | {"bmlp"}
    require(used <= known, f"unknown models {sorted(used - known)}")
    require(set(p["model_kw"]) >= used, f"model_kw lacks {sorted(used - set(p['model_kw']))}")
    require(p["dataset"] in DATASETS, f"unknown dataset {p['dataset']!r}")
    require(all(len(r) == 2 for r in p["ladder"]), "ladder: a list of [model, augment] pairs")
    require(len(p["scaling_sizes"]) >= 2 and all(len(s) == 2 and min(s) >= 1 for s in p["scaling_sizes"]),
            "scaling_sizes: >= 2 pairs [width, depth] of positive integers")
    sizes = p["scaling_n_per_class"] + p["prior_n_per_class"] + [p["ladder_n_per_class"]]
    require(all(isinstance(n, int) and n > 0 for n in sizes), "n_per_class values must be positive integers")
    require(len(p["scaling_n_per_class"]) >= 2, "scaling needs >= 2 training-set sizes")
    require(len(p["batch_sizes"]) >= 2 and min(p["batch_sizes"]) >= 1, "batch_sizes: >= 2 positive values")
    require(p["lr_rule"] in LR_RULES, f"lr_rule must be one of {sorted(LR_RULES)}")
    require(min(p["epochs"], p["min_steps"], p["batch_size"], p["seeds"], p["scaling_seeds"], p["batch_seeds"],
                p["prior_epochs"], p["throughput_batch"], p["throughput_steps"]) >= 1,
            "epochs, steps, batch sizes and seed counts must be >= 1")
    require(p["test_per_class"] >= 0 and p["val_per_class"] >= 1, "test_per_class >= 0 and val_per_class >= 1")
    require(all(32 % g == 0 for g in p["probe_grids"]), "probe_grids must divide the image size 32")
    require(p["probe_sigma"] > 0, "probe_sigma must be > 0")
