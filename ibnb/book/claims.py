"""Claims and verdicts as data: one :class:`Claim` type and one :func:`judge` for the whole book.

A claim from the literature is tested against an :class:`Effect`: a seed-paired difference (or a per-seed
quantity) with a two-sided Student-t 95 % interval, written ``+2.9 [1.1, 4.7] points, n = 3``. The rule:

* **supported** / **contradicted** — only when ``n >= MIN_SEEDS`` (3), every run behind the effect passed its
  convergence check (:mod:`ibnb.core.convergence`), and the interval lies wholly on the claimed side of the
  threshold (supported) or wholly on the opposite side (contradicted);
* a "no effect" claim (``direction=0``) is **consistent** when the interval lies inside ``[-margin, margin]``
  and **contradicted** when it lies wholly outside it;
* **inconclusive** — the interval spans the threshold (or the margin's edge);
* **not testable at this budget** — too few seeds, a run that did not converge, a gate that failed, or a
  setting this profile does not run; the ``reason`` says which.

A deterministic check (a parameter count, an identity that holds up to float error) does not depend on a seed;
:func:`check` decides it without an interval and says so in the reason.

``write_claims`` stores the verdict class itself (one of :data:`VERDICTS`); nothing parses verdict text.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ibnb.book.results import results_dir
from ibnb.core.utils import atomic_write

MIN_SEEDS = 3
LEVEL = 0.95
SUPPORTED, CONTRADICTED, CONSISTENT = "supported", "contradicted", "consistent"
INCONCLUSIVE, NOT_TESTABLE = "inconclusive", "not testable at this budget"
#: every verdict class, decided ones first
VERDICTS = (SUPPORTED, CONTRADICTED, CONSISTENT, INCONCLUSIVE, NOT_TESTABLE)
DECIDED = (SUPPORTED, CONTRADICTED, CONSISTENT)


@dataclass(frozen=True)
class Effect:
    """A mean with its Student-t interval over ``n`` independent seeds, in display units (``scale`` applied).

    ``converged`` counts the runs behind the effect that passed their convergence check, out of ``runs``."""

    mean: float
    low: float
    high: float
    n: int
    unit: str = "points"
    runs: int = 0
    converged: int = 0

    @property
    def all_converged(self) -> bool:
        return self.runs > 0 and self.converged == self.runs

    def text(self, digits: int = 1, signed: bool = True) -> str:
        """``+2.9 [1.1, 4.7] points, n = 3`` (no interval for a single seed: ``+2.9 points, n = 1``)."""
        def fmt(x: float, sign: bool) -> str:  # a value that rounds to zero prints without a sign ("0.0", not "-0.0")
            text = f"{{:{'+' if sign else ''}.{digits}f}}".format(x)
            return text.lstrip("+-") if float(text) == 0 else text

        unit = f" {self.unit}" if self.unit else ""
        if self.n < 2 or not math.isfinite(self.low):
            return f"{fmt(self.mean, signed)}{unit}, n = {self.n}"
        return f"{fmt(self.mean, signed)} [{fmt(self.low, False)}, {fmt(self.high, False)}]{unit}, n = {self.n}"

    __str__ = text


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)``: the two-sided Student-t interval of the mean of ``values`` (NaNs dropped;
    the interval is NaN for fewer than two values)."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(v.mean())
    if n < 2:
        return m, math.nan, math.nan, 1
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return m, m - half, m + half, n


def effect_of(values: Sequence[float], *, scale: float = 100.0, unit: str = "points",
              converged: Sequence[bool] | None = None, level: float = LEVEL) -> Effect:
    """The :class:`Effect` of per-seed ``values`` (already differences, or a per-seed quantity), times
    ``scale``. ``converged`` has one flag per run behind the values (default: unknown, counted as not
    converged, so a verdict cannot rest on it)."""
    m, lo, hi, n = t_interval([scale * float(x) for x in values], level)
    flags = list(converged) if converged is not None else []
    return Effect(m, lo, hi, n, unit, runs=len(flags), converged=int(sum(bool(f) for f in flags)))


def paired_effect(df: pd.DataFrame, key: str, a, b, *, value: str = "test_acc", pair_on: str = "seed",
                  scale: float = 100.0, unit: str = "points", where: dict | None = None) -> Effect:
    """``value[key == a] − value[key == b]``, paired by ``pair_on`` (one row per pair and side), over the rows
    matching ``where`` (column → value). Runs enter the convergence count through a ``converged`` column
    (missing column: not converged)."""
    d = df
    for col, v in (where or {}).items():
        d = d[d[col] == v]
    side = d[d[key].isin([a, b])]
    if side.duplicated([pair_on, key]).any():
        raise ValueError(f"paired_effect: more than one row per {pair_on} and {key} in {sorted(side.columns)}; "
                         f"narrow it with where=")
    wide = side.pivot(index=pair_on, columns=key, values=value)
    if a not in wide or b not in wide:
        return Effect(math.nan, math.nan, math.nan, 0, unit)
    diff = (wide[a] - wide[b]).dropna()
    conv = side.set_index(pair_on).loc[diff.index] if len(diff) else side.iloc[:0]
    flags = conv["converged"].astype(bool).tolist() if "converged" in conv else [False] * len(conv)
    return effect_of(diff.tolist(), scale=scale, unit=unit, converged=flags)


def group_effect(df: pd.DataFrame, *, value: str = "test_acc", scale: float = 100.0, unit: str = "%",
                 where: dict | None = None) -> Effect:
    """Mean and interval of ``value`` over the rows matching ``where`` (one row per seed)."""
    d = df
    for col, v in (where or {}).items():
        d = d[d[col] == v]
    flags = d["converged"].astype(bool).tolist() if "converged" in d else [False] * len(d)
    return effect_of(d[value].tolist(), scale=scale, unit=unit, converged=flags)


@dataclass(frozen=True)
class Claim:
    """One audited claim: what the study says, where, at which setting, what we measured, and the verdict."""

    claim: str
    source: str  # citation key(s) of book/references.bib, comma-separated; "" for the book's own hypotheses
    setting: str
    measurement: str
    verdict: str
    reason: str = ""
    mean: float = math.nan
    low: float = math.nan
    high: float = math.nan
    n_seeds: int = 0
    converged: bool = False

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")

    @property
    def decided(self) -> bool:
        return self.verdict in DECIDED


def judge(claim: str, source: str, setting: str, effect: Effect | None, *, direction: int = 1,
          threshold: float = 0.0, margin: float | None = None, min_seeds: int = MIN_SEEDS,
          untestable: str = "", gate: tuple[bool, str] | None = None) -> Claim:
    """Decide ``claim`` from ``effect`` by the book's one rule (module docstring).

    ``direction`` +1: the study claims ``effect > threshold``; −1: ``effect < threshold``; 0: no effect, within
    ``±margin`` (required). ``untestable`` (a reason) marks a claim this profile cannot test, with or without
    an effect; ``gate`` ``(passed, reason)`` is a precondition (e.g. "the encoder beats raw pixels by 10 points")
    whose failure makes the claim not testable.
    """
    if direction not in (-1, 0, 1):
        raise ValueError("direction must be +1, -1 or 0")
    if direction == 0 and (margin is None or margin <= 0):
        raise ValueError("a no-effect claim (direction=0) needs margin > 0")
    measurement = (effect.text(digits=3 if effect.unit == "nats" else 1) if effect is not None and effect.n
                   else "not measured")
    base = dict(claim=claim, source=source, setting=setting, measurement=measurement)
    if effect is not None and effect.n:
        base.update(mean=effect.mean, low=effect.low, high=effect.high, n_seeds=effect.n,
                    converged=effect.all_converged)

    def verdict(v: str, reason: str) -> Claim:
        return Claim(**base, verdict=v, reason=reason)

    if untestable:
        return verdict(NOT_TESTABLE, untestable)
    if effect is None or effect.n == 0:
        return verdict(NOT_TESTABLE, "no runs measure it at this profile")
    failing = []  # every precondition that fails, in this order (the first names the reason's class)
    if effect.n < min_seeds:
        failing.append(f"{effect.n} seed{'s' if effect.n != 1 else ''}, fewer than {min_seeds}")
    if not effect.all_converged:
        missing = effect.runs - effect.converged
        failing.append(f"{missing} of {effect.runs} runs did not pass the convergence check"
                       if effect.runs else "no convergence record for its runs")
    if gate is not None and not gate[0]:
        failing.append(gate[1])
    if failing:
        return verdict(NOT_TESTABLE, "; and ".join(failing))
    lo, hi = effect.low, effect.high
    if direction == 0:
        if -margin <= lo and hi <= margin:
            return verdict(CONSISTENT, f"the interval lies within ±{margin:g} {effect.unit}")
        if lo > margin or hi < -margin:
            return verdict(CONTRADICTED, f"the interval lies outside ±{margin:g} {effect.unit}")
        return verdict(INCONCLUSIVE, f"the interval reaches beyond ±{margin:g} {effect.unit}")
    side = ">" if direction > 0 else "<"
    if (lo > threshold) if direction > 0 else (hi < threshold):
        return verdict(SUPPORTED, f"the interval lies wholly {side} {threshold:g}")
    if (hi < threshold) if direction > 0 else (lo > threshold):
        return verdict(CONTRADICTED, f"the interval lies wholly on the other side of {threshold:g}")
    return verdict(INCONCLUSIVE, f"the interval contains {threshold:g}")


def check(claim: str, source: str, setting: str, measurement: str, passed: bool, *, why: str = "") -> Claim:
    """A deterministic check (no seed enters it: a parameter count, an identity up to float error)."""
    return Claim(claim=claim, source=source, setting=setting, measurement=measurement,
                 verdict=SUPPORTED if passed else CONTRADICTED,
                 reason=why or "deterministic check (does not depend on a seed)", converged=True)


@dataclass(frozen=True)
class Calibration:
    """A calibration row: our baseline next to a published number at the closest setting."""

    quantity: str
    ours: Effect
    published: float
    source: str
    setting: str
    tolerance: float  # in the units of ``ours``
    note: str = ""

    @property
    def difference(self) -> float:
        return self.ours.mean - self.published

    @property
    def within(self) -> bool:
        return abs(self.difference) <= self.tolerance

    def row(self) -> dict:
        diff_unit = "points" if self.ours.unit == "%" else self.ours.unit
        return {"quantity": self.quantity, "setting": self.setting, "ours": self.ours.text(signed=False),
                "published": f"{self.published:.1f} {self.ours.unit}".strip(), "source": self.source,
                "difference": f"{self.difference:+.1f} {diff_unit}".strip(),
                "tolerance": f"±{self.tolerance:g} {diff_unit}".strip(),
                "within tolerance": "yes" if self.within else "no", "note": self.note}


CLAIM_COLUMNS = [f for f in Claim.__dataclass_fields__]


def claims_frame(claims: Iterable[Claim]) -> pd.DataFrame:
    """One row per claim, the :class:`Claim` fields as columns."""
    return pd.DataFrame([asdict(c) for c in claims], columns=CLAIM_COLUMNS)


def tally(claims: Iterable[Claim] | pd.DataFrame) -> dict[str, int]:
    """Number of claims per verdict class (every class present, zeros included)."""
    verdicts = claims["verdict"].tolist() if isinstance(claims, pd.DataFrame) else [c.verdict for c in claims]
    return {v: verdicts.count(v) for v in VERDICTS}


def claims_path(stem: str, profile: str) -> Path:
    return results_dir() / stem / f"{profile}-claims.csv"


def calibration_path(stem: str, profile: str) -> Path:
    return results_dir() / stem / f"{profile}-calibration.csv"


def write_claims(claims: Sequence[Claim], stem: str, profile: str, *, section: str = "claims-audit",
                 calibration: Sequence[Calibration] = ()) -> Path:
    """Write a chapter's claims (and calibration rows) atomically for the book's claims index."""
    if not claims:
        raise ValueError(f"refusing to write an empty claims audit for {stem}")
    df = claims_frame(claims)
    df.insert(0, "section", section)
    df.insert(0, "chapter", stem)
    path = atomic_write(claims_path(stem, profile), df.to_csv(index=False))
    if calibration:
        cal = pd.DataFrame([c.row() for c in calibration])
        cal.insert(0, "chapter", stem)
        atomic_write(calibration_path(stem, profile), cal.to_csv(index=False))
    return path


def read_claims(stem: str, profile: str, root: Path | None = None) -> pd.DataFrame:
    """A chapter's claims table, checked: every verdict is one of :data:`VERDICTS`."""
    path = (root / stem / f"{profile}-claims.csv") if root is not None else claims_path(stem, profile)
    if not path.exists():
        raise FileNotFoundError(f"No claims table {path}; execute notebooks/{stem}.ipynb with profile={profile} "
                                f"(python -m ibnb run {stem} --profile {profile}).")
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    bad = sorted(set(df["verdict"]) - set(VERDICTS))
    if bad:
        raise ValueError(f"{path}: unknown verdict class(es) {bad}; expected one of {VERDICTS}")
    return df
