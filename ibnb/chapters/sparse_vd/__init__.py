"""Chapter 05 — Sparse Variational Dropout (Molchanov et al. 2017), the chapter contract of :mod:`ibnb.chapters`.

Dense and Sparse VD versions of LeNet-300-100 and LeNet-5-Caffe are trained on MNIST; a control trains Sparse VD
LeNet-300-100 on shuffled labels, next to dense LeNet-300-100 on the same labels (which memorises them). Files: ``presets.py`` (knobs), ``method.py`` (the ELBO step), ``sweep.py`` (the
runs), ``claims_audit.py`` (claims and calibration), ``figures.py``; the layers are in :mod:`ibnb.core.models.sparse_vd`
and the networks in :mod:`ibnb.core.models.lenet`.
"""
from __future__ import annotations

import math

import pandas as pd

from ibnb.book.claims import NOT_TESTABLE, tally
from ibnb.book.page import Audit, Markdown
from ibnb.book.profiles import presets as profile_presets
from ibnb.book.tables import Table, table
from ibnb.chapters.sparse_vd import claims_audit as _audit
from ibnb.chapters.sparse_vd import figures as _figures
from ibnb.chapters.sparse_vd.presets import NOTEBOOK, PRETTY
from ibnb.chapters.sparse_vd.sweep import DENSE, SPARSE, Outcome, plan, run_sweep
from ibnb.core.models import sparse_vd as svd
from ibnb.core.reference import changes

__all__ = ["NOTEBOOK", "Outcome", "run", "audit", "numbers", "figures", "tables"]


def run(P: dict, progress: bool = False) -> Outcome:
    """Train or load every run and write ``book/results/05_sparse_vd/<profile>.csv``."""
    return run_sweep(P, progress=progress)


def audit(out: Outcome, P: dict) -> Audit:
    """Claims (through :func:`ibnb.book.claims.judge`) and calibration rows against the paper's Table 1."""
    return _audit.audit(out.df, P)


def _setup_numbers(out: Outcome, P: dict) -> dict:
    df = out.df
    return {"kl_zero": 100 * float(P["kl_zero_frac"]), "kl_full": 100 * float(P["kl_full_frac"]),
            "batch": P["batch_size"],
            "lr": float(P["lr"]), "schedule": Markdown(P["schedule"]), "n_train": int(df["n_train"].iloc[0]),
            "n_val": 10 * P["val_per_class"], "n_test": int(df["n_test"].iloc[0]), "n_runs": len(plan(P)),
            "n_cached": int(df["cached"].sum()), "n_converged": int(df["converged"].sum()),
            "paper_epochs": profile_presets(NOTEBOOK)["gpu"]["epochs"]["lenet300_100"],
            "profile_name": Markdown(f"`{P['profile']}`"), "err_tol": _audit.ERROR_TOLERANCE,
            "comp_tol": int(100 * _audit.COMPRESSION_TOLERANCE), "acc_margin": _audit.ACCURACY_MARGIN}


def _network_numbers(out: Outcome, P: dict, net: str, e: dict) -> dict:
    n = {f"ep_{net}": P["epochs"][net], f"seeds_{net}": P["seeds"][net]}
    for key in (f"err_dense_{net}", f"err_svd_{net}", f"comp_{net}", f"gap_{net}"):
        n[key] = Markdown(e[key].text(digits=2, signed=key.startswith("gap")))
    for method, tag in (("original", "dense"), ("Sparse VD", "svd")):
        n[f"paper_err_{tag}_{net}"] = float(_audit.paper(net, method)["error %"])
    n[f"paper_comp_{net}"] = float(_audit.paper(net, "Sparse VD")["compression"])
    n[f"paper_gap_{net}"] = n[f"paper_err_svd_{net}"] - n[f"paper_err_dense_{net}"]
    sv = _audit.table_runs(out.df, net, SPARSE)
    n[f"kept_{net}"] = float(100 * (sv["kept"] / sv["weights"]).mean())
    n[f"reach_{net}"] = float(100 * e[f"comp_{net}"].mean / n[f"paper_comp_{net}"])
    if net in out.models:
        shares = _figures.log_alpha_shares(out.models[net])
        n[f"upper_{net}"], n[f"mid_{net}"] = shares["upper"], shares["mid"]
    return n


def _random_label_numbers(out: Outcome, P: dict) -> dict:
    """The control's numbers: seed 0 of Sparse VD on true and shuffled labels, and the fit of every seed."""
    n = {"rl_epochs": P["random_label_epochs"], "rl_seeds": P["random_label_seeds"]}
    rl = out.df[out.df["experiment"] == "random_labels"]
    if not (rl["labels"] == "shuffled").any():
        return n
    s0 = rl[(rl["method"] == SPARSE) & (rl["seed"] == 0)].set_index("labels")
    for lab, tag in (("shuffled", "rl"), ("true", "rl_true")):
        n[f"{tag}_pruned"] = float(100 * (1 - s0.loc[lab, "kept"] / s0.loc[lab, "weights"]))
    n.update(rl_kept=int(s0.loc["shuffled", "kept"]), rl_comp=float(s0.loc["shuffled", "compression"]),
             rl_test_acc=float(100 * s0.loc["shuffled", "test_acc"]), rl_n=int(s0.loc["shuffled", "n_train"]))
    for method, tag in ((SPARSE, "svd"), (DENSE, "dense")):
        fit = 100 * _audit.random_label_runs(out.df, method)["final_train_acc"]
        n[f"rl_{tag}_fit"] = Markdown(f"{fit.min():.1f}–{fit.max():.1f} %" if len(fit) > 1 else f"{fit.iloc[0]:.1f} %")
    return n


def _calibration_sentence(cal: list) -> str:
    """Which calibration rows are within their tolerance, generated from the rows."""
    inside = [c.quantity.split(" (")[0] for c in cal if c.within]
    outside = [f"{c.quantity.split(' (')[0]} ({c.difference:+.2f}{' points' if c.ours.unit == '%' else c.ours.unit})"
               for c in cal if not c.within]
    parts = []
    if inside:
        parts.append(f"within tolerance: {'; '.join(inside)}")
    if outside:
        parts.append(f"outside it: {'; '.join(outside)}")
    return f"{len(inside)} of {len(cal)} rows are within tolerance — " + "; ".join(parts) + "."


def numbers(out: Outcome, P: dict) -> dict:
    """Every number the page quotes, by glue name."""
    df, e = out.df, _audit.effects(out.df, P["networks"])
    n = _setup_numbers(out, P)
    for net in P["networks"]:
        n.update(_network_numbers(out, P, net, e))
    sv = df[df["method"] == SPARSE]
    n["mask_diff"] = float((sv["error_pct"] - sv["masked_dense_error_pct"]).abs().max())
    n["unmask_diff"] = float((sv["unmasked_error_pct"] - sv["error_pct"]).abs().max())
    if "lenet5_caffe" in out.models:
        mask = svd.svdo_layers(out.models["lenet5_caffe"])[0][1].mask().cpu()
        n.update(conv1_kept=int(mask.sum()), conv1_total=int(mask.numel()),
                 conv1_dead=int((mask.flatten(1).sum(1) == 0).sum()))
    n.update(_random_label_numbers(out, P))
    n["calibration_sentence"] = Markdown(_calibration_sentence(_audit.calibration(df, P)))
    claims = _audit.claims(df, P)
    t = tally(claims)
    n.update(n_claims=len(claims), n_not_testable=t[NOT_TESTABLE], n_decided=len(claims) - t[NOT_TESTABLE],
             earlier=Markdown(changes({c.claim: c.verdict for c in claims}, _audit.EARLIER)))
    return n


def figures(out: Outcome, P: dict) -> dict:
    """The chapter's figures by glue name."""
    figs = {}
    for net in P["networks"]:
        figs[f"fig_curves_{net}"] = _figures.training_curves(out.histories, out.models[net], net)
        figs[f"fig_log_alpha_{net}"] = _figures.log_alpha_histograms(out.models[net], net)
    if "lenet5_caffe" in out.models:
        figs["fig_kernels"] = _figures.first_layer_kernels(out.models["lenet5_caffe"])
    if P["random_label_epochs"]:
        figs["fig_random_labels"] = _figures.random_labels(out.histories, out.models["lenet300_100"])
    return figs


def _paper_table(out: Outcome, P: dict) -> Table:
    """The paper's Table 1 (quoted) next to our measurement of the two methods we run."""
    e, rows = _audit.effects(out.df, P["networks"]), []
    for _, r in _audit.PAPER[_audit.PAPER["network"].isin([PRETTY[n] for n in P["networks"]])].iterrows():
        net = next(k for k, v in PRETTY.items() if v == r["network"])
        tag = {"original": "dense", "Sparse VD": "svd"}.get(r["method"])
        ours = dict.fromkeys(("ours: test error", "ours: per-layer sparsity (%)", "ours: compression"), "")
        if tag:
            runs = _audit.table_runs(out.df, net, "dense" if tag == "dense" else SPARSE)
            sparsity = pd.DataFrame([s.split("-") for s in runs["layer_sparsity"]]).astype(float).mean()
            ours = {"ours: test error": e[f"err_{tag}_{net}"].text(digits=2, signed=False),
                    "ours: per-layer sparsity (%)": "" if tag == "dense" else "-".join(f"{s:.1f}" for s in sparsity),
                    "ours: compression": "1" if tag == "dense" else e[f"comp_{net}"].text(signed=False)}
        rows.append({"network": r["network"], "method": r["method"], "paper: test error (%)": r["error %"],
                     "paper: per-layer sparsity (%)": r["per-layer sparsity %"],
                     "paper: compression": int(r["compression"]), **ours})
    return table(pd.DataFrame(rows), digits={"paper: test error (%)": 2})


def tables(out: Outcome, P: dict) -> dict:
    """The chapter's tables by name (all through :func:`ibnb.book.tables.table`)."""
    sv = out.df[out.df["method"] == SPARSE].copy()
    sv["experiment"] = sv["experiment"].map({"table": "main table", "random_labels": "random-label control"})
    sv["network"] = sv["network"].map(PRETTY)
    # a network with every weight removed has infinite compression: say so instead of printing "inf"
    sv["compression"] = ["∞ (every weight removed)" if math.isinf(c) else f"{c:.1f}" for c in sv["compression"]]
    mask = table(sv, columns={"experiment": "experiment", "network": "network", "seed": "seed", "labels": "labels",
                              "error_pct": "test error, masked layers (%)",
                              "masked_dense_error_pct": "test error, rebuilt plain layers (%)",
                              "unmasked_error_pct": "test error, nothing removed (%)", "compression": "compression (×)"},
                 digits={"error_pct": 2, "masked_dense_error_pct": 2, "unmasked_error_pct": 2})
    return {"paper": _paper_table(out, P), "mask": mask}
