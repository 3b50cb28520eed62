"""Chapter 08 — weak architectural priors and flat minima: ViT from scratch and Sharpness-Aware Minimization
(the chapter contract of :mod:`ibnb.chapters`).

Files: ``presets.py`` (knobs), ``sam.py`` (the SAM optimiser and the SAM train step; Mixup, Cutout and
the batch-op step are in :mod:`ibnb.core.batch_ops`), ``sharpness.py`` (flatness measurements), ``rollout.py`` (ViT attention rollout), ``sweep.py``
(the runs), ``claims_audit.py`` (claims and calibration), ``figures.py``. The loop is :func:`ibnb.core.train.fit`, the
models are in :mod:`ibnb.core.models`.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from ibnb.book.claims import NOT_TESTABLE, group_effect, paired_effect, tally
from ibnb.book.page import Audit, Markdown
from ibnb.book.tables import Table, table
from ibnb.chapters.vit_sam import claims_audit as _audit
from ibnb.chapters.vit_sam import figures as _figures
from ibnb.chapters.vit_sam.presets import LABELS, NOTEBOOK
from ibnb.chapters.vit_sam.sweep import ADAMW, ADAMW2, MATCHED, Outcome, method_name, run_all
from ibnb.core.reference import changes

__all__ = ["NOTEBOOK", "Outcome", "run", "audit", "numbers", "figures", "tables"]
KEYS = ("conv", "vit")


def run(P: dict, progress: bool = False) -> Outcome:
    """Train or load every run and write ``book/results/08_vit_sam/<profile>.csv``."""
    return run_all(P, progress=progress)


def audit(out: Outcome, P: dict) -> Audit:
    """Claims (through :func:`ibnb.book.claims.judge`) and calibration rows."""
    return _audit.audit(out, P)


def _key(m: str) -> str:
    return "vit" if m == "vit" else "conv"


def _allmix(out: Outcome, P: dict) -> pd.DataFrame:
    base = out.main[(out.main["model"] == P["mix_model"]) & out.main["method"].isin([ADAMW, method_name(P["mix_rho"])])]
    return pd.concat([base, out.mix], ignore_index=True)


def _sharpness_numbers(out: Outcome, P: dict, ref: str) -> dict:
    n = {"sharp_n": P["sharp_n"], "pga_steps": P["pga_steps"], "hessian_iters": P["hessian_iters"],
         "slice_edge": float(out.slices["alpha"].abs().max())}
    for m in P["models"]:
        k, sh = _key(m), out.sharp[out.sharp["model"] == m]
        tl = sh[sh["stage"] == "end"].groupby("method")["train_loss"].mean()
        n[f"tl_adamw_{k}"], n[f"tl_sam_{k}"] = float(tl[ADAMW]), float(tl[ref])
        mt = sh[(sh["stage"] == MATCHED) & (sh["epoch"] < P["epochs"])]  # the snapshot side of each pair
        lower = mt["method"].value_counts()
        n[f"matched_{k}"] = Markdown(
            "; ".join(f"{'AdamW' if meth == ADAMW else 'SAM'} ended lower in {c} of {P['seeds']} seeds and is "
                      f"measured at epoch {', '.join(str(int(x)) for x in mt[mt['method'] == meth]['epoch'])}"
                      for meth, c in lower.items()) or "both runs of every seed are measured at their final weights")
        pair = sh[sh["stage"] == MATCHED].groupby("method")["train_loss"].mean()
        n[f"tl_matched_adamw_{k}"], n[f"tl_matched_sam_{k}"] = float(pair[ADAMW]), float(pair[ref])
        ls = out.slices[out.slices["model"] == m].groupby(["method", "alpha"])["loss"].mean()
        edge = n["slice_edge"]
        for meth, tag in ((ADAMW, "adamw"), (ref, "sam")):
            n[f"slice_rise_{tag}_{k}"] = float(ls[meth][[-edge, edge]].mean() - ls[meth][0.0])
    return n


def numbers(out: Outcome, P: dict) -> dict:
    """Every number the page quotes, by glue name."""
    main, ref, conv = out.main, _audit.sam_ref(P), P["models"][0]
    steps = int(main["steps"].iloc[0])
    vk = P["model_kw"]["vit"]
    n = {"n_train": out.n_train, "seeds": P["seeds"], "lr": float(P["lr"]), "wd": float(P["weight_decay"]),
         "batch_size": P["batch_size"], "epochs": P["epochs"], "epochs2": 2 * P["epochs"], "steps": steps,
         "rho_list": Markdown(", ".join(f"{r:g}" for r in P["rhos"])), "label_m0": Markdown(_audit.label(conv)),
         "params_m0": int(main[main["model"] == conv]["params"].iloc[0]),
         "params_vit": int(main[main["model"] == "vit"]["params"].iloc[0]),
         "vit_shape": Markdown(f"width {vk.get('dim')}, depth {vk.get('depth')}, {vk.get('heads')} heads"),
         "sgd_lr": float(P["sgd_lr"]), "sgd_wd": float(P["sgd_weight_decay"]), "asam_rho": float(P["asam_rho"]),
         "extra_seeds": P["extra_seeds"], "workers": P["workers"],
         "n_test": out.n_test, "n_val": out.n_val, "sam_ref": Markdown(ref), "sharp_rho": float(P["sharp_rho"]),
         "n_runs": len(main) + len(out.mix), "n_cached": int(pd.concat([main, out.mix])["cached"].sum()),
         "n_converged": int(pd.concat([main, out.mix])["converged"].sum()),
         "n_probed": int(pd.concat([main, out.mix])["probed"].sum())}
    e = _audit.effects(out, P)
    for name, eff in e.items():
        n[f"e_{name}"] = Markdown(eff.text())
    for op in ("mixup", "cutout"):
        for tag in ("sam", "adamw", "both"):
            n.setdefault(f"e_mix_{tag}_{op}", Markdown("not run at this profile"))
    for k in KEYS:
        n.setdefault(f"e_default_{k}", Markdown("not run (ρ = 0.05 is not in this sweep)"))
    n["catchup"] = Markdown(
        f"ViT − CNN is {e['size_small'].text()} at the smallest size and {e['size_large'].text()} at the largest; "
        f"the change of the gap is {e['size_change'].text()}" if out.arch is not None else
        f"chapter 01's `{P['arch_profile']}` results table is not available, so this comparison is skipped")
    for m in P["models"]:
        k, d = _key(m), main[main["model"] == m]
        sam_means = d[(d["rho"] > 0) & ~d["adaptive"].astype(bool) & (d["base"] == "adamw")].groupby("rho")[
            "test_acc"].mean()
        wall = d.groupby("method")["wall_s"].mean()
        n[f"best_rho_{k}"] = Markdown(f"ρ = {sam_means.idxmax():g}")
        n[f"best_acc_{k}"] = float(100 * sam_means.max())
        n[f"adamw_acc_{k}"] = float(100 * d[d["method"] == ADAMW]["test_acc"].mean())
        n[f"wall_ratio_{k}"] = float(wall[ref] / wall[ADAMW])
        n[f"wall2_ratio_{k}"] = float(wall[ADAMW2] / wall[ADAMW])
    n.update(mixup_alpha=float(P["mixup_alpha"]), cutout_size=P["cutout_size"], mix_rho=float(P["mix_rho"]),
             mix_label=Markdown(_audit.label(P["mix_model"])))
    n.update(_sharpness_numbers(out, P, ref))
    ro, spread = out.rollout, out.rollout["sa_range"][1] - out.rollout["sa_range"][0]
    n.update(sa_label=Markdown(_audit.label(P["sa_model"])), sa_acc=float(100 * ro["sa_test_acc"]),
             sa_lo=ro["sa_range"][0], sa_hi=ro["sa_range"][1],
             sa_spread=Markdown("a narrow range (less than 0.3), so the layer reweights positions only mildly"
                                if spread < 0.3 else "a wide range (at least 0.3): the layer suppresses some "
                                                     "positions strongly"))
    n.update(_search_numbers(out, P))
    claims = _audit.claims(out, P)
    t = tally(claims)
    n.update(n_claims=len(claims), n_not_testable=t[NOT_TESTABLE], n_decided=len(claims) - t[NOT_TESTABLE],
             earlier=Markdown(changes({c.claim: c.verdict for c in claims}, _audit.EARLIER)),
             shorter=Markdown(changes({c.claim: c.verdict for c in claims}, _audit.SHORTER)))
    cal = _audit.calibration(out, P)
    n.update(cal_sam=Markdown(cal[0].ours.text()), cal_vit=Markdown(cal[1].ours.text(signed=False)),
             cal_vit_gap=float(-cal[1].difference), cal_data_factor=float(50_000 / out.n_train))
    return n


def _search_numbers(out: Outcome, P: dict) -> dict:
    """The search's glue per model (suffix ``_conv`` / ``_vit``): spread, the best trial, importances and the
    chosen setting against the default."""
    names = {"lr": "the learning rate", "weight_decay": "the weight decay", "rho": "ρ"}
    n = dict(n_trials=P["search_trials"], search_epochs=P["search_epochs"], search_seed=P["search_seed"],
             search_steps=P["search_epochs"] * max(1, out.n_train // P["batch_size"]),
             search_labels=Markdown(" and the ".join(_audit.label(m) for m in P["search_models"])),
             default_lr=float(P["lr"]), default_wd=float(P["weight_decay"]))
    for m, search in out.searches.items():
        k, s, best, imp = _key(m), search.trials, search.best, search.importances
        chosen = out.chosen[out.chosen["model"] == m].assign(setting="searched")
        default = out.main[(out.main["model"] == m) & (out.main["method"] == ADAMW)]
        both = pd.concat([chosen, default.assign(setting="default")], ignore_index=True)
        n.update({f"search_spread_{k}": float(100 * (s["val_acc"].max() - s["val_acc"].min())),
                  f"search_best_{k}": Markdown(
                      f"learning rate {best['lr']:.2g}, weight decay {best['weight_decay']:.2g}, "
                      + (f"SAM with ρ = {best['rho']:g}" if best["rho"] > 0 else "AdamW without SAM")
                      + f" ({100 * best['val_acc']:.1f} % validation accuracy, trial {int(best['trial']) + 1})"),
                  f"search_importance_{k}": Markdown("; ".join(f"{names.get(a, a)} {v:.2f}" for a, v in imp.items())
                                                     if imp else f"not estimated ({search.importance_note})"),
                  f"chosen_acc_{k}": Markdown(group_effect(chosen).text(signed=False)),
                  f"chosen_vs_default_{k}": Markdown(paired_effect(both, "setting", "searched", "default").text())})
    return n


def figures(out: Outcome, P: dict) -> dict:
    """The chapter's figures by glue name."""
    if out.arch is not None:
        size = _figures.size_sweep_figure(out.arch)
    else:
        size, ax = plt.subplots(figsize=(5, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "chapter 01's results table is not available", ha="center", va="center")
    return {"fig_size": size, "fig_rho": _figures.rho_figure(out.main), "fig_time": _figures.time_figure(out.main),
            "fig_mixing": _figures.mixing_figure(_allmix(out, P)),
            "fig_sharpness": _figures.sharpness_figure(out.sharp[out.sharp["stage"] == "end"]),
            "fig_sharpness_matched": _figures.sharpness_figure(out.sharp[out.sharp["stage"] == MATCHED]),
            "fig_slices": _figures.slice_figure(out.slices),
            "fig_train_sharpness": _figures.train_sharpness_figure(out.hists, _audit.sam_ref(P)),
            "fig_maps": _figures.maps_figure(out.rollout),
            "fig_search": _figures.search_figure(out.searches)}


def tables(out: Outcome, P: dict) -> dict[str, Table]:
    """The chapter's tables by name (all through :func:`ibnb.book.tables.table`)."""
    main, e = out.main, _audit.effects(out, P)
    rows = []
    for (m, method), d in main.groupby(["model", "method"], sort=False):
        rows.append({"model": LABELS.get(m, m), "method": method,
                     "test accuracy (%)": group_effect(d).text(signed=False),
                     "gradient evaluations": int(d["grad_evals"].iloc[0]), "wall time (s)": float(d["wall_s"].mean()),
                     "converged": f"{int(d['converged'].sum())} of {len(d)}"})
    effects = pd.DataFrame([{"model": LABELS.get(m, m), "SAM − AdamW, equal steps": e[f"steps_{_key(m)}"].text(),
                             "SAM − AdamW ×2, equal gradient evaluations": e[f"grads_{_key(m)}"].text(),
                             "AdamW ×2 − AdamW": e[f"longer_{_key(m)}"].text(),
                             **({"SAM − SGD, equal steps (SGD base)": e[f"steps_sgd_{_key(m)}"].text()}
                                if "sgd" in P["bases"] else {}),
                             **{f"ASAM − {_audit.BASE_LABELS[b]}": e[f"asam_{b}_{_key(m)}"].text()
                                for b in P["bases"] if P["asam_rho"] > 0}} for m in P["models"]])
    am = _allmix(out, P).assign(optimiser=lambda d: (d["rho"] > 0).map({True: "SAM", False: "AdamW"}))
    mix = [{"batch operation": "no batch operation" if op == "none" else op, "optimiser": opt,
            "test accuracy (%)": group_effect(d).text(signed=False)}
           for (op, opt), d in am.groupby(["mix", "optimiser"], sort=False)]
    cols = ["train_loss", "pga_sharpness", "hessian_top", "epoch"]
    sharp = out.sharp.groupby(["model", "stage", "method"], sort=False)[cols].mean()
    sharp = sharp.reset_index().assign(model=lambda d: d["model"].map(lambda m: LABELS.get(m, m)))
    search = pd.concat([sr.trials.sort_values("val_acc", ascending=False).head(5) for sr in out.searches.values()])
    search = search.assign(trial=[str(t + 1) for t in search["trial"]], model=search["model"].map(_audit.label))[
        ["model", "trial", "lr", "weight_decay", "rho", "val_acc"]]
    return {"runs": table(pd.DataFrame(rows)), "effects": table(effects), "mixing": table(pd.DataFrame(mix)),
            "sharpness": table(sharp, columns={"model": "model", "stage": "weights", "method": "method",
                                               "epoch": "epoch (mean over seeds)",
                                               "train_loss": "training loss (nats)",
                                               "pga_sharpness": "worst-case sharpness (nats)",
                                               "hessian_top": "top Hessian eigenvalue"},
                               digits={"train_loss": 3, "pga_sharpness": 3, "hessian_top": 3, "epoch": 1}),
            "search": table(search, columns={"model": "model", "trial": "trial", "lr": "learning rate",
                                             "weight_decay": "weight decay",
                                             "rho": "ρ (0 = AdamW)", "val_acc": "validation accuracy (%)"},
                            digits={"lr": 4, "weight_decay": 4, "rho": 2, "val_acc": 1}, percent=("val_acc",))}
