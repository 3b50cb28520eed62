"""Saturating power laws with bootstrap intervals, and the compute-efficient frontier.

A learning curve flattens at the error no amount of the scaled quantity removes, so the fits carry an
irreducible-error term (Hestness et al., 2017; Hoffmann et al., 2022):

* one factor: ``E(X) = a · (X / X₀)^(−α) + E∞`` (:func:`fit_saturating`; ``X₀`` = the smallest ``X``);
* two factors: ``E(P, D) = a · (P / P₀)^(−α_P) + b · (D / D₀)^(−α_D) + E∞`` (:func:`fit_two_factor`).

Both are least squares on the logarithm of the error (every decade weighs alike), with ``0 ≤ α ≤`` :data:`ALPHA_MAX`
and ``0 ≤ E∞ <`` the smallest error. A pure power law (``E∞ = 0``) fits *any* monotone curve over a short range
with a small exponent, which is why the earlier fits, without ``E∞``, could not be read.

Intervals come from a **bootstrap over seeds** (:func:`bootstrap`): each resample draws, in every grid cell, as
many seeds as it has, with replacement, averages them and refits; the interval is the 2.5–97.5 % range of the
refitted values. With one seed per cell there is nothing to resample and the interval collapses to the point, so
the audit decides nothing from it (it needs ≥ 3 seeds). An exponent counts as **resolved** when its interval
excludes zero and is narrower than the exponent itself (:func:`resolved`; never from a collapsed interval).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

#: the largest exponent a fit may take (a bound, so that a flat curve cannot run away)
ALPHA_MAX = 4.0


@dataclass
class SaturatingFit:
    """``E ≈ prefactor · (x / x0)^(−exponent) + e_inf``; intervals (95 %) from :func:`bootstrap`."""

    exponent: float
    prefactor: float
    e_inf: float
    x0: float
    n: int
    residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))  # log(observed) − log(fitted), per point
    ci: tuple[float, float] = (float("nan"), float("nan"))
    ci_e_inf: tuple[float, float] = (float("nan"), float("nan"))
    level: float = 0.95
    r2: float = float("nan")  # share of the variance of log-error the fit explains (on its own points)

    def predict(self, x) -> np.ndarray:
        return self.prefactor * (np.asarray(x, dtype=float) / self.x0) ** (-self.exponent) + self.e_inf

    def describe(self, symbol: str = "α") -> str:
        """``α = 0.42 [0.30, 0.55], E∞ = 31.2 % [29.0, 33.1] (n = 4 points)``."""
        lo, hi = self.ci
        ci = f" [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else ""
        elo, ehi = self.ci_e_inf
        eci = f" [{100 * elo:.1f}, {100 * ehi:.1f}]" if np.isfinite(elo) else ""
        return f"{symbol} = {self.exponent:.2f}{ci}, E∞ = {100 * self.e_inf:.1f} %{eci} (n = {self.n} points)"


def _check(x: np.ndarray, y: np.ndarray, need: int) -> None:
    if len(x) != len(y) or len(x) < need or (x <= 0).any() or (y <= 0).any() or len(np.unique(x)) < 2:
        raise ValueError(f"need >= {need} points with >= 2 distinct positive x and positive y, got x={x}, y={y}")


def fit_saturating(x, y) -> SaturatingFit:
    """Least squares of ``log y`` on ``log(a·(x/x₀)^(−α) + E∞)``; needs ≥ 3 points (three parameters)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    _check(x, y, 3)
    x0, ymin = float(x.min()), float(y.min())
    u = x / x0

    def resid(theta):
        la, alpha, e = theta
        return np.log(np.exp(la) * u ** (-alpha) + e) - np.log(y)

    start = [np.log(max(float(y[np.argmin(x)]) - 0.5 * ymin, 1e-6)), 0.5, 0.5 * ymin]
    sol = least_squares(resid, start, bounds=([-30.0, 0.0, 0.0], [30.0, ALPHA_MAX, 0.999 * ymin]))
    la, alpha, e = sol.x
    r = resid(sol.x)
    ly = np.log(y)
    ss = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float((r ** 2).sum()) / ss if ss > 0 else float("nan")
    return SaturatingFit(float(alpha), float(np.exp(la)), float(e), x0, len(x), -r, r2=r2)


@dataclass
class TwoFactorFit:
    """``E ≈ a·(P/P₀)^(−alpha_p) + b·(D/D₀)^(−alpha_d) + e_inf`` on a grid; intervals from :func:`bootstrap`."""

    alpha_p: float
    alpha_d: float
    e_inf: float
    n: int
    residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ci_p: tuple[float, float] = (float("nan"), float("nan"))
    ci_d: tuple[float, float] = (float("nan"), float("nan"))
    ci_gap: tuple[float, float] = (float("nan"), float("nan"))  # interval of alpha_p − alpha_d
    level: float = 0.95

    @property
    def gap(self) -> float:
        """``alpha_p − alpha_d`` (> 0: error falls faster with parameters than with data)."""
        return self.alpha_p - self.alpha_d


def fit_two_factor(p, d, y) -> TwoFactorFit:
    """Least squares of ``log y`` on the two-factor law; needs ≥ 6 points (five parameters)."""
    p, d, y = (np.asarray(v, dtype=float) for v in (p, d, y))
    _check(p, y, 6)
    if len(np.unique(d)) < 2:
        raise ValueError("a two-factor fit needs >= 2 distinct data sizes")
    up, ud, ymin = p / p.min(), d / d.min(), float(y.min())

    def resid(theta):
        la, ap, lb, ad, e = theta
        return np.log(np.exp(la) * up ** (-ap) + np.exp(lb) * ud ** (-ad) + e) - np.log(y)

    half = np.log(max(float(y.max()) - 0.5 * ymin, 1e-6) / 2)
    sol = least_squares(resid, [half, 0.5, half, 0.5, 0.5 * ymin],
                        bounds=([-30, 0, -30, 0, 0], [30, ALPHA_MAX, 30, ALPHA_MAX, 0.999 * ymin]))
    _, ap, _, ad, e = sol.x
    return TwoFactorFit(float(ap), float(ad), float(e), len(y), -resid(sol.x))


def bootstrap(df: pd.DataFrame, cell: list[str], value: str, fit_cell_means: Callable[[pd.DataFrame], dict],
              n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """``{name: (lo, hi)}``: percentile intervals of the quantities ``fit_cell_means`` returns (a dict of floats)
    from a table of cell means (columns ``cell`` + ``value``), over ``n_boot`` resamples of the seeds within each
    cell. Resamples whose fit fails are skipped (their count is returned as ``"failed"``)."""
    rng = np.random.default_rng(seed)
    groups = [(k, g[value].to_numpy(dtype=float)) for k, g in df.groupby(cell, sort=True)]
    draws: dict[str, list[float]] = {}
    failed = 0
    for _ in range(n_boot):
        means = [dict(zip(cell, k if isinstance(k, tuple) else (k,)), **{value: float(rng.choice(v, len(v)).mean())})
                 for k, v in groups]
        try:
            out = fit_cell_means(pd.DataFrame(means))
        except (ValueError, np.linalg.LinAlgError):
            failed += 1
            continue
        for name, v in out.items():
            draws.setdefault(name, []).append(v)
    q = (0.5 - level / 2, 0.5 + level / 2)
    ci = {name: (float(np.quantile(v, q[0])), float(np.quantile(v, q[1]))) for name, v in draws.items()}
    ci["failed"] = (float(failed), float(n_boot))
    return ci


def resolved(value: float, ci: tuple[float, float]) -> bool:
    """Whether a fitted exponent is resolved: its interval excludes zero and is narrower than the exponent (an
    interval of zero width — one seed per cell, nothing resampled — resolves nothing)."""
    lo, hi = ci
    return bool(np.isfinite(lo) and hi > lo > 0 and (hi - lo) < value)


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
