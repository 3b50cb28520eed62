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

from .results import paired_difference

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


def verdict(mean: float, std: float) -> str:
    """``helps`` / ``hurts`` when the mean effect is more than one std from zero, else ``no clear effect``."""
    std = 0.0 if std != std else std
    return "helps" if mean > std else "hurts" if mean < -std else "no clear effect"


def scorecard_table(eff: pd.DataFrame) -> pd.DataFrame:
    """One row per comparison: the effect at the smallest and the largest training set, formatted."""
    def fmt(r) -> str:
        s = "" if r["std"] != r["std"] else f" ± {r['std']:.1f}"
        return f"{r['mean']:+.1f}{s} (n={r['n']})"

    rows = []
    for (mech, ch, comp), g in eff.groupby(["mechanism", "chapter", "comparison"], sort=False, observed=True):
        small, large = g.iloc[0], g.iloc[-1]
        rows.append({"mechanism": mech, "comparison": comp, "chapter": ch, "data": small["dataset"],
                     "small set": f"{small['n_train']:,}: {fmt(small)}",
                     "large set": "—" if len(g) == 1 else f"{large['n_train']:,}: {fmt(large)}",
                     "at the largest set": verdict(large["mean"], large["std"]), "note": small["note"]})
    return pd.DataFrame(rows)


def forest_plot(eff: pd.DataFrame, title: str = ""):
    """One row per comparison: the effect (points of test accuracy, mean ± std over seeds) at the smallest
    (circle) and largest (square) training set; grey band = no effect. Returns the figure."""
    import matplotlib.pyplot as plt

    keys = list(dict.fromkeys(zip(eff["mechanism"].astype(str), eff["comparison"], eff["chapter"])))
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(keys) + 1.4))
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
    ax.set_yticklabels([f"{m}: {c}  [{ch[:2]}]" for m, c, ch in keys], fontsize=8)
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

    from .utils import repo_root

    bib = repo_root() / "book" / "references.bib"
    return set(re.findall(r"^@\w+\{([^,\s]+),", bib.read_text(), flags=re.M)) if bib.exists() else set()


#: the comparison quoted for each mechanism in the book's abstract: (chapter, comparison)
HEADLINES = {
    "architecture": ("01_architectures", "CNN − MLP"),
    "attention": ("03_spatial_attention", "spatial attention − same depth without"),
    "augmentation": ("01_architectures", "crop+flip − none (CNN)"),
}


def headline(eff: pd.DataFrame, mechanism: str) -> str | None:
    """``"CNN − MLP: +2.9 ± 0.6 points with 200 training images, +1.4 ± 0.4 with 3,200 (cifar10, 2 seeds)"``
    for the mechanism's headline comparison; ``None`` when it was not measured."""
    if mechanism not in HEADLINES:
        return None
    chapter, comparison = HEADLINES[mechanism]
    g = eff[(eff["chapter"] == chapter) & (eff["comparison"] == comparison)].sort_values("n_train")
    if g.empty:
        return None

    def one(r) -> str:
        s = "" if r["std"] != r["std"] else f" ± {r['std']:.1f}"
        return f"{r['mean']:+.1f}{s}"

    first, last = g.iloc[0], g.iloc[-1]
    unit = first["unit"]
    text = f"{comparison}: {one(first)} {unit} with {first['n_train']:,} training images"
    if len(g) > 1:
        text += f", {one(last)} with {last['n_train']:,}"
    return text + f" ({first['dataset']}, {first['n']} seeds)"
