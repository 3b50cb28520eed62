"""Did a training run finish learning? One convergence check for every run of the book.

A run **passed** when either

1. its training loss reached ``train_loss_floor`` (nats; it has fitted its training set), or
2. its monitored curve stopped improving over the last ``window`` (a quarter) of its epochs: the validation
   accuracy gained at most ``acc_tol`` (absolute, 1 point) over the best value before that window, or — where a
   run has no validation accuracy — the monitored loss (validation, else training) fell by at most ``loss_rtol``
   (2 %) relative to its best value before the window.

A run with fewer than ``min_epochs`` (4) epochs cannot show a plateau and passes only through the floor.
The result (``passed`` and a one-line ``reason``) is recorded in each run's results row (``converged``,
``convergence``), and :func:`ibnb.book.claims.judge` refuses to decide a claim resting on a run that failed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ConvergenceCheck:
    window: float = 0.25
    acc_tol: float = 0.01
    loss_rtol: float = 0.02
    train_loss_floor: float = 0.05
    min_epochs: int = 4


@dataclass(frozen=True)
class Convergence:
    passed: bool
    reason: str

    def columns(self) -> dict:
        """The two results-table columns: ``converged`` (bool) and ``convergence`` (the reason)."""
        return {"converged": self.passed, "convergence": self.reason}


def _finite(frame: pd.DataFrame, col: str) -> np.ndarray | None:
    if col not in frame:
        return None
    v = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
    return v if len(v) and np.isfinite(v).all() else None


def check_convergence(frame: pd.DataFrame, check: ConvergenceCheck = ConvergenceCheck()) -> Convergence:
    """Apply the check to a per-epoch history frame (columns ``train_loss`` and, if validated, ``val_acc``,
    ``val_loss``), as written by :func:`ibnb.core.train.fit`."""
    n = len(frame)
    if n == 0:
        return Convergence(False, "no epochs recorded")
    train = _finite(frame, "train_loss")
    if train is not None and train[-1] <= check.train_loss_floor:
        return Convergence(True, f"training loss {train[-1]:.3f} <= floor {check.train_loss_floor:g}")
    if n < check.min_epochs:
        return Convergence(False, f"{n} epoch{'s' if n != 1 else ''}: too few to show a plateau "
                                  f"(needs {check.min_epochs})")
    q = max(1, math.ceil(n * check.window))
    acc = _finite(frame, "val_acc")
    if acc is not None:
        gain = float(acc[n - q:].max() - acc[:n - q].max())
        ok = gain <= check.acc_tol
        return Convergence(ok, f"validation accuracy {'gained' if gain > 0 else 'changed'} {100 * gain:+.1f} "
                               f"points in the last {q} of {n} epochs ({'<=' if ok else '>'} "
                               f"{100 * check.acc_tol:g})")
    name, loss = ("validation", _finite(frame, "val_loss"))
    if loss is None:
        name, loss = "training", train
    if loss is None:
        return Convergence(False, "no finite loss curve recorded")
    best_before = float(loss[:n - q].min())
    drop = (best_before - float(loss[n - q:].min())) / max(abs(best_before), 1e-12)
    ok = drop <= check.loss_rtol
    return Convergence(ok, f"{name} loss fell {100 * drop:.1f} % in the last {q} of {n} epochs "
                           f"({'<=' if ok else '>'} {100 * check.loss_rtol:g} %)")
