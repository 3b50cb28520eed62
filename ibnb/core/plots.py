"""Plot helpers and the book's one figure style: labelled axes, units, error bars over seeds.

:func:`book_style` (applied on import) sets seaborn's ``whitegrid`` theme with fonts that stay readable when a
figure is scaled to the page's content column (about 700 px): figures are at most :data:`PAGE_WIDTH` inches
wide with at most :data:`MAX_PANELS` panels per row (use :func:`panel_grid`).
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ibnb.core.metrics import summarize

PAGE_WIDTH = 7.5   # inches: a figure this wide is shown at the column's width
MAX_PANELS = 3     # panels per row at page width


def book_style() -> None:
    """The book's figure style (seaborn whitegrid, 11 pt axis labels at page width, 120 dpi)."""
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.95,
                  rc={"figure.dpi": 120, "savefig.dpi": 120, "axes.titlesize": 11, "axes.labelsize": 10.5,
                      "legend.fontsize": 9, "xtick.labelsize": 9.5, "ytick.labelsize": 9.5,
                      "figure.constrained_layout.use": True})


def panel_grid(n: int, *, height: float = 2.8, sharey: bool = False, sharex: bool = False):
    """``(fig, axes)`` for ``n`` panels, at most :data:`MAX_PANELS` per row, page-wide; ``axes`` is flat."""
    cols = min(n, MAX_PANELS)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PAGE_WIDTH if cols > 1 else PAGE_WIDTH * 0.7, height * rows),
                             squeeze=False, sharey=sharey, sharex=sharex)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


book_style()

MODEL_COLORS = {"mlp": "#1f77b4", "mixer": "#ff7f0e", "vit": "#2ca02c", "cnn": "#d62728", "cnn_sa": "#9467bd",
                "resnet18": "#8c564b"}


def color(model: str):
    return MODEL_COLORS.get(model)


def paired_bars(table: pd.DataFrame, *, groups: str, bars: str, value: str = "test_acc", ylabel: str = "",
                title: str = "") -> plt.Figure:
    """Grouped bar chart of mean ± std of ``value`` (×100) over seeds: one group per ``groups`` value,
    one bar per ``bars`` value."""
    s = summarize(table, [groups, bars], value)
    gvals = list(dict.fromkeys(table[groups]))
    bvals = list(dict.fromkeys(table[bars]))
    width = 0.8 / len(bvals)
    fig, ax = plt.subplots(figsize=(1.3 * len(gvals) + 2, 4))
    for i, b in enumerate(bvals):
        d = s[s[bars] == b].set_index(groups).reindex(gvals)
        ax.bar(np.arange(len(gvals)) + (i - (len(bvals) - 1) / 2) * width, 100 * d["mean"], width,
               yerr=100 * d["std"].fillna(0), capsize=3, label=str(b))
    ax.set_xticks(np.arange(len(gvals)), gvals)
    ax.set_ylabel(ylabel or f"{value} (%)")
    ax.set_title(title)
    ax.legend(title=bars, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
