"""Chapter 03's figures: accuracy per model, training curves, attention overlays, the masking test, PACS.

Page-wide, at most three panels per row (:func:`ibnb.core.plots.panel_grid`); error bars are one standard
deviation over seeds and dots the individual seeds.
"""
from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ibnb.chapters.spatial_attention.presets import COLORS, LABELS
from ibnb.core.data import ImageData
from ibnb.core.plots import PAGE_WIDTH, paired_bars, panel_grid


def accuracy_bars(cifar: pd.DataFrame, models) -> plt.Figure:
    """CIFAR-10 test accuracy per model: bar = mean, error bar = one std over seeds, dots = seeds."""
    fig, ax = plt.subplots(figsize=(0.7 * PAGE_WIDTH, 3.0))
    for i, m in enumerate(models):
        d = 100 * cifar[cifar["model"] == m]["test_acc"]
        ax.bar(i, d.mean(), yerr=np.nan_to_num(d.std()), capsize=4, color=COLORS[m], alpha=0.8)
        ax.plot(np.full(len(d), i), d, "k.", ms=6)
    ax.set_xticks(range(len(models)), [LABELS[m] for m in models])
    ax.set_ylabel("CIFAR-10 test accuracy (%)")
    return fig


def curves_figure(histories: dict) -> plt.Figure:
    """Train (solid) and validation (dashed) loss and accuracy per epoch, one colour per model."""
    fig, (ax_loss, ax_acc) = panel_grid(2, height=3.0)
    for model, frame in histories.items():
        for col, style, what in (("train", "-", "training"), ("val", "--", "validation")):
            if f"{col}_loss" in frame:
                ax_loss.plot(frame["epoch"], frame[f"{col}_loss"], style, marker=".", color=COLORS.get(model),
                             label=f"{LABELS.get(model, model)}, {what}")
                ax_acc.plot(frame["epoch"], 100 * frame[f"{col}_acc"], style, marker=".", color=COLORS.get(model))
    ax_loss.set_ylabel("cross-entropy loss (nats)")
    ax_acc.set_ylabel("accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
    handles, labels = ax_loss.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8)
    return fig


def overlay_figure(data: ImageData, maps, pred, index) -> plt.Figure:
    """One row per image in ``index``: the input, then each stage's map (0–1) over the greyed input."""
    index, stages = list(index), maps.shape[1]
    fig, axes = plt.subplots(max(1, len(index)), stages + 1,
                             figsize=(min(PAGE_WIDTH, 1.6 * (stages + 1) + 0.8), 1.6 * max(1, len(index)) + 0.5),
                             squeeze=False)
    im = None
    for r, i in enumerate(index):
        true, guess = data.classes[int(data.y[i])], data.classes[int(pred[i])]
        img = data.x[i].permute(1, 2, 0).numpy()
        axes[r][0].imshow(img if img.shape[2] == 3 else img[..., 0], cmap=None if img.shape[2] == 3 else "gray")
        axes[r][0].set_title(f"true {true}\npredicted {guess}", fontsize=8)
        grey = data.x[i].float().mean(0).numpy()
        for s in range(stages):
            ax = axes[r][s + 1]
            ax.imshow(grey, cmap="gray")
            im = ax.imshow(maps[i, s].numpy(), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            if r == 0:
                ax.set_title(f"stage {s + 1} map", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=axes, fraction=0.03, pad=0.02, label="attention weight (0–1)")
    return fig


def masking_figure(table: pd.DataFrame) -> plt.Figure:
    """Accuracy vs fraction of pixels masked, one panel per model, one line per selection (mean ± std)."""
    models = list(dict.fromkeys(table["model"]))
    fig, axes = panel_grid(len(models), height=3.0, sharey=True)
    clean = table[table["selection"] == "none"]
    styles = {"most-attended": ("o-", "#d62728"), "random": ("s--", "#7f7f7f"), "least-attended": ("^:", "#1f77b4")}
    for ax, model in zip(axes, models):
        base = clean[clean["model"] == model]["acc"]
        for sel, (style, col) in styles.items():
            s = table[(table["model"] == model) & (table["selection"] == sel)].groupby("fraction")["acc"].agg(
                ["mean", "std"]).reset_index()
            xs = np.r_[0.0, s["fraction"].to_numpy()] * 100
            ys = np.r_[base.mean(), s["mean"].to_numpy()] * 100
            es = np.r_[np.nan_to_num(base.std()), np.nan_to_num(s["std"].to_numpy())] * 100
            ax.errorbar(xs, ys, yerr=es, fmt=style, color=col, capsize=3, label=sel)
        ax.set_title(LABELS.get(model, model), fontsize=10)
        ax.set_xlabel("pixels masked (%)")
    axes[0].set_ylabel("test accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, title="pixels hidden")
    return fig


def pacs_figure(pacs: pd.DataFrame) -> plt.Figure:
    """Held-out photo and sketch accuracy per model (mean ± std over seeds)."""
    long = pacs.melt(id_vars=["model", "seed"], value_vars=["test_acc", "sketch_acc"], var_name="test set",
                     value_name="acc")
    long = long.assign(model=long["model"].map(LABELS),
                       **{"test set": long["test set"].map({"test_acc": "held-out photos", "sketch_acc": "sketches"})})
    with warnings.catch_warnings():  # paired_bars calls tight_layout under the book's constrained layout
        warnings.simplefilter("ignore", UserWarning)
        return paired_bars(long, groups="model", bars="test set", value="acc", ylabel="PACS accuracy (%)")


def sketch_confusion_figure(confusion: dict, classes: list[str]) -> plt.Figure:
    """Per model, the sketch confusion matrix summed over seeds, each row as % of that true class's sketches."""
    import seaborn as sns

    fig, axes = panel_grid(len(confusion), height=3.3)
    for i, (ax, (model, counts)) in enumerate(zip(axes, confusion.items())):
        rows = counts.sum(axis=1, keepdims=True)
        share = 100 * counts / np.maximum(rows, 1)
        sns.heatmap(share, ax=ax, vmin=0, vmax=100, cmap="Blues", cbar=i == len(confusion) - 1, square=True,
                    annot=share.round().astype(int), fmt="d", annot_kws={"fontsize": 6},
                    xticklabels=classes, yticklabels=classes if i == 0 else False,
                    cbar_kws={"label": "% of the true class"} if i == len(confusion) - 1 else None)
        ax.set_title(LABELS.get(model, model))
        ax.set_xlabel("predicted class")
        ax.tick_params(axis="x", labelrotation=90)
    axes[0].set_ylabel("true class (sketch)")
    return fig
