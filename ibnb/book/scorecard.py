"""The inductive-bias scorecard: every chapter's results table reduced to seed-paired effects.

An *effect* is the test-metric difference between a model with a mechanism and the same setting without it
(``with − without``), paired by seed, per training-set size, summarised by :func:`ibnb.book.claims.paired_effect`
as a mean with a two-sided Student-t 95 % interval: ``+2.9 [1.1, 4.7] points, n = 3``. Each chapter's table has
its own columns, so each has a small *extractor* here reading the columns the chapter already writes. Whether
an effect helps is decided by the book's one rule, :func:`ibnb.book.claims.judge` (:func:`direction`). Nothing
is retrained: the inputs are the ``book/results/<stem>/<profile>.csv`` tables.
"""
from __future__ import annotations

import math
import textwrap
from typing import Callable

import numpy as np
import pandas as pd

from ibnb.book import claims as C
from ibnb.book.tables import Table, table

EFFECT_COLUMNS = ["mechanism", "comparison", "chapter", "dataset", "n_train", "metric", "mean", "low", "high",
                  "n", "runs", "converged", "unit", "note"]
MECHANISMS = ("architecture", "attention", "augmentation", "weight prior", "TTA / ensembling",
              "SSL objective", "SAM")
#: metrics where a lower value is better (their effects "help" when negative)
LOWER_IS_BETTER = {"cnll", "test_nll", "error_pct"}

Extractor = Callable[[pd.DataFrame], list[dict]]
EXTRACTORS: dict[str, Extractor] = {}


def extractor(stem: str):
    """Register the effect extractor of chapter ``stem``."""
    def wrap(fn: Extractor) -> Extractor:
        EXTRACTORS[stem] = fn
        return fn
    return wrap


def _datasets(df: pd.DataFrame) -> str:
    return ", ".join(sorted(df["dataset"].astype(str).unique())) if "dataset" in df else ""


def effect_row(effect: C.Effect, *, metric: str, n_train: int, dataset: str, **meta) -> dict:
    """One row of the effects frame (:data:`EFFECT_COLUMNS`) from an :class:`~ibnb.book.claims.Effect`."""
    return dict(**meta, dataset=dataset, n_train=int(n_train), metric=metric, mean=effect.mean, low=effect.low,
                high=effect.high, n=effect.n, runs=effect.runs, converged=effect.converged, unit=effect.unit)


def effect_of_row(r) -> C.Effect:
    """The :class:`~ibnb.book.claims.Effect` of an effects-frame row."""
    return C.Effect(float(r["mean"]), float(r["low"]), float(r["high"]), int(r["n"]), str(r["unit"]),
                    runs=int(r["runs"]), converged=int(r["converged"]))


def paired(df: pd.DataFrame, key: str, a, b, *, mechanism: str, comparison: str, chapter: str,
           value: str = "test_acc", by: str = "n_train", scale: float = 100.0, unit: str = "points",
           note: str = "") -> list[dict]:
    """Effect rows ``value[key == a] − value[key == b]`` paired by seed, one per ``by`` group (a group where
    only one side was run gives no row)."""
    if df.empty or not {a, b} <= set(df[key]):
        return []
    rows = []
    for n, g in df.groupby(by):
        e = C.paired_effect(g, key, a, b, value=value, scale=scale, unit=unit)
        if e.n:
            rows.append(effect_row(e, metric=value, n_train=n, dataset=_datasets(df), mechanism=mechanism,
                                   comparison=comparison, chapter=chapter, note=note))
    return rows


@extractor("01_architectures")
def _architectures(df: pd.DataFrame) -> list[dict]:
    ch = "01_architectures"
    plain = df[(df["augment"] == "none") & (~df["permuted"].astype(bool))]
    rows = paired(plain, "model", "cnn", "mlp", mechanism="architecture", comparison="CNN − MLP", chapter=ch)
    rows += paired(plain, "model", "vit", "cnn", mechanism="architecture", comparison="ViT − CNN", chapter=ch)
    rows += paired(plain, "model", "cnn_sa", "cnn", mechanism="attention", comparison="CNN+SA − CNN", chapter=ch)
    for model, name in (("cnn", "CNN"), ("mlp", "MLP"), ("vit", "ViT")):
        m = df[(df["model"] == model) & (~df["permuted"].astype(bool))]
        rows += paired(m, "augment", "crop+flip", "none", mechanism="augmentation",
                       comparison=f"crop+flip − none ({name})", chapter=ch)
    return rows


@extractor("02_mlp_scaling")
def _mlp_scaling(df: pd.DataFrame) -> list[dict]:
    ch = "02_mlp_scaling"
    prior = df[df["experiment"] == "prior"]
    rows = paired(prior, "model", "locally_connected", "dense_layer", mechanism="architecture",
                  comparison="locality: local − dense layer", chapter=ch)
    rows += paired(prior, "model", "conv_layer", "locally_connected", mechanism="architecture",
                   comparison="weight sharing: conv − local layer", chapter=ch)
    ladder = df[df["experiment"] == "ladder"]
    # the ladder's recipes (none / crop+flip / crop+flip + mixup + label smoothing); tables written before the
    # recipes existed compare crop+flip with none
    col, with_, what = (("recipe", "bachmann", "crop+flip, mixup, LS") if "recipe" in ladder
                        else ("augment", "crop+flip", "crop+flip"))
    for model, name in (("mlp", "MLP"), ("bmlp", "bottleneck MLP")):
        rows += paired(ladder[ladder["model"] == model], col, with_, "none", mechanism="augmentation",
                       comparison=f"{what} − none ({name})", chapter=ch)
    return rows


@extractor("03_spatial_attention")
def _spatial_attention(df: pd.DataFrame) -> list[dict]:
    ch, sa, deep = "03_spatial_attention", "team_cnn_sa_mini", "team_cnn_deep_mini"
    rows = paired(df[df["experiment"] == "cifar10"], "model", sa, deep, mechanism="attention",
                  comparison="spatial attention − same depth without", chapter=ch)
    rows += paired(df[df["experiment"] == "pacs"], "model", sa, deep, value="sketch_acc", mechanism="attention",
                   comparison="spatial attention − same depth without, on sketches", chapter=ch,
                   note="trained on PACS photos, tested on sketches (domain shift)")
    return rows


@extractor("04_test_time_augmentation")
def _tta(df: pd.DataFrame) -> list[dict]:
    ch, mech = "04_test_time_augmentation", "TTA / ensembling"
    clean = df[(df["experiment"] == "tta") & (df["domain"] == "clean")].copy()
    if clean.empty:
        return []
    clean["pred"] = clean["method"] + "@" + clean["m"].astype(int).astype(str)
    if "set" not in clean:  # results written before the RandAugment members: one set, trained with crop+flip
        clean["set"] = "crop+flip"
    rows = []
    # crop+flip TTA on the crop+flip members; GPS on the RandAugment members (whose training distribution it fits)
    for method, member_set in (("crop+flip", "crop+flip"), ("GPS", "RandAugment")):
        single = clean[(clean["k"] == 1) & (clean["set"] == member_set)]
        m = int(single.loc[single["method"] == method, "m"].max()) if (single["method"] == method).any() else 0
        if m <= 1:
            continue
        what = f"{method} TTA ({m} views) − central view (single model, {member_set} members)"
        rows += paired(single, "pred", f"{method}@{m}", "central@1", mechanism=mech, comparison=what,
                       chapter=ch, note="paired by ensemble member")
        rows += paired(single, "pred", f"{method}@{m}", "central@1", value="cnll", scale=1.0, unit="nats",
                       mechanism=mech, comparison=what.replace(" (single", ", calibrated NLL (single"),
                       chapter=ch, note="calibrated NLL: lower is better")
    clean = clean[clean["set"] == "crop+flip"]
    k = int(clean["k"].max())
    if k > 1:  # the full ensemble against each of its members (central view)
        cen = clean[clean["pred"] == "central@1"]
        ens = cen[cen["k"] == k].groupby("n_train")[["test_acc", "cnll"]].mean()
        for value, scale, unit, label in (("test_acc", 100.0, "points", ""), ("cnll", 1.0, "nats", ", calibrated NLL")):
            for n, g in cen[cen["k"] == 1].groupby("n_train"):
                flags = g["converged"].astype(bool).tolist() if "converged" in g else [False] * len(g)
                e = C.effect_of((ens.loc[n, value] - g[value]).tolist(), scale=scale, unit=unit, converged=flags)
                rows.append(effect_row(e, metric=value, n_train=n, dataset=_datasets(g), mechanism=mech,
                                       comparison=f"ensemble of {k} − single model{label}", chapter=ch,
                                       note="the ensemble against each of its members"))
    return rows


@extractor("05_sparse_vd")
def _sparse_vd(df: pd.DataFrame) -> list[dict]:
    ch, rows = "05_sparse_vd", []
    tab = df[(df["experiment"] == "table") & (df["labels"].astype(str) == "true")]
    for net, g in tab.groupby("network"):
        rows += paired(g, "method", "sparse VD", "dense", mechanism="weight prior",
                       comparison=f"sparse VD prior − dense ({net})", chapter=ch,
                       note=f"compression {g.loc[g['method'] == 'sparse VD', 'compression'].mean():.0f}×")
    return rows


@extractor("06_deep_weight_prior")
def _deep_weight_prior(df: pd.DataFrame) -> list[dict]:
    ch = "06_deep_weight_prior"
    small = df[df["experiment"] == "small_data"]
    rows = []
    for other in ("log-uniform", "N(0,1)", "learned Gaussian", "L2 (deterministic)"):
        what = "a deterministic net with L2" if other.startswith("L2") else f"{other} prior"
        rows += paired(small, "model", "DWP", other, mechanism="weight prior", comparison=f"DWP − {what}",
                       chapter=ch, note="variational BayesCNN; the DWP is learned on other datasets' kernels")
    return rows


@extractor("07_self_supervised")
def _self_supervised(df: pd.DataFrame) -> list[dict]:
    ch = "07_self_supervised"
    semi = df[df["evaluation"].astype(str).str.startswith("semi_")]
    names = {"vicreg": "VICReg", "barlow_twins": "Barlow Twins", "wmse": "W-MSE"}
    rows = []
    for backbone, g in semi.groupby("model"):
        for method, name in names.items():
            rows += paired(g, "method", method, "scratch", mechanism="SSL objective",
                           comparison=f"{name} pretraining − from scratch ({backbone}, fine-tuned)", chapter=ch,
                           note="training set = the labelled fraction; pretraining saw all images unlabelled")
    return rows


@extractor("08_vit_sam")
def _vit_sam(df: pd.DataFrame) -> list[dict]:
    ch, sam = "08_vit_sam", "sam ρ=0.05"
    runs = df[(df["experiment"] == "sam") & (df["mix"].astype(str) == "none") & (~df["adaptive"].astype(bool))]
    rows = []
    for model, g in runs.groupby("model"):
        if not (g["method"] == sam).any():
            continue
        rows += paired(g, "method", sam, "adamw", mechanism="SAM",
                       comparison=f"SAM (ρ=0.05) − AdamW, equal steps ({model})", chapter=ch)
        rows += paired(g, "method", sam, "adamw ×2 epochs", mechanism="SAM",
                       comparison=f"SAM (ρ=0.05) − AdamW, equal gradients ({model})", chapter=ch,
                       note="AdamW trained twice as many epochs")
    return rows


def effects(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """All effects of the chapters whose tables are given (``{stem: results table}``); chapters without an
    extractor are skipped. Adds ``size``: ``small`` / ``large`` for the smallest / largest training set of each
    comparison (``only`` when it was measured at one size)."""
    rows = [r for stem, df in tables.items() if stem in EXTRACTORS for r in EXTRACTORS[stem](df)]
    out = pd.DataFrame(rows, columns=EFFECT_COLUMNS)
    if out.empty:
        return out.assign(size=pd.Series(dtype=str))
    g = out.groupby(["chapter", "comparison"])["n_train"]
    lo, hi = g.transform("min"), g.transform("max")
    out["size"] = np.where(lo == hi, "only", np.where(out["n_train"] == lo, "small",
                                                      np.where(out["n_train"] == hi, "large", "middle")))
    out["mechanism"] = pd.Categorical(out["mechanism"], MECHANISMS, ordered=True)
    return out.sort_values(["mechanism", "chapter", "comparison", "n_train"]).reset_index(drop=True)


#: the judge's verdict on "the mechanism helps", in the scorecard's words
DIRECTION_WORDS = {C.SUPPORTED: "helps", C.CONTRADICTED: "hurts", C.INCONCLUSIVE: "no clear effect"}


def direction(r) -> str:
    """Does the mechanism help? The book's one rule (:func:`ibnb.book.claims.judge`) applied to the claim "it
    helps" (``> 0``; ``< 0`` for :data:`LOWER_IS_BETTER` metrics): ``helps`` / ``hurts`` when the 95 % interval
    excludes zero (with at least 3 seeds and converged runs), ``no clear effect`` when it spans zero, else
    ``not testable: <reason>`` (at this budget)."""
    sign = -1 if r["metric"] in LOWER_IS_BETTER else 1
    c = C.judge("the mechanism helps", "", "", effect_of_row(r), direction=sign)
    return DIRECTION_WORDS.get(c.verdict, f"not testable: {c.reason}")


def effect_text(r) -> str:
    """``+2.9 [1.1, 4.7] points, n = 3`` (3 digits for NLL effects)."""
    return effect_of_row(r).text(digits=1 if r["unit"] == "points" else 3)


def comparisons(eff: pd.DataFrame) -> pd.DataFrame:
    """One row per comparison: the effect at the smallest and the largest training set, and its direction at
    the largest."""
    rows = []
    for (mech, ch, comp), g in eff.groupby(["mechanism", "chapter", "comparison"], sort=False, observed=True):
        small, large = g.iloc[0], g.iloc[-1]
        rows.append({"mechanism": str(mech), "comparison": f"{comp} [{ch[:2]}; {small['dataset']}]", "chapter": ch,
                     "data": small["dataset"], "smallest set": f"{small['n_train']:,} images: {effect_text(small)}",
                     "largest set": "—" if len(g) == 1 else f"{large['n_train']:,} images: {effect_text(large)}",
                     "at the largest set": direction(large), "note": small["note"]})
    return pd.DataFrame(rows, columns=["mechanism", "comparison", "chapter", "data", "smallest set", "largest set",
                                       "at the largest set", "note"])


def scorecard_table(eff: pd.DataFrame) -> Table:
    """The comparisons through the book's table formatter (the notes go below the table)."""
    return table(comparisons(eff), columns={"mechanism": "mechanism", "comparison": "comparison [chapter; data]",
                                            "smallest set": "smallest training set", "largest set": "largest training set",
                                            "at the largest set": "at the largest set"})


def _interval(r) -> tuple[float, float]:
    if r["n"] < 2 or not math.isfinite(r["low"]):
        return 0.0, 0.0
    return r["mean"] - r["low"], r["high"] - r["mean"]


FOREST_STYLES = {"small": ("o", "tab:blue", "smallest training set", -0.17),
                 "only": ("D", "tab:green", "single size", 0.0),
                 "large": ("s", "tab:red", "largest training set", 0.17)}


def forest_plot(eff: pd.DataFrame, *, linthresh: float = 5.0):
    """One row per accuracy comparison, grouped by mechanism: the effect (points of test accuracy, mean and
    95 % t-interval over seeds) at the smallest (circle) and largest (square) training set, or its only size
    (diamond). The x axis is symmetric-log (linear within ±``linthresh``), so one wide interval does not
    squash the others. Page-wide, fonts ≥ 9 pt. Returns the figure."""
    import matplotlib.pyplot as plt

    from ibnb.core.plots import PAGE_WIDTH

    eff = eff[eff["unit"] == "points"]  # accuracy effects only; NLL effects are in the table
    if eff.empty:
        fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 1.5), layout="constrained")
        ax.text(0.5, 0.5, "no accuracy effect measured at this profile", ha="center", va="center", fontsize=10)
        ax.set_axis_off()
        return fig
    labels, ys, bold = [], {}, []
    for mech, g in eff.groupby("mechanism", sort=True, observed=True):
        bold.append(len(labels))
        labels.append(str(mech))
        for comp, ch in dict.fromkeys(zip(g["comparison"], g["chapter"])):
            ys[(comp, ch)] = len(labels)
            labels.append(textwrap.fill(f"{comp} [{ch[:2]}]", 44))
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 0.3 * len(labels) + 1.3), layout="constrained")
    ax.axvline(0, color="0.4", lw=1)
    for size, (marker, color, label, off) in FOREST_STYLES.items():
        d = eff[eff["size"] == size]
        if d.empty:
            continue
        err = np.array([_interval(r) for _, r in d.iterrows()]).T
        y = [ys[(c, ch)] + off for c, ch in zip(d["comparison"], d["chapter"])]
        ax.errorbar(d["mean"], y, xerr=err, fmt=marker, color=color, capsize=2.5, ms=5, lw=1.2, label=label)
    ax.set_xscale("symlog", linthresh=linthresh, linscale=1.0)
    reach = np.nanmax(np.abs(eff[["mean", "low", "high"]].to_numpy(dtype=float))) if len(eff) else 1.0
    reach = max(5.0, 1.15 * reach) if math.isfinite(reach) else 5.0
    ax.set_xlim(-reach, reach)
    ticks = [t for t in (linthresh, 4 * linthresh, 10 * linthresh, 40 * linthresh) if t < reach]
    ax.set_xticks([-t for t in ticks[::-1]] + [0] + ticks, [f"{-t:g}" for t in ticks[::-1]] + ["0"]
                  + [f"+{t:g}" for t in ticks])
    ax.tick_params(axis="x", labelsize=9)
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    for i in bold:
        ax.get_yticklabels()[i].set_fontweight("bold")
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlabel("with − without (points of test accuracy; symmetric log scale)", fontsize=10)
    ax.minorticks_off()
    ax.grid(axis="y", visible=False)
    fig.legend(loc="outside upper center", ncol=3, fontsize=9, frameon=False)
    return fig


#: the comparison quoted for each mechanism in the book's abstract: (chapter, start of the comparison's name)
HEADLINES = {
    "architecture": ("01_architectures", "CNN − MLP"),
    "attention": ("03_spatial_attention", "spatial attention − same depth without"),
    "augmentation": ("01_architectures", "crop+flip − none (CNN)"),
    "weight prior": ("06_deep_weight_prior", "DWP − N(0,1) prior"),  # the standard baseline, not the weakest
    "TTA / ensembling": ("04_test_time_augmentation", "crop+flip TTA"),
    "SSL objective": ("07_self_supervised", "VICReg pretraining − from scratch"),
    "SAM": ("08_vit_sam", "SAM (ρ=0.05) − AdamW, equal steps (vit)"),
}


def headline_rows(eff: pd.DataFrame, mechanism: str) -> pd.DataFrame:
    """The rows (one per training-set size, smallest first) of the mechanism's headline comparison: the first
    accuracy comparison whose name starts as in :data:`HEADLINES`; empty when it was not measured."""
    if mechanism not in HEADLINES or eff.empty:
        return eff.iloc[:0]
    chapter, start = HEADLINES[mechanism]
    cand = eff[(eff["chapter"] == chapter) & eff["comparison"].str.startswith(start) & (eff["unit"] == "points")]
    if cand.empty:
        return cand
    return cand[cand["comparison"] == cand["comparison"].iloc[0]].sort_values("n_train")


def headline(eff: pd.DataFrame, mechanism: str) -> str | None:
    """The abstract's line for ``mechanism``: its headline comparison at each training-set size where the book's
    rule decides whether it helps (:func:`direction`), e.g. ``"CNN − MLP (cifar10): helps with 200 training
    images, +2.9 [1.1, 4.7] points, n = 3"``; ``None`` when no size of it is decided (or it was not measured):
    an undecided effect is not headlined (:func:`undecided_reason` says why)."""
    g = headline_rows(eff, mechanism)
    decided = [(r, w) for _, r in g.iterrows() if (w := direction(r)) in ("helps", "hurts")]
    if not decided:
        return None
    first = decided[0][0]
    parts = [f"{w} with {r['n_train']:,} training images, {effect_text(r)}" for r, w in decided]
    return f"{first['comparison']} ({first['dataset']}): " + "; ".join(parts)


def undecided_reason(eff: pd.DataFrame, mechanism: str) -> str:
    """Why the mechanism's headline comparison is not headlined: ``"not measured at this profile"``, or the
    direction of its largest training set (``"no clear effect"`` / ``"not testable: <reason>"``)."""
    g = headline_rows(eff, mechanism)
    return "not measured at this profile" if g.empty else direction(g.iloc[-1])
