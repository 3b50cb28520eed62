"""Chapter 01 — architecture as inductive bias (the chapter contract of :mod:`ibnb.chapters`).

Six architectures are trained from scratch on class-balanced CIFAR-10 subsets of several sizes, with and without
crop+flip augmentation, over several seeds; a control trains every model on pixel-permuted images. Files:
``presets.py`` (knobs), ``sweep.py`` (the runs), ``audit.py`` (claims and calibration), ``figures.py``.
"""
from __future__ import annotations

import pandas as pd

from ibnb.book.claims import NOT_TESTABLE, group_effect, tally
from ibnb.book.page import Audit, Markdown
from ibnb.book.profiles import presets as profile_presets
from ibnb.book.tables import Table, table
from ibnb.chapters.architectures import audit as _audit
from ibnb.chapters.architectures import figures as _figures
from ibnb.chapters.architectures.presets import NAMES, NOTEBOOK
from ibnb.core.reference import changes
from ibnb.chapters.architectures.sweep import Outcome, plan, run_epochs, run_sweep

__all__ = ["NOTEBOOK", "Outcome", "run", "audit", "numbers", "figures", "tables"]


def run(P: dict, progress: bool = False) -> Outcome:
    """Train or load every run of the sweep and write ``book/results/01_architectures/<profile>.csv``."""
    return run_sweep(P, progress=progress)


def audit(out: Outcome, P: dict) -> Audit:
    """Claims (through :func:`ibnb.book.claims.judge`) and calibration rows."""
    return _audit.audit(out.df, P, out.num_classes)


def _name(model: str) -> Markdown:
    return Markdown(NAMES.get(model, model))


def numbers(out: Outcome, P: dict) -> dict:
    """Every number the page quotes, by glue name."""
    df, K = out.df, out.num_classes
    main = _audit.main_runs(df)
    small, large = min(P["n_per_class"]), max(P["n_per_class"])
    aug = _audit.best_augment(P)
    n = {"n_sizes": len(P["n_per_class"]), "n_min": K * small, "n_max": K * large, "n_seeds": P["seeds"],
         "epochs": P["epochs"], "min_steps": P["min_steps"], "epochs_small": run_epochs(K * small, P),
         "epochs_large": run_epochs(K * large, P), "lr": float(P["lr"]), "wd": float(P["weight_decay"]),
         "batch_size": P["batch_size"], "n_test": int(df["n_test"].iloc[0]), "n_val": K * P["val_per_class"],
         "n_runs": len(plan(P)), "n_cached": int(df["cached"].sum()), "n_converged": int(df["converged"].sum()),
         "gpu_epochs": profile_presets(NOTEBOOK)["gpu"]["epochs"], "n_perm": K * P["permute_n_per_class"],
         "profile_name": Markdown(f"`{P['profile']}`")}
    for size, tag in ((small, "small"), (large, "large")):
        d = main[(main["augment"] == "none") & (main["n_per_class"] == size)]
        mean = d.groupby("model")["test_acc"].mean().sort_values(ascending=False)
        n[f"best_{tag}"], n[f"bestacc_{tag}"] = _name(mean.index[0]), float(100 * mean.iloc[0])
        n[f"worst_{tag}"], n[f"worstacc_{tag}"] = _name(mean.index[-1]), float(100 * mean.iloc[-1])
    for key, e in _audit.effects(df, P).items():
        n[f"e_{key}"] = Markdown(e.text())
    cal = _audit.calibration(df, P, K)
    n["cal_model"] = _name(_audit.best_cnn(df, P))
    n["cal_acc"] = Markdown(cal[0].ours.text(signed=False))
    n["cal_gap"] = float(-cal[0].difference)
    n["cal_data_factor"] = float(50_000 / (K * large))
    claims = _audit.claims(df, P, K)
    t = tally(claims)
    n.update(n_claims=len(claims), n_not_testable=t[NOT_TESTABLE], n_decided=len(claims) - t[NOT_TESTABLE])
    n["aug"] = Markdown(aug)
    n["earlier"] = Markdown(changes({c.claim: c.verdict for c in claims}, _audit.EARLIER))
    return n


def figures(out: Outcome, P: dict) -> dict:
    """The chapter's figures by glue name."""
    main = _audit.main_runs(out.df)
    figs = {"fig_accuracy": _figures.accuracy_vs_size(main, P["models"]),
            "fig_curves": _figures.loss_curves(out.histories, P["models"], max(P["n_per_class"]),
                                               P["augment_options"])}
    if P["permute_n_per_class"]:
        figs["fig_permutation"] = _figures.permutation_bars(_audit.pixel_control(out.df, P["permute_n_per_class"]),
                                                            P["models"])
    return figs


def _accuracy_table(df: pd.DataFrame, P: dict) -> Table:
    rows = []
    for aug in P["augment_options"]:
        for m in P["models"]:
            row = {"model": NAMES.get(m, m), "augmentation": "no augmentation" if aug == "none" else aug}
            for size in sorted(df["n_train"].unique()):
                e = group_effect(df, where={"model": m, "augment": aug, "n_train": size})
                row[f"{size:,} images"] = e.text(signed=False)
            rows.append(row)
    return table(pd.DataFrame(rows))


def tables(out: Outcome, P: dict) -> dict:
    """The chapter's tables by name (all through :func:`ibnb.book.tables.table`)."""
    df = out.df
    main = _audit.main_runs(df)
    e = _audit.effects(df, P)
    models = df.groupby("model", sort=False).agg(params=("params", "first"), images_per_s=("images_per_s", "median"),
                                                 converged=("converged", "sum"), runs=("converged", "size"))
    models = models.reindex(P["models"]).reset_index()
    models["model"] = models["model"].map(lambda m: NAMES.get(m, m))
    models["converged"] = [f"{c} of {r}" for c, r in zip(models["converged"], models["runs"])]
    out_tables = {"accuracy": _accuracy_table(main, P),
                  "models": table(models.drop(columns="runs"), digits={"images_per_s": 0},
                                  columns={"model": "model", "params": "parameters",
                                           "images_per_s": "training images/s (median)",
                                           "converged": "runs passing the convergence check"}),
                  "augmentation": table(pd.DataFrame(
                      [{"model": NAMES.get(m, m), f"{_audit.best_augment(P)} − no augmentation": e[f"aug_{m}"].text()}
                       for m in P["models"]]))}
    if P["permute_n_per_class"]:
        out_tables["permutation"] = table(pd.DataFrame(
            [{"model": NAMES.get(m, m), "original − permuted pixels": e[f"perm_{m}"].text()} for m in P["models"]]))
    return out_tables
