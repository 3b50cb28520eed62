"""Figures and tables of the CPU-training page."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from ibnb.book.tables import Table, table
from ibnb.chapters.cpu_training.audit import AIRBENCH94_ACC, frontier
from ibnb.core.plots import book_style, panel_grid

#: the issue's scratch measurements (2-core AVX-512-BF16 Zen 4, full CIFAR-10, 10,000 test images) and the anchor
ANCHORS = [
    {"run": "airbench-style 32/64/64", "machine": "2-core Zen 4 (issue 14)", "minutes": 96 / 60, "accuracy": 81.3,
     "with TTA": 82.5},
    {"run": "airbench-style 32/64/64", "machine": "2-core Zen 4 (issue 14)", "minutes": 277 / 60, "accuracy": 85.5,
     "with TTA": 86.9},
    {"run": "airbench-style 64/128/128, 10 epochs", "machine": "2-core Zen 4 (issue 14)", "minutes": 590 / 60,
     "accuracy": 88.1, "with TTA": 89.0},
    {"run": "airbench94 64/256/256", "machine": "one A100 (Jordan, 2024)", "minutes": 3.8 / 60,
     "accuracy": AIRBENCH94_ACC, "with TTA": AIRBENCH94_ACC},
]


def frontier_figure(df: pd.DataFrame):
    """Test accuracy (plain and flip TTA) against training minutes, one line per recipe; error bars: seed range."""
    book_style()
    fig, axes = panel_grid(2, sharey=True)
    d = df[df["experiment"] == "frontier"]
    for ax, col, title in zip(axes, ("test_acc", "tta_acc"), ("single view", "with test-time flips")):
        for recipe, g in d.groupby("recipe"):
            s = g.groupby("epochs").agg(m=("train_min", "mean"), a=(col, "mean"), lo=(col, "min"), hi=(col, "max"))
            # clipped at 0: the mean of equal accuracies can round below their minimum (or above their maximum)
            below, above = (s["a"] - s["lo"]).clip(lower=0), (s["hi"] - s["a"]).clip(lower=0)
            ax.errorbar(s["m"], 100 * s["a"], yerr=[100 * below, 100 * above],
                        marker="o", capsize=3, label=recipe)
        ax.set(xlabel="training time (min)", ylabel="test accuracy (%)", title=title)
        ax.legend()
    return fig


def figures(df: pd.DataFrame) -> dict:
    fig = frontier_figure(df)
    plt.close(fig)
    return {"fig_frontier": fig}


def frontier_table(df: pd.DataFrame) -> Table:
    f = frontier(df)
    return table(f, columns={"recipe": "recipe", "widths": "widths", "epochs": "epochs", "seeds": "seeds",
                             "train_min": "training (min)", "test_acc": "test accuracy (%)",
                             "tta_acc": "with flip TTA (%)", "precision": "precision"},
                 digits={"train_min": 1, "test_acc": 1, "tta_acc": 1}, percent=("test_acc", "tta_acc"))


def throughput_table(bench: pd.DataFrame, peak: dict) -> Table:
    b = bench.copy()
    b["peak_share"] = [r.fit_gflop_per_s / peak["bf16" if "bf16" in r.path else "fp32"] for r in b.itertuples()]
    return table(b, columns={"model": "model", "model_kw": "size", "path": "fast path",
                             "bare_images_per_s": "bare loop (img/s)", "fit_images_per_s": "fit (img/s)",
                             "fit_gflop_per_s": "fit (GFLOP/s)", "peak_share": "share of matmul peak (%)",
                             "fit_overhead": "fit overhead (%)"},
                 digits={"bare_images_per_s": 0, "fit_images_per_s": 0, "fit_gflop_per_s": 1, "peak_share": 0,
                         "fit_overhead": 1}, percent=("peak_share", "fit_overhead"))


def anchors_table() -> Table:
    return table(pd.DataFrame(ANCHORS), columns={"run": "run", "machine": "machine", "minutes": "training (min)",
                                                 "accuracy": "test accuracy (%)", "with TTA": "with TTA (%)"},
                 digits={"minutes": 1, "accuracy": 1, "with TTA": 1})
