"""Figures of chapter 02: ablation ladder, training curves, scaling laws, batch size, conv-as-matrix, the
one-layer prior comparison and the shape/texture probes.

Every figure is at most :data:`ibnb.core.plots.PAGE_WIDTH` wide with at most three panels per row, in the book's
style (fonts of 9 pt and more at page width). Bars and lines are means over seeds; dots are the seeds.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap

from ibnb.chapters.mlp_scaling.analysis import ConvIdentity, scaling_grid
from ibnb.chapters.mlp_scaling.sweep import RUNG_NAMES
from ibnb.core.plots import PAGE_WIDTH, panel_grid

RUNG_COLORS = {"MLP": "#1f77b4", "bMLP": "#17becf", "CNN": "#d62728", "ResNet-18": "#8c564b", "ViT": "#2ca02c",
               "dense": "#1f77b4", "locally connected": "#ff7f0e", "convolution": "#d62728"}
LAYER_NAMES = {"dense_layer": "dense", "locally_connected": "locally connected", "conv_layer": "convolution"}


def _color(name: str):
    return RUNG_COLORS.get(name.split(" + ")[0], "#7f7f7f")


def _bars_with_seeds(ax, groups: list, values: dict, colors: list, hatches=None, width: float = 0.7, offset=0.0):
    """Bars of the mean of each ``values[g]`` (percent) with the seeds as dots; returns the bar container."""
    x = np.arange(len(groups)) + offset
    means = [100 * np.mean(values[g]) if len(values[g]) else np.nan for g in groups]
    bars = ax.bar(x, means, width, color=colors, edgecolor="k", lw=0.5)
    for xi, g, b, h in zip(x, groups, bars, hatches or [None] * len(groups)):
        b.set_hatch(h)
        ax.scatter(np.full(len(values[g]), xi), 100 * np.asarray(values[g]), s=10, color="k", zorder=3)
    return bars


def ladder_bars(df: pd.DataFrame, order: list[str]) -> plt.Figure:
    """Test accuracy per rung of the ladder (hatched: trained with augmentation; recipe in the label)."""
    fig, (ax,) = panel_grid(1, height=3.0)
    fig.set_size_inches(PAGE_WIDTH, 3.0)
    values = {r: df[df["rung"] == r]["test_acc"].to_numpy() for r in order}
    bars = _bars_with_seeds(ax, order, values, [_color(r) for r in order], ["//" if "+" in r else None for r in order])
    for b in bars:
        ax.annotate(f"{b.get_height():.1f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                    va="bottom", fontsize=9, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(np.arange(len(order)), [r.replace(" + ", "\n+ ").replace(", ", ",\n") for r in order], fontsize=9)
    ax.set_ylabel("test accuracy (%)")
    return fig


def ladder_curves(histories: dict, order: list[str], seed: int = 0) -> plt.Figure:
    """Training and validation cross-entropy per epoch for every rung (one seed), one panel each."""
    fig, axes = panel_grid(2, height=3.0, sharey=True)
    for ax, (col, title) in zip(axes, (("train_loss", "training loss"), ("val_loss", "validation loss"))):
        for rung in order:
            f = histories.get((rung, seed))
            if f is not None and col in f:
                ax.plot(f["epoch"], f[col], color=_color(rung), ls="-" if "+" in rung else "--", marker="o", ms=2.5,
                        label=rung)
        ax.set_xlabel("epoch")
        ax.set_title(title)
    axes[0].set_ylabel("cross-entropy (nats)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=9, frameon=False)
    return fig


def _log_axes(ax, xlabel: str):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))


def _fit_line(ax, fit, xs):
    if fit is None:
        return
    xs = np.geomspace(min(xs), max(xs), 50)
    ax.plot(xs, 100 * fit.predict(xs), color="k", ls=":", lw=1.5)


def scaling_figure(df: pd.DataFrame, fits: dict) -> plt.Figure:
    """(a) error vs parameters per data size, (b) error vs data per model size, (c) error vs training compute with
    the compute-efficient frontier; dotted: the saturating power-law fits (exponents and E∞ with bootstrap intervals
    in the table); (d) the fits' residuals, log(observed / fitted) against the fitted quantity (relative to its
    smallest value)."""
    g = scaling_grid(df)
    sizes = list(dict.fromkeys(df.sort_values("params")["size"]))
    ns = sorted(df["n_train"].unique())
    c_n = [plt.cm.viridis(0.85 * i / max(1, len(ns) - 1)) for i in range(len(ns))]
    c_p = [plt.cm.plasma(0.85 * i / max(1, len(sizes) - 1)) for i in range(len(sizes))]
    fig, axes = plt.subplots(2, 2, figsize=(PAGE_WIDTH, 6.4))
    (a, b), (c, r) = axes
    for n, col in zip(ns, c_n):
        d = g[g["n_train"] == n].sort_values("params")
        a.plot(d["params"], 100 * d["test_error"], "o-", color=col, ms=4, label=f"{n:,} images")
    _fit_line(a, fits["fit_p"], g["params"])
    _log_axes(a, "parameters")
    a.set_title("(a) error vs model size")
    for s, col in zip(sizes, c_p):
        d = g[g["size"] == s].sort_values("n_train")
        b.plot(d["n_train"], 100 * d["test_error"], "s-", color=col, ms=4, label=s)
        c.scatter(d["train_flops"], 100 * d["test_error"], color=col, s=14 + 40 * np.log(d["n_train"] / min(ns) + 1),
                  alpha=0.8)
    _fit_line(b, fits["fit_d"], g["n_train"])
    _log_axes(b, "training images")
    b.set_title("(b) error vs data")
    f = fits["frontier"].sort_values("train_flops")
    c.step(f["train_flops"], 100 * f["test_error"], where="post", color="k", lw=1)
    _fit_line(c, fits["fit_c"], f["train_flops"])
    _log_axes(c, "training compute (FLOPs)")
    c.set_title("(c) error vs compute")
    for ax in (a, b, c):
        ax.set_ylabel("test error (%)")
    a.legend(fontsize=8, title="data size", title_fontsize=8)
    b.legend(fontsize=8, title="width d, blocks L", title_fontsize=8)
    for (key, label), marker in zip((("fit_p", "α_P fit"), ("fit_d", "α_D fit"), ("fit_c", "α_C fit")), "os^"):
        fit = fits[key]
        if fit is not None and len(fit.residuals):
            x = np.arange(len(fit.residuals))
            r.plot(x, fit.residuals, marker=marker, ls="-", ms=4, label=label)
    r.axhline(0, color="k", lw=0.8)
    r.set_xlabel("fit point (increasing x)")
    r.set_ylabel("log(observed / fitted)")
    r.set_title("(d) residuals of the fits")
    r.legend(fontsize=8)
    return fig


def batch_plot(df: pd.DataFrame) -> plt.Figure:
    """Test accuracy vs batch size (log₂ axis) per model, at a fixed number of epochs (left) and at a fixed
    number of steps (right); dots: seeds."""
    fig, axes = panel_grid(2, height=3.0, sharey=True)
    for ax, (regime, title) in zip(axes, (("epochs", "fixed epochs"), ("steps", "fixed steps"))):
        d0 = df[df["regime"] == regime]
        for m in dict.fromkeys(d0["model"]):
            d = d0[d0["model"] == m]
            mean = d.groupby("batch_size")["test_acc"].mean()
            name = RUNG_NAMES.get(m, m)
            ax.plot(mean.index, 100 * mean.values, "o-", color=_color(name), label=name)
            ax.scatter(d["batch_size"], 100 * d["test_acc"], s=10, color=_color(name), alpha=0.5)
        ax.set_xscale("log", base=2)
        ticks = sorted(d0["batch_size"].unique())
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("batch size (log₂ scale)")
        ax.set_title(title)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=9)
    return fig


def conv_matrix_figure(ci: ConvIdentity) -> plt.Figure:
    """Three weight matrices of the same input/output size (a 3×3 convolution on an 8×8 image): dense, locally
    connected (sparse, every non-zero free) and convolution (colours: which kernel entry is copied)."""
    shared = ci.small_shared
    fig, axes = panel_grid(3, height=2.9)
    rng = np.random.default_rng(0)
    axes[0].imshow(rng.standard_normal(ci.small_shape), cmap="RdBu", aspect="equal", interpolation="nearest")
    axes[0].set_title("dense")
    mask = (shared >= 0).numpy()
    axes[1].imshow(np.where(mask, rng.standard_normal(mask.shape), np.nan), cmap="RdBu", aspect="equal",
                   interpolation="nearest")
    axes[1].set_title("locally connected")
    taps = shared.numpy().astype(float)
    n_taps = int(taps.max()) + 1
    taps[taps < 0] = np.nan
    cmap = ListedColormap(plt.get_cmap("tab10")(np.arange(n_taps) % 10))
    axes[2].imshow(taps, cmap=cmap, aspect="equal", interpolation="nearest", vmin=-0.5, vmax=n_taps - 0.5)
    axes[2].set_title(f"convolution ({n_taps} weights)")
    for ax in axes:
        ax.set_xlabel("input pixel")
        ax.set_facecolor("white")
        ax.grid(False)
    axes[0].set_ylabel("output pixel")
    return fig


def prior_bars(df: pd.DataFrame) -> plt.Figure:
    """Test accuracy of the three one-layer networks per training-set size (bars: mean; dots: seeds)."""
    d = df.assign(layer=df["model"].map(LAYER_NAMES))
    layers = [LAYER_NAMES[m] for m in LAYER_NAMES if m in set(df["model"])]
    ns = sorted(d["n_train"].unique())
    fig, (ax,) = panel_grid(1, height=3.0)
    width = 0.8 / len(layers)
    for i, layer in enumerate(layers):
        values = {n: d[(d["layer"] == layer) & (d["n_train"] == n)]["test_acc"].to_numpy() for n in ns}
        bars = _bars_with_seeds(ax, ns, values, [_color(layer)] * len(ns), width=width,
                                offset=(i - (len(layers) - 1) / 2) * width)
        bars.set_label(layer)
    ax.set_xticks(np.arange(len(ns)), [f"{n:,}" for n in ns])
    ax.set_xlabel("training images")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=9)
    return fig


def probe_examples(probes: dict, index: int = 3) -> plt.Figure:
    """One test image under every probe, as one strip (one panel) labelled below."""
    imgs = [d.x[index].permute(1, 2, 0).numpy() for d in probes.values()]
    gap = np.full((imgs[0].shape[0], 4, 3), 255, dtype=imgs[0].dtype)
    strip = np.concatenate([x for img in imgs for x in (img, gap)][:-1], axis=1)
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 1.7))
    ax.imshow(strip, interpolation="nearest")
    w = imgs[0].shape[1] + 4
    ax.set_xticks([i * w + imgs[0].shape[1] / 2 for i in range(len(imgs))], list(probes), fontsize=9)
    ax.set_yticks([])
    ax.grid(False)
    for s in ax.spines.values():
        s.set_visible(False)
    return fig


def probe_bars(long: pd.DataFrame, models: list[str]) -> plt.Figure:
    """Fraction of the above-chance accuracy each model keeps under each probe (bars: mean; dots: seeds)."""
    probes = list(dict.fromkeys(long["probe"]))
    fig, (ax,) = panel_grid(1, height=3.2)
    fig.set_size_inches(PAGE_WIDTH, 3.2)
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        values = {pr: long[(long["model"] == m) & (long["probe"] == pr)]["retained"].dropna().to_numpy()
                  for pr in probes}
        name = RUNG_NAMES.get(m, m)
        bars = _bars_with_seeds(ax, probes, values, [_color(name)] * len(probes), width=width,
                                offset=(i - (len(models) - 1) / 2) * width)
        bars.set_label(name)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(probes)), probes)
    ax.set_ylabel("above-chance accuracy kept (%)")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(models), fontsize=9, frameon=False)
    return fig
