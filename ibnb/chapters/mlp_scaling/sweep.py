"""Chapter 02 — MLPs, scale and the price of a weak prior (after Bachmann et al., 2023).

Six sections share one pool of trained models (an in-process memo on top of the run cache, so a run that
two sections need is trained once):

* **ladder**: plain MLP → + crop/flip → inverted-bottleneck MLP → + crop/flip → CNN → ResNet-18, same epochs;
* **scaling**: a family of bottleneck MLPs × training-set sizes; error against parameters, data and training
  compute (FLOPs counted by :mod:`ibnb.core.flops`) with power-law fits (:mod:`ibnb.chapters.mlp_scaling.scaling`);
* **batch**: bMLP and CNN at a fixed number of epochs for several batch sizes, learning rate scaled by a rule;
* **prior**: one conv layer vs one locally connected layer vs one dense layer at small data;
* **probe**: shape-vs-texture probes (:mod:`ibnb.chapters.mlp_scaling.probes`) on trained MLP, bMLP, CNN, ViT and ResNet-18,
  whose throughput (train and inference images/s) and FLOPs per image are measured in the same run.
"""
from __future__ import annotations

import copy
import math

import pandas as pd
from tqdm.auto import tqdm

from ibnb.core.data import DATASETS, class_balanced_subset, load_dataset, split_off
from ibnb.core.flops import flops_per_image, throughput, training_flops
from ibnb.core.models import count_parameters, list_models
from ibnb.chapters.mlp_scaling.probes import evaluate_probes, probe_set, retained
from ibnb.book.profiles import register_presets, require
from ibnb.core.runs import train_or_load
from ibnb.core.train import device_name, evaluate
from ibnb.chapters.architectures import sweep as architectures

NOTEBOOK = "02_mlp_scaling"
SECTIONS = ("ladder", "scaling", "batch", "prior", "probe")
LR_RULES = {"sqrt": 0.5, "linear": 1.0, "constant": 0.0}


def _model_kw(profile: str, bmlp: dict, one_layer: dict) -> dict:
    """Chapter 01's model sizes for the shared architectures (same settings -> same cached runs) + ours."""
    kw = copy.deepcopy(architectures.PRESETS[profile]["model_kw"])
    kw = {m: kw[m] for m in ("mlp", "cnn", "vit", "resnet18")}
    kw["bmlp"] = bmlp
    kw.update({m: dict(one_layer) for m in ("conv_layer", "locally_connected", "dense_layer")})
    return kw


_LADDER = [["mlp", "none"], ["mlp", "crop+flip"], ["bmlp", "none"], ["bmlp", "crop+flip"], ["cnn", "crop+flip"],
           ["resnet18", "crop+flip"]]
_COMMON = dict(dataset="cifar10", optimizer="adamw", lr=2e-3, weight_decay=0.05, schedule="cosine",
               label_smoothing=0.0, val_per_class=50, ladder=_LADDER, lr_rule="sqrt",
               batch_models=["bmlp", "cnn"], prior_models=["conv_layer", "locally_connected", "dense_layer"],
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
            "ladder_n_per_class": 320, "epochs": 6, "min_steps": 100, "batch_size": 64, "seeds": 2,
            "test_per_class": 200,
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


def _validate(p: dict) -> None:
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


register_presets(NOTEBOOK, PRESETS, _validate)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return max(1, n_train // batch_size)


def epochs_for(n_train: int, p: dict, epochs: int | None = None) -> int:
    """``epochs`` passes, raised so that the run takes at least ``min_steps`` optimizer steps (chapter 01's
    rule, so that identical runs are shared through the run cache)."""
    return max(epochs or p["epochs"], -(-p["min_steps"] // steps_per_epoch(n_train, p["batch_size"])))


def lr_for(batch_size: int, p: dict) -> float:
    """Learning rate for ``batch_size``: ``lr · (B / batch_size)^k`` with k = 1/2 (sqrt rule), 1 or 0."""
    return p["lr"] * (batch_size / p["batch_size"]) ** LR_RULES[p["lr_rule"]]


class Lab:
    """Data, the shared pool of trained models and the bookkeeping of one chapter run."""

    def __init__(self, p: dict, progress: bool = False):
        self.p, self.progress = p, progress
        self.device = None if p["device"] == "auto" else p["device"]
        self.pool, self.val = split_off(load_dataset(p["dataset"], "train"), p["val_per_class"], seed=10_000)
        test = load_dataset(p["dataset"], "test")
        self.test = class_balanced_subset(test, p["test_per_class"], seed=0) if p["test_per_class"] else test
        self.K = DATASETS[p["dataset"]].num_classes
        self.memo: dict[tuple, dict] = {}
        self.trained_now = 0

    def run(self, model: str, kw: dict, n_per_class: int, augment: str, seed: int, *, epochs: int,
            batch_size: int, lr: float) -> dict:
        """Train (or reuse) one model; return a dict with the model, its history and a results row."""
        key = (model, tuple(sorted(kw.items())), n_per_class, augment, seed, epochs, batch_size, lr)
        if key in self.memo:
            return self.memo[key]
        p = self.p
        train = class_balanced_subset(self.pool, n_per_class, seed=seed)
        net, hist, cached = train_or_load(
            model, train, self.val, model_kw=kw, device=self.device, progress=False, epochs=epochs,
            batch_size=batch_size, optimizer=p["optimizer"], lr=lr, weight_decay=p["weight_decay"],
            schedule=p["schedule"], label_smoothing=p["label_smoothing"], augment=augment, seed=seed,
            compile=p["compile"])
        self.trained_now += not cached
        ev = evaluate(net, self.test)
        flops = flops_per_image(net, train.shape)
        seen = int(hist.frame["train_images"].sum())
        row = dict(model=model, dataset=p["dataset"], n_train=len(train), seed=seed, epochs=epochs,
                   params=count_parameters(net), test_acc=ev["acc"], test_nll=ev["nll"], wall_s=hist.wall_s,
                   images_per_s=hist.images_per_s, device=device_name(next(net.parameters()).device),
                   n_per_class=n_per_class, augment=augment, batch_size=batch_size, lr=lr,
                   width=kw.get("width", kw.get("dim")), depth=kw.get("depth"), flops_per_image=flops,
                   images_seen=seen, train_flops=training_flops(flops, seen), test_error=1 - ev["acc"],
                   n_test=ev["n"], cached=cached)
        out = {"model": net, "history": hist.frame, "row": row}
        self.memo[key] = out
        return out

    def _bar(self, items, desc):
        return tqdm(items, desc=desc, disable=not self.progress)

    # --- sections -------------------------------------------------------------------------------------
    def ladder(self) -> tuple[pd.DataFrame, dict]:
        p, rows, hists = self.p, [], {}
        n = p["ladder_n_per_class"]
        for seed in range(p["seeds"]):
            for model, aug in self._bar(p["ladder"], "ladder"):
                r = self.run(model, p["model_kw"][model], n, aug, seed, epochs=epochs_for(self.K * n, p),
                             batch_size=p["batch_size"], lr=p["lr"])
                rows.append({**r["row"], "experiment": "ladder", "rung": rung_name(model, aug)})
                hists[(rung_name(model, aug), seed)] = r["history"]
        return pd.DataFrame(rows), hists

    def scaling(self) -> pd.DataFrame:
        p, rows = self.p, []
        grid = [(w, d, n, s) for (w, d) in p["scaling_sizes"] for n in p["scaling_n_per_class"]
                for s in range(p["scaling_seeds"])]
        for w, d, n, s in self._bar(grid, "scaling"):
            kw = {**p["model_kw"]["bmlp"], "width": w, "depth": d}
            r = self.run("bmlp", kw, n, p["scaling_augment"], s, epochs=epochs_for(self.K * n, p),
                         batch_size=p["batch_size"], lr=p["lr"])
            rows.append({**r["row"], "experiment": "scaling", "size": f"d={w}, L={d}"})
        return pd.DataFrame(rows)

    def batch(self) -> pd.DataFrame:
        """Fixed epochs (no minimum-step raise) and the ladder's data; only the batch size and lr change."""
        p, rows = self.p, []
        n = p["ladder_n_per_class"]
        grid = [(m, b, s) for m in p["batch_models"] for b in p["batch_sizes"] for s in range(p["batch_seeds"])]
        for m, b, s in self._bar(grid, "batch"):
            r = self.run(m, p["model_kw"][m], n, "crop+flip", s, epochs=p["epochs"], batch_size=b, lr=lr_for(b, p))
            rows.append({**r["row"], "experiment": "batch", "steps": p["epochs"] * steps_per_epoch(self.K * n, b)})
        return pd.DataFrame(rows)

    def prior(self) -> pd.DataFrame:
        p, rows = self.p, []
        grid = [(m, n, s) for n in p["prior_n_per_class"] for s in range(p["seeds"]) for m in p["prior_models"]]
        for m, n, s in self._bar(grid, "prior"):
            r = self.run(m, p["model_kw"][m], n, "none", s, epochs=epochs_for(self.K * n, p, p["prior_epochs"]),
                         batch_size=p["batch_size"], lr=p["lr"])
            rows.append({**r["row"], "experiment": "prior"})
        return pd.DataFrame(rows)

    def probe(self) -> tuple[pd.DataFrame, dict]:
        """Probe accuracies of the ladder-size models trained with ``probe_augment``, every seed, plus the
        throughput of each architecture (measured once, on a copy of seed 0's model: the benchmark takes
        optimizer steps)."""
        p, rows = self.p, []
        n = p["ladder_n_per_class"]
        probes = probe_set(self.test, p["probe_grids"], p["probe_sigma"])
        chance = 1.0 / self.K
        for seed in range(p["seeds"]):
            for m in self._bar(p["probe_models"], "probe"):
                r = self.run(m, p["model_kw"][m], n, p["probe_augment"], seed, epochs=epochs_for(self.K * n, p),
                             batch_size=p["batch_size"], lr=p["lr"])
                accs = evaluate_probes(r["model"], probes)
                row = {**r["row"], "experiment": "probe"}
                for name, a in accs.items():
                    row[f"acc[{name}]"] = a
                    row[f"retained[{name}]"] = retained(a, accs["clean"], chance)
                if seed == 0:
                    tp = throughput(copy.deepcopy(r["model"]), input_shape=self.test.shape, batch_size=p["throughput_batch"],
                                    steps=p["throughput_steps"], num_classes=self.K)
                    row.update(bench_train_images_per_s=tp["train_images_per_s"],
                               infer_images_per_s=tp["infer_images_per_s"], bench_batch=tp["batch_size"])
                rows.append(row)
        return pd.DataFrame(rows), probes


def rung_name(model: str, augment: str) -> str:
    names = {"mlp": "MLP", "bmlp": "bMLP", "cnn": "CNN", "resnet18": "ResNet-18", "vit": "ViT"}
    return names.get(model, model) + (f" + {augment}" if augment != "none" else "")


def probe_table(df: pd.DataFrame, value: str = "retained") -> pd.DataFrame:
    """Long table (model, seed, probe, value) from the probe rows' ``value[<probe>]`` columns."""
    cols = [c for c in df.columns if c.startswith(f"{value}[") and c != f"{value}[clean]"]
    long = df.melt(id_vars=["model", "seed"], value_vars=cols, var_name="probe", value_name=value)
    long["probe"] = long["probe"].str.slice(len(value) + 1, -1)
    return long


# --- analysis ---------------------------------------------------------------------------------------------
def scaling_fits(df: pd.DataFrame, level: float = 0.95) -> dict:
    """Power-law fits of test error (mean over seeds) against parameters (largest data size), data (largest
    model), training compute (the compute-efficient frontier, or every run when the frontier has fewer than
    3 points) and a two-factor fit on the whole grid."""
    from ibnb.chapters.mlp_scaling.scaling import fit_power_law, fit_two_factor, pareto_frontier

    g = df.groupby(["size", "params", "n_train"], as_index=False).agg(
        test_error=("test_error", "mean"), train_flops=("train_flops", "mean"))
    at_n = g[g["n_train"] == g["n_train"].max()]
    at_p = g[g["params"] == g["params"].max()]
    frontier = pareto_frontier(g)
    on = frontier if len(frontier) >= 3 else g
    out = dict(grid=g, frontier=frontier, compute_on="frontier" if on is frontier else "all runs",
               fit_p=fit_power_law(at_n["params"], at_n["test_error"], level),
               fit_d=fit_power_law(at_p["n_train"], at_p["test_error"], level),
               fit_c=fit_power_law(on["train_flops"], on["test_error"], level))
    out["joint"] = fit_two_factor(g["params"], g["n_train"], g["test_error"], level) if len(g) >= 4 else None
    return out


def batch_effect(df: pd.DataFrame) -> pd.DataFrame:
    """Per model: accuracy at the smallest and the largest batch (mean over seeds) and the change."""
    s = df.groupby(["model", "batch_size"])["test_acc"].mean().unstack()
    lo, hi = s.columns.min(), s.columns.max()
    return pd.DataFrame({"acc_small_batch": s[lo], "acc_large_batch": s[hi], "change": s[hi] - s[lo],
                         "best_batch": s.idxmax(axis=1)})


def shape_index(probe_long: pd.DataFrame) -> pd.DataFrame:
    """Per model and seed: mean retained accuracy on the shape-keeping probes (low-pass, edges), on the
    texture-keeping probes (patch shuffles), and their difference (> 0: relies more on shape)."""
    shape = probe_long[probe_long["probe"].isin(["low-pass", "edges"])]
    texture = probe_long[probe_long["probe"].str.startswith("shuffle")]
    a = shape.groupby(["model", "seed"])["retained"].mean().rename("shape_kept")
    b = texture.groupby(["model", "seed"])["retained"].mean().rename("texture_kept")
    out = pd.concat([a, b], axis=1)
    out["shape_index"] = out["shape_kept"] - out["texture_kept"]
    return out.reset_index()


def verdict(supported: bool, contradicted: bool) -> str:
    """``supported`` / ``contradicted`` / ``inconclusive at this budget`` from two computed conditions."""
    return "supported" if supported else "contradicted" if contradicted else "inconclusive at this budget"
