"""Chapter 06's claims audit: the Deep Weight Prior paper's claims, each decided by :func:`ibnb.book.claims.judge`,
and calibration rows of every method against the paper's MNIST table.

Effects are in points of test accuracy, DWP − other, paired by seed (the seed draws the training subset and the
initialisation); "with little data" averages the paired difference over the profile's training-set sizes, seed by
seed. No DWP claim is decided while the paper's baselines (L2, log-uniform, N(0,1)) are far from its table: the
``gate`` of :func:`judge` makes them *not testable* and says why.
"""
from __future__ import annotations

import math

import pandas as pd

from ibnb.book.claims import Calibration, Claim, Effect, effect_of, group_effect, judge, paired_effect
from ibnb.book.page import Audit
from ibnb.chapters.deep_weight_prior.presets import GATE_BASELINES

SOURCE = "atanov2019deep"
#: the paper's MNIST table (Atanov et al. 2019): test accuracy (%) by training-set size, *quoted*
PAPER = {50: {"L2 (deterministic)": 75.1, "log-uniform": 76.6, "N(0,1)": 71.7, "DWP": 80.0},
         1000: {"L2 (deterministic)": 95.4, "log-uniform": 95.8, "N(0,1)": 95.9, "DWP": 96.1}}
TOLERANCE = 3.0  # points of test accuracy, every calibration row
#: the authors' MNIST protocol as their released code runs it (bayesgroup/deep-weight-prior: README command,
#: train-bnn.py, models/lenet.py, the results notebook), *quoted* for the comparison of protocols
AUTHORS = {"widths": (32, 128), "n_source_nets": 100, "source": "100 nets trained on notMNIST", "epochs_50": 10_000,
           "batch": 256, "vae_hidden": (32, 64),
           "eval": "an ensemble of 10 weight samples", "mc_samples": 10, "seeds": 10,
           "init": "the posterior means initialised from samples of the VAE (for the DWP and for the L2 baseline)",
           "vae": "latent 2 and hidden width 32 for the 7×7 kernels, latent 4 and hidden width 64 for the 5×5",
           "forward": "the local reparameterisation trick, a noise sample per pre-activation"}
#: the setting of the previous `cpu` profile whose verdicts :data:`EARLIER` holds (commit d09017a)
EARLIER_SETTING = "80 steps per run, 3 seeds, 8-epoch source nets; commit d09017a"
#: the verdicts of that profile
EARLIER = {"DWP beats the log-uniform prior with little data": "not testable at this budget",
           "DWP beats the N(0,1) prior with little data": "not testable at this budget",
           "DWP beats a Gaussian prior fitted to the same source kernels": "not testable at this budget",
           "DWP beats a deterministic net with an L2 penalty with little data": "not testable at this budget",
           "kernels sampled from the DWP train faster than Xavier initialisation": "not testable at this budget",
           "learned source filters train faster than Xavier initialisation": "not testable at this budget"}
#: what each comparison is called in a claim
AGAINST = {"log-uniform": "the log-uniform prior", "N(0,1)": "the N(0,1) prior",
           "learned Gaussian": "a Gaussian prior fitted to the same source kernels",
           "L2 (deterministic)": "a deterministic net with an L2 penalty"}


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def names_text(names: list[str]) -> str:
    """``"A, B and C"``."""
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else list(names))


def small_runs(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["experiment"] == "small_data"]


def init_runs(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["experiment"] == "init"]


def averaged_gap(small: pd.DataFrame, a: str, b: str) -> Effect:
    """``a − b`` test accuracy (points) averaged over the training-set sizes, per seed; the interval over seeds.
    Every run of both methods enters the convergence count."""
    d = small[small["method"].isin([a, b])]
    wide = d.pivot_table(index=["seed", "n_train"], columns="method", values="test_acc")
    if a not in wide or b not in wide:
        return Effect(math.nan, math.nan, math.nan, 0)
    per_seed = (wide[a] - wide[b]).dropna().groupby(level="seed").mean()
    flags = d[d["seed"].isin(per_seed.index)]["converged"].astype(bool).tolist()
    return effect_of(per_seed.tolist(), converged=flags)


def effects(df: pd.DataFrame, p: dict) -> dict:
    """Every effect the audit and the prose use: accuracy per method and size (``acc``), DWP − other per size
    (``vs``) and averaged over sizes (``avg``), and the first-epoch-loss gain of each initialisation over Xavier."""
    small, init = small_runs(df), init_runs(df)
    e = {"acc": {(m, n): group_effect(small, where={"method": m, "n_train": n})
                 for m in p["methods"] for n in p["sizes"]}, "vs": {}, "avg": {}}
    for m in p["methods"]:
        if m != "DWP":
            e["avg"][m] = averaged_gap(small, "DWP", m)
            for n in p["sizes"]:
                e["vs"][(m, n)] = paired_effect(small, "method", "DWP", m, where={"n_train": n})
    e["init"] = {i: paired_effect(init, "method", "xavier", i, value="first_epoch_loss", scale=1.0, unit="nats")
                 for i in p["inits"] if i != "xavier"}
    return e


def calibration(df: pd.DataFrame, p: dict) -> list[Calibration]:
    """Every method at the paper's sizes that this profile runs, against the paper's MNIST table."""
    small, rows = small_runs(df), []
    for n, published in PAPER.items():
        if n not in p["sizes"]:
            continue
        d = small[small["n_train"] == n]
        steps = int(d["steps"].max()) if len(d) else 0
        theirs = (f"{AUTHORS['epochs_50']:,} full-batch epochs" if n == 50 else
                  "the schedule of their code at this size (its README gives the 50-image command only)")
        setting = (f"ours: {steps:,} steps of batch {min(p['target_batch'], n)}, {_seeds(p['seeds'])}; "
                   f"theirs: {theirs}, {AUTHORS['seeds']} seeds")
        for m, value in published.items():
            if m in p["methods"]:
                rows.append(Calibration(f"{m} test accuracy, {n:,} images", group_effect(d, where={"method": m}),
                                        value, SOURCE, setting, TOLERANCE))
    return rows


def baseline_gate(cal: list[Calibration], also: str | None = None) -> tuple[bool, str]:
    """DWP claims need the L2 and N(0,1) baselines (:data:`GATE_BASELINES`) within tolerance of the paper's table;
    a comparison with another method (``also``) needs that method's rows within tolerance too, where the paper has
    them."""
    names = GATE_BASELINES + ([also] if also and also not in GATE_BASELINES else [])
    rows = [c for c in cal if any(c.quantity.startswith(b + " ") for b in names)]
    off = [c for c in rows if not c.within]
    if not rows:
        return False, "no baseline is calibrated against the paper's table at this profile"
    listed = names_text([b for b in names if any(c.quantity.startswith(b + " ") for c in rows)])  # with paper rows
    worst = max(off, key=lambda c: abs(c.difference)) if off else None
    return not off, (f"{len(off)} of the {len(rows)} rows of {listed} {'is' if len(off) == 1 else 'are'} outside "
                     f"±{TOLERANCE:g} points of the paper's table (worst: {worst.quantity} {worst.difference:+.1f} "
                     f"points), so the baselines do not reproduce the paper's setting" if off else "")


def claims(df: pd.DataFrame, p: dict) -> list[Claim]:
    """The paper's claims that the runs test, each through :func:`judge`, DWP claims behind the baseline gate."""
    e, gate = effects(df, p), baseline_gate(calibration(df, p))
    sizes = f"{min(p['sizes']):,}–{max(p['sizes']):,}" if len(p["sizes"]) > 1 else f"{p['sizes'][0]:,}"
    setting = (f"MNIST, {sizes} training images (DWP − other averaged over the {len(p['sizes'])} sizes), "
               f"{_seeds(p['seeds'])}, {p['target_steps']:,} steps")
    cal = calibration(df, p)
    out = [judge(f"DWP beats {AGAINST[m]}" + ("" if m == "learned Gaussian" else " with little data"),
                 "" if m == "learned Gaussian" else SOURCE, setting, e["avg"][m], direction=+1,
                 gate=baseline_gate(cal, also=m))
           for m in p["methods"] if m != "DWP"]
    init_setting = (f"deterministic CNN, {10 * p['init_n_per_class']:,} MNIST images, {_seeds(p['init_seeds'])}; "
                    f"Xavier − other, mean training loss over the first epoch")
    if "DWP samples" in e["init"]:
        out.append(judge("kernels sampled from the DWP train faster than Xavier initialisation", SOURCE, init_setting,
                         e["init"]["DWP samples"], direction=+1, gate=gate))
    if "learned filters" in e["init"]:
        out.append(judge("learned source filters train faster than Xavier initialisation", SOURCE, init_setting,
                         e["init"]["learned filters"], direction=+1))
    return out


def audit(df: pd.DataFrame, p: dict) -> Audit:
    """The chapter's :class:`~ibnb.book.page.Audit`."""
    return Audit(claims(df, p), calibration(df, p))
