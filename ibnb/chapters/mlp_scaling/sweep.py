"""Chapter 02's runs: five sections sharing one pool of trained models (after Bachmann et al., 2023).

An in-process memo on top of the run cache trains a run that two sections need once:

* **ladder**: plain MLP → + crop/flip → inverted-bottleneck MLP → + crop/flip → CNN → ResNet-18, same budget;
* **scaling**: a family of bottleneck MLPs × training-set sizes, with FLOPs counted by :mod:`ibnb.core.flops`;
* **batch**: bMLP and CNN at a fixed number of epochs for several batch sizes, learning rate scaled by a rule;
* **prior**: one conv layer vs one locally connected layer vs one dense layer at small data;
* **probe**: shape-vs-texture probes (:mod:`ibnb.chapters.mlp_scaling.probes`) on the ladder-size models, whose
  throughput (train and inference images/s) is measured in the same run.

Every run validates each epoch on a held-out split, so its convergence check reads validation accuracy.
"""
from __future__ import annotations

import copy

import pandas as pd
from tqdm.auto import tqdm

from ibnb.chapters.mlp_scaling.presets import LR_RULES
from ibnb.chapters.mlp_scaling.probes import evaluate_probes, probe_set, retained
from ibnb.core.data import DATASETS, class_balanced_subset
from ibnb.core.flops import flops_per_image, throughput, training_flops
from ibnb.core.models import count_parameters
from ibnb.core.reference import epochs_for, splits, steps_per_epoch
from ibnb.core.runs import train_or_load
from ibnb.core.train import TrainConfig, device_name, evaluate

RUNG_NAMES = {"mlp": "MLP", "bmlp": "bMLP", "cnn": "CNN", "resnet18": "ResNet-18", "vit": "ViT"}


def rung_name(model: str, augment: str) -> str:
    """``bMLP + crop+flip``: a ladder rung's display name."""
    return RUNG_NAMES.get(model, model) + (f" + {augment}" if augment != "none" else "")


def lr_for(batch_size: int, p: dict) -> float:
    """Learning rate for ``batch_size``: ``lr · (batch_size / B₀)^k`` with k = 1/2 (sqrt rule), 1 or 0."""
    return p["lr"] * (batch_size / p["batch_size"]) ** LR_RULES[p["lr_rule"]]


def run_epochs(n_train: int, p: dict, epochs: int | None = None) -> int:
    """The book's step-budget rule (:mod:`ibnb.core.reference`) with this chapter's batch size."""
    return epochs_for(n_train, p["batch_size"], epochs or p["epochs"], p["min_steps"])


class Lab:
    """Data, the shared pool of trained models and the bookkeeping of one chapter run."""

    def __init__(self, p: dict, progress: bool = False):
        self.p, self.progress = p, progress
        self.pool, self.val, self.test = splits(p["dataset"], p["val_per_class"], p["test_per_class"])
        self.K = DATASETS[p["dataset"]].num_classes
        self.memo: dict[tuple, dict] = {}
        self.trained_now = 0

    def run(self, model: str, kw: dict, n_per_class: int, augment: str, seed: int, *, epochs: int,
            batch_size: int | None = None, lr: float | None = None) -> dict:
        """Train (or reuse) one model; return a dict with the model, its history and a results row."""
        p = self.p
        batch_size, lr = batch_size or p["batch_size"], lr or p["lr"]
        key = (model, tuple(sorted(kw.items())), n_per_class, augment, seed, epochs, batch_size, lr)
        if key in self.memo:
            return self.memo[key]
        train = class_balanced_subset(self.pool, n_per_class, seed=seed)
        config = TrainConfig.from_params(p, epochs=epochs, batch_size=batch_size, lr=lr, augment=augment, seed=seed)
        net, hist, cached = train_or_load(model, train, self.val, config=config, model_kw=kw, device=p["device"],
                                          progress=False)
        self.trained_now += not cached
        ev = evaluate(net, self.test)
        flops = flops_per_image(net, train.shape)
        seen = int(hist.frame["train_images"].sum())
        row = dict(model=model, dataset=p["dataset"], n_train=len(train), seed=seed, epochs=epochs,
                   params=count_parameters(net), test_acc=ev["acc"], test_nll=ev["nll"], **hist.columns(),
                   device=device_name(next(net.parameters()).device), n_per_class=n_per_class, augment=augment,
                   batch_size=batch_size, lr=lr, width=kw.get("width", kw.get("dim")), depth=kw.get("depth"),
                   flops_per_image=flops, images_seen=seen, train_flops=training_flops(flops, seen),
                   test_error=1 - ev["acc"], n_test=ev["n"], cached=cached,
                   final_train_acc=float(hist.frame["train_acc"].iloc[-1]),
                   final_val_acc=float(hist.frame["val_acc"].iloc[-1]))
        # the memo keeps a trained network only where the probe section will ask for it: at the gpu sizes the
        # scaling grid alone holds tens of GB of networks that nothing reads again
        keep = self._probed(model, kw, n_per_class, augment, epochs, batch_size, lr)
        out = {"model": net if keep else None, "history": hist.frame, "row": row}
        self.memo[key] = out
        return out

    def _probed(self, model: str, kw: dict, n_per_class: int, augment: str, epochs: int, batch_size: int,
                lr: float) -> bool:
        """Whether :meth:`probe` asks for this run (its network is then kept in the memo)."""
        p = self.p
        return (model in p["probe_models"] and kw == p["model_kw"][model] and n_per_class == p["ladder_n_per_class"]
                and augment == p["probe_augment"] and epochs == run_epochs(self.K * n_per_class, p)
                and batch_size == p["batch_size"] and lr == p["lr"])

    def _bar(self, items, desc):
        return tqdm(items, desc=desc, disable=not self.progress)

    def ladder(self) -> tuple[pd.DataFrame, dict]:
        """Every rung at the ladder's size, every seed; histories keyed by ``(rung, seed)``."""
        p, rows, hists = self.p, [], {}
        n = p["ladder_n_per_class"]
        for seed in range(p["seeds"]):
            for model, aug in self._bar(p["ladder"], "ladder"):
                r = self.run(model, p["model_kw"][model], n, aug, seed, epochs=run_epochs(self.K * n, p))
                rows.append({**r["row"], "experiment": "ladder", "rung": rung_name(model, aug)})
                hists[(rung_name(model, aug), seed)] = r["history"]
        return pd.DataFrame(rows), hists

    def scaling(self) -> pd.DataFrame:
        """The bMLP width × depth × data grid."""
        p, rows = self.p, []
        grid = [(w, d, n, s) for (w, d) in p["scaling_sizes"] for n in p["scaling_n_per_class"]
                for s in range(p["scaling_seeds"])]
        for w, d, n, s in self._bar(grid, "scaling"):
            kw = {**p["model_kw"]["bmlp"], "width": w, "depth": d}
            r = self.run("bmlp", kw, n, p["scaling_augment"], s, epochs=run_epochs(self.K * n, p))
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
        """The three one-layer networks at each small training-set size."""
        p, rows = self.p, []
        grid = [(m, n, s) for n in p["prior_n_per_class"] for s in range(p["seeds"]) for m in p["prior_models"]]
        for m, n, s in self._bar(grid, "prior"):
            r = self.run(m, p["model_kw"][m], n, "none", s, epochs=run_epochs(self.K * n, p, p["prior_epochs"]))
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
                r = self.run(m, p["model_kw"][m], n, p["probe_augment"], seed, epochs=run_epochs(self.K * n, p))
                accs = evaluate_probes(r["model"], probes)
                row = {**r["row"], "experiment": "probe"}
                for name, a in accs.items():
                    row[f"acc[{name}]"] = a
                    row[f"retained[{name}]"] = retained(a, accs["clean"], chance)
                if seed == 0:
                    tp = throughput(copy.deepcopy(r["model"]), input_shape=self.test.shape,
                                    batch_size=p["throughput_batch"], steps=p["throughput_steps"], num_classes=self.K)
                    row.update(bench_train_images_per_s=tp["train_images_per_s"],
                               infer_images_per_s=tp["infer_images_per_s"], bench_batch=tp["batch_size"])
                rows.append(row)
        return pd.DataFrame(rows), probes
