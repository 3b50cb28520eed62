"""Measured training rates on a GPU beside the cost model's assumed rate (the reproduce page's check of
:mod:`ibnb.book.cost`).

``python -m ibnb.book.gpu_check --out DIR`` writes ``gpu_throughput.csv`` and ``gpu_env.json`` on the machine it
runs on; copied into ``book/results/`` they are what this module reads. One row per model of the ``gpu`` presets
and fast path: the book's ``fit`` on random images of the chapter's shape at the chapter's batch size, its
training FLOPs per image and the images/s the cost model assumes (:data:`ibnb.book.cost.GPU_UTIL` of
:data:`ibnb.book.cost.GPU_PEAK` divided by those FLOPs).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ibnb.book.page import Markdown
from ibnb.book.tables import Table, table

FILE, ENV_FILE = "gpu_throughput.csv", "gpu_env.json"


def read_rates(results_root: Path) -> tuple[pd.DataFrame, dict]:
    """``(rows, environment)`` of the recorded GPU check; an empty frame and ``{}`` when none is recorded."""
    path, env = Path(results_root) / FILE, Path(results_root) / ENV_FILE
    if not path.exists():
        return pd.DataFrame(), {}
    return pd.read_csv(path), (json.loads(env.read_text()) if env.exists() else {})


def best_rows(rates: pd.DataFrame) -> pd.DataFrame:
    """Per model, size and batch: the measured row of the fastest fast path (the path ``fit`` should take)."""
    ok = rates.dropna(subset=["fit_images_per_s"]) if "fit_images_per_s" in rates else rates.iloc[:0]
    if ok.empty:
        return ok
    idx = ok.groupby(["model", "model_kw", "batch_size"], sort=False)["fit_images_per_s"].idxmax()
    return ok.loc[idx.values]


def rate_frame(rates: pd.DataFrame) -> pd.DataFrame:
    """The page's table: model, chapters, training MFLOP per image, the assumed and the measured images/s (the
    fastest path measured), the measured TFLOP/s, their ratio and what bf16 + channels-last gained over fp32;
    models whose measurement failed are left out."""
    best = best_rows(rates)
    rows = [{"model": f"`{r.model}` {_size(r.model_kw)}".strip(), "chapters": str(r.chapter),
             "batch": int(r.batch_size), "training MFLOP / image": _sig(r.train_gflop_per_image * 1e3),
             "assumed (images/s)": f"{r.assumed_images_per_s:,.0f}", "measured (images/s)": f"{r.fit_images_per_s:,.0f}",
             "measured TFLOP/s": _sig(r.fit_gflop_per_s / 1e3), "measured / assumed": f"{_sig(100 * r.fit_vs_assumed)} %",
             "bf16 + channels-last vs fp32": _gain(rates, r)} for r in best.itertuples()]
    return pd.DataFrame(rows)


def _gain(rates: pd.DataFrame, r) -> str:
    """``fit``'s images/s in bf16 + channels-last relative to fp32 for the model of row ``r`` ("not measured"
    where the survey left the layout out: a convolution below the channels-last rule's input channels)."""
    same = rates[(rates["model"] == r.model) & (rates["model_kw"] == r.model_kw) & (rates["batch_size"] == r.batch_size)]
    by = dict(zip(same["path"], same["fit_images_per_s"]))
    if "fp32" not in by or "bf16+channels_last" not in by:
        return "not measured"
    return f"{100 * (by['bf16+channels_last'] / by['fp32'] - 1):+.0f} %"


def _sig(x: float) -> str:
    """Two significant digits, no exponent: 0.063, 1.2, 29, 1,165."""
    return f"{x:,.0f}" if abs(x) >= 10 else f"{float(f'{x:.2g}'):g}"


def _size(kw: str) -> str:
    d = json.loads(kw) if isinstance(kw, str) and kw else {}
    d.pop("image_size", None), d.pop("num_classes", None)
    return ", ".join(f"{k} {v}" for k, v in d.items())


def rate_table(rates: pd.DataFrame) -> Table:
    return table(rate_frame(rates))


def numbers(rates: pd.DataFrame, env: dict) -> dict:
    """The sentence the reproduce page quotes about the measured GPU rates."""
    best = best_rows(rates)
    if best.empty:
        return {"gpu_rate_sentence": Markdown("No GPU rate has been measured yet (`python -m ibnb.book.gpu_check`).")}
    ratio = best["fit_vs_assumed"]
    failed = rates[rates["fit_images_per_s"].isna()]["model"].tolist() if "fit_images_per_s" in rates else []
    peak = env.get("matmul_gflop_per_s", {})
    big, small = best.loc[ratio.idxmax()], best.loc[ratio.idxmin()]
    text = (f"On {env.get('device', 'a GPU')} (PyTorch {env.get('torch', '?')}, measured "
            f"{str(env.get('started_utc', ''))[:10]}; a bf16 matrix product of size 8,192 ran at "
            f"{peak.get('bf16', float('nan')) / 1e3:,.0f} TFLOP/s) the {len(best)} models of the `gpu` presets "
            f"trained through `fit` at {ratio.min():.2%} to {ratio.max():.0%} of the rate the cost model assumes "
            f"(median {ratio.median():.1%}): from `{small.model}` ({small.fit_images_per_s:,.0f} images/s, "
            f"{small.fit_gflop_per_s / 1e3:.2g} TFLOP/s) to `{big.model}` ({big.fit_images_per_s:,.0f} images/s, "
            f"{big.fit_gflop_per_s / 1e3:.0f} TFLOP/s). So the estimated GPU seconds below are lower bounds by "
            f"a factor of {1 / ratio.max():.0f} to {1 / ratio.min():,.0f}: at 32×32 and 28×28 the small models are "
            "bound by per-step work, not arithmetic.")
    if failed:
        text += " Not measured (the check's own model specification failed): " + ", ".join(f"`{m}`" for m in failed) + "."
    return {"gpu_rate_sentence": Markdown(text), "gpu_rate_median": Markdown(f"{ratio.median():.1%}")}
