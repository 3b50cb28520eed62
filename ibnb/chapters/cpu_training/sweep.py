"""The runs of the CPU-training page: the accuracy-vs-minutes frontier of each fast recipe, the fp32-vs-bf16
parity runs, and the throughput benchmark (``fit`` vs a bare loop per fast path, against the matmul peak)."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from ibnb.book.results import write_results
from ibnb.chapters.cpu_training.presets import NOTEBOOK
from ibnb.core.bench import PATHS, compare, matmul_peak
from ibnb.core.data import class_balanced_subset
from ibnb.core.fast_recipe import recipe_run, tta_evaluate
from ibnb.core.models import count_parameters, create_model
from ibnb.core.precision import cpu_has_bf16
from ibnb.core.reference import splits
from ibnb.core.runs import train_or_load
from ibnb.core.train import device_name, evaluate


@dataclass
class Outcome:
    """The page's measurements: one row per training run, one per benchmarked model and fast path, the peak."""

    df: pd.DataFrame
    bench: pd.DataFrame
    peak: dict
    bf16_native: bool
    n_train: int
    n_test: int


def bf16_native(device: str) -> bool:
    """Whether bf16 runs at hardware speed here (CUDA, or a CPU with bf16 units); else forcing it is 10-50x slower."""
    return torch.device(device).type == "cuda" or (torch.device(device).type == "cpu" and cpu_has_bf16())


def plan(P: dict) -> list[dict]:
    """Every training run: ``(experiment, recipe, epochs, seed, precision)``."""
    runs = []
    for recipe, budgets in P["recipes"].items():
        for i, epochs in enumerate(sorted(budgets)):
            for seed in range(P["seeds_cheapest"] if i == 0 else P["seeds"]):
                runs.append(dict(experiment="frontier", recipe=recipe, epochs=epochs, seed=seed, precision="auto"))
    if bf16_native(P["device"]):
        # the bf16 arm is requested as "auto" (bf16 here), so it is the frontier's run of the same recipe, budget
        # and seed when there is one: the run cache trains it once
        for precision in ("fp32", "auto"):
            for seed in range(P["parity_seeds"]):
                runs.append(dict(experiment="parity", recipe=P["parity_recipe"], epochs=P["parity_epochs"],
                                 seed=seed, precision=precision))
    return runs


def _one(r: dict, train, val, test, P: dict, progress: bool) -> dict:
    model_kw, cfg, step = recipe_run(r["recipe"], epochs=r["epochs"], seed=r["seed"], precision=r["precision"],
                                     lookahead=P["lookahead"], batch_size=P["batch_size"])
    if r["recipe"] == "fast_cnn_s":
        model_kw["widths"] = tuple(P["widths_s"])
    model, hist, cached = train_or_load("fast_cnn", train, val, config=cfg, model_kw=model_kw, step=step,
                                        device=P["device"], progress=progress)
    # tested in the arithmetic it was trained in (the fp32 arm of the parity runs stays fp32 at test time too)
    same = dict(precision=hist.precision or None, channels_last=hist.channels_last)
    plain = evaluate(model, test, device=P["device"], **same)
    tta = tta_evaluate(model, test, views=P["tta"], device=P["device"], **same)
    train_s = float(hist.frame["train_s"].sum())
    return {**r, "model": r["recipe"], "dataset": P["dataset"], "n_train": len(train), "n_test": len(test),
            "params": count_parameters(model), "test_acc": plain["acc"], "test_nll": plain["nll"],
            "tta_acc": tta["acc"], "tta_nll": tta["nll"], "train_min": train_s / 60, "device": device_name(P["device"]),
            "cached": cached, "widths": "/".join(map(str, model_kw["widths"])), **hist.columns(),
            "requested_precision": r["precision"]}


def conv_flop_share(model, input_shape=(3, 32, 32)) -> float:
    """The share of ``model``'s forward FLOPs spent in convolutions (``torch.utils.flop_counter``): 1.0 for the CNNs,
    under 0.1 for the ViT and the Mixer, whose one convolution is the patch embedding. A benchmark row counts as a
    conv net's when the share is over one half."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.randn(2, *input_shape))
    counts = counter.get_flop_counts()["Global"]
    total = sum(counts.values())
    return sum(v for op, v in counts.items() if "convolution" in str(op)) / total if total else 0.0


def run_bench(P: dict) -> tuple[pd.DataFrame, dict]:
    """The throughput table: every ``bench_models`` model at its ``cpu`` size, every fast path (bf16 only where it
    is native), and the matmul peak."""
    paths = [p for p in PATHS if p[1] != "bf16" or bf16_native(P["device"])]
    rows = []
    for name in P["bench_models"]:
        rows += compare(name, P["bench_kw"][name], batch_size=P["bench_batch_size"], steps=P["bench_steps"],
                        repeats=P["bench_repeats"], device=P["device"], paths=paths)
    bench = pd.DataFrame(rows)
    bench["conv_net"] = [conv_flop_share(create_model(name, **P["bench_kw"][name])) > 0.5 for name in bench["model"]]
    bench["model_kw"] = [", ".join(f"{k} {'/'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                                   for k, v in kw.items()) for kw in bench["model_kw"]]
    return bench, matmul_peak(P["device"])


def run_sweep(P: dict, progress: bool = False) -> Outcome:
    """Train or load every planned run, benchmark, and write ``book/results/10_cpu_training/<profile>.csv``."""
    pool, val, test = splits(P["dataset"], P["val_per_class"], P["test_per_class"])
    train = class_balanced_subset(pool, P["n_per_class"], seed=0) if P["n_per_class"] else pool
    df = pd.DataFrame([_one(r, train, val, test, P, progress) for r in plan(P)])
    bench, peak = run_bench(P)
    write_results(df, NOTEBOOK, P["profile"])
    return Outcome(df, bench, peak, bf16_native(P["device"]), len(train), len(test))
