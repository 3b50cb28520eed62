"""Chapter 03 — spatial attention as an inductive bias: reproduce, ablate and audit a student team's study (the
chapter contract of :mod:`ibnb.chapters`).

Files: ``presets.py`` (knobs), ``sweep.py`` (the grid, seeds, PACS, masking and Food-101 runs),
``attention_maps.py`` (the masking test), ``claims_audit.py`` (claims and calibration), ``figures.py``. The models are
in :mod:`ibnb.core.models.team`, their maps are read by :mod:`ibnb.core.attention_maps`, the loop is
:func:`ibnb.core.train.fit`.
"""
from __future__ import annotations

import pandas as pd

from ibnb.book.claims import NOT_TESTABLE, effect_of, group_effect, tally
from ibnb.book.page import Audit, Markdown
from ibnb.book.profiles import presets as profile_presets
from ibnb.book.tables import Table, table
from ibnb.chapters.spatial_attention import claims_audit as _audit
from ibnb.chapters.spatial_attention import figures as _figures
from ibnb.chapters.spatial_attention.presets import (DEEP, FOOD_PLAIN, FOOD_SA, LABELS, MODELS, NOTEBOOK, PLAIN,
                                                     REPORT_PARAMS, REPORT_SETTING, SA)
from ibnb.chapters.spatial_attention.sweep import Outcome, grid_configs, run_all
from ibnb.core.models import count_parameters, create_model
from ibnb.core.reference import changes

__all__ = ["NOTEBOOK", "Outcome", "run", "audit", "numbers", "figures", "tables"]
KEY = {PLAIN: "plain", DEEP: "deep", SA: "sa"}


def run(P: dict, progress: bool = False) -> Outcome:
    """Train or load every run and write ``book/results/03_spatial_attention/<profile>.csv``."""
    return run_all(P, progress=progress)


def audit(out: Outcome, P: dict) -> Audit:
    """Claims (through :func:`ibnb.book.claims.judge`) and calibration rows."""
    return _audit.audit(out, P)


def _parameter_numbers() -> dict:
    ptab = _audit.parameter_table()
    counts = ptab.drop_duplicates("model").set_index("model")["ours"]
    return {"p_sa": int(counts[SA]), "p_plain": int(counts[PLAIN]), "p_plain_gap": int(counts[PLAIN] - 449_188),
            "p_deep": int(counts[DEEP]), "p_food_m": float(counts[FOOD_PLAIN] / 1e6),
            "p_safood_m": float(counts[FOOD_SA] / 1e6), "p_safood4_m": float(ptab["ours"].iloc[-1] / 1e6),
            "sa_count_matches": Markdown("matches the report's count exactly" if counts[SA] == REPORT_PARAMS[SA]
                                         else "does **not** match the report's 1,173,197")}


def _grid_numbers(out: Outcome, P: dict) -> dict:
    g, best = out.grid, out.best
    acc = {m: float(g[(g.model == m) & (g.lr == c["lr"]) & (g.batch_size == c["batch_size"])
                      & (g.weight_decay == c["weight_decay"])]["val_acc"].iloc[0]) for m, c in best.items()}
    n = {"best_md": Markdown("; ".join(
        f"{LABELS[m]}: learning rate {c['lr']:g}, batch {c['batch_size']}, weight decay {c['weight_decay']:g} "
        f"({100 * acc[m]:.1f} %)" for m, c in best.items()))}
    if REPORT_SETTING["lr"] in P["grid_lr"]:
        at = g[g.lr == REPORT_SETTING["lr"]].groupby("model")["val_acc"].max()
        top = g.groupby("model")["val_acc"].max()
        n["report_lr_md"] = Markdown(
            f"The report's learning rate {REPORT_SETTING['lr']:g} gives the attention model {100 * at[SA]:.1f} % "
            f"against {100 * top[SA]:.1f} % for its best setting, and the plain model {100 * at[PLAIN]:.1f} % against "
            f"{100 * top[PLAIN]:.1f} %: a learning rate that suits one model can handicap another, which is why "
            "each model gets its own best setting here.")
    else:
        n["report_lr_md"] = Markdown("The report's learning rate is not part of this profile's grid.")
    return n


def _faith_numbers(out: Outcome, P: dict, e: dict) -> dict:
    f = out.faith
    frac = f["fraction"].max()
    n = {"n_faith": out.n_faith, "faith_frac": float(100 * frac),
         "fractions": Markdown(", ".join(f"{100 * x:g} %" for x in P["faith_fractions"]))}
    for m, k in KEY.items():
        d = f[f["model"] == m]
        n[f"f_{k}_clean"] = float(100 * d[d["selection"] == "none"]["acc"].mean())
        for sel in ("most-attended", "random", "least-attended"):
            n[f"f_{k}_{sel.split('-')[0]}"] = float(100 * d[(d["selection"] == sel) & (d["fraction"] == frac)]["acc"].mean())
        n[f"f_{k}_extra"] = Markdown(e[f"faith_{m}_random"].text())
        n[f"f_{k}_extra_least"] = Markdown(e[f"faith_{m}_least"].text())
    return n


def _pacs_numbers(out: Outcome, P: dict, e: dict) -> dict:
    pk = out.pacs
    n = {"pacs_n_train": out.pacs_sizes["train"], "pacs_size": P["pacs_size"], "pacs_epochs": P["pacs_epochs"],
         "pacs_n_test": out.pacs_sizes["test"], "pacs_n_sketch": out.pacs_sizes["sketch"],
         "chance_photo": float(100 * out.majority["photo"]), "chance_sketch": float(100 * out.majority["sketch"])}
    for m, k in KEY.items():
        n[f"top_{k}"] = float(100 * pk[pk["model"] == m]["sketch_top_share"].mean())
    for name in ("pacs_sketch", "pacs_photo", "pacs_drop"):
        n[f"e_{name}"] = Markdown(e[name].text())
    passed, why = _audit.photo_gate(pk, out.majority["photo"])
    n["gate_md"] = Markdown("every model's held-out-photo accuracy interval lies above the majority-class rate, so "
                            "the sketch comparison is about competent photo models" if passed else
                            f"the gate fails — {why} — so the sketch claim is not testable at this budget, whatever "
                            "the sketch numbers say")
    return n


def numbers(out: Outcome, P: dict) -> dict:
    """Every number the page quotes, by glue name."""
    e = _audit.effects(out)
    n = {**_parameter_numbers(), **_grid_numbers(out, P), **_faith_numbers(out, P, e), **_pacs_numbers(out, P, e)}
    cifar_params = {m: count_parameters(create_model(m, num_classes=10, image_size=32, width=P["width"])) for m in MODELS}
    n.update(n_val=out.n_val, n_train=out.n_train, n_test=out.n_test, epochs=P["epochs"], n_seeds=P["seeds"],
             widths=Markdown("/".join(str(P["width"] * k) for k in (1, 2, 4))), ls=float(P["label_smoothing"]),
             gpu_epochs=profile_presets(NOTEBOOK)["gpu"]["epochs"], n_grid=len(grid_configs(P)),
             cifar_params=Markdown(", ".join(f"{LABELS[m]} {c:,}" for m, c in cifar_params.items())))
    for m, k in KEY.items():
        n[f"acc_{k}"] = Markdown(group_effect(out.cifar, where={"model": m}).text(signed=False))
    for name in ("sa_plain", "sa_deep", "deep_plain"):
        n[f"e_{name}"] = Markdown(e[name].text())
    gaps = []
    for m in MODELS:
        last = [(h["train_acc"].iloc[-1] - h["val_acc"].iloc[-1]) for (mm, _), h in out.histories.items() if mm == m]
        gaps.append(f"{LABELS[m]} {effect_of(last).text(signed=False)}")
    n["gap_md"] = Markdown("; ".join(gaps))
    head, maps, _, _, _ = out.examples
    mean, spread = maps.flatten(2).mean(dim=2), maps.flatten(2).std(dim=2)
    n["n_map_images"] = len(head)
    n["map_md"] = Markdown("; ".join(f"stage {k + 1}: mean weight {float(mean[:, k].mean()):.2f}, spread within an "
                                     f"image {float(spread[:, k].mean()):.3f}" for k in range(maps.shape[1])))
    n["food_md"] = Markdown(_food_text(out, P))
    claims = _audit.claims(out, P)
    t = tally(claims)
    runs = pd.concat([out.cifar, out.pacs] + ([out.food] if out.food is not None else []))
    later = pd.concat([out.grid[["cached"]], out.cifar[out.cifar.seed > 0][["cached"]], out.pacs[["cached"]]]
                      + ([out.food[["cached"]]] if out.food is not None else []))
    n.update(n_claims=len(claims), n_not_testable=t[NOT_TESTABLE], n_decided=len(claims) - t[NOT_TESTABLE],
             earlier=Markdown(changes({c.claim: c.verdict for c in claims}, _audit.EARLIER)),
             n_models=len(later), n_trained_now=int((~later["cached"].astype(bool)).sum()),
             n_from_cache=int(later["cached"].astype(bool).sum()), n_runs=len(runs),
             n_converged=int(runs["converged"].sum()),
             n_probe_passed=int((runs["converged"].astype(bool)
                                 & runs["convergence"].astype(str).str.startswith("doubling the budget")).sum()))
    arch = _audit.chapter01_cnn(out.n_train, P["profile"])
    n["cal_arch_md"] = Markdown(
        f"chapter 01's CNN at {arch[1]:,} training images reaches {arch[0].text(signed=False)} (its own fixed "
        "setting, no augmentation), read from its results table" if arch is not None else
        f"chapter 01's results table at this profile has no CNN row within a factor of 2 of {out.n_train:,} "
        "training images, so that comparison is not available")
    return n


def _food_text(out: Outcome, P: dict) -> str:
    if out.food is None:
        return (f"This execution uses the `{P['profile']}` profile, which does not run Food-101: the dataset (about "
                "5 GB) is not part of the offline data. With `IBNB_DOWNLOAD=1`, the `gpu` profile downloads it "
                "through `torchvision.datasets.Food101`, decodes every image once at 128×128 pixels "
                "(`ibnb.core.food101.load_food101`) and trains both Food-101 models with the report's setting; the "
                "claims table then shows the measured values instead of *not testable at this budget*.")
    parts = [f"{LABELS[m]}: best validation accuracy "
             f"{group_effect(out.food, value='best_val_acc', where={'model': m}).text(signed=False)}, test "
             f"{group_effect(out.food, where={'model': m}).text(signed=False)}" for m in (FOOD_PLAIN, FOOD_SA)]
    return (f"At {P['food_size']}×{P['food_size']} pixels, {P['food_epochs']} epochs and the report's setting: "
            + "; ".join(parts) + ".")


def figures(out: Outcome, P: dict) -> dict:
    """The chapter's figures by glue name."""
    head, maps, pred, right, wrong = out.examples
    figs = {"fig_accuracy": _figures.accuracy_bars(out.cifar, MODELS),
            "fig_curves": _figures.curves_figure({m: out.histories[m, 0] for m in MODELS}),
            "fig_maps_right": _figures.overlay_figure(head, maps, pred, right),
            "fig_maps_wrong": _figures.overlay_figure(head, maps, pred, wrong),
            "fig_masking": _figures.masking_figure(out.faith), "fig_pacs": _figures.pacs_figure(out.pacs),
            "fig_sketch_confusion": _figures.sketch_confusion_figure(out.sketch_confusion, out.pacs_classes)}
    return figs


def tables(out: Outcome, P: dict) -> dict[str, Table]:
    """The chapter's tables by name (all through :func:`ibnb.book.tables.table`)."""
    ptab = _audit.parameter_table().assign(model=lambda d: d["model"].map(LABELS))
    g = out.grid.assign(chosen=[out.best[r.model] == dict(lr=r.lr, batch_size=r.batch_size, weight_decay=r.weight_decay)
                                for r in out.grid.itertuples()], model=out.grid["model"].map(LABELS))
    acc = pd.DataFrame([{"model": LABELS[m], "test accuracy (%)": group_effect(out.cifar, where={"model": m}).text(signed=False),
                         "converged": f"{int(d['converged'].sum())} of {len(d)}"}
                        for m, d in ((m, out.cifar[out.cifar["model"] == m]) for m in MODELS)])
    f = out.faith[out.faith["fraction"].isin([0.0, out.faith["fraction"].max()])]
    faith = (100 * f.pivot_table(index="model", columns="selection", values="acc")).reindex(MODELS)
    faith = faith.rename(columns={"none": "unmasked"})[["unmasked", "most-attended", "random", "least-attended"]]
    pacs = pd.DataFrame([{"model": LABELS[m],
                          "held-out photos (%)": group_effect(out.pacs, where={"model": m}).text(signed=False),
                          "sketches (%)": group_effect(out.pacs, value="sketch_acc", where={"model": m}).text(signed=False),
                          "drop (points)": group_effect(out.pacs, value="drop", unit="points", where={"model": m}).text(),
                          "sketches in one class (%)": 100 * out.pacs[out.pacs["model"] == m]["sketch_top_share"].mean()}
                         for m in MODELS])
    return {"parameters": table(ptab, columns={"model": "model", "setting": "setting", "ours": "parameters (ours)",
                                               "report": "parameters (report)"}),
            "grid": table(g, columns={"model": "model", "lr": "learning rate", "batch_size": "batch size",
                                      "weight_decay": "weight decay", "val_acc": "validation accuracy (%)",
                                      "chosen": "chosen"}, digits={"lr": 4, "weight_decay": 4, "val_acc": 1},
                          percent=("val_acc",)),
            "accuracy": table(acc),
            "faith": table(faith.rename(index=LABELS), index=True),
            "pacs": table(pacs)}
