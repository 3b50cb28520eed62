"""Chapter 04 — augmentation as a prior at test time: TTA for ensembles, Greedy Policy Search, MeTTA.

The chapter contract of :mod:`ibnb.chapters`. Where things are: ``presets.py`` (knobs), ``members.py`` (splits and
the ensemble, trained by :func:`ibnb.core.runs.train_or_load` with the loop of :mod:`ibnb.core.train`),
``policies.py`` / ``gps.py`` (sub-policies and Greedy Policy Search), ``ensembles.py`` (prediction banks),
``banks.py`` (every bank and the score grid), ``metta.py``, ``sweep.py`` (the whole run and the results table),
``audit.py`` (claims and calibration), ``figures.py``, ``report.py`` (numbers and tables of the page).
"""
from __future__ import annotations

import torch

from ibnb.book.page import Audit
from ibnb.chapters.tta import audit as _audit
from ibnb.chapters.tta import figures as _figures
from ibnb.chapters.tta.ensembles import combine
from ibnb.chapters.tta.members import CROP_FLIP_SET, RA_SET
from ibnb.chapters.tta.presets import NOTEBOOK
from ibnb.chapters.tta.report import numbers, tables
from ibnb.chapters.tta.sweep import Outcome, run_sweep
from ibnb.core import metrics as cal
from ibnb.core.corruptions import corrupted

__all__ = ["NOTEBOOK", "Outcome", "run", "audit", "numbers", "figures", "tables"]


def run(P: dict, progress: bool = False) -> Outcome:
    """Train or load the ensemble, compute every prediction bank and score, and write the results table."""
    return run_sweep(P, progress=progress)


def audit(out: Outcome, P: dict) -> Audit:
    """Claims (through :func:`ibnb.book.claims.judge`) and calibration rows."""
    return _audit.audit(out, P)


def _reliability(out: Outcome, P: dict):
    """(title, reliability bins) for the first crop+flip member (central view) and the first crop+flip ensemble
    with TTA, each before and after temperature scaling (temperature from the validation split)."""
    b, S, K, bins = out.banks[CROP_FLIP_SET], max(P["tta_samples"]), P["members"], P["ece_bins"]
    dev = b.test["central"].device
    yv, yt = out.splits.val.y.to(dev), out.splits.test.y.to(dev)
    items = []
    for title, method, members, m in (("first member, central", "central", [0], 1),
                                      (f"ensemble of {K}, crop+flip ({S} views)", "crop+flip", list(range(K)), S)):
        lp = combine(b.test[method], members, m)
        t = cal.fit_temperature(combine(b.val[method], members, m), yv)
        items.append((f"{title}\nraw: ECE {100 * float(cal.ece(lp, yt, bins)):.1f} %", cal.reliability(lp, yt, bins)))
        items.append((f"{title}\nT = {float(t):.2f}: ECE {100 * float(cal.ece(lp / t, yt, bins)):.1f} %",
                      cal.reliability(lp / t, yt, bins)))
    return items


def figures(out: Outcome, P: dict) -> dict:
    """The chapter's figures by glue name."""
    b, K, S, sc = out.banks[RA_SET], P["members"], max(P["tta_samples"]), P["corrupt_samples"]
    grid, ra_grid = (out.grid[out.grid["set"] == s] for s in (CROP_FLIP_SET, RA_SET))
    K_ra = int(ra_grid["k"].max())
    pol = b.policies["GPS"]
    x = out.splits.test.x[:6].float() / 255
    g = torch.Generator().manual_seed(0)
    steps = [("original", x)] + [(f"step {i + 1}", b.pool[pol[i]](x, g)) for i in range(min(6, len(pol)))]
    img = out.splits.ctest.subset(torch.tensor([0]))
    examples = [(name.replace("_", " "),
                 torch.cat([corrupted(img, name, s, seed=P["aug_seed"], cache=False).x for s in P["severities"]]))
                for name in P["corruptions"]]
    clean = grid[(grid["domain"] == "clean") & grid["k"].isin([1, K])]
    return {
        "fig_gps_traces": _figures.gps_traces({m: b.traces[m] for m in ("GPS", "GPS (accuracy criterion)")},
                                              {"GPS": "validation calibrated NLL (nats)",
                                               "GPS (accuracy criterion)": "validation error (%)"}),
        "fig_gps_views": _figures.image_grid(steps),
        "fig_views": _figures.curves(clean, x="m", xlabel="test-time views per member, m (log scale)",
                                     panels=[("single model (k = 1)", clean["k"] == 1),
                                             (f"ensemble of {K}", clean["k"] == K)]),
        "fig_ensemble_size": _figures.ensemble_size_curves(grid, S, sc),
        "fig_reliability": _figures.reliability_diagrams(_reliability(out, P)),
        "fig_corruption_examples": _figures.image_grid(examples, col_titles=[f"severity {s}" for s in P["severities"]]),
        "fig_severity": _figures.severity_curves(ra_grid, [1, K_ra], sc),
        "fig_corruption_bars": _figures.corruption_bars(ra_grid, K_ra, sc),
        "fig_metta": _figures.metta_plot(out.metta),
    }
