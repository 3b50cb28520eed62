"""Appendix — training on a CPU (the chapter contract of :mod:`ibnb.chapters`).

The fast recipes of :mod:`ibnb.core.fast_recipe` (an airbench-style CNN; Jordan, 2024) are trained on CIFAR-10 at
several epoch budgets (the accuracy-vs-minutes frontier, tested on the full test set), once more in fp32 and bf16
(parity, where bf16 is native), and the book's models are benchmarked per fast path (``fit`` vs a bare loop,
GFLOP/s against the measured matmul peak). Files: ``presets.py``, ``sweep.py``, ``audit.py``, ``figures.py``.
"""
from __future__ import annotations

from ibnb.book.page import Audit, Markdown
from ibnb.book.tables import Table
from ibnb.chapters.cpu_training import audit as _audit
from ibnb.chapters.cpu_training import figures as _figures
from ibnb.chapters.cpu_training.presets import NOTEBOOK
from ibnb.chapters.cpu_training.sweep import Outcome, run_sweep
from ibnb.core.fast_recipe import TRAINING

__all__ = ["NOTEBOOK", "Outcome", "run", "audit", "numbers", "figures", "tables"]


def run(P: dict, progress: bool = False) -> Outcome:
    """Train or load every run, benchmark, and write ``book/results/10_cpu_training/<profile>.csv``."""
    return run_sweep(P, progress=progress)


def audit(out: Outcome, P: dict) -> Audit:
    return _audit.audit(out.df, out.bench, out.peak, out.bf16_native)


def numbers(out: Outcome, P: dict) -> dict:
    """Every number the page quotes, by glue name."""
    f = _audit.frontier(out.df).sort_values("test_acc")
    best = f.iloc[-1]
    return {"n_train": out.n_train, "n_test": out.n_test, "n_runs": len(out.df), "n_cached": int(out.df["cached"].sum()),
            "n_converged": int(out.df["converged"].sum()), "batch_size": P["batch_size"],
            "bench_batch_size": P["bench_batch_size"], "lr": TRAINING["lr"],
            "momentum": TRAINING["momentum"], "label_smoothing": TRAINING["label_smoothing"],
            "peak_fp32": float(out.peak["fp32"]), "peak_bf16": float(out.peak["bf16"]),
            "best_acc": float(100 * best["test_acc"]), "best_tta": float(100 * best["tta_acc"]),
            "best_min": float(best["train_min"]), "best_recipe": Markdown(f"`{best['recipe']}`"),
            "bf16_native": Markdown("has" if out.bf16_native else "does not have"),
            "profile_name": Markdown(f"`{P['profile']}`")}


def figures(out: Outcome, P: dict) -> dict:
    return _figures.figures(out.df)


def tables(out: Outcome, P: dict) -> dict[str, Table]:
    return {"frontier": _figures.frontier_table(out.df), "throughput": _figures.throughput_table(out.bench, out.peak),
            "anchors": _figures.anchors_table()}
