"""Figures of the MLP-scaling chapter (02): ablation ladder, scaling laws, batch size, conv-as-matrix, probes."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.colors import ListedColormap

from ibnb.core.metrics import summarize
from ibnb.chapters.mlp_scaling.scaling import PowerLawFit

RUNG_COLORS = {"MLP": "#1f77b4", "bMLP": "#17becf", "CNN": "#d62728", "ResNet-18": "#8c564b", "ViT": "#2ca02c"}


def _rung_color(rung: str):
    return RUNG_COLORS.get(rung.split(" + ")[0], "#7f7f7f")


def ladder_bars(df: pd.DataFrame, order: list[str]) -> plt.Figure:
    """Test accuracy per rung of the ladder, mean ± std over seeds, hatched where augmentation is on."""
    s = summarize(df, ["rung"]).set_index("rung").reindex(order)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    x = np.arange(len(order))
    bars = ax.bar(x, 100 * s["mean"], yerr=100 * s["std"].fillna(0), capsize=4,
                  color=[_rung_color(r) for r in order], hatch=None)
    for b, r in zip(bars, order):
        if "+" in r:
            b.set_hatch("//")
        ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 1, f"{b.get_height():.1f}", ha="center", fontsize=8)
    ax.set_xticks(x, order, rotation=15)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("ablation ladder (hatched: crop+flip augmentation); error bars: std over seeds")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def ladder_curves(histories: dict, order: list[str], seed: int = 0) -> plt.Figure:
    """Training (solid) and validation (dashed) cross-entropy per epoch for every rung (one seed)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for rung in order:
        f = histories.get((rung, seed))
        if f is None:
            continue
        ls_color = _rung_color(rung)
        alpha = 1.0 if "+" in rung else 0.55
        ax.plot(f["epoch"], f["train_loss"], color=ls_color, alpha=alpha, label=rung)
        if "val_loss" in f:
            ax.plot(f["epoch"], f["val_loss"], color=ls_color, alpha=alpha, ls="--")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(f"training (solid) and validation (dashed) loss, seed {seed}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def _fit_line(ax, fit: PowerLawFit, xs, label: str, color="k"):
    xs = np.geomspace(min(xs), max(xs), 50)
    ax.plot(xs, 100 * fit.predict(xs), color=color, ls=":", lw=1.5, label=label)


def _lines(ax, g: pd.DataFrame, by: str, values, x: str, cmap, style: str, label):
    """One line of test error against ``x`` per value of ``by``."""
    for i, v in enumerate(values):
        d = g[g[by] == v].sort_values(x)
        ax.plot(d[x], 100 * d["test_error"], style, color=cmap(i), label=label(v))


def scaling_figure(df: pd.DataFrame, fit_p: PowerLawFit, fit_d: PowerLawFit, fit_c: PowerLawFit,
                   frontier: pd.DataFrame) -> plt.Figure:
    """(a) error vs parameters per data size, (b) error vs data per model size, (c) error vs training
    compute with the compute-efficient frontier; dotted: the power-law fits (exponent ± 95 % CI)."""
    g = df.groupby(["size", "params", "n_train"], as_index=False).agg(
        test_error=("test_error", "mean"), train_flops=("train_flops", "mean"))
    sizes = list(dict.fromkeys(df.sort_values("params")["size"]))
    ns = sorted(df["n_train"].unique())
    cmap_n = lambda i: plt.cm.viridis(0.85 * i / max(1, len(ns) - 1))  # noqa: E731  (no pale yellow end)
    cmap_p = lambda i: plt.cm.plasma(0.85 * i / max(1, len(sizes) - 1))  # noqa: E731
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    _lines(axes[0], g, "n_train", ns, "params", cmap_n, "o-", lambda n: f"{n} images")
    _fit_line(axes[0], fit_p, g["params"], f"fit at {max(ns)} images: α_P = {fit_p.exponent:.3f} "
              f"[{fit_p.ci[0]:.3f}, {fit_p.ci[1]:.3f}], n = {fit_p.n}")
    axes[0].set_xlabel("parameters (log scale)")
    axes[0].set_title("(a) error vs model size")
    _lines(axes[1], g, "size", sizes, "n_train", cmap_p, "s-", str)
    _fit_line(axes[1], fit_d, g["n_train"], f"fit for {sizes[-1]}: α_D = {fit_d.exponent:.3f} "
              f"[{fit_d.ci[0]:.3f}, {fit_d.ci[1]:.3f}], n = {fit_d.n}")
    axes[1].set_xlabel("training images (log scale)")
    axes[1].set_title("(b) error vs data")
    ax = axes[2]
    for i, s in enumerate(sizes):
        d = g[g["size"] == s]
        ax.scatter(d["train_flops"], 100 * d["test_error"], color=cmap_p(i), s=18 + 60 * np.log(d["n_train"] / min(ns) + 1),
                   alpha=0.8, label=s)
    f = frontier.sort_values("train_flops")
    ax.step(f["train_flops"], 100 * f["test_error"], where="post", color="k", lw=1, label="compute-efficient frontier")
    _fit_line(ax, fit_c, f["train_flops"], f"fit on frontier: α_C = {fit_c.exponent:.3f} "
              f"[{fit_c.ci[0]:.3f}, {fit_c.ci[1]:.3f}], n = {fit_c.n}")
    ax.set_xlabel("training compute (FLOPs, log scale)")
    ax.set_title("(c) error vs compute (marker size: data)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("test error (%, log scale)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6.5)
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    fig.tight_layout()
    return fig


def batch_plot(df: pd.DataFrame, rule: str) -> plt.Figure:
    """Test accuracy vs batch size (log₂ axis) per model at a fixed number of epochs."""
    s = summarize(df, ["model", "batch_size"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    names = {"bmlp": "bMLP", "mlp": "MLP", "cnn": "CNN", "resnet18": "ResNet-18", "vit": "ViT"}
    for m in dict.fromkeys(df["model"]):
        d = s[s["model"] == m].sort_values("batch_size")
        ax.errorbar(d["batch_size"], 100 * d["mean"], yerr=100 * d["std"].fillna(0), marker="o", capsize=3,
                    label=names.get(m, m), color=RUNG_COLORS.get(names.get(m, m)))
    ax.set_xscale("log", base=2)
    ticks = sorted(df["batch_size"].unique())
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("batch size (log₂ scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"fixed epochs, learning rate by the {rule} rule")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def conv_matrix_figure(conv_shared: torch.Tensor, lc_mask: torch.Tensor, dense_shape: tuple[int, int],
                       title: str) -> plt.Figure:
    """Three weight matrices of the same input/output size: dense (every entry free), locally connected
    (sparse, every non-zero free) and convolution (sparse, colours = which kernel entry is copied)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.8))
    rng = np.random.default_rng(0)
    axes[0].imshow(rng.standard_normal(dense_shape), cmap="RdBu", aspect="auto", interpolation="nearest")
    axes[0].set_title("dense layer: every entry a free weight")
    masked = np.where(lc_mask.numpy(), rng.standard_normal(lc_mask.shape), np.nan)
    axes[1].imshow(masked, cmap="RdBu", aspect="auto", interpolation="nearest")
    axes[1].set_title("locally connected: sparse, entries free")
    taps = conv_shared.numpy().astype(float)
    n_taps = int(taps.max()) + 1
    taps[taps < 0] = np.nan
    cmap = ListedColormap(plt.get_cmap("tab10" if n_taps <= 10 else "tab20")(np.arange(n_taps) % 20))
    im = axes[2].imshow(taps, cmap=cmap, aspect="auto", interpolation="nearest", vmin=-0.5, vmax=n_taps - 0.5)
    axes[2].set_title(f"convolution: same sparsity, {n_taps} shared weights")
    fig.colorbar(im, ax=axes[2], label="kernel entry copied", ticks=range(n_taps))
    for ax in axes:
        ax.set_xlabel("input unit (channel, row, column)")
        ax.set_ylabel("output unit (channel, row, column)")
        ax.set_facecolor("white")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def probe_examples(probes: dict, index: int = 0) -> plt.Figure:
    """One test image under every probe."""
    fig, axes = plt.subplots(1, len(probes), figsize=(1.9 * len(probes), 2.3))
    for ax, (name, d) in zip(axes, probes.items()):
        ax.imshow(d.x[index].permute(1, 2, 0).numpy())
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig
