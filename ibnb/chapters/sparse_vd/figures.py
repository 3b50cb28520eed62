"""Chapter 05's figures: training curves of the ELBO, log α histograms, LeNet-5's first-layer kernels and their
masks, and the random-label control.

Every figure is page-wide (:data:`ibnb.core.plots.PAGE_WIDTH`) with at most three panels per row; curves are the
first seed's (the runs of the other seeds look alike and would hide each other).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from ibnb.chapters.sparse_vd.presets import PRETTY
from ibnb.chapters.sparse_vd.sweep import DENSE, SPARSE, overall_sparsity
from ibnb.core.models import sparse_vd as svd
from ibnb.core.plots import PAGE_WIDTH, panel_grid


def training_curves(histories: dict, model, network: str) -> plt.Figure:
    """ELBO terms, validation accuracy (Sparse VD and dense) and per-layer sparsity per epoch, seed 0."""
    f = histories[("table", network, SPARSE, 0, "true")]
    fd = histories[("table", network, DENSE, 0, "true")]
    fig, ax = panel_grid(3, height=2.9)
    ax[0].plot(f["epoch"], f["train_nll"], "o-", ms=3, label="NLL (data term)")
    ax[0].plot(f["epoch"], f["train_kl"], "s-", ms=3, label="KL / N")
    ax[0].plot(f["epoch"], f["train_beta"] * f["train_kl"], "^--", ms=3, label="β · KL / N")
    ax[0].set(xlabel="epoch", ylabel="nats per training image", yscale="log", title="ELBO terms")
    ax[1].plot(f["epoch"], 100 * f["val_acc"], "o-", ms=3, label="Sparse VD (masked)")
    ax[1].plot(fd["epoch"], 100 * fd["val_acc"], "s--", ms=3, label="dense")
    ax[1].set(xlabel="epoch", ylabel="validation accuracy (%)", title="accuracy")
    for i, (_, m) in enumerate(svd.svdo_layers(model)):
        ax[2].plot(f["epoch"], 100 * f[f"train_sp{i}"], "o-", ms=3, label=f"layer {i + 1}")
    ax[2].plot(f["epoch"], overall_sparsity(f, model), "k--", label="all weights")
    ax[2].set(xlabel="epoch", ylabel="weights with log α > 3 (%)", title="sparsity", ylim=(0, 100))
    for a in ax:
        a.legend(fontsize=7.5)
    fig.suptitle(f"{PRETTY[network]}, Sparse VD, seed 0")
    return fig


def log_alpha_histograms(model, network: str) -> plt.Figure:
    """Histogram of log α per layer at the end of training, with the threshold 3 dashed."""
    layers = svd.svdo_layers(model)
    fig, axes = panel_grid(len(layers), height=2.5, sharey=True)
    for i, (a, (_, m)) in enumerate(zip(axes, layers)):
        la = m.log_alpha.detach().cpu().flatten().numpy()
        a.hist(la, bins=60, range=(-8.5, 8.5), color="C0")
        a.axvline(svd.THRESHOLD, color="k", ls="--", lw=1)
        a.set(xlabel="log α", yscale="log", title=f"layer {i + 1}: {100 * (la > svd.THRESHOLD).mean():.1f} % pruned")
    axes[0].set_ylabel("number of weights")
    fig.suptitle(PRETTY[network])
    return fig


def log_alpha_shares(model) -> dict:
    """Percentage of all weights at the upper clip of log α (switched off) and between 0 and the threshold."""
    la = torch.cat([m.log_alpha.detach().cpu().flatten() for _, m in svd.svdo_layers(model)])
    return {"upper": float(100 * (la >= svd.LOG_ALPHA_CLIP - 0.01).float().mean()),
            "mid": float(100 * ((la > 0) & (la <= svd.THRESHOLD)).float().mean())}


def _strip(kernels: torch.Tensor, gap: int = 1) -> np.ndarray:
    """k×k kernels side by side in one image, separated by ``gap`` blank (NaN) columns."""
    k = kernels.shape[-1]
    out = np.full((k, len(kernels) * (k + gap) - gap), np.nan)
    for j, w in enumerate(kernels):
        out[:, j * (k + gap): j * (k + gap) + k] = w.numpy()
    return out


def first_layer_kernels(model) -> plt.Figure:
    """LeNet-5's first-layer kernels θ (one shared colour scale) above their masks (white = kept)."""
    m = svd.svdo_layers(model)[0][1]
    w, mask = m.weight.detach().cpu()[:, 0], m.mask().cpu()[:, 0].float()
    vmax = float(w.abs().max())
    fig, ax = plt.subplots(2, 1, figsize=(PAGE_WIDTH, 1.6))
    ax[0].imshow(_strip(w), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    ax[1].imshow(_strip(mask), cmap="gray", vmin=0, vmax=1)
    for a, label in zip(ax, ("θ", "mask")):
        a.set_xticks([])
        a.set_yticks([])
        a.set_ylabel(label, rotation=0, labelpad=14, va="center")
        a.grid(False)
    return fig


def random_labels(histories: dict, model) -> plt.Figure:
    """Sparsity and training accuracy per epoch, true against shuffled labels (Sparse VD, seed 0), and the
    training accuracy of the dense network on the shuffled labels (seed 0), when it was run."""
    fig, ax = panel_grid(2, height=2.9)
    for lab, style in (("true", "o-"), ("shuffled", "s--")):
        f = histories[("random_labels", "lenet300_100", SPARSE, 0, lab)]
        ax[0].plot(f["epoch"], overall_sparsity(f, model), style, ms=3, label=f"Sparse VD, {lab} labels")
        ax[1].plot(f["epoch"], 100 * f["train_acc"], style, ms=3, label=f"Sparse VD, {lab} labels")
    dense = histories.get(("random_labels", "lenet300_100", DENSE, 0, "shuffled"))
    if dense is not None:
        ax[1].plot(dense["epoch"], 100 * dense["train_acc"], "^:", ms=3, color="C3", label="dense, shuffled labels")
    ax[0].axhline(99, color="gray", ls=":", lw=1, label="99 %")
    ax[0].set(xlabel="epoch", ylabel="weights with log α > 3 (%)", title="sparsity (training-time)")
    ax[1].set(xlabel="epoch", ylabel="training accuracy (%)", title="fit of the training labels")
    for a in ax:
        a.legend(fontsize=8)
    return fig
