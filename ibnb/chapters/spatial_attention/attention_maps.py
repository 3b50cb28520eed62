"""Reading spatial-attention maps: per-stage maps at input resolution, a masking (faithfulness) test, plots.

``stage_maps(model, data)`` runs a model with :class:`~ibnb.core.models.layers.SpatialAttention` layers and returns
every stage's map bilinearly upsampled to the input size. ``mask_pixels`` replaces a fraction of pixel
positions per image (the most-attended, least-attended or randomly chosen ones) by the dataset's mean colour
(zero after normalisation); ``masking_accuracy`` evaluates models on such masked copies — if the maps are
faithful, hiding the most-attended pixels should cost more accuracy than hiding random ones.
"""
from __future__ import annotations

from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ibnb.core.augment import DeviceLoader
from ibnb.core.data import ImageData
from ibnb.core.train import evaluate

SELECTIONS = ("most-attended", "random", "least-attended")


@torch.no_grad()
def stage_maps(model: torch.nn.Module, data: ImageData, *, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """``(maps, logits)``: maps ``N×S×H×W`` (one per attention stage, upsampled to the input size, on the CPU)
    and the model's logits ``N×K``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    maps, logits = [], []
    for x, _ in DeviceLoader(data, batch_size, shuffle=False, device=device):
        logits.append(model(x).float().cpu())
        stages = [F.interpolate(m.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
                  for m in model.attention_maps()]
        maps.append(torch.cat(stages, dim=1).cpu())
    model.train(was_training)
    return torch.cat(maps), torch.cat(logits)


def mask_pixels(data: ImageData, saliency: torch.Tensor, fraction: float, selection: str, *,
                seed: int = 0) -> ImageData:
    """Copy of ``data`` with ``round(fraction·H·W)`` pixel positions per image set to the mean colour.

    ``saliency`` is ``N×H×W``; ``selection`` picks the positions: its largest values (``most-attended``), its
    smallest (``least-attended``) or uniformly at random (``random``, seeded)."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    n, c, h, w = data.x.shape
    k = int(round(fraction * h * w))
    if k == 0:
        return data
    score = saliency.reshape(n, h * w).float()
    if selection == "least-attended":
        score = -score
    elif selection == "random":
        score = torch.rand(n, h * w, generator=torch.Generator().manual_seed(seed))
    idx = score.topk(k, dim=1).indices
    mask = torch.zeros(n, h * w, dtype=torch.bool).scatter_(1, idx, True).view(n, 1, h, w)
    fill = torch.tensor([round(255 * m) for m in data.mean], dtype=torch.uint8).view(1, c, 1, 1)
    x = torch.where(mask, fill, data.x)
    return replace(data, x=x, meta={**data.meta, "masked": f"{selection} {fraction:g}"})


def masking_accuracy(attention_model: torch.nn.Module, models: dict[str, torch.nn.Module], data: ImageData,
                     fractions, *, seed: int = 0) -> pd.DataFrame:
    """Accuracy of every model in ``models`` on ``data`` with pixels masked according to the mean (over
    stages) attention map of ``attention_model``; one row per model × selection × fraction (fraction 0 =
    unmasked)."""
    maps, _ = stage_maps(attention_model, data)
    saliency = maps.mean(dim=1)
    rows = [dict(model=name, selection="none", fraction=0.0, acc=evaluate(m, data)["acc"]) for name, m in models.items()]
    for fraction in fractions:
        for selection in SELECTIONS:
            masked = mask_pixels(data, saliency, fraction, selection, seed=seed)
            rows += [dict(model=name, selection=selection, fraction=float(fraction), acc=evaluate(m, masked)["acc"])
                     for name, m in models.items()]
    return pd.DataFrame(rows)


def _show(ax, data: ImageData, i: int):
    img = data.x[i].permute(1, 2, 0).numpy()
    ax.imshow(img if img.shape[2] == 3 else img[..., 0], cmap=None if img.shape[2] == 3 else "gray")


def overlay_figure(data: ImageData, maps: torch.Tensor, pred: torch.Tensor, index, *, title: str = "") -> plt.Figure:
    """One row per image in ``index``: the input, then each stage's map (colour, 0–1) over the greyed input."""
    index = list(index)
    stages = maps.shape[1]
    fig, axes = plt.subplots(len(index), stages + 1, figsize=(1.9 * (stages + 1) + 0.8, 1.9 * len(index) + 0.4),
                             squeeze=False)
    im = None
    for r, i in enumerate(index):
        true, guess = data.classes[int(data.y[i])], data.classes[int(pred[i])]
        _show(axes[r][0], data, i)
        axes[r][0].set_title(f"true {true}\npredicted {guess} ({'right' if true == guess else 'wrong'})", fontsize=7)
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
    fig.tight_layout()
    if im is not None:
        fig.colorbar(im, ax=axes, fraction=0.025, pad=0.02, label="attention weight (sigmoid, 0–1)")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def curves_figure(histories: dict, labels: dict, colors: dict, *, title: str = "") -> plt.Figure:
    """Train (solid) and validation (dashed) loss and accuracy per epoch, one colour per model."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for model, frame in histories.items():
        for col, style, what in (("train", "-", "train"), ("val", "--", "validation")):
            if f"{col}_loss" not in frame:
                continue
            ax_loss.plot(frame["epoch"], frame[f"{col}_loss"], style, marker=".", color=colors.get(model),
                         label=f"{labels.get(model, model)} ({what})")
            ax_acc.plot(frame["epoch"], 100 * frame[f"{col}_acc"], style, marker=".", color=colors.get(model))
    ax_loss.set_ylabel("cross-entropy loss (nats)")
    ax_acc.set_ylabel("accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def masking_figure(table: pd.DataFrame, labels: dict, colors: dict, *, title: str = "") -> plt.Figure:
    """Accuracy vs fraction of pixels masked, one panel per model, one line per selection (mean ± std)."""
    models = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), sharey=True, squeeze=False)
    clean = table[table["selection"] == "none"]
    styles = {"most-attended": ("o-", "#d62728"), "random": ("s--", "#7f7f7f"), "least-attended": ("^:", "#1f77b4")}
    for ax, model in zip(axes[0], models):
        base = clean[clean["model"] == model]["acc"]
        for sel, (style, col) in styles.items():
            d = table[(table["model"] == model) & (table["selection"] == sel)]
            s = d.groupby("fraction")["acc"].agg(["mean", "std"]).reset_index()
            xs = np.r_[0.0, s["fraction"].to_numpy()] * 100
            ys = np.r_[base.mean(), s["mean"].to_numpy()] * 100
            es = np.r_[np.nan_to_num(base.std()), np.nan_to_num(s["std"].to_numpy())] * 100
            ax.errorbar(xs, ys, yerr=es, fmt=style, color=col, capsize=3, label=sel)
        ax.set_title(labels.get(model, model), fontsize=9)
        ax.set_xlabel("pixels masked (% of the image)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(title="pixels masked", fontsize=8)
    axes[0][0].set_ylabel("test accuracy (%)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
