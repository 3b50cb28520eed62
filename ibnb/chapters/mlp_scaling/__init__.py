"""Chapter 02 — MLPs, scale and the price of a weak prior (the chapter contract of :mod:`ibnb.chapters`).

Files: ``presets.py`` (knobs), ``sweep.py`` (the runs, sections sharing one pool of models), ``analysis.py``
(conv-as-matrix identity, scaling fits, batch effect, shape index), ``scaling.py`` (power-law fits),
``probes.py`` (shape/texture probes), ``audit.py`` (claims and calibration), ``figures.py``, ``page.py``
(glued numbers and tables).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd

from ibnb.book import results
from ibnb.book.page import Audit
from ibnb.chapters.mlp_scaling import audit as _audit
from ibnb.chapters.mlp_scaling import figures as _figures
from ibnb.chapters.mlp_scaling.analysis import ConvIdentity, conv_identity, probe_table, scaling_fits, shape_index
from ibnb.chapters.mlp_scaling.page import numbers, tables
from ibnb.chapters.mlp_scaling.presets import NOTEBOOK
from ibnb.chapters.mlp_scaling.sweep import Lab, rung_name

__all__ = ["NOTEBOOK", "Outcome", "run", "audit", "numbers", "figures", "tables"]


@dataclass
class Outcome:
    """Everything :func:`run` produced, section by section."""

    ladder: pd.DataFrame
    ladder_hist: dict
    scaling: pd.DataFrame
    fits: dict
    batch: pd.DataFrame
    prior: pd.DataFrame
    probe: pd.DataFrame
    probe_sets: dict
    shape: pd.DataFrame       # per model and seed: shape_kept, texture_kept, shape_index (×1), converged
    throughput: pd.DataFrame  # per model of throughput_models (fresh models): params, FLOPs, benchmark images/s
    conv: ConvIdentity
    num_classes: int = 10
    n_unique: int = 0
    trained_now: int = 0
    timings: dict = field(default_factory=dict)

    @property
    def table(self) -> pd.DataFrame:
        """The results table: every section's rows (a run shared by two sections appears in both)."""
        return pd.concat([self.ladder, self.scaling, self.batch, self.prior, self.probe], ignore_index=True)


def run(P: dict, progress: bool = False) -> Outcome:
    """Train or load every run of the five sections and write ``book/results/02_mlp_scaling/<profile>.csv``."""
    lab = Lab(P, progress=progress)
    t0 = time.perf_counter()
    plan = lab.run_all()
    timings = {"training and loading": time.perf_counter() - t0}
    (ladder, hist), (probe, probe_sets) = lab.ladder(plan["ladder"]), lab.probe(plan["probe"])
    shape = shape_index(probe_table(probe)).merge(probe[["model", "seed", "converged"]], on=["model", "seed"])
    throughput = lab.throughput()
    scaling = lab.scaling(plan["scaling"])
    out = Outcome(ladder, hist, scaling, scaling_fits(scaling, seed=P["fit_seed"], n_boot=P["fit_bootstrap"]),
                  lab.batch(plan["batch"]), lab.prior(plan["prior"]), probe, probe_sets, shape, throughput,
                  conv_identity(P["model_kw"]["conv_layer"]), lab.K, len(lab.rows), lab.trained_now, timings)
    results.write_results(out.table, NOTEBOOK, P["profile"])
    return out


def audit(out: Outcome, P: dict) -> Audit:
    """Claims (through :func:`ibnb.book.claims.judge` / ``check``) and the calibration row."""
    return _audit.audit(out, P)


def figures(out: Outcome, P: dict) -> dict:
    """The chapter's figures by glue name."""
    order = [rung_name(m, r) for m, r in P["ladder"]]
    return {"fig_conv_matrix": _figures.conv_matrix_figure(out.conv),
            "fig_ladder": _figures.ladder_bars(out.ladder, order),
            "fig_ladder_curves": _figures.ladder_curves(out.ladder_hist, order),
            "fig_scaling": _figures.scaling_figure(out.scaling, out.fits),
            "fig_batch": _figures.batch_plot(out.batch),
            "fig_prior": _figures.prior_bars(out.prior),
            "fig_probe_examples": _figures.probe_examples(out.probe_sets),
            "fig_probes": _figures.probe_bars(probe_table(out.probe), P["probe_models"])}
