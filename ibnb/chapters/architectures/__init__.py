"""Chapter 01 — architecture as inductive bias (the chapter contract of :mod:`ibnb.chapters`).

Seven architectures (MLP, a CNN-sized MLP, Mixer, ViT, CNN, CNN with self-attention, ResNet-18) are trained
from scratch on class-balanced CIFAR-10 subsets of several sizes, with and without crop+flip augmentation, over
several seeds, each with the learning rate and weight decay of one small search per model; the airbench-style
fast CNN trains with its own recipe on the full set; a control trains some models on pixel-permuted images.
Files: ``presets.py`` (knobs), ``sweep.py`` (the search and the runs), ``audit.py`` (claims and calibration),
``figures.py``.
"""
from __future__ import annotations

import pandas as pd

from ibnb.book.claims import NOT_TESTABLE, group_effect, tally
from ibnb.book.page import Audit, Markdown
from ibnb.book.profiles import presets as profile_presets
from ibnb.book.tables import Table, table
from ibnb.chapters.architectures import audit as _audit
from ibnb.chapters.architectures import figures as _figures
from ibnb.chapters.architectures.presets import NAMES, NOTEBOOK, RECIPE
from ibnb.core.reference import changes
from ibnb.chapters.architectures.sweep import Outcome, plan, run_sweep, tuned_models

__all__ = ["NOTEBOOK", "Outcome", "run", "audit", "numbers", "figures", "tables"]


def run(P: dict, progress: bool = False) -> Outcome:
    """Train or load every run of the sweep and write ``book/results/01_architectures/<profile>.csv``."""
    return run_sweep(P, progress=progress)


def audit(out: Outcome, P: dict) -> Audit:
    """Claims (through :func:`ibnb.book.claims.judge`) and calibration rows."""
    return _audit.audit(out.df, P, out.num_classes)


def _name(model: str) -> Markdown:
    return Markdown(NAMES.get(model, model))


def _sizes_text(P: dict, K: int) -> str:
    return ", ".join(f"{K * n:,} ({e} epochs)" for n, e in zip(P["n_per_class"], P["epochs"]))


def _extended_text(search: pd.DataFrame) -> str:
    """Which models the search extended past the grid's edge, and to which learning rates."""
    ext = search[search["extended"].astype(bool)] if "extended" in search else search.iloc[:0]
    if ext.empty:
        return "no model's best learning rate was at an edge of the grid, so none was extended"
    per = ext.groupby("model", sort=False)["lr"].apply(lambda s: ", ".join(f"{lr:g}" for lr in s))
    return "extended past the edge for " + "; ".join(f"{NAMES.get(m, m)} ({lrs})" for m, lrs in per.items())


def numbers(out: Outcome, P: dict) -> dict:
    """Every number the page quotes, by glue name."""
    df, K = out.df, out.num_classes
    main = _audit.main_runs(df)
    small, large = _audit.compared_sizes(P)
    aug = _audit.best_augment(P)
    n = {"n_sizes": len(P["n_per_class"]), "n_min": K * small, "n_max": K * large, "n_seeds": P["seeds"],
         "sizes": Markdown(_sizes_text(P, K)), "n_full": K * _audit.full_size(P),
         "batch_size": P["batch_size"], "n_test": int(df["n_test"].iloc[0]), "n_val": K * P["val_per_class"],
         "n_runs": len(plan(P)), "n_cached": int(df["cached"].sum()), "n_converged": int(df["converged"].sum()),
         "n_probed": int(df["probed"].sum()), "n_tune": K * P["tune_n_per_class"],
         "n_settings": len(P["lrs"]) * len(P["weight_decays"]),
         "lrs": Markdown(", ".join(f"{lr:g}" for lr in P["lrs"])), "extended": Markdown(_extended_text(out.search)),
         "aug_models": Markdown(", ".join(NAMES.get(m, m) for m in P["models"]
                                          if _audit.best_augment(P) in P["grid"].get(m, {}))),
         "wds": Markdown(", ".join(f"{wd:g}" for wd in P["weight_decays"])),
         "chosen": Markdown("; ".join(f"{NAMES.get(m, m)} {lr:g} / {wd:g}" for m, (lr, wd) in out.chosen.items())),
         "fast_recipe": Markdown(f"`{P['fast_recipe']}`"), "fast_epochs": P["fast_epochs"],
         "gpu_epochs": Markdown(", ".join(str(e) for e in profile_presets(NOTEBOOK)["gpu"]["epochs"])),
         "n_perm": K * P["permute_n_per_class"],
         "perm_models": Markdown(", ".join(NAMES.get(m, m) for m in P["permute_models"])), "profile_name": Markdown(f"`{P['profile']}`")}
    for size, tag in ((small, "small"), (large, "large")):
        d = main[(main["augment"] == "none") & (main["n_per_class"] == size)]
        mean = d.groupby("model")["test_acc"].mean().sort_values(ascending=False)
        n[f"best_{tag}"], n[f"bestacc_{tag}"] = _name(mean.index[0]), float(100 * mean.iloc[0])
        n[f"worst_{tag}"], n[f"worstacc_{tag}"] = _name(mean.index[-1]), float(100 * mean.iloc[-1])
    for key, e in _audit.effects(df, P).items():
        n[f"e_{key}"] = Markdown(e.text())
    aug_small, aug_large = _audit.aug_sizes(P)
    n.update(n_aug_small=K * aug_small, n_aug_large=K * aug_large)
    cal = _audit.calibration(df, P, K)
    model, cal_aug = _audit.best_cnn(df, P)
    n["cal_model"] = Markdown(NAMES.get(model, model) + (" (its recipe)" if cal_aug == RECIPE else f" with {cal_aug}"))
    n["cal_acc"] = Markdown(cal[0].ours.text(signed=False))
    n["cal_gap"] = float(-cal[0].difference)
    mlp_rows = [c for c in cal if c.quantity == _audit.MLP_QUANTITY]
    n["cal_mlp"] = Markdown(mlp_rows[0].ours.text(signed=False) if mlp_rows else "not run at this profile")
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
            "fig_curves": _figures.loss_curves(out.histories, tuned_models(P), P["tune_n_per_class"],
                                               ["none", _audit.best_augment(P)]),
            "fig_search": _figures.search_curves(out.search)}
    if P["permute_n_per_class"]:
        figs["fig_permutation"] = _figures.permutation_bars(_audit.pixel_control(out.df, P["permute_n_per_class"]),
                                                            P["permute_models"])
    return figs


def _accuracy_table(df: pd.DataFrame, P: dict, K: int) -> Table:
    rows = []
    for m in P["models"]:
        for aug, sizes in P["grid"].get(m, {}).items():
            row = {"model": NAMES.get(m, m),
                   "augmentation": {"none": "no augmentation", RECIPE: "its recipe (flip + translate)"}.get(aug, aug)}
            for size in P["n_per_class"]:
                e = group_effect(df, where={"model": m, "augment": aug, "n_per_class": size})
                row[f"{K * size:,} images"] = e.text(signed=False) if size in sizes else "not run"
            rows.append(row)
    return table(pd.DataFrame(rows))


def tables(out: Outcome, P: dict) -> dict:
    """The chapter's tables by name (all through :func:`ibnb.book.tables.table`)."""
    df = out.df
    main = _audit.main_runs(df)
    e = _audit.effects(df, P)
    models = df.groupby("model", sort=False).agg(params=("params", "first"),
                                                 mflop=("train_flops_per_image", "first"),
                                                 images_per_s=("images_per_s", "median"),
                                                 converged=("converged", "sum"), runs=("converged", "size"))
    models = models.reindex(P["models"]).reset_index()
    models["mflop"] = models["mflop"] / 1e6
    models["setting"] = [("recipe" if m not in out.chosen else f"{out.chosen[m][0]:g} / {out.chosen[m][1]:g}")
                         for m in models["model"]]
    models["model"] = models["model"].map(lambda m: NAMES.get(m, m))
    models["converged"] = [f"{c} of {r}" for c, r in zip(models["converged"], models["runs"])]
    search = out.search.assign(model=out.search["model"].map(lambda m: NAMES.get(m, m)),
                               chosen=out.search["chosen"].map({True: "chosen", False: ""}),
                               extended=out.search["extended"].map({True: "past the edge", False: ""}))
    aug = _audit.best_augment(P)
    out_tables = {"accuracy": _accuracy_table(main, P, out.num_classes),
                  "models": table(models.drop(columns="runs"), digits={"images_per_s": 0, "mflop": 1},
                                  columns={"model": "model", "params": "parameters",
                                           "mflop": "training MFLOP per image", "setting": "lr / weight decay",
                                           "images_per_s": "training images/s (median)",
                                           "converged": "runs passing the convergence check"}),
                  "search": table(search, percent=("val_acc",),
                                  columns={"model": "model", "lr": "learning rate", "weight_decay": "weight decay",
                                           "val_acc": "validation accuracy (%)", "extended": "trial",
                                           "chosen": "chosen"},
                                  digits={"lr": 4, "weight_decay": 3, "val_acc": 1}),
                  "augmentation": table(pd.DataFrame(
                      [{"model": NAMES.get(m, m),
                        f"{aug} − none, smallest size": e[f"augsmall_{m}"].text(),
                        f"{aug} − none, largest size": e[f"aug_{m}"].text()}
                       for m in P["models"] if f"aug_{m}" in e])),
                  "matched": table(pd.DataFrame(
                      [{"training images": f"{out.num_classes * int(k.split('_')[1]):,}", "CNN − CNN-sized MLP": v.text()}
                       for k, v in e.items() if k.startswith("matched_")]))}
    if P["permute_n_per_class"]:
        out_tables["permutation"] = table(pd.DataFrame(
            [{"model": NAMES.get(m, m), "original − permuted pixels": e[f"perm_{m}"].text()}
             for m in P["permute_models"]]))
    return out_tables
