"""Chapter 02's runs: five sections sharing one pool of trained models (after Bachmann et al., 2023).

Every section is a list of planned runs (:class:`Key`); a run that two sections plan is trained once:

* **ladder**: each rung ``[model, recipe]`` of ``ladder`` at ``ladder_n_per_class`` images per class for
  ``ladder_epochs[model]`` epochs, every seed. A *recipe* is the training-set treatment (:data:`RECIPE_SETTINGS`):
  ``none``; ``crop+flip``; ``bachmann`` — crop+flip, mixup (α = ``mixup_alpha``) and label smoothing
  ``bachmann_smoothing``, the ingredients Bachmann et al. name (they also train for many epochs);
* **scaling**: bottleneck MLPs of ``scaling_sizes`` (width, blocks) × ``scaling_n_per_class`` × ``scaling_seeds``,
  recipe ``scaling_recipe``, epochs by the step rule (:func:`run_epochs`); FLOPs by :mod:`ibnb.core.flops`;
* **batch**: ``batch_models`` × ``batch_sizes`` at ``batch_n_per_class``, in two regimes: a fixed number of
  epochs (``batch_epochs``: more steps for small batches) and a fixed number of steps (those of the base batch
  ``batch_size`` at ``batch_epochs``: more epochs for large batches); the learning rate scales by ``lr_rule``;
* **prior**: one conv layer vs one locally connected layer vs one dense layer at small data;
* **probe**: shape-vs-texture probes (:mod:`ibnb.chapters.mlp_scaling.probes`) on ``probe_models`` trained at the
  ladder size with ``probe_recipe``, with their throughput (train and inference images/s) measured once.

Runs the cache lacks are trained ``workers`` at a time in one-thread worker processes (:mod:`ibnb.core.parallel`),
then loaded here. Every run validates each epoch on a held-out split, so its convergence check reads validation
accuracy; with ``probe``, each cell (a run less its seed) whose runs fail tests 1–2 gets one budget-halving probe
(:mod:`ibnb.core.probes`).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from tqdm.auto import tqdm

from ibnb.chapters.mlp_scaling.presets import LR_RULES
from ibnb.chapters.mlp_scaling.probes import evaluate_probes, probe_set, retained
from ibnb.core.batch_ops import MixStep, make_mix
from ibnb.core.data import DATASETS, class_balanced_subset
from ibnb.core.flops import flops_per_image, throughput, training_flops
from ibnb.core.models import count_parameters, create_model
from ibnb.core.parallel import Run, prefetch
from ibnb.core.probes import probe_failing_cells
from ibnb.core.reference import epochs_for, splits, steps_per_epoch
from ibnb.core.runs import train_or_load
from ibnb.core.train import TrainConfig, device_name, evaluate

RUNG_NAMES = {"mlp": "MLP", "bmlp": "bMLP", "cnn": "CNN", "resnet18": "ResNet-18", "vit": "ViT"}
#: recipe (one of presets.RECIPES) -> (augmentation, mixup?, label smoothing?)
RECIPE_SETTINGS = {"none": ("none", False, False), "crop+flip": ("crop+flip", False, False),
           "bachmann": ("crop+flip", True, True)}
RECIPE_NAMES = {"none": "", "crop+flip": " + crop+flip", "bachmann": " + crop+flip, mixup, LS"}


def rung_name(model: str, recipe: str) -> str:
    """``bMLP + crop+flip, mixup, LS``: a ladder rung's display name."""
    return RUNG_NAMES.get(model, model) + RECIPE_NAMES.get(recipe, f" + {recipe}")


def model_lr(p: dict, model: str) -> float:
    """The learning rate of ``model`` at the base batch: ``lrs[model]``, else ``lr``."""
    return float(p["lrs"].get(model, p["lr"]))


def lr_for(batch_size: int, p: dict, model: str) -> float:
    """Learning rate for ``batch_size``: ``lr · (batch_size / B₀)^k`` with k = 1/2 (sqrt rule), 1 or 0."""
    return model_lr(p, model) * (batch_size / p["batch_size"]) ** LR_RULES[p["lr_rule"]]


def run_epochs(n_train: int, p: dict, epochs: int | None = None) -> int:
    """The book's step-budget rule (:mod:`ibnb.core.reference`) with this chapter's batch size."""
    return epochs_for(n_train, p["batch_size"], epochs or p["epochs"], p["min_steps"])


def steps_epochs(n_train: int, batch_size: int, p: dict) -> int:
    """Epochs at ``batch_size`` for the steps the base batch takes in ``batch_epochs`` epochs (at least 1)."""
    steps = p["batch_epochs"] * steps_per_epoch(n_train, p["batch_size"])
    return max(1, round(steps / steps_per_epoch(n_train, batch_size)))


@dataclass(frozen=True)
class Key:
    """One planned run: everything that makes it distinct (``kw``: the model's arguments as sorted items)."""

    model: str
    kw: tuple
    n_per_class: int
    recipe: str
    seed: int
    epochs: int
    batch_size: int
    lr: float

    @property
    def cell(self) -> tuple:
        """The run less its seed (its convergence-probe cell)."""
        return (self.model, self.kw, self.n_per_class, self.recipe, self.epochs, self.batch_size, self.lr)


class Lab:
    """Data, the planned runs of every section and their results rows."""

    def __init__(self, p: dict, progress: bool = False):
        self.p, self.progress = p, progress
        self.pool, self.val, self.test = splits(p["dataset"], p["val_per_class"], p["test_per_class"])
        self.K = DATASETS[p["dataset"]].num_classes
        self.rows: dict[Key, dict] = {}
        self.hists: dict[Key, pd.DataFrame] = {}
        self.nets: dict[Key, object] = {}
        self.trained_now = 0

    # -- planning ---------------------------------------------------------------------------------------------
    def key(self, model: str, n_per_class: int, recipe: str, seed: int, *, epochs: int, kw: dict | None = None,
            batch_size: int | None = None, lr: float | None = None) -> Key:
        p = self.p
        kw = p["model_kw"][model] if kw is None else kw
        return Key(model, tuple(sorted(kw.items())), n_per_class, recipe, seed, epochs,
                   batch_size or p["batch_size"], float(lr if lr is not None else model_lr(p, model)))

    def plan(self) -> dict[str, list[Key]]:
        """Every section's planned runs, in the order its table lists them."""
        p, K = self.p, self.K
        n = p["ladder_n_per_class"]
        ladder = [self.key(m, n, r, s, epochs=p["ladder_epochs"].get(m, p["epochs"]))
                  for s in range(p["seeds"]) for m, r in p["ladder"]]
        scaling = [self.key("bmlp", nc, p["scaling_recipe"], s, epochs=run_epochs(K * nc, p),
                            kw={**p["model_kw"]["bmlp"], "width": w, "depth": d})
                   for (w, d) in p["scaling_sizes"] for nc in p["scaling_n_per_class"] for s in range(p["scaling_seeds"])]
        nb = p["batch_n_per_class"]
        batch = [self.key(m, nb, p["batch_recipe"], s, batch_size=b, lr=lr_for(b, p, m),
                          epochs=p["batch_epochs"] if regime == "epochs" else steps_epochs(K * nb, b, p))
                 for regime in ("epochs", "steps") for m in p["batch_models"] for b in p["batch_sizes"]
                 for s in range(p["seeds"])]
        prior = [self.key(m, nc, "none", s, epochs=run_epochs(K * nc, p, p["prior_epochs"]))
                 for nc in p["prior_n_per_class"] for s in range(p["seeds"]) for m in p["prior_models"]]
        probe = [self.key(m, n, p["probe_recipe"], s, epochs=p["ladder_epochs"].get(m, p["epochs"]))
                 for s in range(p["seeds"]) for m in p["probe_models"]]
        return {"ladder": ladder, "scaling": scaling, "batch": batch, "prior": prior, "probe": probe}

    def spec(self, key: Key) -> Run:
        """The :class:`~ibnb.core.parallel.Run` of ``key``."""
        p = self.p
        augment, mixup, smooth = RECIPE_SETTINGS[key.recipe]
        ls = float(p["bachmann_smoothing"]) if smooth else 0.0
        train = class_balanced_subset(self.pool, key.n_per_class, seed=key.seed)
        config = TrainConfig.from_params(p, epochs=key.epochs, batch_size=key.batch_size, lr=key.lr, augment=augment,
                                         seed=key.seed, label_smoothing=ls)
        step = MixStep(mix=make_mix("mixup", seed=key.seed, num_classes=self.K, mixup_alpha=p["mixup_alpha"]),
                       label_smoothing=ls) if mixup else None
        return Run(key.model, train, self.val, config, dict(key.kw), step)

    # -- training and loading ---------------------------------------------------------------------------------
    def run_all(self) -> dict[str, list[Key]]:
        """Train what the cache lacks (``workers`` at a time), load every planned run, then the convergence
        probes; returns the plan."""
        plan = self.plan()
        keys = list(dict.fromkeys(k for ks in plan.values() for k in ks))
        specs = {k: self.spec(k) for k in keys}
        order = sorted(keys, key=lambda k: -len(specs[k].train) * k.epochs)
        trained = prefetch([specs[k] for k in order], self.p["workers"], self.p["device"])
        keep = set(plan["probe"])
        for k in tqdm(keys, desc="load", disable=not self.progress):
            self._load(k, specs[k], trained, keep_net=k in keep)
        if self.p["probe"]:
            self._probe_cells(keys, specs)
        return plan

    def _load(self, key: Key, spec: Run, trained: set, keep_net: bool) -> None:
        p = self.p
        net, hist, cached = train_or_load(spec.model_name, spec.train, spec.val, config=spec.config,
                                          model_kw=spec.model_kw, step=spec.step, device=p["device"], progress=False)
        cached = cached and spec.folder().name not in trained
        self.trained_now += not cached
        ev = evaluate(net, self.test)
        flops = flops_per_image(net, spec.train.shape)
        seen = int(hist.frame["train_images"].sum())
        kw = dict(key.kw)
        self.rows[key] = dict(
            model=key.model, dataset=p["dataset"], n_train=len(spec.train), seed=key.seed, epochs=key.epochs,
            params=count_parameters(net), test_acc=ev["acc"], test_nll=ev["nll"], **hist.columns(),
            device=device_name(next(net.parameters()).device), n_per_class=key.n_per_class, recipe=key.recipe,
            augment=spec.config.augment, label_smoothing=spec.config.label_smoothing, batch_size=key.batch_size,
            lr=key.lr, width=kw.get("width", kw.get("dim")), depth=kw.get("depth"), flops_per_image=flops,
            images_seen=seen, train_flops=training_flops(flops, seen), test_error=1 - ev["acc"], n_test=ev["n"],
            steps=key.epochs * steps_per_epoch(len(spec.train), key.batch_size), cached=cached, probed=False,
            final_train_acc=float(hist.frame["train_acc"].iloc[-1]),
            final_val_acc=float(hist.frame["val_acc"].iloc[-1]))
        self.hists[key] = hist.frame
        if keep_net:
            self.nets[key] = net

    def _probe_cells(self, keys: list[Key], specs: dict) -> None:
        """One budget-halving probe per cell whose runs fail tests 1–2; the cell's other failing seeds share it."""
        probe_failing_cells([self.rows[k] for k in keys], [k.cell for k in keys], [specs[k] for k in keys],
                            self.p["workers"], self.p["device"])

    # -- the sections' tables ---------------------------------------------------------------------------------
    def ladder(self, keys: list[Key]) -> tuple[pd.DataFrame, dict]:
        """Every rung, every seed; histories keyed by ``(rung, seed)``."""
        rows = [{**self.rows[k], "experiment": "ladder", "rung": rung_name(k.model, k.recipe)} for k in keys]
        return pd.DataFrame(rows), {(rung_name(k.model, k.recipe), k.seed): self.hists[k] for k in keys}

    def scaling(self, keys: list[Key]) -> pd.DataFrame:
        """The bMLP width × depth × data grid."""
        return pd.DataFrame([{**self.rows[k], "experiment": "scaling",
                              "size": f"d={dict(k.kw)['width']}, L={dict(k.kw)['depth']}"} for k in keys])

    def batch(self, keys: list[Key]) -> pd.DataFrame:
        """Both regimes; a run at the base batch belongs to both."""
        half = len(keys) // 2
        return pd.DataFrame([{**self.rows[k], "experiment": "batch", "regime": "epochs" if i < half else "steps"}
                             for i, k in enumerate(keys)])

    def prior(self, keys: list[Key]) -> pd.DataFrame:
        """The three one-layer networks at each small training-set size."""
        return pd.DataFrame([{**self.rows[k], "experiment": "prior"} for k in keys])

    def probe(self, keys: list[Key]) -> tuple[pd.DataFrame, dict]:
        """Probe accuracies of the probe models, every seed."""
        probes = probe_set(self.test, self.p["probe_grids"], self.p["probe_sigma"])
        rows, chance = [], 1.0 / self.K
        for k in tqdm(keys, desc="probe", disable=not self.progress):
            accs = evaluate_probes(self.nets[k], probes)
            row = {**self.rows[k], "experiment": "probe"}
            for name, a in accs.items():
                row[f"acc[{name}]"] = a
                row[f"retained[{name}]"] = retained(a, accs["clean"], chance)
            rows.append(row)
        return pd.DataFrame(rows), probes

    def throughput(self) -> pd.DataFrame:
        """Parameters, FLOPs per image and benchmark training / inference images/s of each of
        ``throughput_models`` at its ``model_kw`` size (a freshly built model: a timing needs no training),
        indexed by model."""
        p, rows = self.p, []
        for m in p["throughput_models"]:
            net = create_model(m, num_classes=self.K, in_channels=self.test.shape[0], image_size=self.test.shape[1],
                               **p["model_kw"][m])
            tp = throughput(net, input_shape=self.test.shape, batch_size=p["throughput_batch"],
                            steps=p["throughput_steps"], num_classes=self.K)
            rows.append(dict(model=m, params=count_parameters(net), flops_per_image=flops_per_image(net, self.test.shape),
                             bench_train_images_per_s=tp["train_images_per_s"],
                             infer_images_per_s=tp["infer_images_per_s"], bench_batch=tp["batch_size"],
                             device=device_name(next(net.parameters()).device)))
        return pd.DataFrame(rows).set_index("model")
