"""Tidy results tables: ``book/results/<notebook-stem>/<profile>.csv``, one row per trained model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .utils import atomic_write, env_path, repo_root

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


def summarize(df: pd.DataFrame, by: list[str], value: str = "test_acc") -> pd.DataFrame:
    """Mean, standard deviation (ddof=1; NaN for one seed), and number of seeds of ``value`` per group."""
    g = df.groupby(by, sort=True)[value]
    return g.agg(mean="mean", std="std", n="count").reset_index()


def paired_difference(df: pd.DataFrame, key: str, a, b, by: str = "model", value: str = "test_acc") -> pd.DataFrame:
    """Per ``by`` group: mean, std (ddof=1) and count over seeds of ``value[key == a] - value[key == b]``,
    paired by seed (rows must be unique per ``by``, ``seed`` and ``key``)."""
    wide = df.pivot_table(index=[by, "seed"], columns=key, values=value, aggfunc="first")
    diff = (wide[a] - wide[b]).dropna().groupby(level=0)
    return pd.DataFrame({"mean": diff.mean(), "std": diff.std(), "n": diff.count()})


def versus(mean: float, std: float, other: str, *, scale: float = 100.0, unit: str = "points") -> str:
    """Phrase a signed paired difference against ``other``: ``"3.1 ± 0.8 points ahead of the MLP"``,
    ``"... behind the MLP"``, or ``"level with the MLP (+0.4 ± 1.2 points)"`` when the mean difference is
    within one standard deviation of zero."""
    m, s = scale * float(mean), scale * (0.0 if std != std else float(std))
    if abs(m) <= s:
        return f"level with {other} ({m:+.1f} ± {s:.1f} {unit})"
    return f"{abs(m):.1f} ± {s:.1f} {unit} {'ahead of' if m > 0 else 'behind'} {other}"


# --- claims audits: ``book/results/<stem>/<profile>-claims.csv``, read by the book's claims index ----------------
CLAIM_COLUMNS = ["claim", "source", "measurement", "verdict"]
#: every chapter's verdict wording (prefix, case-insensitive) -> class; the first matching prefix wins, so the
#: negated forms come first
VERDICT_CLASSES = (("not testable", "not tested"), ("not run", "not tested"), ("not tested", "not tested"),
                   ("not measured", "not tested"), ("not comparable", "not tested"),
                   ("not reproduced", "contradicted"), ("not confirmed", "contradicted"),
                   ("not reached", "inconclusive"), ("not resolved", "inconclusive"), ("undecided", "inconclusive"),
                   ("contradict", "contradicted"), ("supported", "supported"), ("agree", "supported"),
                   ("confirmed", "supported"), ("consistent", "supported"), ("reproduced", "supported"),
                   ("partly", "inconclusive"), ("inconclusive", "inconclusive"), ("mixed", "inconclusive"))


def verdict_class(verdict: str) -> str:
    """``supported`` / ``contradicted`` / ``inconclusive`` / ``not tested`` for a chapter's verdict text."""
    text = str(verdict).strip().lower()
    for prefix, cls in VERDICT_CLASSES:
        if text.startswith(prefix):
            return cls
    raise ValueError(f"verdict {verdict!r} does not start with a known wording "
                     f"({', '.join(sorted({p for p, _ in VERDICT_CLASSES}))})")


def claims_path(stem: str, profile: str) -> Path:
    return results_dir() / stem / f"{profile}-claims.csv"


def write_claims(audit: pd.DataFrame, stem: str, profile: str, *, source: str, section: str = "claims-audit",
                 rename: dict[str, str] | None = None) -> Path:
    """Write a chapter's claims audit (one row per claim) for the book's claims index.

    ``rename`` maps the chapter's own column names onto ``claim``/``measurement``/``verdict``; ``source`` is the
    study (a citation key of ``references.bib`` or a short name) unless the table has a ``source`` column;
    ``section`` is the anchor of the audit section on the chapter's page. Verdicts must map onto
    :data:`VERDICT_CLASSES` (checked here, so the index never meets an unknown wording)."""
    df = audit.reset_index() if not isinstance(audit.index, pd.RangeIndex) else audit.copy()
    df = df.rename(columns=rename or {})
    if "source" not in df.columns:
        df["source"] = source
    missing = [c for c in CLAIM_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"claims audit of {stem} lacks columns {missing} (have {list(df.columns)}); pass rename=")
    if df.empty:
        raise ValueError(f"refusing to write an empty claims audit for {stem}")
    df["verdict_class"] = df["verdict"].map(verdict_class)
    df["chapter"], df["section"] = stem, section
    df = df[["chapter", "section"] + CLAIM_COLUMNS + ["verdict_class"] + [
        c for c in df.columns if c not in CLAIM_COLUMNS + ["chapter", "section", "verdict_class"]]]
    return atomic_write(claims_path(stem, profile), df.to_csv(index=False))


def read_all(profile: str, claims: bool = False, root: Path | None = None) -> dict[str, pd.DataFrame]:
    """Every chapter's results table (or claims audit) at ``profile``, keyed by notebook stem (from ``root``,
    default :func:`results_dir`)."""
    name = f"{profile}-claims.csv" if claims else f"{profile}.csv"
    return {p.parent.name: pd.read_csv(p) for p in sorted((root or results_dir()).glob(f"*/{name}"))}
