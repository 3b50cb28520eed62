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
#: the training-set treatments a run can take (the names of :data:`ibnb.chapters.mlp_scaling.sweep.RECIPE_SETTINGS`)
RECIPES = ("none", "crop+flip", "bachmann")


def _model_kw(profile: str, bmlp: dict, one_layer: dict, **over) -> dict:
    """The reference sizes of the shared architectures, the bottleneck MLP and the three one-layer networks
    (``over``: sizes that replace a reference one)."""
    kw = reference_sizes(profile, ("mlp", "cnn", "vit", "resnet18"))
    kw["bmlp"] = bmlp
    kw.update({m: dict(one_layer) for m in ONE_LAYER_MODELS})
    return {**kw, **over}


#: the plain and the bottleneck MLP without and with Bachmann et al.'s ingredients, and a CNN both ways
_LADDER = [["mlp", "none"], ["mlp", "bachmann"], ["bmlp", "none"], ["bmlp", "crop+flip"], ["bmlp", "bachmann"],
           ["cnn", "none"], ["cnn", "bachmann"]]
_COMMON = dict(dataset="cifar10", optimizer="adamw", lr=2e-3, lrs={}, weight_decay=0.05, schedule="cosine",
               label_smoothing=0.0, val_per_class=50, ladder=_LADDER, ladder_epochs={}, lr_rule="sqrt",
               mixup_alpha=1.0, bachmann_smoothing=0.3, batch_models=["bmlp", "cnn"], batch_recipe="crop+flip",
               prior_models=list(ONE_LAYER_MODELS), probe_models=["mlp", "bmlp", "cnn", "vit"],
               probe_recipe="bachmann", throughput_models=["mlp", "bmlp", "cnn", "vit", "resnet18"],
               probe_grids=[2, 4, 8], probe_sigma=1.5, scaling_recipe="none", fit_bootstrap=1000, fit_seed=0,
               probe=True, workers=1, device="auto", compile=False)
_ONE_LAYER = {"channels": 8, "kernel_size": 5, "stride": 2}
PRESETS = {
    "smoke": {**_COMMON, "model_kw": _model_kw("smoke", {"width": 16, "depth": 1}, {**_ONE_LAYER, "channels": 2}),
              "ladder_n_per_class": 8, "epochs": 1, "min_steps": 2, "batch_size": 16, "seeds": 1,
              "test_per_class": 5, "val_per_class": 2, "fit_bootstrap": 20,
              "scaling_sizes": [[8, 1], [16, 1], [32, 1]], "scaling_n_per_class": [4, 8, 16], "scaling_seeds": 1,
              "batch_sizes": [16, 32], "batch_n_per_class": 8, "batch_epochs": 1, "prior_n_per_class": [4],
              "prior_epochs": 1, "throughput_batch": 16, "throughput_steps": 2},
    # 10,000 ladder images; learning rates from chapter 01's search (cpu, commit 3a94acc: 1e-3 for the MLP and the
    # ViT, 1e-2 for the width-16 CNN; the bottleneck MLP takes the MLP's); the throughput rows compare the trained
    # bMLP with a full-width ResNet-18 (no training needed for a timing)
    "cpu": {**_COMMON, "model_kw": _model_kw("cpu", {"width": 256, "depth": 2}, _ONE_LAYER, cnn={"width": 16},
                                             resnet18={"width": 64}),
            "ladder_n_per_class": 1000, "ladder_epochs": {"mlp": 80, "bmlp": 80, "cnn": 25, "vit": 25},
            "lrs": {"mlp": 1e-3, "bmlp": 1e-3, "cnn": 1e-2, "vit": 1e-3},
            "epochs": 40, "min_steps": 500, "batch_size": 128, "seeds": 3, "test_per_class": 0,
            "scaling_sizes": [[64, 2], [128, 2], [256, 2], [512, 2]], "scaling_n_per_class": [125, 250, 500, 1000],
            "scaling_seeds": 3, "batch_sizes": [32, 128, 512], "batch_n_per_class": 200, "batch_epochs": 30,
            "prior_n_per_class": [20, 100], "prior_epochs": 15, "throughput_batch": 256, "throughput_steps": 8,
            "workers": 2},
    "gpu": {**_COMMON, "model_kw": _model_kw("gpu", {"width": 1024, "depth": 6}, {**_ONE_LAYER, "channels": 32}),
            "ladder_n_per_class": 4950, "ladder_epochs": {"mlp": 400, "bmlp": 400, "cnn": 100, "vit": 100},
            "epochs": 40, "min_steps": 2000, "batch_size": 256, "seeds": 3, "test_per_class": 0, "lr": 1e-3,
            "scaling_sizes": [[128, 2], [256, 4], [512, 4], [512, 6], [1024, 6], [2048, 6]],
            "scaling_n_per_class": [150, 450, 1350, 2700, 4950], "scaling_seeds": 3,
            "batch_sizes": [64, 256, 1024, 4096], "batch_n_per_class": 4950, "batch_epochs": 40,
            "prior_n_per_class": [20, 100, 500], "prior_epochs": 40, "throughput_batch": 1024, "throughput_steps": 30},
}


def validate(p: dict) -> None:
    """Fail with a clear message on an inconsistent set of resolved parameters."""
    known = set(list_models())
    used = ({m for m, _ in p["ladder"]} | set(p["batch_models"]) | set(p["prior_models"]) | set(p["probe_models"])
            | set(p["throughput_models"]) | {"bmlp"})
    require(used <= known, f"unknown models {sorted(used - known)}")
    require(set(p["model_kw"]) >= used, f"model_kw lacks {sorted(used - set(p['model_kw']))}")
    require(p["dataset"] in DATASETS, f"unknown dataset {p['dataset']!r}")
    recipes = {r for _, r in p["ladder"]} | {p["scaling_recipe"], p["batch_recipe"], p["probe_recipe"]}
    require(all(len(r) == 2 for r in p["ladder"]) and recipes <= set(RECIPES),
            f"ladder: a list of [model, recipe] pairs; recipes are {', '.join(RECIPES)}")
    rungs = {tuple(r) for r in p["ladder"]}
    require({("mlp", "none"), ("bmlp", "none")} <= rungs, "the ladder needs the plain MLP and the bMLP with recipe 'none'")
    require(isinstance(p["ladder_epochs"], dict) and all(v >= 1 for v in p["ladder_epochs"].values()),
            "ladder_epochs maps models to epochs >= 1 (a model it lacks takes epochs)")
    require(isinstance(p["lrs"], dict) and all(v > 0 for v in p["lrs"].values()),
            "lrs maps models to learning rates > 0 (a model it lacks takes lr)")
    require(len(p["scaling_sizes"]) >= 2 and all(len(s) == 2 and min(s) >= 1 for s in p["scaling_sizes"]),
            "scaling_sizes: >= 2 pairs [width, depth] of positive integers")
    sizes = p["scaling_n_per_class"] + p["prior_n_per_class"] + [p["ladder_n_per_class"], p["batch_n_per_class"]]
    require(all(isinstance(n, int) and n > 0 for n in sizes), "n_per_class values must be positive integers")
    require(len(p["scaling_n_per_class"]) >= 2, "scaling needs >= 2 training-set sizes")
    require(len(p["batch_sizes"]) >= 2 and min(p["batch_sizes"]) >= 1 and p["batch_size"] in p["batch_sizes"],
            "batch_sizes: >= 2 positive values including the base batch_size (the two regimes share its run)")
    require(p["lr_rule"] in LR_RULES, f"lr_rule must be one of {sorted(LR_RULES)}")
    require(min(p["epochs"], p["min_steps"], p["batch_size"], p["seeds"], p["scaling_seeds"], p["batch_epochs"],
                p["prior_epochs"], p["throughput_batch"], p["throughput_steps"], p["workers"]) >= 1,
            "epochs, steps, batch sizes, seed counts and workers must be >= 1")
    require(p["mixup_alpha"] > 0 and 0 <= p["bachmann_smoothing"] < 1, "mixup_alpha > 0, 0 <= bachmann_smoothing < 1")
    require(p["fit_bootstrap"] >= 10, "fit_bootstrap: at least 10 bootstrap resamples")
    require(isinstance(p["probe"], bool), "probe must be True or False")
    require(p["test_per_class"] >= 0 and p["val_per_class"] >= 1, "test_per_class >= 0 and val_per_class >= 1")
    require(all(32 % g == 0 for g in p["probe_grids"]), "probe_grids must divide the image size 32")
    require(p["probe_sigma"] > 0, "probe_sigma must be > 0")
