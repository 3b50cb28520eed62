"""Knobs of the appendix page "Training on a CPU" (``10_cpu_training``) per profile, and their validation.

``recipes`` maps each fast recipe (:data:`ibnb.core.fast_recipe.RECIPES`) to its frontier: the epoch budgets it is
trained for, with ``seeds_cheapest`` seeds at its cheapest budget and ``seeds`` at the others. ``parity_*`` name
the fp32-vs-bf16 comparison (same recipe, fp32 forced against ``auto``, which is bf16 where it is native and so reuses
the frontier run of the same budget and seed; ``parity_seeds`` seeds each). ``bench_models``
are measured by :func:`ibnb.core.bench.compare` at the book's reference sizes (``cpu`` sizes at ``cpu``), and the
fast CNN at the widths of ``fast_cnn_m`` (the largest network the ``cpu`` frontier trains).
"""
from __future__ import annotations

from ibnb.book.profiles import require
from ibnb.core.fast_recipe import RECIPES
from ibnb.core.models import list_models
from ibnb.core.reference import reference_sizes

NOTEBOOK = "10_cpu_training"
BENCH_MODELS = ["mlp", "mixer", "vit", "cnn", "resnet18", "fast_cnn"]
#: sizes of the benchmarked models: the chapters' reference sizes, and the fast CNN as the frontier trains it
BENCH_KW = {**reference_sizes("cpu", BENCH_MODELS[:-1]), "fast_cnn": {"widths": list(RECIPES["fast_cnn_m"]["widths"])}}

_COMMON = dict(dataset="cifar10", val_per_class=50, tta="flip", lookahead=True, device="auto",
               bench_models=BENCH_MODELS, bench_kw=BENCH_KW, parity_recipe="fast_cnn_s")
PRESETS = {
    "smoke": {**_COMMON, "recipes": {"fast_cnn_s": [1, 2, 3]}, "n_per_class": 20, "test_per_class": 10,
              "val_per_class": 2, "seeds": 1, "seeds_cheapest": 2, "batch_size": 64, "parity_epochs": 1,
              "parity_seeds": 2, "bench_models": ["mlp", "cnn"],
              "bench_batch_size": 16, "bench_steps": 2,
              "bench_repeats": 1, "widths_s": [8, 16, 16]},
    "cpu": {**_COMMON, "recipes": {"fast_cnn_s": [2, 4, 8], "fast_cnn_m": [2, 4, 6]}, "n_per_class": 0,
            "test_per_class": 0, "seeds": 1, "seeds_cheapest": 3, "batch_size": 512, "parity_epochs": 2,
            "parity_seeds": 3, "bench_batch_size": 128, "bench_steps": 20, "bench_repeats": 2,
            "widths_s": [32, 64, 64]},
    "gpu": {**_COMMON, "recipes": {"fast_cnn_s": [2, 4, 8], "airbench94": [4, 7, 10]}, "n_per_class": 0,
            "test_per_class": 0, "seeds": 3, "seeds_cheapest": 3, "batch_size": 512, "parity_epochs": 4,
            "parity_seeds": 3, "bench_batch_size": 256, "bench_steps": 30, "bench_repeats": 2,
            "widths_s": [32, 64, 64]},
}


def validate(p: dict) -> None:
    """Fail with a clear message on an inconsistent set of resolved parameters."""
    require(p["dataset"] == "cifar10", "the fast recipes are CIFAR-10 recipes (dataset='cifar10')")
    require(p["recipes"] and set(p["recipes"]) <= set(RECIPES), f"recipes must be among {sorted(RECIPES)}")
    require(all(len(e) >= 1 and min(e) >= 1 for e in p["recipes"].values()), "each recipe needs epochs >= 1")
    require(p["parity_recipe"] in RECIPES, f"parity_recipe must be one of {sorted(RECIPES)}")
    require(min(p["seeds"], p["seeds_cheapest"], p["parity_seeds"], p["parity_epochs"], p["batch_size"]) >= 1,
            "seeds, seeds_cheapest, parity_seeds, parity_epochs and batch_size must be >= 1")
    require(p["n_per_class"] >= 0 and p["test_per_class"] >= 0 and p["val_per_class"] >= 1,
            "n_per_class >= 0 (0 = all), test_per_class >= 0 (0 = all), val_per_class >= 1")
    require(set(p["bench_models"]) <= set(list_models()) and set(p["bench_models"]) <= set(p["bench_kw"]),
            "bench_models must be registered models with a size in bench_kw")
    require(p["tta"] in ("flip", "flip+translate"), "tta: 'flip' or 'flip+translate'")
    require(len(p["widths_s"]) == 3, "widths_s: three conv-group widths of fast_cnn_s")
