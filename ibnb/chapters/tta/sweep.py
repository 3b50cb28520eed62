"""Chapter 04's whole run: splits, the ensemble, prediction banks, the score grid, MeTTA, the results table.

Two sets of members are trained on the same data with different seeds: ``ensembles`` independent deep
ensembles of ``members`` classifiers with crop+flip, evaluated with the central image and random crop+flip views,
and ``ra_members`` classifiers with RandAugment, evaluated also with the views of a policy found by Greedy Policy
Search (GPS) on a validation split carved from the training set. Every predictor is scored by
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
from ibnb.chapters.tta.members import CROP_FLIP_SET, MEMBER_SETS, RA_SET, Splits, load_splits, train_members
from ibnb.chapters.tta.metta import metta
from ibnb.chapters.tta.presets import NOTEBOOK


@dataclass
class Outcome:
    """Everything a page needs: the splits, the members' rows, the banks per member set, the score grid (column
    ``set``), the MeTTA probes, the results table (``df``) and wall times of the parts (seconds)."""

    splits: Splits
    members: pd.DataFrame
    banks: dict[str, Banks]
    grid: pd.DataFrame
    metta: pd.DataFrame
    df: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)


def _subset_converged(members: pd.DataFrame, sets: pd.Series, subsets: pd.Series) -> list[bool]:
    """Per (member set, ``"0+3"``-style member list): did every member pass its convergence check?"""
    flags = members.set_index(["set", "seed"])["converged"].astype(bool)
    return [bool(all(flags[(st, int(i))] for i in s.split("+"))) for st, s in zip(sets, subsets)]


def results_table(p: dict, members: pd.DataFrame, grid: pd.DataFrame, metta_df: pd.DataFrame,
                  splits: Splits) -> pd.DataFrame:
    """One tidy table: a row per trained member (``experiment = member``, with its convergence check), per
    scored predictor (``tta``; ``converged`` = every member behind it converged) and per MeTTA probe
    (``metta``; ``test_acc`` = probe accuracy)."""
    base = dict(model=p["model"], dataset=p["dataset"], n_train=len(splits.train), epochs=p["epochs"],
                params=int(members["params"].iloc[0]), device=members["device"].iloc[0])
    clean_single = grid[(grid.domain == "clean") & (grid.method == "central") & (grid.k == 1)] \
        .set_index(["set", "subset"])
    member_rows = members.drop(columns=["params", "device"]).assign(experiment="member", **base)
    at = list(zip(member_rows["set"], member_rows["seed"]))
    member_rows["test_acc"] = clean_single.loc[at, "acc"].to_numpy()
    member_rows["test_nll"] = clean_single.loc[at, "nll"].to_numpy()
    g = grid.rename(columns={"acc": "test_acc", "nll": "test_nll", "subset": "seed"})
    g = g.assign(experiment="tta", wall_s=np.nan, images_per_s=np.nan,
                 converged=_subset_converged(members, g["set"], g["members"]), **base)
    flags = members.set_index(["set", "seed"])["converged"].astype(bool)
    mt = metta_df.assign(experiment="metta", set=CROP_FLIP_SET, test_nll=np.nan, wall_s=np.nan, images_per_s=np.nan,
                         **base, converged=[bool(flags[(CROP_FLIP_SET, s)]) if e == "trained" else False
                                            for e, s in zip(metta_df["encoder"], metta_df["seed"])])
    return pd.concat([member_rows, g, mt.rename(columns={"probe_acc": "test_acc"})], ignore_index=True)


def run_sweep(p: dict, progress: bool = False) -> Outcome:
    """Train or load the ensemble, compute every bank and score, probe MeTTA and write
    ``book/results/04_test_time_augmentation/<profile>.csv``."""
    t0 = time.perf_counter()
    splits = load_splits(p)
    models, rows = {}, []
    for member_set in MEMBER_SETS:
        models[member_set], r = train_members(p, splits, member_set, progress=progress)
        rows.append(r)
    members = pd.concat(rows, ignore_index=True)
    t1 = time.perf_counter()
    banks, grids = {}, []
    for member_set in MEMBER_SETS:
        tag = "" if member_set == CROP_FLIP_SET else f" ({member_set})"
        banks[member_set] = build_banks(p, models[member_set], splits, gps=member_set == RA_SET, tag=tag)
        grids.append(score_grid(p, banks[member_set], splits, len(models[member_set])).assign(set=member_set))
    grid = pd.concat(grids, ignore_index=True)
    t2 = time.perf_counter()
    metta_df = metta(p, models[CROP_FLIP_SET], splits)
    t3 = time.perf_counter()
    df = results_table(p, members, grid, metta_df, splits)
    write_results(df, NOTEBOOK, p["profile"])
    bank_timings = {k: v for b in banks.values() for k, v in b.timings.items()}
    bank_s = sum(v for k, v in bank_timings.items() if not k.startswith("test bank"))
    timings = {"load data + train or load the members": t1 - t0, **bank_timings,
               "scoring every predictor": (t2 - t1) - bank_s, "MeTTA (features + probes)": t3 - t2}
    return Outcome(splits, members, banks, grid, metta_df, df, timings)
