"""Tidy results tables: ``book/results/<notebook-stem>/<profile>.csv``, one row per trained model.

Tables are validated on write (required columns, finite accuracies) and on read (:func:`read_table`): a row
with the wrong number of fields, a missing required column or a non-numeric value in a numeric column raises
:class:`ResultsError` naming the file, the row (its line in the file) and the column, with the fix.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from ibnb.core.metrics import summarize  # noqa: F401  (re-exported for the pages)
from ibnb.core.utils import atomic_write, env_path, repo_root

COLUMNS = ["experiment", "model", "dataset", "n_train", "seed", "epochs", "params", "test_acc", "test_nll",
           "wall_s", "images_per_s", "device"]
NUMERIC = ["n_train", "seed", "epochs", "params", "test_acc", "test_nll", "wall_s", "images_per_s"]
TIMING_COLUMNS = ["notebook", "profile", "wall_s", "executed_at", "device", "cpu_threads", "commit"]


class ResultsError(ValueError):
    """A results table that does not match its schema; the message names file, row, column and the fix."""


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


def _fix(path: Path) -> str:
    stem, profile = path.parent.name, path.stem
    if path.name == "timings.csv":
        return ("Fix: restore it from git (`git checkout -- <file>`) or delete it; the runner writes a new row "
                "after every execution.")
    return (f"Fix: restore it from git (`git checkout -- <file>`) or regenerate it with "
            f"`python -m ibnb run {stem} --profile {profile} --force`.")


def read_table(path: Path | str, required=COLUMNS, numeric=NUMERIC, strings=(), **read_kw) -> pd.DataFrame:
    """Read a CSV table and check it against its schema: every row has as many fields as the header, every
    ``required`` column exists, every non-empty value of a ``numeric`` column parses as a number; ``strings``
    columns are kept as text (a commit ``19229e2`` is not the float ``1922900.0``)."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ResultsError(f"{path}: cannot be read as CSV ({type(e).__name__}: {e}). {_fix(path)}") from None
    if not lines or not any(h.strip() for h in lines[0]):
        raise ResultsError(f"{path}: empty file, expected a header row with columns {list(required)}. {_fix(path)}")
    header = lines[0]
    for number, row in enumerate(lines[1:], start=2):
        if row and len(row) != len(header):
            raise ResultsError(f"{path}, line {number}: {len(row)} fields, expected {len(header)} (one per column "
                               f"of the header {header}); the row is damaged. {_fix(path)}")
    missing = [c for c in required if c not in header]
    if missing:
        raise ResultsError(f"{path}: column(s) {missing} missing; expected at least {list(required)}, found "
                           f"{header}. {_fix(path)}")
    dtype = {c: str for c in strings if c in header}
    df = pd.read_csv(path, dtype=dtype or None, skip_blank_lines=True, **read_kw)
    for col in [c for c in numeric if c in df.columns]:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ResultsError(f"{path}, line {i + 2} (data row {i + 1}), column {col!r}: expected a number, found "
                               f"{df[col].iloc[i]!r}. {_fix(path)}")
        df[col] = values
    return df


def read_results(stem: str, profile: str) -> pd.DataFrame:
    """A chapter's results table, validated (:func:`read_table`)."""
    path = results_path(stem, profile)
    if not path.exists():
        raise FileNotFoundError(f"No results table {path}; execute notebooks/{stem}.ipynb with profile={profile} "
                                f"(python -m ibnb run {stem} --profile {profile}).")
    return read_table(path)


def read_timings(root: Path | None = None) -> pd.DataFrame:
    """``<root>/timings.csv`` written by the runner, validated, with ``commit`` kept as text (empty frame with
    the timing columns when there is none)."""
    path = (root or results_dir()) / "timings.csv"
    if not path.exists():
        return pd.DataFrame(columns=TIMING_COLUMNS)
    return read_table(path, required=TIMING_COLUMNS, numeric=["wall_s"],
                      strings=["notebook", "profile", "executed_at", "device", "cpu_threads", "commit"])


def paired_difference(df: pd.DataFrame, key: str, a, b, by: str = "model", value: str = "test_acc") -> pd.DataFrame:
    """Per ``by`` group: mean, std (ddof=1) and count over seeds of ``value[key == a] - value[key == b]``,
    paired by seed (rows must be unique per ``by``, ``seed`` and ``key``)."""
    wide = df.pivot_table(index=[by, "seed"], columns=key, values=value, aggfunc="first")
    diff = (wide[a] - wide[b]).dropna().groupby(level=0)
    return pd.DataFrame({"mean": diff.mean(), "std": diff.std(), "n": diff.count()})


def read_all(profile: str, claims: bool = False, root: Path | None = None) -> dict[str, pd.DataFrame]:
    """Every chapter's results table (or claims audit) at ``profile``, keyed by notebook stem (from ``root``,
    default :func:`results_dir`); each is validated (results tables against :data:`COLUMNS`, claims tables for
    damaged rows)."""
    name = f"{profile}-claims.csv" if claims else f"{profile}.csv"
    paths = sorted((root or results_dir()).glob(f"*/{name}"))
    if claims:
        return {p.parent.name: read_table(p, required=(), numeric=(), keep_default_na=False, na_values=[""])
                for p in paths}
    return {p.parent.name: read_table(p) for p in paths}
