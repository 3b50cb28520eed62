"""Figures of the ViT / SAM chapter (08): size sweep, ρ sweep, equal-time view, sharpness, slices, maps."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

COLORS = {"cnn": "#1f77b4", "vit": "#d62728", "resnet18": "#2ca02c", "cnn_sa": "#9467bd"}
LABELS = {"cnn": "CNN", "vit": "ViT", "resnet18": "ResNet-18", "cnn_sa": "CNN+SA"}


def _lab(m):
    return LABELS.get(m, m)


def size_sweep_figure(arch: pd.DataFrame) -> plt.Figure:
    """Test accuracy (mean ± std over seeds) against training-set size, one panel per augmentation."""
    augs = list(dict.fromkeys(arch["augment"]))
    fig, axes = plt.subplots(1, len(augs), figsize=(5.2 * len(augs), 3.8), sharey=True, squeeze=False)
    for ax, aug in zip(axes[0], augs):
        d = arch[arch["augment"] == aug]
        for m, g in d.groupby("model", sort=False):
            s = g.groupby("n_train")["test_acc"].agg(["mean", "std"]).reset_index()
            ax.errorbar(s["n_train"], 100 * s["mean"], yerr=100 * s["std"].fillna(0), marker="o", capsize=3,
                        color=COLORS.get(m), label=_lab(m))
        ax.set_xscale("log")
        ax.set_xlabel("training images (log scale)")
        ax.set_title(f"augmentation: {aug}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _per_model(df: pd.DataFrame, draw, xlabel: str, ylabel: str, *, log_y: bool = False) -> plt.Figure:
    """One panel per model: ``draw(ax, model, rows)``, shared labels, legend in the last panel."""
    models = list(dict.fromkeys(df["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.8), squeeze=False)
    for ax, m in zip(axes[0], models):
        draw(ax, m, df[df["model"] == m])
        ax.set_xlabel(xlabel)
        ax.set_title(_lab(m), fontsize=9)
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def rho_figure(main: pd.DataFrame) -> plt.Figure:
    """Per model: SAM test accuracy against ρ (mean ± std), with the AdamW runs at equal steps and at equal
    gradient evaluations as horizontal bands."""
    def draw(ax, m, d):
        sam = d[(d["rho"] > 0) & ~d["adaptive"].astype(bool)]
        s = sam.groupby("rho")["test_acc"].agg(["mean", "std"]).reset_index()
        ax.errorbar(s["rho"], 100 * s["mean"], yerr=100 * s["std"].fillna(0), marker="o", capsize=3,
                    color=COLORS.get(m), label="SAM (AdamW base), equal steps")
        for method, style, col in (("adamw", "--", "k"), ("adamw ×2 epochs", ":", "#7f7f7f")):
            a = d[d["method"] == method]["test_acc"]
            if len(a):
                mu, sd = 100 * a.mean(), 100 * np.nan_to_num(a.std())
                budget = "equal steps" if method == "adamw" else "equal gradients"
                ax.axhline(mu, ls=style, color=col, label=f"{method} ({budget})")
                ax.axhspan(mu - sd, mu + sd, color=col, alpha=0.08)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(s["rho"])
        ax.set_xticklabels([f"{r:g}" for r in s["rho"]])
    return _per_model(main, draw, "SAM neighbourhood radius ρ (log scale)", "test accuracy (%)")


def time_figure(main: pd.DataFrame) -> plt.Figure:
    """Every run's test accuracy against its training wall time, one panel per model."""
    markers = {}

    def draw(ax, m, d):
        for method, g in d.groupby("method", sort=False):
            mk = markers.setdefault(method, "os^vDP<>*"[len(markers) % 9])
            ax.scatter(g["wall_s"], 100 * g["test_acc"], marker=mk, label=method, s=28)
    return _per_model(main, draw, "training wall time (s)", "test accuracy (%)")


def mixing_figure(mix: pd.DataFrame) -> plt.Figure:
    """Test accuracy (mean ± std) per batch op (none / mixup / cutout), AdamW vs SAM side by side."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ops = list(dict.fromkeys(mix["mix"]))
    opts = ["AdamW", "SAM"]
    for j, opt in enumerate(opts):
        d = mix[(mix["rho"] > 0) == (opt == "SAM")]
        s = d.groupby("mix")["test_acc"].agg(["mean", "std"]).reindex(ops)
        ax.bar(np.arange(len(ops)) + (j - 0.5) * 0.38, 100 * s["mean"], 0.38, yerr=100 * s["std"].fillna(0),
               capsize=3, label=opt, color=["#7f7f7f", "#d62728"][j])
    ax.set_xticks(range(len(ops)))
    ax.set_xticklabels(ops)
    ax.set_xlabel("batch operation")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def sharpness_figure(sharp: pd.DataFrame) -> plt.Figure:
    """PGA sharpness and top Hessian eigenvalue (mean ± std over seeds) per model and method."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    models = list(dict.fromkeys(sharp["model"]))
    methods = list(dict.fromkeys(sharp["method"]))
    for ax, col, ylabel in ((axes[0], "pga_sharpness", "max L(w+ε) − L(w) (nats)"),
                            (axes[1], "hessian_top", "top Hessian eigenvalue")):
        for j, method in enumerate(methods):
            s = sharp[sharp["method"] == method].groupby("model")[col].agg(["mean", "std"]).reindex(models)
            ax.bar(np.arange(len(models)) + (j - 0.5) * 0.38, s["mean"], 0.38, yerr=s["std"].fillna(0), capsize=3,
                   label=method, color=["#7f7f7f", "#d62728", "#1f77b4"][j % 3])
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels([_lab(m) for m in models])
        ax.set_ylabel(ylabel)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def slice_figure(slices: pd.DataFrame) -> plt.Figure:
    """Training loss along a filter-normalised random direction, mean over seeds, one panel per model."""
    def draw(ax, m, d):
        for j, (method, g) in enumerate(d.groupby("method", sort=False)):
            s = g.groupby("alpha")["loss"].mean()
            ax.plot(s.index, s.values, marker=".", label=method, color=["#7f7f7f", "#d62728"][j % 2])
    return _per_model(slices, draw, "step along the direction α (filter-normalised units)",
                      "training loss (nats, log scale)", log_y=True)


def train_sharpness_figure(histories: dict, method: str) -> plt.Figure:
    """The one-step sharpness L(w+ε̂) − L(w) logged by SAM per epoch (mean over batches), per model and seed."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (m, meth, seed), f in histories.items():
        if meth != method or "train_sharpness" not in f:
            continue
        ax.plot(f["epoch"], f["train_sharpness"], marker=".", color=COLORS.get(m), alpha=0.9 - 0.3 * seed,
                label=f"{_lab(m)}, seed {seed}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("L(w+ε̂) − L(w) on the batch (nats)")
    ax.set_title(f"sharpness seen by {method} during training", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def maps_figure(ro: dict) -> plt.Figure:
    """One row per image: the image, then each model's map over the greyed image."""
    images, maps = ro["images"], ro["maps"]
    n, names = len(images), list(maps)
    fig, axes = plt.subplots(n, len(names) + 1, figsize=(2.1 * (len(names) + 1) + 0.8, 2.1 * n + 0.3), squeeze=False)
    im = None
    for r in range(n):
        img = images.x[r].permute(1, 2, 0).numpy()
        axes[r][0].imshow(img)
        axes[r][0].set_title(f"true: {images.classes[int(images.y[r])]}", fontsize=7)
        grey = images.x[r].float().mean(0).numpy()
        for c, name in enumerate(names):
            ax = axes[r][c + 1]
            ax.imshow(grey, cmap="gray")
            im = ax.imshow(maps[name][r, 0].numpy(), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            pred = images.classes[int(ro["pred"][name][r])]
            ax.set_title((name + "\n" if r == 0 else "") + f"pred: {pred}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.colorbar(im, ax=axes, fraction=0.025, pad=0.02, label="map value (0–1)")
    return fig


def search_figure(search: pd.DataFrame) -> plt.Figure:
    """Validation accuracy of every trial against lr (colour: ρ, marker size: weight decay)."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    sc = ax.scatter(search["lr"], 100 * search["val_acc"], c=search["rho"], cmap="viridis",
                    s=40 + 400 * search["weight_decay"], edgecolors="k")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("validation accuracy (%)")
    fig.colorbar(sc, ax=ax, label="ρ (0 = AdamW)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
