"""Chapter 01's sweep: a small learning-rate search per model, then model × size × augmentation × seed, plus the
pixel-permutation control.

1. **Search.** Every model but the fast CNN (which keeps its published recipe) is trained on the first seed's
   ``tune_n_per_class`` images per class, without augmentation, at every ``lrs`` × ``weight_decays`` setting;
   the setting with the highest final validation accuracy is that model's setting everywhere below. A model whose
   best learning rate is at an edge of the grid gets one more, a grid step past that edge (``lr_extend`` times
   at most), so no model is held at a bound of the grid. The same search for every model, so none is favoured by
   its settings. Its chosen run *is* the main run of that cell.
2. **Grid.** ``grid[model][augment]`` lists the sizes each model is trained on; a size of ``n_per_class[i]``
   images per class takes ``epochs[i]`` epochs. Each run validates after every epoch on the held-out split, so its
   convergence check reads validation accuracy. With ``probe``, each *cell* (model, size, augmentation) whose
   runs fail tests 1–2 of the check gets one budget-halving probe (test 3 of :mod:`ibnb.core.convergence`), a
   cached run of its own, for its first failing seed: whether doubling the budget still pays is a property of the
   cell's recipe, so one probe answers it for the cell (:func:`cell_probes`), and the cell's other failing runs
   take its verdict with a reason that says so.
3. **Control.** ``permute_models`` are trained on ``permute_n_per_class`` images per class whose pixel positions
   are shuffled by one fixed permutation (training, validation and test images alike).

Runs the cache lacks are trained ``workers`` at a time in one-thread worker processes (:mod:`ibnb.core.parallel`),
longest first; the loop below then loads each one, so the results are those of a sequential sweep.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pandas as pd
from tqdm.auto import tqdm

from ibnb.book import results
from ibnb.chapters.architectures.presets import ARCH, NOTEBOOK, RECIPE
from ibnb.core.bench import training_flops_per_image
from ibnb.core.convergence import probe_config
from ibnb.core.data import DATASETS, ImageData, class_balanced_subset, permute_pixels
from ibnb.core.fast_recipe import recipe_run
from ibnb.core.models import count_parameters, create_model
from ibnb.core.parallel import Run, prefetch
from ibnb.core.reference import splits, steps_per_epoch
from ibnb.core.runs import train_or_load
from ibnb.core.train import TrainConfig, device_name, evaluate


@dataclass
class Outcome:
    """What :func:`run_sweep` produced: the results table (one row per run), the per-epoch histories keyed by
    ``(model, n_per_class, augment, seed, permuted)``, the search table (one row per model and setting), the
    chosen ``(lr, weight_decay)`` per model, and the number of classes."""

    df: pd.DataFrame
    histories: dict = field(default_factory=dict)
    search: pd.DataFrame = field(default_factory=pd.DataFrame)
    chosen: dict = field(default_factory=dict)
    num_classes: int = 10


def tuned_models(p: dict) -> list[str]:
    """The models whose learning rate and weight decay are searched (all but the recipe-trained fast CNN)."""
    return [m for m in p["models"] if m != "fast_cnn"]


def size_epochs(p: dict, n_per_class: int) -> int:
    """The epochs of a run on ``n_per_class`` images per class (the profile's budget for that size)."""
    return p["epochs"][p["n_per_class"].index(n_per_class)]


def plan(p: dict) -> list[dict]:
    """Every run of the grid and of the control: model, size, augmentation, seed, permuted."""
    runs = [dict(model=m, n_per_class=n, augment=a, seed=s, permuted=False)
            for m in p["models"] for a, sizes in p["grid"].get(m, {}).items() for n in sizes
            for s in range(p["seeds"])]
    if p["permute_n_per_class"]:
        runs += [dict(model=m, n_per_class=p["permute_n_per_class"], augment="none", seed=s, permuted=True)
                 for m in p["permute_models"] for s in range(p["seeds"])]
    return runs


def run_spec(p: dict, run: dict, pool: ImageData, val: ImageData, setting: tuple[float, float] | None) -> Run:
    """The :class:`~ibnb.core.parallel.Run` of one planned run (``setting``: its model's ``(lr, weight_decay)``)."""
    train = class_balanced_subset(pool, run["n_per_class"], seed=run["seed"])
    if run["permuted"]:
        train, val = (permute_pixels(d, p["permutation_seed"]) for d in (train, val))
    if run["augment"] == RECIPE:
        kw, config, step = recipe_run(p["fast_recipe"], epochs=p["fast_epochs"], seed=run["seed"])
        return Run("fast_cnn", train, val, config, kw, step)
    lr, wd = setting
    config = TrainConfig.from_params(p, epochs=size_epochs(p, run["n_per_class"]), augment=run["augment"],
                                     seed=run["seed"], lr=lr, weight_decay=wd,
                                     precision=p["model_precision"].get(run["model"], "auto"))
    return Run(ARCH.get(run["model"], run["model"]), train, val, config, dict(p["model_kw"][run["model"]]))


def probe_spec(spec: Run) -> Run | None:
    """The budget-halving probe of ``spec`` (:func:`~ibnb.core.convergence.probe_config`), ``None`` for one epoch."""
    half = probe_config(spec.config)
    return None if half is None else dataclasses.replace(spec, config=half)


def cell_of(run: dict) -> tuple:
    """The cell of a planned run: everything but its seed."""
    return tuple(v for k, v in run.items() if k != "seed")


def cell_probes(runs: list[dict], failed: list[bool]) -> dict[int, tuple]:
    """``{i: cell}`` for the run that gets its cell's probe: the first run of each cell with ``failed[i]``."""
    out, seen = {}, set()
    for i, (run, bad) in enumerate(zip(runs, failed)):
        if bad and cell_of(run) not in seen:
            seen.add(cell_of(run))
            out[i] = cell_of(run)
    return out


def shared_verdict(row: dict, probe_row: dict) -> dict:
    """A failing run's convergence columns after its cell's probe (run ``probe_row``, another seed) passed: test 3
    answered for the cell, the reason naming the seed whose doubling was measured."""
    if row["converged"] or not probe_row["converged"]:
        return {}
    return {"converged": True, "convergence": f"{row['convergence']}; the cell's budget probe (seed "
                                              f"{probe_row['seed']}): {probe_row['convergence']}"}


def load(spec: Run, device) -> tuple:
    """``(model, history, cached)`` of ``spec`` from the cache (trained here if it is missing)."""
    return train_or_load(spec.model_name, spec.train, spec.val, config=spec.config, model_kw=spec.model_kw,
                         step=spec.step, device=device, progress=False)


def _longest_first(specs: list[Run]) -> list[Run]:
    return sorted(specs, key=lambda s: -len(s.train) * s.config.epochs)


def beyond_edge(tried: list[float], best: float) -> float | None:
    """The next learning rate past the edge of ``tried`` that ``best`` sits on, one grid step further (rounded to
    one significant digit: 1e-2 after 3e-3 gives 3e-2); ``None`` when ``best`` is interior or ``tried`` has one
    value."""
    lrs = sorted(set(tried))
    if len(lrs) < 2 or lrs[0] < best < lrs[-1]:
        return None
    nxt = best * lrs[-1] / lrs[-2] if best == lrs[-1] else best * lrs[0] / lrs[1]
    return float(f"{nxt:.0e}")


def search(p: dict, pool: ImageData, val: ImageData) -> tuple[pd.DataFrame, dict, set[str]]:
    """Step 1: every tuned model at every setting, then, ``lr_extend`` times, one more learning rate past the edge
    for each model whose best setting is at an edge of its grid (with the best weight decay);
    ``(table, {model: (lr, weight_decay)}, names of the run folders trained here)``."""
    run = dict(n_per_class=p["tune_n_per_class"], augment="none", seed=0, permuted=False)
    cells = [(m, lr, wd) for m in tuned_models(p) for lr in p["lrs"] for wd in p["weight_decays"]]
    rows, trained = [], set()
    for _ in range(1 + p["lr_extend"]):
        if not cells:
            break
        specs = [run_spec(p, {**run, "model": m}, pool, val, (lr, wd)) for m, lr, wd in cells]
        trained |= prefetch(_longest_first(specs), p["workers"], p["device"])
        for (m, lr, wd), spec in zip(cells, specs):
            _, hist, _ = load(spec, p["device"])
            rows.append(dict(model=m, lr=lr, weight_decay=wd, val_acc=float(hist.last.get("val_acc", float("nan"))),
                             converged=hist.convergence.passed, extended=lr not in p["lrs"]))
        chosen = _best(pd.DataFrame(rows))
        cells = [(m, nxt, wd) for m, (lr, wd) in chosen.items()
                 if (nxt := beyond_edge([r["lr"] for r in rows if r["model"] == m], lr)) is not None]
    table = pd.DataFrame(rows)
    chosen = _best(table)
    table["chosen"] = [chosen[m] == (lr, wd) for m, lr, wd in zip(table["model"], table["lr"], table["weight_decay"])]
    return table, chosen, trained


def _best(table: pd.DataFrame) -> dict:
    """``{model: (lr, weight_decay)}`` of each model's highest validation accuracy."""
    best = table.loc[table.groupby("model", sort=False)["val_acc"].idxmax()]
    return {m: (float(lr), float(wd)) for m, lr, wd in zip(best["model"], best["lr"], best["weight_decay"])}


def _flops(spec: Run, cache: dict) -> float:
    """Training FLOPs per image of ``spec``'s model (forward + backward, counted once per model and size)."""
    key = (spec.model_name, repr(sorted(spec.model_kw.items())))
    if key not in cache:
        kw = {"num_classes": spec.train.num_classes, "in_channels": spec.train.shape[0],
              "image_size": spec.train.shape[1], **spec.model_kw}
        cache[key] = training_flops_per_image(create_model(spec.model_name, **kw), spec.train.shape, "cpu",
                                              spec.train.num_classes)
    return cache[key]


def run_sweep(p: dict, progress: bool = False) -> Outcome:
    """Search, then train (or load from the run cache) every planned run; write the results table."""
    pool, val, test = splits(p["dataset"], p["val_per_class"], p["test_per_class"])
    table, chosen, trained = search(p, pool, val)
    runs = plan(p)
    specs = [run_spec(p, r, pool, val, chosen.get(r["model"])) for r in runs]
    trained |= prefetch(_longest_first(specs), p["workers"], p["device"])
    loaded = [load(spec, p["device"]) for spec in specs]
    probes = {}
    if p["probe"]:
        failed = [probe_spec(spec) is not None and not hist.convergence.passed for spec, (_, hist, _) in
                  zip(specs, loaded)]
        probes = {i: probe_spec(specs[i]) for i in cell_probes(runs, failed)}
        prefetch(_longest_first(list(probes.values())), p["workers"], p["device"])
    rows, histories, flops = [], {}, {}
    for i, (run, spec) in enumerate(zip(tqdm(runs, desc="runs", disable=not progress), specs)):
        model, hist, cached = loaded[i]
        if i in probes:
            hist.probe = load(probes[i], p["device"])[1].frame
        run_test = permute_pixels(test, p["permutation_seed"]) if run["permuted"] else test
        ev = evaluate(model, run_test)
        histories[tuple(run.values())] = hist.frame
        cfg = spec.config
        rows.append(dict(experiment="architectures", model=run["model"], dataset=p["dataset"],
                         n_train=len(spec.train), seed=run["seed"], epochs=cfg.epochs,
                         params=count_parameters(model), test_acc=ev["acc"], test_nll=ev["nll"], **hist.columns(),
                         device=device_name(next(model.parameters()).device), n_per_class=run["n_per_class"],
                         augment=run["augment"], permuted=run["permuted"], lr=cfg.lr, weight_decay=cfg.weight_decay,
                         steps=cfg.epochs * steps_per_epoch(len(spec.train), cfg.batch_size),
                         batch_size=cfg.batch_size, train_flops_per_image=_flops(spec, flops),
                         val_acc=float(hist.last.get("val_acc", float("nan"))), probed=i in probes,
                         test_top5=ev["top5"], n_test=ev["n"],
                         cached=cached and spec.folder().name not in trained))
    by_cell = {cell_of(runs[i]): i for i in probes}
    for run, row in zip(runs, rows):
        if (j := by_cell.get(cell_of(run))) is not None:
            row.update(shared_verdict(row, rows[j]))
    df = pd.DataFrame(rows)
    df["train_pflop"] = df["train_flops_per_image"] * df["steps"] * df["batch_size"] / 1e15
    results.write_results(df, NOTEBOOK, p["profile"])
    return Outcome(df, histories, table, chosen, DATASETS[p["dataset"]].num_classes)
