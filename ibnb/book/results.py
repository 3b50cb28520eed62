"""Tidy results tables: ``book/results/<notebook-stem>/<profile>.csv``, one row per trained model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ibnb.core.metrics import summarize  # noqa: F401  (re-exported for the pages)
from ibnb.core.utils import atomic_write, env_path, repo_root

COLUMNS = ["experiment", "model", "dataset", "n_train", "seed", "epochs", "params", "test_acc", "test_nll",
           "wall_s", "images_per_s", "device"]


def results_dir() -> Path:
    return env_path("IBNB_RESULTS", repo_root() / "book" / "results")


def results_path(stem: str, profile: str) -> Path:
    return results_dir() / stem / f"{profile}.csv"


def write_results(rows: list[dict] | pd.DataFrame, stem: str, profile: str) -> Path:
    """Validate and write a results table atomically (required columns first, extra columns after)."""
    df = pd.DataFrame(rows)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"results for {stem} lack required columns {missing}")
    if df.empty:
        raise ValueError(f"refusing to write an empty results table for {stem}")
    if not np.isfinite(df["test_acc"].astype(float)).all():
        raise ValueError(f"results for {stem} contain non-finite test accuracies")
    df = df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]
    return atomic_write(results_path(stem, profile), df.to_csv(index=False))


def read_results(stem: str, profile: str) -> pd.DataFrame:
    path = results_path(stem, profile)
    if not path.exists():
        raise FileNotFoundError(f"No results table {path}; execute notebooks/{stem}.ipynb with profile={profile} "
                                f"(python -m ibnb run {stem} --profile {profile}).")
    return pd.read_csv(path)


def paired_difference(df: pd.DataFrame, key: str, a, b, by: str = "model", value: str = "test_acc") -> pd.DataFrame:
    """Per ``by`` group: mean, std (ddof=1) and count over seeds of ``value[key == a] - value[key == b]``,
    paired by seed (rows must be unique per ``by``, ``seed`` and ``key``)."""
    wide = df.pivot_table(index=[by, "seed"], columns=key, values=value, aggfunc="first")
    diff = (wide[a] - wide[b]).dropna().groupby(level=0)
    return pd.DataFrame({"mean": diff.mean(), "std": diff.std(), "n": diff.count()})


def read_all(profile: str, claims: bool = False, root: Path | None = None) -> dict[str, pd.DataFrame]:
    """Every chapter's results table (or claims audit) at ``profile``, keyed by notebook stem (from ``root``,
    default :func:`results_dir`)."""
    name = f"{profile}-claims.csv" if claims else f"{profile}.csv"
    return {p.parent.name: pd.read_csv(p) for p in sorted((root or results_dir()).glob(f"*/{name}"))}
