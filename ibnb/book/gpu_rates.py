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


#: the path ``fit`` takes for every model on CUDA (:func:`ibnb.core.precision.fast_path`)
CUDA_PATH = "bf16+channels_last"


def fit_rows(rates: pd.DataFrame) -> pd.DataFrame:
    """Per model, size and batch: the row of the path ``fit`` takes on CUDA (bf16 + channels-last) where the survey
    measured it, else its fp32 row (the survey measures bf16 only together with channels-last, which
    :func:`ibnb.core.bench.compare` leaves out for nets without convolutions and for the convolutions its
    channels-last rule excludes)."""
    ok = rates.dropna(subset=["fit_images_per_s"]) if "fit_images_per_s" in rates else rates.iloc[:0]
    if ok.empty:
        return ok
    ok = ok.assign(_rank=(ok["path"] != CUDA_PATH).astype(int))
    first = ok.sort_values("_rank", kind="stable").groupby(["model", "model_kw", "batch_size"], sort=False).head(1)
    return first.loc[sorted(first.index)].drop(columns="_rank")


def _label(r) -> str:
    label = f"`{r.model}` {_size(r.model_kw)}".strip()
    if _food_head(r):
        label += " (Food-101 head)"
    return label


def _food_head(r) -> bool:
    """A chapter-03 team model measured before the survey built it as chapter 03 does (10 classes, 32×32)."""
    return str(r.model).startswith("team_") and "image_size" not in json.loads(r.model_kw or "{}")


def rate_frame(rates: pd.DataFrame) -> pd.DataFrame:
    """The page's table: model, chapters, training MFLOP per image, the assumed and the measured images/s of the
    path ``fit`` takes (:func:`fit_rows`), the measured TFLOP/s, their ratio and what bf16 + channels-last gained
    over fp32; models whose measurement failed are left out."""
    rows = [{"model": _label(r), "chapters": str(r.chapter), "batch": int(r.batch_size),
             "training MFLOP / image": _sig(r.train_gflop_per_image * 1e3),
             "assumed (images/s)": f"{r.assumed_images_per_s:,.0f}", "measured (images/s)": f"{r.fit_images_per_s:,.0f}",
             "path measured": "bf16 + channels-last" if r.path == CUDA_PATH else "fp32 only",
             "measured TFLOP/s": _sig(r.fit_gflop_per_s / 1e3), "measured / assumed": f"{_sig(100 * r.fit_vs_assumed)} %",
             "bf16 + channels-last vs fp32": _gain(rates, r)} for r in fit_rows(rates).itertuples()]
    return pd.DataFrame(rows)


def _gain(rates: pd.DataFrame, r) -> str:
    """``fit``'s images/s in bf16 + channels-last relative to fp32 for the model of row ``r`` ("not measured"
    where the survey measured fp32 only: no convolutions, or one the channels-last rule excludes)."""
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
    rows = fit_rows(rates)
    if rows.empty:
        return {"gpu_rate_sentence": Markdown("No GPU rate has been measured yet (`python -m ibnb.book.gpu_check`).")}
    ratio = rows["fit_vs_assumed"]
    failed = rates[rates["fit_images_per_s"].isna()]["model"].tolist() if "fit_images_per_s" in rates else []
    peak = env.get("matmul_gflop_per_s", {})
    big, small = rows.loc[ratio.idxmax()], rows.loc[ratio.idxmin()]
    pct = lambda x: f"{_sig(100 * x)} %"  # noqa: E731
    text = (f"On {env.get('device', 'a GPU')} (PyTorch {env.get('torch', '?')}, measured "
            f"{str(env.get('started_utc', ''))[:10]}; a bf16 matrix product of size 8,192 ran at "
            f"{peak.get('bf16', float('nan')) / 1e3:,.0f} TFLOP/s) the {len(rows)} models measured trained through "
            f"`fit` at {pct(ratio.min())} to {pct(ratio.max())} of the rate the cost model assumes (median "
            f"{pct(ratio.median())}): from `{small.model}` ({small.fit_images_per_s:,.0f} images/s, "
            f"{_sig(small.fit_gflop_per_s / 1e3)} TFLOP/s) to `{big.model}` ({big.fit_images_per_s:,.0f} images/s, "
            f"{_sig(big.fit_gflop_per_s / 1e3)} TFLOP/s). Model by model, the estimated GPU seconds of the cost table "
            f"above are lower bounds by a factor of {1 / ratio.max():,.0f} to {1 / ratio.min():,.0f}: at 32×32 and "
            "28×28 the small models are bound by per-step work, not arithmetic.")
    if failed:
        text += " Not measured (the check's own model specification failed): " + ", ".join(f"`{m}`" for m in failed) + "."
    return {"gpu_rate_sentence": Markdown(text), "gpu_rate_median": Markdown(pct(ratio.median()))}
