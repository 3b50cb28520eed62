"""The inductive-bias scorecard: every chapter's results table reduced to paired effects.

An *effect* is the test-metric difference between a model with a mechanism and the same setting without
it (``with − without``), paired by seed where the chapter paired its runs, summarised as mean, standard
deviation (ddof=1) and number of seeds, per training-set size. Each chapter's table has its own columns,
so each has a small *extractor* here; the scorecard notebook only calls :func:`effects`. Nothing is
retrained: the inputs are the committed ``book/results/<stem>/<profile>.csv`` files.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from ibnb.book.results import paired_difference

EFFECT_COLUMNS = ["mechanism", "comparison", "chapter", "dataset", "n_train", "metric", "mean", "std", "n",
                  "unit", "note"]
MECHANISMS = ("architecture", "attention", "augmentation", "weight prior", "TTA / ensembling",
              "SSL objective", "SAM")

Extractor = Callable[[pd.DataFrame], list[dict]]
EXTRACTORS: dict[str, Extractor] = {}


def extractor(stem: str):
    """Register the effect extractor of chapter ``stem``."""
    def wrap(fn: Extractor) -> Extractor:
        EXTRACTORS[stem] = fn
        return fn
    return wrap


def paired(df: pd.DataFrame, key: str, a, b, *, mechanism: str, comparison: str, chapter: str,
           value: str = "test_acc", by: str = "n_train", scale: float = 100.0, unit: str = "points",
           note: str = "") -> list[dict]:
    """Effect rows ``value[key == a] − value[key == b]`` paired by seed, one per ``by`` group."""
    if df.empty or not {a, b} <= set(df[key]):
        return []
    d = paired_difference(df, key, a, b, by=by, value=value)
    dataset = ", ".join(sorted(df["dataset"].astype(str).unique())) if "dataset" in df else ""
    return [dict(mechanism=mechanism, comparison=comparison, chapter=chapter, dataset=dataset, n_train=int(n),
                 metric=value, mean=scale * r["mean"], std=scale * r["std"], n=int(r["n"]), unit=unit, note=note)
            for n, r in d.iterrows() if r["n"] > 0]


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
    for model, name in (("mlp", "MLP"), ("bmlp", "bottleneck MLP")):
        rows += paired(ladder[ladder["model"] == model], "augment", "crop+flip", "none", mechanism="augmentation",
                       comparison=f"crop+flip − none ({name})", chapter=ch)
    return rows


@extractor("03_spatial_attention")
def _spatial_attention(df: pd.DataFrame) -> list[dict]:
    ch, sa, deep = "03_spatial_attention", "team_cnn_sa_mini", "team_cnn_deep_mini"
    rows = paired(df[df["experiment"] == "cifar10"], "model", sa, deep, mechanism="attention",
                  comparison="spatial attention − same depth without", chapter=ch)
    pacs = df[df["experiment"] == "pacs"]
    rows += paired(pacs, "model", sa, deep, value="sketch_acc", mechanism="attention",
                   comparison="spatial attention − same depth without, on sketches", chapter=ch,
                   note="trained on PACS photos, tested on sketches (domain shift)")
    return rows



@extractor("04_test_time_augmentation")
def _tta(df: pd.DataFrame) -> list[dict]:
    ch = "04_test_time_augmentation"
    clean = df[(df["experiment"] == "tta") & (df["domain"] == "clean")].copy()
    if clean.empty:
        return []
    clean["pred"] = clean["method"] + "@" + clean["m"].astype(int).astype(str)
    single = clean[clean["k"] == 1]
    rows = []
    for method in ("crop+flip", "GPS"):
        m = int(single.loc[single["method"] == method, "m"].max()) if (single["method"] == method).any() else 0
        if m <= 1:
            continue
        what = f"{method} TTA ({m} views) − central view (single model)"
        rows += paired(single, "pred", f"{method}@{m}", "central@1", mechanism="TTA / ensembling", comparison=what,
                       chapter=ch, note="paired by ensemble member")
        rows += paired(single, "pred", f"{method}@{m}", "central@1", value="cnll", scale=1.0, unit="nats",
                       mechanism="TTA / ensembling", comparison=what.replace(" (single", ", calibrated NLL (single"),
                       chapter=ch, note="calibrated NLL: lower is better")
    k = int(clean["k"].max())
    if k > 1:  # the full ensemble against each of its members (central view)
        cen = clean[clean["pred"] == "central@1"]
        ens = cen[cen["k"] == k].groupby("n_train")[["test_acc", "cnll"]].mean()
        for value, scale, unit, label in (("test_acc", 100.0, "points", ""), ("cnll", 1.0, "nats", ", calibrated NLL")):
            for n, g in cen[cen["k"] == 1].groupby("n_train"):
                d = scale * (ens.loc[n, value] - g[value])
                rows.append(dict(mechanism="TTA / ensembling", comparison=f"ensemble of {k} − single model{label}",
                                 chapter=ch, dataset=", ".join(sorted(g["dataset"].astype(str).unique())),
                                 n_train=int(n), metric=value, mean=float(d.mean()), std=float(d.std()), n=len(d),
                                 unit=unit, note="the ensemble against each of its members"))
    return rows


@extractor("05_sparse_vd")
def _sparse_vd(df: pd.DataFrame) -> list[dict]:
    ch, rows = "05_sparse_vd", []
    table = df[(df["experiment"] == "table") & (df["labels"].astype(str) == "true")]
    for net, g in table.groupby("network"):
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
    ch = "08_vit_sam"
    runs = df[(df["experiment"] == "sam") & (df["mix"].astype(str) == "none") & (~df["adaptive"].astype(bool))]
    rows = []
    for model, g in runs.groupby("model"):
        sam = "sam ρ=0.05" if (g["method"] == "sam ρ=0.05").any() else None
        if sam is None:
            continue
        rows += paired(g, "method", sam, "adamw", mechanism="SAM", comparison=f"SAM (ρ=0.05) − AdamW, equal steps ({model})",
                       chapter=ch)
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


#: metrics where a lower value is better (their effects count as "helps" when negative)
LOWER_IS_BETTER = {"cnll", "test_nll", "error_pct"}


def verdict(mean: float, std: float, metric: str = "test_acc") -> str:
    """``helps`` / ``hurts`` when the mean effect is more than one std from zero (in the metric's good
    direction), else ``no clear effect``."""
    std = 0.0 if std != std else std
    mean = -mean if metric in LOWER_IS_BETTER else mean
    return "helps" if mean > std else "hurts" if mean < -std else "no clear effect"


def scorecard_table(eff: pd.DataFrame) -> pd.DataFrame:
    """One row per comparison: the effect at the smallest and the largest training set, formatted. The
    chapter is the bracketed number after the comparison; ``note`` says what a comparison's unit or pairing is."""
    def fmt(r) -> str:
        d = 1 if r["unit"] == "points" else 3
        s = "" if r["std"] != r["std"] else f" ± {r['std']:.{d}f}"
        return f"{r['mean']:+.{d}f}{s} {'' if r['unit'] == 'points' else r['unit'] + ' '}(n={r['n']})"

    rows = []
    for (mech, ch, comp), g in eff.groupby(["mechanism", "chapter", "comparison"], sort=False, observed=True):
        small, large = g.iloc[0], g.iloc[-1]
        rows.append({"mechanism": mech, "comparison": f"{comp} [{ch[:2]}]", "data": small["dataset"],
                     "small set": f"{small['n_train']:,}: {fmt(small)}",
                     "large set": "—" if len(g) == 1 else f"{large['n_train']:,}: {fmt(large)}",
                     "at the largest set": verdict(large["mean"], large["std"], large["metric"]),
                     "note": small["note"]})
    return pd.DataFrame(rows)


def forest_plot(eff: pd.DataFrame, title: str = ""):
    """One row per comparison: the effect (points of test accuracy, mean ± std over seeds) at the smallest
    (circle) and largest (square) training set; grey band = no effect. Returns the figure."""
    import matplotlib.pyplot as plt

    eff = eff[eff["unit"] == "points"]  # accuracy effects only; NLL effects are in the table
    keys = list(dict.fromkeys(zip(eff["mechanism"].astype(str), eff["comparison"], eff["chapter"])))
    fig, ax = plt.subplots(figsize=(11, 0.36 * len(keys) + 1.4))
    ax.axvline(0, color="0.5", lw=1)
    styles = {"small": ("o", "tab:blue", "smallest training set"), "only": ("D", "tab:green", "single size"),
              "large": ("s", "tab:red", "largest training set")}
    seen = set()
    for i, (mech, comp, ch) in enumerate(keys):
        g = eff[(eff["comparison"] == comp) & (eff["chapter"] == ch)]
        for size, (marker, color, label) in styles.items():
            r = g[g["size"] == size]
            if r.empty:
                continue
            r = r.iloc[0]
            off = {"small": -0.15, "large": 0.15, "only": 0.0}[size]
            ax.errorbar(r["mean"], i + off, xerr=0 if r["std"] != r["std"] else r["std"], fmt=marker, color=color,
                        capsize=3, label=None if size in seen else label)
            seen.add(size)
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels([f"{m}: {c}  [{ch[:2]}]" for m, c, ch in keys], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("effect on test accuracy (percentage points, with − without; mean ± std over seeds)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def claims_index(claims: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """All chapters' claims audits in one table, with an HTML link to each chapter's audit section."""
    if not claims:
        return pd.DataFrame(columns=["chapter", "claim", "source", "measurement", "verdict", "verdict_class", "link"])
    df = pd.concat(claims.values(), ignore_index=True)
    df["link"] = [f'<a href="{c}.html#{s}">{c[:2]}</a>' for c, s in zip(df["chapter"], df["section"])]
    return df


def bib_keys() -> set[str]:
    """Citation keys of ``book/references.bib`` (to cite a claim's source where it is a key)."""
    import re

    from ibnb.core.utils import repo_root

    bib = repo_root() / "book" / "references.bib"
    return set(re.findall(r"^@\w+\{([^,\s]+),", bib.read_text(), flags=re.M)) if bib.exists() else set()


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


def headline(eff: pd.DataFrame, mechanism: str) -> str | None:
    """``"CNN − MLP: +2.9 ± 0.6 points with 200 training images, +1.4 ± 0.4 with 3,200 (cifar10, 2 seeds)"``
    for the mechanism's headline comparison (the first accuracy comparison whose name starts as in
    :data:`HEADLINES`); ``None`` when it was not measured."""
    if mechanism not in HEADLINES:
        return None
    chapter, start = HEADLINES[mechanism]
    cand = eff[(eff["chapter"] == chapter) & eff["comparison"].str.startswith(start) & (eff["unit"] == "points")]
    if cand.empty:
        return None
    comparison = cand["comparison"].iloc[0]
    g = cand[cand["comparison"] == comparison].sort_values("n_train")

    def one(r) -> str:
        s = "" if r["std"] != r["std"] else f" ± {r['std']:.1f}"
        return f"{r['mean']:+.1f}{s}"

    first, last = g.iloc[0], g.iloc[-1]
    unit = first["unit"]
    text = f"{comparison}: {one(first)} {unit} with {first['n_train']:,} training images"
    if len(g) > 1:
        text += f", {one(last)} with {last['n_train']:,}"
    return text + f" ({first['dataset']}, {first['n']} seeds)"
