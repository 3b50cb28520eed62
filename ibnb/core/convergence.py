"""Did a training run finish learning? One convergence check for every run of the book.

A run **passed** when any of these holds:

1. its training loss reached ``train_loss_floor`` (nats; it has fitted its training set);
2. its monitored curve stopped improving over the last ``window`` (a quarter) of its epochs: the validation
   accuracy gained at most ``acc_tol`` (absolute, 1 point) over the best value before that window, or — where a
   run has no validation accuracy — the monitored loss (validation, else training) fell by at most ``loss_rtol``
   (2 %) relative to its best value before the window;
3. it carries a **budget-halving probe** (the same run with half the epochs and the schedule compressed to fit,
   :func:`half_budget`) and doubling the budget from the probe to the run gained at most ``acc_tol`` of final
   validation accuracy (or lowered the final monitored loss by at most ``loss_rtol``).

Why the third: a schedule that anneals the learning rate to zero (``cosine``, ``linear``, ``onecycle``) gains most
in its last epochs *by construction*, so on large training sets test 2 fails however long the run is (a fast CNN
on 45,000 CIFAR-10 images still gained +1.4 points in the last quarter of 32 epochs). Test 3 asks the question a
reader means by "converged" — would more of this budget change the number? — and, on the usual assumption that
returns diminish with the budget (accuracy concave in its logarithm), the gain of the last doubling bounds that of
the next one.

A run with fewer than ``min_epochs`` (4) epochs cannot show a plateau and passes only through the floor or a
probe. The result (``passed`` and a one-line ``reason``) is recorded in each run's results row (``converged``,
``convergence``), and :func:`ibnb.book.claims.judge` refuses to decide a claim resting on a run that failed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


#: slack on every "at most" comparison: a gain of exactly the tolerance (5 of 500 validation images is 1 point)
#: must pass although ``0.51 - 0.50`` exceeds ``0.01`` in floating point
EPS = 1e-9


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


def check_convergence(frame: pd.DataFrame, check: ConvergenceCheck = ConvergenceCheck(),
                      probe: pd.DataFrame | None = None) -> Convergence:
    """Apply the check to a per-epoch history frame (columns ``train_loss`` and, if validated, ``val_acc``,
    ``val_loss``), as written by :func:`ibnb.core.train.fit`; ``probe`` is the history of the run's
    budget-halving probe, if it has one (test 3)."""
    plateau = _plateau(frame, check)
    if plateau.passed or probe is None or len(frame) == 0:
        return plateau
    halving = _halving(frame, probe, check)
    return halving if halving.passed else Convergence(False, f"{plateau.reason}; {halving.reason}")


def _halving(frame: pd.DataFrame, probe: pd.DataFrame, check: ConvergenceCheck) -> Convergence:
    """Test 3: the final value of the run against that of its half-budget probe."""
    n, m = len(frame), len(probe)
    if not 0 < m < n:
        return Convergence(False, f"the budget probe has {m} epochs, not fewer than the run's {n}")
    budget = f"{m} → {n} epochs"
    acc, probe_acc = _finite(frame, "val_acc"), _finite(probe, "val_acc")
    if acc is not None and probe_acc is not None:
        gain = float(acc[-1] - probe_acc[-1])
        ok = gain <= check.acc_tol + EPS
        return Convergence(ok, f"doubling the budget ({budget}) {_moved(gain)} of validation accuracy "
                               f"({'passes' if ok else 'fails'}: at most {100 * check.acc_tol:g} may be gained)")
    for name, col in (("validation", "val_loss"), ("training", "train_loss")):
        loss, probe_loss = _finite(frame, col), _finite(probe, col)
        if loss is not None and probe_loss is not None:
            drop = (float(probe_loss[-1]) - float(loss[-1])) / max(abs(float(probe_loss[-1])), 1e-12)
            ok = drop <= check.loss_rtol + EPS
            return Convergence(ok, f"doubling the budget ({budget}) lowered the final {name} loss by "
                                   f"{100 * drop:.1f} % ({'<=' if ok else '>'} {100 * check.loss_rtol:g} %)")
    return Convergence(False, "the run and its budget probe share no finite curve to compare")


def _moved(gain: float) -> str:
    """``"gained +1.4 points"`` or ``"lost 2.1 points"`` (a fraction of accuracy in points)."""
    return f"gained {100 * gain:+.1f} points" if gain > 0 else f"lost {100 * -gain:.1f} points" if gain < 0 else "gained 0.0 points"


def half_budget(epochs: int, warmup_epochs: float = 0.0) -> tuple[int, float] | None:
    """``(epochs, warmup_epochs)`` of a run's budget-halving probe: half the epochs (rounded down) with the
    warm-up scaled alike, so the whole schedule is compressed; ``None`` for a run of one epoch."""
    half = epochs // 2
    return (half, warmup_epochs * half / epochs) if half >= 1 else None


def probe_config(config):
    """The config of ``config``'s budget-halving probe (a dataclass with ``epochs`` and ``warmup_epochs``, e.g. a
    :class:`~ibnb.core.train.TrainConfig`): the same run with :func:`half_budget`; ``None`` for a one-epoch run."""
    import dataclasses

    half = half_budget(config.epochs, config.warmup_epochs)
    return None if half is None else dataclasses.replace(config, epochs=half[0], warmup_epochs=half[1])


def _plateau(frame: pd.DataFrame, check: ConvergenceCheck) -> Convergence:
    """Tests 1 and 2 (the floor and the plateau of the run's own curve)."""
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
        ok = gain <= check.acc_tol + EPS
        return Convergence(ok, f"the best validation accuracy of the last {q} of {n} epochs {_moved(gain)} "
                               f"against the best before ({'passes' if ok else 'fails'}: at most "
                               f"{100 * check.acc_tol:g} may be gained)")
    name, loss = ("validation", _finite(frame, "val_loss"))
    if loss is None:
        name, loss = "training", train
    if loss is None:
        return Convergence(False, "no finite loss curve recorded")
    best_before = float(loss[:n - q].min())
    drop = (best_before - float(loss[n - q:].min())) / max(abs(best_before), 1e-12)
    ok = drop <= check.loss_rtol + EPS
    return Convergence(ok, f"{name} loss fell {100 * drop:.1f} % in the last {q} of {n} epochs "
                           f"({'<=' if ok else '>'} {100 * check.loss_rtol:g} %)")
