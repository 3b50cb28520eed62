"""Chapter 06's figures: source images, source kernels next to DWP samples, the VAE fit, accuracy against
training-set size per prior, and the initialisation curves.

Every figure is page-wide (:data:`ibnb.core.plots.PAGE_WIDTH`) with at most three panels per row; image grids are
drawn as one mosaic per panel.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ibnb.chapters.deep_weight_prior.presets import INIT_LABELS
from ibnb.core.data import ImageData
from ibnb.core.plots import PAGE_WIDTH, panel_grid


def _mosaic(images: list[np.ndarray], gap: int = 1) -> np.ndarray:
    """Equal-sized 2-d arrays in one row, each scaled to [−1, 1] by its own largest |value|, NaN gaps between."""
    h, w = images[0].shape
    out = np.full((h, len(images) * (w + gap) - gap), np.nan)
    for j, im in enumerate(images):
        out[:, j * (w + gap): j * (w + gap) + w] = im / max(float(np.abs(im).max()), 1e-12)
    return out


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def source_examples(src: ImageData, per_class: int = 2) -> plt.Figure:
    """The first ``per_class`` source images of every class, side by side, each under its class name."""
    idx = [int(i) for c in range(len(src.classes)) for i in torch.nonzero(src.y == c).flatten()[:per_class]]
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 1.3))
    side = src.x.shape[-1]
    ax.imshow(_mosaic([src.x[i, 0].float().numpy() for i in idx], gap=2), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([j * (side + 2) + side // 2 for j in range(len(idx))], [src.classes[int(src.y[i])] for i in idx],
                  fontsize=7, rotation=30)
    ax.set_yticks([])
    ax.grid(False)
    return fig


def kernels_and_samples(kernels: dict, vaes: dict, n: int = 12) -> plt.Figure:
    """Per conv layer: ``n`` random source kernels (top row) above ``n`` samples of the fitted prior (bottom)."""
    fig, axes = plt.subplots(2 * len(kernels), 1, figsize=(PAGE_WIDTH, 0.75 * len(kernels) * 2))
    g = torch.Generator().manual_seed(0)
    for r, (layer, k) in enumerate(kernels.items()):
        real = k[torch.randperm(len(k), generator=g)[:n]]
        fake = vaes[layer].sample(n, generator=torch.Generator().manual_seed(0))
        for ax, ws, label in ((axes[2 * r], real, "source"), (axes[2 * r + 1], fake, "DWP sample")):
            ax.imshow(_mosaic([w.numpy() for w in ws]), cmap="RdBu_r", vmin=-1, vmax=1)
            _bare(ax)
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8.5)
        axes[2 * r].set_title(f"{layer}: {tuple(k.shape[1:])} kernels", fontsize=9.5)
    return fig


def vae_losses(losses: dict) -> plt.Figure:
    """Negative ELBO per kernel against VAE training step (running mean), one line per conv layer."""
    fig, axes = panel_grid(1, height=2.8)
    for layer, values in losses.items():
        s = pd.Series(values).rolling(max(1, len(values) // 50), min_periods=1).mean()
        axes[0].plot(np.arange(1, len(values) + 1), s, label=layer)
    axes[0].set(xlabel="VAE training step", ylabel="negative ELBO per kernel (nats)", title="VAE fit (running mean)")
    axes[0].legend()
    return fig


def accuracy_vs_size(small: pd.DataFrame, methods: list[str], paper: dict) -> plt.Figure:
    """Test accuracy against training images per method: mean over seeds (line), seeds (dots), the paper's table
    (open diamonds) where it has the size."""
    fig, axes = panel_grid(1, height=3.4)
    ax = axes[0]
    for i, m in enumerate(methods):
        d = small[small["method"] == m]
        mean = d.groupby("n_train")["test_acc"].mean()
        shift = 1 + 0.03 * (i - len(methods) / 2)
        ax.plot(mean.index * shift, 100 * mean.values, marker="o", ms=4, color=f"C{i}", label=m)
        ax.scatter(d["n_train"] * shift, 100 * d["test_acc"], s=9, alpha=0.45, color=f"C{i}", lw=0)
        pts = [(n, row[m]) for n, row in paper.items() if m in row and n in set(small["n_train"])]
        ax.scatter([n * shift for n, _ in pts], [v for _, v in pts], marker="D", s=28, facecolors="none",
                   edgecolors=f"C{i}")
    ticks = sorted(small["n_train"].unique())
    ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.minorticks_off()
    ax.set(xlabel="MNIST training images (log scale)", ylabel="test accuracy (%)")
    ax.legend(fontsize=8, ncol=2)
    return fig


def init_curves(histories: dict, inits: list[str], seeds: int) -> plt.Figure:
    """Training loss (log scale) and validation accuracy per epoch for each initialisation: mean over seeds,
    shaded between the lowest and the highest seed."""
    fig, ax = panel_grid(2, height=2.9)
    for init in inits:
        frames = [histories[(init, s)] for s in range(seeds)]
        ep = frames[0]["epoch"]
        for a, col, scale in ((ax[0], "train_loss", 1), (ax[1], "val_acc", 100)):
            v = np.stack([scale * f[col].to_numpy() for f in frames])
            line, = a.plot(ep, v.mean(0), "o-", ms=3, label=INIT_LABELS.get(init, init))
            a.fill_between(ep, v.min(0), v.max(0), alpha=0.2, color=line.get_color())
    ax[0].set(xlabel="epoch", ylabel="training cross-entropy (nats)", yscale="log", title="training loss")
    ax[1].set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy")
    for a in ax:
        a.legend(fontsize=8)
    return fig
