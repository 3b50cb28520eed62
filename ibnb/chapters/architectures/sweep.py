"""Chapter 01 — architecture as inductive bias: presets, the sweep and its claims audit.

Six architectures are trained from scratch on class-balanced CIFAR-10 subsets of several sizes, with and
without crop+flip augmentation, over several seeds. Every run takes ``epochs`` passes over its training set,
but at least ``min_steps`` optimizer steps, so the smallest sets are not starved of updates. A control trains
every model on images whose pixel positions are shuffled by one fixed permutation (train and test alike).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ibnb.core.data import DATASETS, class_balanced_subset, load_dataset, permute_pixels, split_off
from ibnb.core.models import count_parameters, list_models
from ibnb.book import results
from ibnb.book.profiles import register_presets, require
from ibnb.core.runs import train_or_load
from ibnb.core.train import device_name, evaluate

NOTEBOOK = "01_architectures"
MODELS = ["mlp", "mixer", "vit", "cnn", "cnn_sa", "resnet18"]

_SMALL = {"mlp": {"width": 256, "depth": 2}, "mixer": {"dim": 48, "depth": 2, "token_hidden": 32, "channel_hidden": 96},
          "vit": {"dim": 48, "depth": 2, "heads": 3}, "cnn": {"width": 8}, "cnn_sa": {"width": 8},
          "resnet18": {"width": 4}}
_TINY = {"mlp": {"width": 32, "depth": 1}, "mixer": {"dim": 16, "depth": 1, "token_hidden": 8, "channel_hidden": 16},
         "vit": {"dim": 16, "depth": 1, "heads": 2}, "cnn": {"width": 4}, "cnn_sa": {"width": 4},
         "resnet18": {"width": 2}}
_FULL = {"mlp": {"width": 1024, "depth": 3}, "mixer": {"dim": 256, "depth": 8, "token_hidden": 128, "channel_hidden": 1024},
         "vit": {"dim": 256, "depth": 6, "heads": 8}, "cnn": {"width": 64}, "cnn_sa": {"width": 64},
         "resnet18": {"width": 64}}

_COMMON = dict(dataset="cifar10", models=MODELS, augment_options=["none", "crop+flip"], optimizer="adamw",
               lr=2e-3, weight_decay=0.05, schedule="cosine", label_smoothing=0.0, permutation_seed=0,
               val_per_class=50, device="auto", compile=False)
PRESETS = {
    "smoke": {**_COMMON, "model_kw": _TINY, "n_per_class": [4, 8], "epochs": 1, "min_steps": 2, "batch_size": 16,
              "seeds": 2, "test_per_class": 5, "val_per_class": 2, "permute_n_per_class": 8},
    "cpu": {**_COMMON, "model_kw": _SMALL, "n_per_class": [20, 80, 320], "epochs": 6, "min_steps": 100,
            "batch_size": 64, "seeds": 2, "test_per_class": 200, "permute_n_per_class": 80},
    "gpu": {**_COMMON, "model_kw": _FULL, "n_per_class": [50, 500, 4950], "epochs": 40, "min_steps": 2000,
            "batch_size": 256, "seeds": 3, "test_per_class": 0, "permute_n_per_class": 4950, "lr": 1e-3},
}


def _validate(p: dict) -> None:
    require(set(p["models"]) <= set(list_models()), f"unknown models {sorted(set(p['models']) - set(list_models()))}")
    require(set(p["model_kw"]) >= set(p["models"]), f"model_kw lacks {sorted(set(p['models']) - set(p['model_kw']))}")
    require(p["dataset"] in DATASETS, f"unknown dataset {p['dataset']!r}")
    require(all(isinstance(n, int) and n > 0 for n in p["n_per_class"]), "n_per_class must be positive integers")
    require(p["permute_n_per_class"] in p["n_per_class"] or p["permute_n_per_class"] == 0,
            "permute_n_per_class must be one of n_per_class (or 0 to skip the control)")
    require(min(p["epochs"], p["min_steps"], p["batch_size"], p["seeds"]) >= 1,
            "epochs, min_steps, batch_size and seeds must be >= 1")
    require(p["test_per_class"] >= 0 and p["val_per_class"] >= 1, "test_per_class >= 0 and val_per_class >= 1")
    require(set(p["augment_options"]) <= {"none", "crop", "flip", "crop+flip"}, "augment_options: none/crop/flip/crop+flip")


register_presets(NOTEBOOK, PRESETS, _validate)


def plan(p: dict) -> list[dict]:
    """All runs of the sweep: model × size × augmentation × seed, plus the permuted-pixel control."""
    runs = [dict(model=m, n_per_class=n, augment=a, seed=s, permuted=False)
            for n in p["n_per_class"] for a in p["augment_options"] for s in range(p["seeds"]) for m in p["models"]]
    if p["permute_n_per_class"]:
        runs += [dict(model=m, n_per_class=p["permute_n_per_class"], augment="none", seed=s, permuted=True)
                 for s in range(p["seeds"]) for m in p["models"]]
    return runs


def steps_per_epoch(n_train: int, p: dict) -> int:
    """Optimizer steps per epoch, as :func:`ibnb.core.train.fit` batches (drops the last partial batch)."""
    return max(1, n_train // p["batch_size"])


def epochs_for(n_train: int, p: dict) -> int:
    """``epochs`` passes, raised so that the run takes at least ``min_steps`` optimizer steps."""
    return max(p["epochs"], -(-p["min_steps"] // steps_per_epoch(n_train, p)))


def run_sweep(p: dict, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Train (or load from the run cache) every planned model; return (results table, histories).

    ``histories`` maps ``(model, n_per_class, augment, seed, permuted)`` to the per-epoch history frame.
    """
    device = None if p["device"] == "auto" else p["device"]
    pool, val = split_off(load_dataset(p["dataset"], "train"), p["val_per_class"], seed=10_000)
    test = load_dataset(p["dataset"], "test")
    if p["test_per_class"]:
        test = class_balanced_subset(test, p["test_per_class"], seed=0)
    largest = max(p["n_per_class"])
    rows, histories = [], {}
    for run in tqdm(plan(p), desc="runs", disable=not progress):
        train = class_balanced_subset(pool, run["n_per_class"], seed=run["seed"])
        run_test, run_val = test, val
        if run["permuted"]:
            train, run_test, run_val = (permute_pixels(d, p["permutation_seed"]) for d in (train, test, val))
        epochs = epochs_for(len(train), p)
        model, hist, cached = train_or_load(
            run["model"], train, run_val if run["n_per_class"] == largest else None,
            model_kw=p["model_kw"][run["model"]], device=device, progress=False, epochs=epochs,
            batch_size=p["batch_size"], optimizer=p["optimizer"], lr=p["lr"], weight_decay=p["weight_decay"],
            schedule=p["schedule"], label_smoothing=p["label_smoothing"], augment=run["augment"],
            seed=run["seed"], compile=p["compile"])
        ev = evaluate(model, run_test)
        histories[tuple(run.values())] = hist.frame
        rows.append(dict(experiment="architectures", model=run["model"], dataset=p["dataset"], n_train=len(train),
                         seed=run["seed"], epochs=epochs, params=count_parameters(model), test_acc=ev["acc"],
                         test_nll=ev["nll"], wall_s=hist.wall_s, images_per_s=hist.images_per_s,
                         device=device_name(next(model.parameters()).device), n_per_class=run["n_per_class"],
                         augment=run["augment"], permuted=run["permuted"], steps=epochs * steps_per_epoch(len(train), p),
                         batch_size=p["batch_size"], test_top5=ev["top5"], n_test=ev["n"], cached=cached))
    return pd.DataFrame(rows), histories


# --- claims audit ---------------------------------------------------------------------------------------------
def signed_verdict(mean: float, std: float, sign: int) -> str:
    """``sign`` +1 / −1: the claimed direction of the difference (*supported* / *contradicted* beyond one std,
    else *inconclusive*); ``sign`` 0: a "no effect" claim (*consistent* within one std of zero)."""
    if sign == 0:
        return "consistent (within one std of zero)" if abs(mean) <= std else "contradicted"
    m = sign * mean
    return "supported" if m > std else "contradicted" if m < -std else "inconclusive (within one std)"


def _paired_points(d: pd.DataFrame, key: str, a, b, n_per_class: int) -> tuple[float, float, int]:
    """``key=a`` minus ``key=b`` at ``n_per_class``, paired by seed, in points: (mean, std, seeds)."""
    r = results.paired_difference(d[d["n_per_class"] == n_per_class], key, a, b, by="n_per_class").iloc[0]
    return 100 * r["mean"], 100 * np.nan_to_num(r["std"]), int(r["n"])


def claims_audit(df: pd.DataFrame, p: dict, num_classes: int) -> pd.DataFrame:
    """The literature's claims that the sweep can test: claim, source (citation key), measurement, verdict."""
    main, K = df[~df["permuted"].astype(bool)], num_classes
    plain = main[main["augment"] == "none"]
    small, large = min(p["n_per_class"]), max(p["n_per_class"])
    rows = []

    def add(claim, source, mean, std, n, what, sign):
        rows.append((claim, source, f"{what}: {mean:+.1f} ± {std:.1f} points ({n} seeds)",
                     signed_verdict(mean, std, sign)))

    add("a CNN beats an MLP when data is scarce", "bachmann2023scaling",
        *_paired_points(plain, "model", "cnn", "mlp", small), f"CNN − MLP at {K * small} images", +1)
    wide = plain[plain["model"].isin(["cnn", "mlp"])].pivot_table(index=["n_per_class", "seed"], columns="model",
                                                                  values="test_acc")
    gap = 100 * (wide["cnn"] - wide["mlp"])
    shrink = (gap.xs(large) - gap.xs(small)).dropna()
    add("the CNN's lead over the MLP shrinks as the training set grows", "bachmann2023scaling",
        shrink.mean(), np.nan_to_num(shrink.std()), len(shrink),
        f"(CNN − MLP) at {K * large} minus at {K * small} images", -1)
    if "mixer" in p["models"]:
        add("MLP-Mixer trails a CNN on small data", "tolstikhin2021mlp",
            *_paired_points(plain, "model", "mixer", "cnn", small), f"Mixer − CNN at {K * small} images", -1)
    aug = "crop+flip" if "crop+flip" in p["augment_options"] else p["augment_options"][-1]
    if aug != "none":
        cnn = main[main["model"] == "cnn"]
        for size in (small, large):
            add(f"crop+flip augmentation improves a CNN trained on {K * size} images", "shorten2019survey",
                *_paired_points(cnn, "augment", aug, "none", size), f"{aug} − none, {p['epochs']} epochs", +1)
    n_perm = p["permute_n_per_class"]
    if n_perm:
        ctrl = df[(df["n_per_class"] == n_perm) & (df["augment"] == "none")].assign(
            pixels=lambda d: np.where(d["permuted"].astype(bool), "permuted", "original"))
        for model, sign, claim in (("cnn", +1, "shuffling pixel positions hurts a CNN"),
                                   ("mlp", 0, "shuffling pixel positions does not change an MLP")):
            add(claim, "zhang2017understanding",
                *_paired_points(ctrl[ctrl["model"] == model], "pixels", "original", "permuted", n_perm),
                f"original − permuted at {K * n_perm} images", sign)
    return pd.DataFrame(rows, columns=["claim", "source", "measurement", "verdict"])
