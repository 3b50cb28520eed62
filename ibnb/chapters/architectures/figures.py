"""Chapter 01's figures: accuracy against training-set size, training curves, the pixel-permutation control.

Every figure is page-wide (:data:`ibnb.core.plots.PAGE_WIDTH`) with at most three panels per row; lines and bars
are means over seeds and the dots are the individual seeds (with two seeds a 95 % interval would be wider
than the figure, so the seeds are shown instead).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ibnb.chapters.architectures.presets import NAMES, RECIPE
from ibnb.core.plots import MODEL_COLORS, panel_grid

#: the book's model colours, plus this chapter's CNN-sized MLP and fast CNN
COLORS = {**MODEL_COLORS, "mlp_small": "#17becf", "fast_cnn": "#e377c2"}


def legend_below(fig: plt.Figure, ax, ncol: int, **kw) -> None:
    """One legend for the whole figure, below the panels (the labels of ``ax``'s lines)."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=9, frameon=False, **kw)


def accuracy_vs_size(df: pd.DataFrame, models: list[str]) -> plt.Figure:
    """Test accuracy vs training images (log x), one line per model (mean over seeds, dots: seeds), one panel
    without augmentation and one with it; a model trained with its own recipe (the fast CNN) is drawn in the
    augmented panel, as a star."""
    panels = [a for a in dict.fromkeys(df["augment"]) if a != RECIPE]
    fig, axes = panel_grid(len(panels), height=3.2, sharey=True)
    for ax, aug in zip(axes, panels):
        d = df[df["augment"] == aug]
        if aug != "none":
            d = pd.concat([d, df[df["augment"] == RECIPE]])
        for m in models:
            dm = d[d["model"] == m]
            if dm.empty:
                continue
            recipe = (dm["augment"] == RECIPE).all()
            mean = dm.groupby("n_train")["test_acc"].mean()
            label = NAMES.get(m, m) + (" (recipe)" if recipe else "")
            ax.plot(mean.index, 100 * mean.values, marker="*" if recipe else "o", ms=9 if recipe else 4,
                    color=COLORS.get(m), label=label)
            ax.scatter(dm["n_train"], 100 * dm["test_acc"], s=9, alpha=0.45, color=COLORS.get(m), lw=0)
        ax.set_xscale("log")
        ticks = sorted(df["n_train"].unique())
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("training images (log scale)")
        ax.set_title("no augmentation" if aug == "none" else aug)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=4, fontsize=9, frameon=False)
    return fig


def search_curves(search: pd.DataFrame) -> plt.Figure:
    """Validation accuracy of every searched setting against the learning rate (log x), one line per model and
    weight decay; the chosen setting circled."""
    fig, (ax,) = panel_grid(1, height=3.2)
    for (m, wd), d in search.groupby(["model", "weight_decay"], sort=False):
        d = d.sort_values("lr")
        ls = "-" if wd == search["weight_decay"].min() else "--"
        ax.plot(d["lr"], 100 * d["val_acc"], marker="o", ms=4, ls=ls, color=COLORS.get(m),
                label=f"{NAMES.get(m, m)}" + ("" if search["weight_decay"].nunique() == 1 else f", wd {wd:g}"))
        best = d[d["chosen"].astype(bool)]
        ax.scatter(best["lr"], 100 * best["val_acc"], s=90, facecolors="none", edgecolors="k", lw=1, zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    legend_below(fig, ax, ncol=4)
    return fig


def loss_curves(histories: dict, models: list[str], n_per_class: int, augments: list[str], seed: int = 0) -> plt.Figure:
    """Training (solid) and validation (dashed) loss per epoch at ``n_per_class``, one panel per augmentation."""
    fig, axes = panel_grid(len(augments), height=3.0, sharey=True)
    for ax, aug in zip(axes, augments):
        for m in models:
            f = histories.get((m, n_per_class, aug, seed, False))
            if f is None:
                continue
            ax.plot(f["epoch"], f["train_loss"], color=COLORS.get(m), marker="o", ms=2.5,
                    label=NAMES.get(m, m))
            if "val_loss" in f:
                ax.plot(f["epoch"], f["val_loss"], color=COLORS.get(m), ls="--", marker="o", ms=2.5)
        ax.set_xlabel("epoch")
        ax.set_title("no augmentation" if aug == "none" else aug)
    axes[0].set_ylabel("cross-entropy (nats)")
    legend_below(fig, axes[0], ncol=6)
    return fig


def permutation_bars(ctrl: pd.DataFrame, models: list[str]) -> plt.Figure:
    """Test accuracy on original and on pixel-permuted images per model (bars: mean; dots: seeds)."""
    fig, (ax,) = panel_grid(1, height=3.0)
    fig.set_size_inches(7.5 * 0.8, 3.0)
    width = 0.38
    for i, (pix, hatch) in enumerate((("original", None), ("permuted", "//"))):
        d = ctrl[ctrl["pixels"] == pix]
        x = np.arange(len(models)) + (i - 0.5) * width
        means = [100 * d[d["model"] == m]["test_acc"].mean() for m in models]
        ax.bar(x, means, width, color=[COLORS.get(m) for m in models], alpha=0.55 if i else 0.9,
               hatch=hatch, edgecolor="k", lw=0.5, label=f"{pix} pixels")
        for xi, m in zip(x, models):
            acc = 100 * d[d["model"] == m]["test_acc"]
            ax.scatter(np.full(len(acc), xi), acc, s=10, color="k", zorder=3)
    ax.set_xticks(np.arange(len(models)), [NAMES.get(m, m) for m in models])
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=9)
    return fig
