"""Figures of the test-time-augmentation chapter: metric curves over TTA samples / ensemble size, corrupted
sets, reliability diagrams, GPS traces, MeTTA probes and image grids. Every axis is labelled with its unit; every
figure is page-wide (:data:`ibnb.core.plots.PAGE_WIDTH`) with at most three panels per row. Error bars are one
standard deviation over the members (or member subsets) behind a point, as the captions say."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ibnb.core.plots import PAGE_WIDTH, panel_grid

METHOD_STYLE = {"central": dict(color="#444444", marker="s"), "crop+flip": dict(color="#1f77b4", marker="o"),
                "GPS": dict(color="#d62728", marker="^"), "GPS (accuracy criterion)": dict(color="#ff7f0e", marker="v")}
METRIC_LABEL = {"err": "test error (%)", "cnll": "calibrated NLL (nats)", "nll": "raw NLL (nats)",
                "ece": "ECE (%)", "brier": "Brier score"}


def _value(df: pd.DataFrame, metric: str) -> pd.Series:
    if metric == "err":
        return 100 * (1 - df["acc"])
    if metric == "ece":
        return 100 * df["ece"]
    return df[metric]


def _mean_std(df: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    d = df.assign(v=_value(df, metric))
    return d.groupby(by)["v"].agg(["mean", "std"]).reset_index().fillna({"std": 0.0})


def _line(ax, d: pd.DataFrame, x: str, method: str, label: str | None = None):
    style = METHOD_STYLE.get(method, {})
    if method == "central" and d[x].nunique() == 1 and x == "m":  # one view only: a reference line
        m, s = float(d["mean"].iloc[0]), float(d["std"].iloc[0])
        ax.axhline(m, color=style["color"], ls="--", label=label or method)
        ax.axhspan(m - s, m + s, color=style["color"], alpha=0.12)
        return
    ax.errorbar(d[x], d["mean"], yerr=d["std"], capsize=3, label=label or method, **style)


def curves(grid: pd.DataFrame, *, x: str, panels: list[tuple[str, pd.Series]], metrics=("err", "cnll"),
           methods=None, title: str = "", xlabel: str = "") -> plt.Figure:
    """One row per metric, one column per panel (``(title, boolean mask of grid)``); a line per method,
    mean ± std over the member subsets (or members) in the panel."""
    methods = methods or [m for m in METHOD_STYLE if m in set(grid["method"])]
    fig, axes = plt.subplots(len(metrics), len(panels), figsize=(PAGE_WIDTH, 2.6 * len(metrics)),
                             squeeze=False, sharex="col")
    for j, (ptitle, mask) in enumerate(panels):
        sub = grid[mask.reindex(grid.index)]  # masks may be built on a superset of grid
        for i, metric in enumerate(metrics):
            ax = axes[i][j]
            for method in methods:
                d = _mean_std(sub[sub["method"] == method], [x], metric)
                if len(d):
                    _line(ax, d, x, method)
            ax.grid(alpha=0.3)
            if x == "m":
                ax.set_xscale("log", base=2)
                ticks = sorted(sub[x].unique())
                ax.set_xticks(ticks, [str(t) for t in ticks])
                ax.minorticks_off()
            else:
                ax.set_xticks(sorted(sub[x].unique()))
            if i == 0:
                ax.set_title(ptitle)
            if i == len(metrics) - 1:
                ax.set_xlabel(xlabel or x)
            if j == 0:
                ax.set_ylabel(METRIC_LABEL[metric])
    axes[0][-1].legend()
    if title:
        fig.suptitle(title)
    return fig


def severity_curves(grid: pd.DataFrame, k_values: list[int], m: int, metrics=("err", "cnll")) -> plt.Figure:
    """Metric vs corruption severity (mean over corruptions; severity 0 = clean), per ensemble size."""
    g = grid[(grid["m"] == m) | (grid["method"] == "central")]
    g = g[g["method"] != "GPS (accuracy criterion)"]
    # average over corruptions first, then mean ± std over member subsets
    per = g.groupby(["k", "subset", "method", "severity"])[["acc", "nll", "cnll", "ece"]] \
        .mean().reset_index()
    panels = [(f"single model (k = 1)" if k == 1 else f"ensemble of {k}", per["k"] == k) for k in k_values]
    fig = curves(per, x="severity", panels=panels, metrics=metrics, xlabel="corruption severity (0 = clean)")
    for ax in fig.axes:
        ax.set_xticks(sorted(per["severity"].unique()))
    return fig


def corruption_bars(grid: pd.DataFrame, k: int, m: int, metrics=("cnll", "err")) -> plt.Figure:
    """Per corruption (mean over severities) and on clean data: the change of each metric (one row per metric)
    against the central prediction of the same members, one bar per TTA method (mean ± std over member subsets),
    ensemble size ``k``, ``m`` views per member."""
    g = grid[(grid["k"] == k) & ((grid["m"] == m) | (grid["method"] == "central"))
             & (grid["method"] != "GPS (accuracy criterion)")]
    domains = ["clean"] + [c for c in dict.fromkeys(g["domain"]) if c != "clean"]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(PAGE_WIDTH, 2.7 * len(metrics)), squeeze=False, sharex=True)
    for ax, metric in zip(axes[:, 0], metrics):
        per = g.assign(v=_value(g, metric)).groupby(["domain", "subset", "method"])["v"].mean().unstack("method")
        methods = [mm for mm in METHOD_STYLE if mm in per.columns and mm != "central"]
        diff = per[methods].sub(per["central"], axis=0).stack().rename("d").reset_index()
        d = diff.groupby(["domain", "method"])["d"].agg(["mean", "std"]).reset_index().fillna({"std": 0.0})
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            e = d[d["method"] == method].set_index("domain").reindex(domains)
            ax.bar(np.arange(len(domains)) + (i - (len(methods) - 1) / 2) * width, e["mean"], width,
                   yerr=e["std"], capsize=2, label=method, color=METHOD_STYLE[method]["color"])
        ax.axhline(0, color="k", lw=0.8)
        unit = METRIC_LABEL[metric].split("(")[-1].rstrip(")")
        ax.set_ylabel(f"Δ {METRIC_LABEL[metric].split(' (')[0]}\n({'points' if unit == '%' else unit})")
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xticks(np.arange(len(domains)), [s.replace("_", "\n") for s in domains])
    axes[0, 0].legend()
    return fig


def ensemble_size_curves(grid: pd.DataFrame, S: int, sc: int) -> plt.Figure:
    """Error and calibrated NLL against the ensemble size k: clean test set with ``S`` views per member, and the
    mean over the corrupted sets with ``sc`` views (central: one view); mean ± std over member subsets."""
    g = grid[grid["method"] != "GPS (accuracy criterion)"]
    clean = g[g["domain"] == "clean"]
    corr = g[g["domain"] != "clean"].groupby(["k", "subset", "method", "m"], as_index=False)[
        ["acc", "nll", "cnll", "ece"]].mean()
    keep = lambda d, m: d[(d["m"] == m) | (d["method"] == "central")]  # noqa: E731
    both = pd.concat([keep(clean, S).assign(panel="clean"), keep(corr, sc).assign(panel="corrupted")],
                     ignore_index=True)
    return curves(both, x="k", xlabel="ensemble members, k",
                  panels=[(f"clean test set, {S} views", both["panel"] == "clean"),
                          (f"corrupted sets (mean), {sc} views", both["panel"] == "corrupted")])


def reliability_diagrams(items: list[tuple[str, dict]]) -> plt.Figure:
    """Reliability diagrams: per item (title, :func:`ibnb.core.metrics.reliability` output) accuracy vs
    confidence per bin, with the diagonal of perfect calibration."""
    cols = 2 if len(items) == 4 else min(3, len(items))
    rows = -(-len(items) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PAGE_WIDTH * (0.75 if cols == 2 else 1), 2.9 * rows), squeeze=False,
                             sharex=True, sharey=True)
    for ax, (title, r) in zip(axes.flat, items):
        edges = r["edges"].cpu().numpy()
        acc, conf, cnt = (r[k].cpu().numpy() for k in ("accuracy", "confidence", "count"))
        centers = (edges[:-1] + edges[1:]) / 2
        ax.bar(centers, np.nan_to_num(acc) * 100, width=edges[1] - edges[0], edgecolor="k", alpha=0.7,
               label="accuracy in bin")
        ax.plot(conf * 100, acc * 100, "o", color="#d62728", ms=3, label="mean confidence")
        ax.plot([0, 100], [0, 100], "k--", lw=1)
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_title(title, fontsize=9.5)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("confidence (%)")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    axes[0][0].legend(loc="upper left", fontsize=8)
    return fig


def gps_traces(traces: dict[str, list[float]], labels: dict[str, str]) -> plt.Figure:
    """The search criterion on the validation set after each greedy step, one panel per criterion."""
    fig, axes = panel_grid(len(traces), height=2.8)
    for ax, (method, trace) in zip(axes, traces.items()):
        y = np.asarray(trace) * (100 if "accuracy" in method else 1)
        ax.plot(np.arange(1, len(y) + 1), y, marker="o", color=METHOD_STYLE[method]["color"])
        ax.set_xlabel("policy size (sub-policies)")
        ax.set_ylabel(labels[method])
        ax.set_title(method)
        ax.grid(alpha=0.3)
    return fig


def image_grid(rows: list[tuple[str, torch.Tensor]], col_titles: list[str] | None = None) -> plt.Figure:
    """A page-wide grid of images: each row is (label, float [0,1] or uint8 batch ``n×C×H×W``)."""
    n = max(len(x) for _, x in rows)
    side = min(0.95, (PAGE_WIDTH - 1.8) / n)
    fig, axes = plt.subplots(len(rows), n, figsize=(side * n + 1.8, side * len(rows) + 0.4), squeeze=False)
    for i, (label, x) in enumerate(rows):
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        for j in range(n):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(x):
                ax.imshow(x[j].clamp(0, 1).permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            if i == 0 and col_titles:
                ax.set_title(col_titles[j], fontsize=8)
        axes[i][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    return fig


def metta_plot(metta_df: pd.DataFrame) -> plt.Figure:
    """Left: probe accuracy vs number of views (mean features) with the central-feature level; right: the
    interpolation (1 − a)·mean + a·central. Mean ± std over encoders of each kind."""
    fig, axes = panel_grid(2, height=3.0)
    colors = {"trained": "#d62728", "untrained": "#7f7f7f"}
    for kind, d in metta_df.groupby("encoder", sort=False):
        c = colors.get(kind)
        mean = d[d["features"] == "mean over views"].groupby("views")["probe_acc"].agg(["mean", "std"]).fillna(0)
        cen = d[d["features"] == "central"]["probe_acc"]
        axes[0].errorbar(mean.index, 100 * mean["mean"], yerr=100 * mean["std"], marker="o", capsize=3, color=c,
                         label=f"{kind}: mean of N views")
        axes[0].axhline(100 * cen.mean(), color=c, ls="--", label=f"{kind}: central view")
        it = d[d["features"] == "interpolation"].groupby("alpha")["probe_acc"].agg(["mean", "std"]).fillna(0)
        axes[1].errorbar(it.index, 100 * it["mean"], yerr=100 * it["std"], marker="o", capsize=3, color=c, label=kind)
    axes[0].set_xscale("log")
    ticks = sorted(metta_df.loc[metta_df["features"] == "mean over views", "views"].unique())
    axes[0].set_xticks(ticks, [str(t) for t in ticks])
    axes[0].minorticks_off()
    axes[0].set_xlabel("views averaged, N (log scale)")
    axes[0].set_ylabel("linear-probe test accuracy (%)")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("a in (1 − a)·mean + a·central")
    axes[1].set_ylabel("linear-probe test accuracy (%)")
    axes[1].legend(fontsize=8, title="encoder")
    for ax in axes:
        ax.grid(alpha=0.3)
    return fig
