"""Figures of the self-supervised chapter: loss terms, collapse monitors, eigen-spectra, t-SNE, accuracy bars."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

NAMES = {"vicreg": "VICReg", "barlow_twins": "Barlow Twins", "wmse": "W-MSE", "supervised": "supervised",
         "pixels": "raw pixels", "scratch": "from scratch"}
COLORS = {"vicreg": "C0", "barlow_twins": "C1", "wmse": "C2", "supervised": "C3", "pixels": "C7", "scratch": "C4"}
TERMS = {"vicreg": ["invariance", "variance", "covariance"], "barlow_twins": ["on_diagonal", "off_diagonal"],
         "wmse": ["alignment"]}


def term_curves(histories: dict, methods, *, backbone: str, recipe: str, seed: int = 0) -> plt.Figure:
    """One panel per method: each (unweighted) loss term per epoch, log scale."""
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.2), squeeze=False)
    for ax, m in zip(axes[0], methods):
        f = histories[(backbone, m, recipe, seed)]
        for t in TERMS[m]:
            ax.plot(f["epoch"], f[f"train_{t}"], marker="o", label=t.replace("_", " "))
        ax.set_yscale("log")
        ax.set_xlabel("pretraining epoch")
        ax.set_ylabel("term value (unweighted, log scale)")
        ax.set_title(f"{NAMES[m]} ({backbone}, seed {seed})")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def monitor_curves(histories: dict, methods, *, backbone: str, recipe: str, seed: int = 0) -> plt.Figure:
    """Collapse monitors per epoch: normalised per-dimension std and effective rank of the representation,
    and the online linear probe's training accuracy."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.3))
    for m in methods:
        f = histories[(backbone, m, recipe, seed)]
        kw = dict(marker="o", color=COLORS[m], label=NAMES[m])
        axes[0].plot(f["epoch"], f["train_std"], **kw)
        axes[1].plot(f["epoch"], f["train_erank"], **kw)
        axes[2].plot(f["epoch"], 100 * f["train_acc"], **kw)
    axes[0].set_ylabel("per-dim std of normalised rep. × √d\n(1 = spread, 0 = collapsed)")
    axes[1].set_ylabel("effective rank of rep. covariance")
    axes[2].set_ylabel("online linear probe, train acc. (%)")
    for ax in axes:
        ax.set_xlabel("pretraining epoch")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def spectra(spec: dict, *, backbone: str) -> plt.Figure:
    """Normalised eigenvalues of the test-set representation covariance, largest first (log scale)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (b, m), s in spec.items():
        if b != backbone or s is None:
            continue
        ax.plot(np.arange(1, len(s) + 1), np.maximum(s, 1e-12), color=COLORS[m], label=NAMES[m])
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e-7)
    ax.set_xlabel("eigenvalue index (largest first)")
    ax.set_ylabel("share of total variance")
    ax.set_title(f"eigen-spectrum of the {backbone} representation (test images)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def tsne_grid(embeddings: dict, labels: np.ndarray, classes: list) -> plt.Figure:
    """One t-SNE panel per representation, points coloured by CIFAR-10 class."""
    keys = list(embeddings)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, k in zip(axes[0], keys):
        xy = embeddings[k]
        for c in range(len(classes)):
            sel = labels == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=cmap(c), label=classes[c])
        ax.set_title(NAMES.get(k, k))
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def grouped_bars(summary: pd.DataFrame, *, groups: str, bars: str, ylabel: str, title: str = "") -> plt.Figure:
    """Bars of ``mean`` (error bars ``std``) in percent, one group per ``groups`` value, one bar per ``bars``."""
    g_vals, b_vals = list(dict.fromkeys(summary[groups])), list(dict.fromkeys(summary[bars]))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(g_vals) * len(b_vals) / 2), 3.6))
    width = 0.8 / len(b_vals)
    for j, b in enumerate(b_vals):
        sub = summary[summary[bars] == b].set_index(groups).reindex(g_vals)
        ax.bar(np.arange(len(g_vals)) + j * width - 0.4 + width / 2, 100 * sub["mean"], width,
               yerr=100 * sub["std"].fillna(0), capsize=3, color=COLORS.get(b), label=NAMES.get(b, b))
    ax.set_xticks(np.arange(len(g_vals)))
    ax.set_xticklabels([NAMES.get(g, g) for g in g_vals])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def view_grid(images, views: dict, mean, std) -> plt.Figure:
    """Rows: the original images, then views from each recipe (``views``: name -> list of normalised batches)."""
    m, s = np.asarray(mean).reshape(1, -1, 1, 1), np.asarray(std).reshape(1, -1, 1, 1)
    rows = [("original", images.float().numpy() / 255.0)]
    for name, batches in views.items():
        rows += [(f"{name} view {i + 1}", np.clip(b.cpu().numpy() * s + m, 0, 1)) for i, b in enumerate(batches)]
    n = len(images)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n, 1.15 * len(rows)), squeeze=False)
    for r, (label, batch) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(batch[c].transpose(1, 2, 0))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    return fig
