"""Figures of the self-supervised chapter: views, probe accuracies against the raw-pixel gate, loss terms,
collapse monitors, eigen-spectra, semi-supervised and transfer bars, t-SNE. :func:`figures` returns them all,
keyed by the glue name the page uses. Error bars are Student-t 95 % intervals over seeds (none for one seed)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ibnb.chapters.self_supervised import claims_audit as A
from ibnb.chapters.self_supervised.report import order, summary
from ibnb.core.plots import PAGE_WIDTH, panel_grid

COLORS = {"vicreg": "C0", "barlow_twins": "C1", "wmse": "C2", "supervised": "C3", "pixels": "C7", "scratch": "C4",
          "study": "C0", "standard": "C9"}
TERMS = {"vicreg": ["invariance", "variance", "covariance"], "barlow_twins": ["on_diagonal", "off_diagonal"],
         "wmse": ["alignment"]}


#: legend names of the view recipes
RECIPE_NAMES = {"study": "study views (crop+flip)", "standard": "standard views (+ colour)"}


def _label(ax, xlabel: str, ylabel: str, title: str = "", *, log: bool = False, legend: bool = True) -> None:
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(fontsize=8)


def bar_chart(frame: pd.DataFrame, *, ylabel: str, names: dict | None = None, width: float = PAGE_WIDTH,
              gate: tuple[str, float, str] | None = None) -> plt.Figure:
    """Grouped bars of ``mean`` with ``half``-width error bars (``frame`` from :func:`report.summary`), one
    group per ``group``, one bar per ``bar``; ``gate`` = (group, level, label) draws a dashed line over that
    group."""
    names = names or A.LABEL
    groups, bars = list(dict.fromkeys(frame["group"])), list(dict.fromkeys(frame["bar"]))
    fig, ax = plt.subplots(figsize=(width, 3.2))
    w = 0.8 / len(bars)
    for j, b in enumerate(bars):
        sub = frame[frame["bar"] == b].set_index("group").reindex(groups)
        half = sub["half"].fillna(0)
        ax.bar(np.arange(len(groups)) + (j - (len(bars) - 1) / 2) * w, sub["mean"], w,
               yerr=half if (half > 0).any() else None, capsize=3, color=COLORS.get(b), label=names.get(b, b))
    if gate is not None:
        i = groups.index(gate[0])
        ax.hlines(gate[1], i - 0.45, i + 0.45, colors="k", linestyles="--", label=gate[2])
    ax.set_xticks(np.arange(len(groups)), groups)
    _label(ax, "", ylabel, legend=False)
    fig.legend(loc="outside lower center", ncol=min(4, len(bars) + (gate is not None)), fontsize=8)
    return fig


def term_curves(histories: dict, methods, *, backbone: str, recipe: str, seed: int = 0) -> plt.Figure:
    """One panel per method: each (unweighted) loss term per epoch, log scale."""
    fig, axes = panel_grid(len(methods))
    for ax, m in zip(axes, methods):
        f = histories[(backbone, m, recipe, seed)]
        for t in TERMS[m]:
            ax.plot(f["epoch"], f[f"train_{t}"], marker="o", label=t.replace("_", " "))
        _label(ax, "pretraining epoch", "term value (log scale)", A.LABEL[m], log=True)
    return fig


def monitor_curves(histories: dict, methods, *, backbone: str, recipe: str, seed: int = 0) -> plt.Figure:
    """Collapse monitors per epoch: normalised per-dimension std and effective rank of the representation, and
    the online linear probe's accuracy (validation images where the run was validated, else training batches)."""
    fig, axes = panel_grid(3, height=2.9)
    for m in methods:
        f = histories[(backbone, m, recipe, seed)]
        kw = dict(marker="o", color=COLORS[m], label=A.LABEL[m])
        axes[0].plot(f["epoch"], f["train_std"], **kw)
        axes[1].plot(f["epoch"], f["train_erank"], **kw)
        axes[2].plot(f["epoch"], 100 * f["val_acc" if "val_acc" in f else "train_acc"], **kw)
    _label(axes[0], "pretraining epoch", "normalised std × √d", "spread (1) vs collapse (0)")
    _label(axes[1], "pretraining epoch", "effective rank", "representation covariance", legend=False)
    _label(axes[2], "pretraining epoch", "online probe accuracy (%)", "label monitor", legend=False)
    return fig


def spectra(spec: dict, *, backbone: str) -> plt.Figure:
    """Normalised eigenvalues of the test-set representation covariance, largest first (log scale)."""
    fig, ax = plt.subplots(figsize=(0.7 * PAGE_WIDTH, 3.2))
    for (b, m), s in spec.items():
        if b == backbone and s is not None:
            ax.plot(np.arange(1, len(s) + 1), np.maximum(s, 1e-12), color=COLORS[m], label=A.LABEL[m])
    ax.set_ylim(bottom=1e-7)
    _label(ax, "eigenvalue index (largest first)", "share of total variance", log=True)
    return fig


def tsne_grid(embeddings: dict, labels: np.ndarray, classes: list) -> plt.Figure:
    """One t-SNE panel per representation, points coloured by CIFAR-10 class."""
    keys = list(embeddings)
    fig, axes = panel_grid(len(keys), height=2.5)
    cmap = plt.get_cmap("tab10")
    for ax, k in zip(axes, keys):
        xy = embeddings[k]
        for c in range(len(classes)):
            sel = labels == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=5, color=cmap(c), label=classes[c])
        ax.set_xticks([])
        ax.set_yticks([])
        _label(ax, "t-SNE 1", "t-SNE 2", A.LABEL.get(k, k), legend=False)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=5, fontsize=8, markerscale=2)
    return fig


def view_grid(demo: dict) -> plt.Figure:
    """Rows: the original images, then two views from each recipe (``demo`` from the sweep)."""
    mean, std = np.asarray(demo["mean"]).reshape(1, -1, 1, 1), np.asarray(demo["std"]).reshape(1, -1, 1, 1)
    rows = [("original", demo["images"].float().numpy() / 255.0)]
    for name, batches in demo["views"].items():
        rows += [(f"{name} {i + 1}", np.clip(v.numpy() * std + mean, 0, 1)) for i, v in enumerate(batches)]
    n = len(demo["images"])
    fig, axes = plt.subplots(len(rows), n, figsize=(PAGE_WIDTH, PAGE_WIDTH / n * len(rows) * 1.05), squeeze=False)
    for r, (label, batch) in enumerate(rows):
        for c in range(n):
            axes[r][c].imshow(batch[c].transpose(1, 2, 0))
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    return fig


def figures(out, p: dict) -> dict[str, plt.Figure]:
    """Every figure of the page, for the first backbone (seed 0 for the per-run curves)."""
    df, b, methods = out.df, p["backbones"][0], list(p["methods"])
    reps = order(p)
    probes = summary(df, p, [(ev_name, m, dict(method=m, evaluation=ev)) for ev, ev_name in
                             (("linear", "linear probe"), ("knn", "kNN")) for m in reps], backbone=b)
    pix = A.accuracy(df, p, "pixels", "knn", backbone=b).mean
    semi = summary(df, p, [(f"{100 * f:g} % labels", m, dict(method=m, evaluation=f"semi_{f:g}"))
                           for f in p["semi_fractions"] for m in methods + ["scratch"]], backbone=b)
    cm = p["compare_method"]
    evals = [("linear", None, "linear probe"), ("knn", None, "kNN")] + [("transfer", d, d.replace("pacs_", "PACS "))
                                                                       for d in p["transfer"]]
    recipe = summary(df, p, [(name, r, dict(method=cm, evaluation=ev, recipe=r, dataset=d))
                             for ev, d, name in evals for r in (p["recipe"], p["compare_recipe"])], backbone=b)
    figs = {"fig_views": view_grid(out.demo),
            "fig_probes": bar_chart(probes, ylabel="CIFAR-10 test top-1 (%)", gate=("kNN", pix + p["gate_points"], f"gate: raw-pixel kNN + {p['gate_points']:g} points")),
            "fig_terms": term_curves(out.histories, methods, backbone=b, recipe=p["recipe"]),
            "fig_monitors": monitor_curves(out.histories, methods, backbone=b, recipe=p["recipe"]),
            "fig_spectra": spectra(out.spectra, backbone=b),
            "fig_semi": bar_chart(semi, ylabel="CIFAR-10 test top-1 (%)", width=0.8 * PAGE_WIDTH),
            "fig_tsne": tsne_grid(out.embeddings, out.tsne_labels, out.classes),
            "fig_recipe": bar_chart(recipe, ylabel="test top-1 (%)",
                                    names={r: RECIPE_NAMES.get(r, f"{r} views")
                                           for r in (p["recipe"], p["compare_recipe"])})}
    if p["transfer"]:
        tr = summary(df, p, [(d.replace("pacs_", "PACS "), m, dict(method=m, evaluation="transfer", dataset=d))
                             for d in p["transfer"] for m in reps], backbone=b)
        figs["fig_transfer"] = bar_chart(tr, ylabel="PACS test top-1, linear probe (%)", width=0.8 * PAGE_WIDTH)
    return figs
