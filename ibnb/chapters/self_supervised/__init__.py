"""Chapter 07 — representations without labels: VICReg, Barlow Twins and W-MSE against a supervised encoder.

Where things are:

* ``presets.py`` — the knobs per profile and their validation;
* ``losses.py`` — the three objectives, term by term; ``views.py`` — the augmented views (the recipes);
* ``method.py`` — the train step :class:`~ibnb.chapters.self_supervised.method.SSLStep`, cached pretraining,
  collapse monitors, fine-tuning; the networks are in :mod:`ibnb.core.models.ssl`, the loop in
  :mod:`ibnb.core.train`, the probes (linear, kNN) in :mod:`ibnb.core.metrics`;
* ``sweep.py`` — every run of the chapter (:func:`run`); ``claims_audit.py`` — the claims, the raw-pixel gate
  and the calibration rows; ``report.py`` — the glued numbers and the tables; ``figures.py`` — the figures.

The contract (:mod:`ibnb.chapters`): :func:`run`, :func:`audit`, :func:`numbers`, :func:`figures`, :func:`tables`.
"""
from __future__ import annotations

from ibnb.book.page import Audit
from ibnb.chapters.self_supervised import claims_audit as _audit
from ibnb.chapters.self_supervised import figures as _figures
from ibnb.chapters.self_supervised import report as _report
from ibnb.chapters.self_supervised.presets import NOTEBOOK
from ibnb.chapters.self_supervised.sweep import Outcome, run

__all__ = ["NOTEBOOK", "Outcome", "run", "audit", "numbers", "figures", "tables"]


def audit(outcome: Outcome, P: dict) -> Audit:
    """The claims (judged behind the raw-pixel gate) and the N1 calibration rows."""
    return _audit.audit(outcome.df, P)


def numbers(outcome: Outcome, P: dict) -> dict:
    """Every number and generated sentence the page quotes."""
    return _report.numbers(outcome, P, audit(outcome, P))


def figures(outcome: Outcome, P: dict) -> dict:
    """Every figure of the page, keyed by its glue name."""
    return _figures.figures(outcome, P)


def tables(outcome: Outcome, P: dict) -> dict:
    """Every table of the page, through the book's one formatter."""
    return _report.tables(outcome, P)
