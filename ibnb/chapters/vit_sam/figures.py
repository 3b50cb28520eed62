"""Chapter 08's figures: size sweep, ρ sweep, equal-time view, batch operations, sharpness, slices, maps, search.

Every figure is page-wide with at most three panels per row (:func:`ibnb.core.plots.panel_grid`); error bars are
one standard deviation over seeds, dots the individual seeds where shown.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ibnb.chapters.vit_sam.presets import LABELS
from ibnb.chapters.vit_sam.sweep import ADAMW, ADAMW2
from ibnb.core.plots import PAGE_WIDTH, color, panel_grid

GREY, RED = "#7f7f7f", "#d62728"


def _lab(m: str) -> str:
    return LABELS.get(m, m)


def _per_model(df: pd.DataFrame, draw, xlabel: str, ylabel: str, *, log_y: bool = False) -> plt.Figure:
    """One panel per model: ``draw(ax, model, rows)``, shared labels, legend under the panels."""
    models = list(dict.fromkeys(df["model"]))
    fig, axes = panel_grid(len(models), height=3.0)
    for ax, m in zip(axes, models):
        draw(ax, m, df[df["model"] == m])
        ax.set_xlabel(xlabel)
        ax.set_title(_lab(m))
        if log_y:
            ax.set_yscale("log")
    axes[0].set_ylabel(ylabel)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(3, len(labels)), fontsize=8)
    return fig


def size_sweep_figure(arch: pd.DataFrame) -> plt.Figure:
    """Test accuracy (mean ± std over seeds) against training-set size, one panel per augmentation."""
    augs = list(dict.fromkeys(arch["augment"]))
    fig, axes = panel_grid(len(augs), height=3.0, sharey=True)
    for ax, aug in zip(axes, augs):
        for m, g in arch[arch["augment"] == aug].groupby("model", sort=False):
            s = g.groupby("n_train")["test_acc"].agg(["mean", "std"]).reset_index()
            ax.errorbar(s["n_train"], 100 * s["mean"], yerr=100 * s["std"].fillna(0), marker="o", capsize=3,
                        color=color(m), label=_lab(m))
        ax.set_xscale("log")
        ax.set_xlabel("training images (log scale)")
        ax.set_title("no augmentation" if aug == "none" else aug)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend()
    return fig


def rho_figure(main: pd.DataFrame) -> plt.Figure:
    """Per model: SAM (AdamW base) test accuracy against ρ (mean ± std), AdamW at equal steps and equal gradients
    as bands."""
    main = main[main["base"] == "adamw"]

    def draw(ax, m, d):
        sam = d[(d["rho"] > 0) & ~d["adaptive"].astype(bool)]
        s = sam.groupby("rho")["test_acc"].agg(["mean", "std"]).reset_index()
        ax.errorbar(s["rho"], 100 * s["mean"], yerr=100 * s["std"].fillna(0), marker="o", capsize=3, color=RED,
                    label="SAM (AdamW base), equal steps")
        for method, style, col in ((ADAMW, "--", "k"), (ADAMW2, ":", GREY)):
            a = d[d["method"] == method]["test_acc"]
            if len(a):
                mu, sd = 100 * a.mean(), 100 * np.nan_to_num(a.std())
                ax.axhline(mu, ls=style, color=col,
                           label="AdamW, equal steps" if method == ADAMW else "AdamW, equal gradients")
                ax.axhspan(mu - sd, mu + sd, color=col, alpha=0.08)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(s["rho"], [f"{r:g}" for r in s["rho"]])
    return _per_model(main, draw, "SAM radius ρ (log scale)", "test accuracy (%)")


def time_figure(main: pd.DataFrame) -> plt.Figure:
    """Every run's test accuracy against its training wall time, one panel per model."""
    markers = {}

    def draw(ax, m, d):
        for method, g in d.groupby("method", sort=False):
            mk = markers.setdefault(method, "os^vDP<>*"[len(markers) % 9])
            ax.scatter(g["wall_s"], 100 * g["test_acc"], marker=mk, label=method, s=28)
    return _per_model(main, draw, "training wall time (s)", "test accuracy (%)")


def mixing_figure(allmix: pd.DataFrame) -> plt.Figure:
    """Test accuracy (mean ± std) per batch operation (none / mixup / cutout), AdamW and SAM side by side."""
    fig, ax = plt.subplots(figsize=(0.7 * PAGE_WIDTH, 3.0))
    ops = list(dict.fromkeys(allmix["mix"]))
    for j, (name, sam) in enumerate((("AdamW", False), ("SAM", True))):
        s = allmix[(allmix["rho"] > 0) == sam].groupby("mix")["test_acc"].agg(["mean", "std"]).reindex(ops)
        ax.bar(np.arange(len(ops)) + (j - 0.5) * 0.38, 100 * s["mean"], 0.38, yerr=100 * s["std"].fillna(0),
               capsize=3, label=name, color=(GREY, RED)[j])
    ax.set_xticks(range(len(ops)), ["no batch operation" if o == "none" else o for o in ops])
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    return fig


def method_color(method: str) -> str:
    """SAM-family methods red, the others grey: by name, so a figure's colours never depend on row order."""
    return RED if "sam" in method.lower() else GREY


def sharpness_figure(sharp: pd.DataFrame) -> plt.Figure:
    """Training loss, PGA sharpness and top Hessian eigenvalue (mean ± std over seeds) per model and method."""
    fig, axes = panel_grid(3, height=3.0)
    models = list(dict.fromkeys(sharp["model"]))
    methods = sorted(dict.fromkeys(sharp["method"]), key=lambda m: "sam" in m.lower())  # the base method first
    for ax, col, ylabel in ((axes[0], "train_loss", "training loss L(w) (nats)"),
                            (axes[1], "pga_sharpness", "max L(w+ε) − L(w) (nats)"),
                            (axes[2], "hessian_top", "top Hessian eigenvalue")):
        for j, method in enumerate(methods):
            s = sharp[sharp["method"] == method].groupby("model")[col].agg(["mean", "std"]).reindex(models)
            ax.bar(np.arange(len(models)) + (j - 0.5) * 0.38, s["mean"], 0.38, yerr=s["std"].fillna(0), capsize=3,
                   label=method, color=method_color(method))
        ax.set_xticks(range(len(models)), [_lab(m) for m in models])
        ax.set_ylabel(ylabel)
    axes[0].legend()
    return fig


def slice_figure(slices: pd.DataFrame) -> plt.Figure:
    """Training loss along a filter-normalised random direction, mean over seeds, one panel per model."""
    def draw(ax, m, d):
        for method, g in d.groupby("method", sort=False):
            s = g.groupby("alpha")["loss"].mean()
            ax.plot(s.index, s.values, marker=".", label=method, color=method_color(method))
    return _per_model(slices, draw, "step α along the direction", "training loss (nats, log scale)", log_y=True)


def train_sharpness_figure(histories: dict, method: str) -> plt.Figure:
    """SAM's logged one-step sharpness L(w+ε̂) − L(w) per epoch (mean over batches), per model and seed."""
    fig, ax = plt.subplots(figsize=(0.7 * PAGE_WIDTH, 3.0))
    for (m, meth, seed), f in histories.items():
        if meth == method and "train_sharpness" in f:
            ax.plot(f["epoch"], f["train_sharpness"], marker=".", color=color(m), alpha=max(0.3, 0.9 - 0.3 * seed),
                    label=f"{_lab(m)}, seed {seed}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("L(w+ε̂) − L(w) (nats)")
    ax.legend(fontsize=8)
    return fig


def maps_figure(ro: dict) -> plt.Figure:
    """One row per image: the image, then each model's map over the greyed image."""
    images, maps = ro["images"], ro["maps"]
    n, names = len(images), list(maps)
    cols = len(names) + 1
    fig, axes = plt.subplots(n, cols, figsize=(min(PAGE_WIDTH, 1.7 * cols + 0.6), 1.7 * n + 0.4), squeeze=False)
    im = None
    for r in range(n):
        axes[r][0].imshow(images.x[r].permute(1, 2, 0).numpy())
        axes[r][0].set_title(("image\n" if r == 0 else "") + f"true: {images.classes[int(images.y[r])]}", fontsize=8)
        grey = images.x[r].float().mean(0).numpy()
        for c, name in enumerate(names):
            ax = axes[r][c + 1]
            ax.imshow(grey, cmap="gray")
            im = ax.imshow(maps[name][r, 0].numpy(), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            pred = images.classes[int(ro["pred"][name][r])]
            ax.set_title((name + "\n" if r == 0 else "") + f"pred: {pred}", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.colorbar(im, ax=axes, fraction=0.03, pad=0.02, label="map value (0–1)")
    return fig


def search_figure(searches: dict) -> plt.Figure:
    """One row per model: validation accuracy of every trial in the order TPE proposed it, with the best so far,
    and the fANOVA importance of each hyperparameter (or why there is none)."""
    fig, rows = plt.subplots(len(searches), 2, figsize=(PAGE_WIDTH, 3.0 * len(searches)), squeeze=False,
                             layout="constrained")
    names = {"lr": "learning rate", "weight_decay": "weight decay", "rho": "ρ"}
    for (ax, imp), (m, search) in zip(rows, searches.items()):
        trials = search.trials
        acc = 100 * trials["val_acc"]
        sc = ax.scatter(trials["trial"] + 1, acc, c=trials["rho"], cmap="viridis", edgecolors="k", s=30, zorder=3)
        ax.step(trials["trial"] + 1, acc.cummax(), where="post", color="k", lw=1, label="best so far")
        ax.set(xlabel="trial (order proposed)", ylabel="validation accuracy (%)", title=f"{_lab(m)}: search history")
        ax.legend(fontsize=8, loc="lower right")
        fig.colorbar(sc, ax=ax, label="ρ (0 = AdamW alone)")
        if search.importances:
            keys = list(search.importances)[::-1]
            imp.barh([names.get(k, k) for k in keys], [search.importances[k] for k in keys], color="C0")
            imp.set(xlabel="fANOVA importance (share of variance)", title=f"{_lab(m)}: parameter importance",
                    xlim=(0, 1))
        else:
            imp.axis("off")
            imp.text(0.5, 0.5, f"no importance estimate:\n{search.importance_note}", ha="center", va="center",
                     fontsize=8, wrap=True)
    return fig
