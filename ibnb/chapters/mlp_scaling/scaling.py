"""Power-law fits in log space with confidence intervals, and the compute-efficient frontier.

A power law ``E = a · X^(−α)`` is a straight line ``log E = log a − α log X``; :func:`fit_power_law` fits it
by ordinary least squares on the logs and returns the exponent with a two-sided Student-t confidence
interval (``n − 2`` degrees of freedom), so the width of the interval honestly reflects how few points
a fit rests on. :func:`fit_two_factor` fits ``log E = c − α_P log P − α_D log D`` to a whole grid at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass
class PowerLawFit:
    """``y ≈ prefactor · x^(−exponent)``; ``ci`` is the confidence interval of the exponent."""

    exponent: float
    ci: tuple[float, float]
    prefactor: float
    n: int
    r2: float
    level: float = 0.95

    def predict(self, x) -> np.ndarray:
        return self.prefactor * np.asarray(x, dtype=float) ** (-self.exponent)

    def describe(self, symbol: str = "α") -> str:
        """``α = 0.12 (95 % CI 0.05 to 0.19; n = 5 points)``; the interval is n/a below 3 points."""
        lo, hi = self.ci
        ci = f"{100 * self.level:.0f} % CI {lo:.3f} to {hi:.3f}" if np.isfinite(lo) else "no CI: too few points"
        return f"{symbol} = {self.exponent:.3f} ({ci}; n = {self.n} points)"


def _t(level: float, dof: int) -> float:
    return float(stats.t.ppf(0.5 + level / 2, dof)) if dof > 0 else float("nan")


def fit_power_law(x, y, level: float = 0.95) -> PowerLawFit:
    """Least-squares fit of ``log y = log a − α log x``; needs positive ``x`` and ``y`` and ≥ 2 distinct x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y) or len(x) < 2 or (x <= 0).any() or (y <= 0).any() or len(np.unique(x)) < 2:
        raise ValueError(f"need ≥ 2 points with distinct positive x and positive y, got x={x}, y={y}")
    lx, ly = np.log(x), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (intercept + slope * lx)
    dof = len(x) - 2
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    if dof > 0:
        se = float(np.sqrt((resid ** 2).sum() / dof / ((lx - lx.mean()) ** 2).sum()))
        half = _t(level, dof) * se
        ci = (-slope - half, -slope + half)
    else:
        ci = (float("nan"), float("nan"))
    return PowerLawFit(float(-slope), ci, float(np.exp(intercept)), len(x), r2, level)


@dataclass
class TwoFactorFit:
    """``E ≈ exp(c) · P^(−alpha_p) · D^(−alpha_d)`` fitted on a grid of runs."""

    alpha_p: float
    alpha_d: float
    ci_p: tuple[float, float]
    ci_d: tuple[float, float]
    n: int
    r2: float
    level: float = 0.95
    ci_gap: tuple[float, float] = (float("nan"), float("nan"))  # interval of alpha_p − alpha_d

    @property
    def gap(self) -> float:
        """``alpha_p − alpha_d`` (> 0: error falls faster with parameters than with data)."""
        return self.alpha_p - self.alpha_d


def fit_two_factor(p, d, y, level: float = 0.95) -> TwoFactorFit:
    """Least squares of ``log y`` on ``[1, log p, log d]`` with t intervals (``n − 3`` dof) per exponent."""
    p, d, y = (np.asarray(v, dtype=float) for v in (p, d, y))
    X = np.column_stack([np.ones_like(p), np.log(p), np.log(d)])
    ly = np.log(y)
    beta, *_ = np.linalg.lstsq(X, ly, rcond=None)
    resid = ly - X @ beta
    dof = len(y) - 3
    if dof < 1:
        raise ValueError(f"a two-factor fit needs ≥ 4 points, got {len(y)}")
    cov = (resid ** 2).sum() / dof * np.linalg.inv(X.T @ X)
    half = _t(level, dof) * np.sqrt(np.diag(cov))
    r2 = 1.0 - float((resid ** 2).sum()) / float(((ly - ly.mean()) ** 2).sum())
    gap = float(beta[2] - beta[1])  # alpha_p − alpha_d = −beta_p + beta_d
    half_gap = _t(level, dof) * float(np.sqrt(cov[1, 1] + cov[2, 2] - 2 * cov[1, 2]))
    return TwoFactorFit(float(-beta[1]), float(-beta[2]), (float(-beta[1] - half[1]), float(-beta[1] + half[1])),
                        (float(-beta[2] - half[2]), float(-beta[2] + half[2])), len(y), r2, level,
                        (gap - half_gap, gap + half_gap))


def pareto_frontier(df: pd.DataFrame, x: str = "train_flops", y: str = "test_error") -> pd.DataFrame:
    """Rows not beaten by a run that used at most as much ``x`` (sorted by ``x``): the compute-efficient
    frontier, i.e. the lowest error reached so far as compute grows."""
    d = df.sort_values([x, y])
    best, keep = np.inf, []
    for idx, val in zip(d.index, d[y]):
        if val < best:
            keep.append(idx)
            best = val
    return d.loc[keep]
