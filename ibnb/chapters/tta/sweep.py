"""Chapter 04's whole run: splits, the ensemble, prediction banks, the score grid, MeTTA, the results table.

One deep ensemble of ``members`` classifiers (same data, different seeds, trained with crop+flip) is evaluated
with three kinds of test-time views: the central image, random crop+flip views, and the views of a policy found
by Greedy Policy Search (GPS) on a validation split carved from the training set. Every predictor is scored by
accuracy, raw NLL, Brier, ECE and the *calibrated* NLL (temperature fitted on the same predictor's validation
predictions), in domain and on CIFAR-10-C-style corrupted test sets. MeTTA compares linear probes on central
vs view-averaged penultimate features.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ibnb.book.results import write_results
from ibnb.chapters.tta.banks import Banks, build_banks, score_grid
from ibnb.chapters.tta.members import Splits, load_splits, train_members
from ibnb.chapters.tta.metta import metta
from ibnb.chapters.tta.presets import NOTEBOOK


@dataclass
class Outcome:
    """Everything a page needs: the splits, the members' rows, the banks, the score grid, the MeTTA probes,
    the results table (``df``) and wall times of the parts (seconds)."""

    splits: Splits
    members: pd.DataFrame
    banks: Banks
    grid: pd.DataFrame
    metta: pd.DataFrame
    df: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)


def _subset_converged(members: pd.DataFrame, subsets: pd.Series) -> list[bool]:
    """Per ``"0+3"``-style member list: did every member pass its convergence check?"""
    flags = members.set_index("seed")["converged"].astype(bool)
    return [bool(all(flags[int(i)] for i in s.split("+"))) for s in subsets]


def results_table(p: dict, members: pd.DataFrame, grid: pd.DataFrame, metta_df: pd.DataFrame,
                  splits: Splits) -> pd.DataFrame:
    """One tidy table: a row per trained member (``experiment = member``, with its convergence check), per
    scored predictor (``tta``; ``converged`` = every member behind it converged) and per MeTTA probe
    (``metta``; ``test_acc`` = probe accuracy)."""
    base = dict(model=p["model"], dataset=p["dataset"], n_train=len(splits.train), epochs=p["epochs"],
                params=int(members["params"].iloc[0]), device=members["device"].iloc[0])
    clean_single = grid[(grid.domain == "clean") & (grid.method == "central") & (grid.k == 1)].set_index("subset")
    member_rows = members.drop(columns=["params", "device"]).assign(experiment="member", **base)
    member_rows["test_acc"] = clean_single.loc[member_rows["seed"], "acc"].to_numpy()
    member_rows["test_nll"] = clean_single.loc[member_rows["seed"], "nll"].to_numpy()
    g = grid.rename(columns={"acc": "test_acc", "nll": "test_nll", "subset": "seed"})
    g = g.assign(experiment="tta", wall_s=np.nan, images_per_s=np.nan,
                 converged=_subset_converged(members, g["members"]), **base)
    flags = members.set_index("seed")["converged"].astype(bool)
    mt = metta_df.assign(experiment="metta", test_nll=np.nan, wall_s=np.nan, images_per_s=np.nan, **base,
                         converged=[bool(flags[s]) if e == "trained" else False
                                    for e, s in zip(metta_df["encoder"], metta_df["seed"])])
    return pd.concat([member_rows, g, mt.rename(columns={"probe_acc": "test_acc"})], ignore_index=True)


def run_sweep(p: dict, progress: bool = False) -> Outcome:
    """Train or load the ensemble, compute every bank and score, probe MeTTA and write
    ``book/results/04_test_time_augmentation/<profile>.csv``."""
    t0 = time.perf_counter()
    splits = load_splits(p)
    models, members = train_members(p, splits, progress=progress)
    t1 = time.perf_counter()
    banks = build_banks(p, models, splits)
    grid = score_grid(p, banks, splits)
    t2 = time.perf_counter()
    metta_df = metta(p, models, splits)
    t3 = time.perf_counter()
    df = results_table(p, members, grid, metta_df, splits)
    write_results(df, NOTEBOOK, p["profile"])
    bank_s = sum(v for k, v in banks.timings.items() if not k.startswith("test bank"))
    timings = {"load data + train or load the ensemble": t1 - t0, **banks.timings,
               "scoring every predictor": (t2 - t1) - bank_s, "MeTTA (features + probes)": t3 - t2}
    return Outcome(splits, members, banks, grid, metta_df, df, timings)
