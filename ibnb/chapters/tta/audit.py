"""Chapter 04's claims audit and calibration rows, decided by :func:`ibnb.book.claims.judge`.

One uncertainty convention for every verdict: a Student-t 95 % interval over *independent* units — members for
single-model claims (each member is its own seed, the comparison is paired by member), independent ensembles
(disjoint sets of ``members`` members) for ensemble claims, encoders for MeTTA. No standard error over test images
enters a verdict: images share the members' weights. Calibrated NLL (temperature fitted on the same predictor's
validation predictions) is the primary metric; its differences are in millinats (1 millinat = 0.001 nats).

Which members each claim uses: the TTA, ensemble, ranking and MeTTA claims the crop+flip members (the Pitfalls
paper's setting); the GPS claims the RandAugment members, as in the GPS paper, whose training distribution
contains GPS's sub-policies (:data:`CLAIM_SETS`).
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from ibnb.book.claims import MIN_SEEDS, Calibration, Claim, Effect, check, effect_of, group_effect, judge, paired_effect
from ibnb.book.page import Audit
from ibnb.chapters.tta.members import CROP_FLIP_SET, RA_SET

PITFALLS, GPS_PAPER, METTA_PAPER = "ashukha2020pitfalls", "lyzhov2020greedy", "ashukha2021mean"
#: effect name -> the member set it is measured on
CLAIM_SETS = {"tta": CROP_FLIP_SET, "tta_err": CROP_FLIP_SET, "one": CROP_FLIP_SET, "gin": RA_SET, "gout": RA_SET,
              "crit": RA_SET}
#: metric -> (column of the grid, scale to display units, unit); lower is better for every one
METRICS = {"cnll": ("cnll", 1000.0, "millinats"), "nll": ("nll", 1000.0, "millinats"), "err": ("err", 100.0, "points")}


def _grid(grid: pd.DataFrame, members: pd.DataFrame, k: int, domain: str,
          member_set: str = CROP_FLIP_SET) -> pd.DataFrame:
    """Rows of ``member_set`` at ensemble size ``k`` on the clean set or averaged over every corrupted set
    (``domain="corrupted"``), one per (member subset, predictor ``method@m``), with ``err`` and the subset's
    convergence flag."""
    g = grid[(grid["k"] == k) & (grid["set"] == member_set)]
    g = g[g["domain"] == "clean"] if domain == "clean" else g[g["domain"] != "clean"]
    g = g.assign(err=1 - g["acc"], pred=g["method"] + "@" + g["m"].astype(int).astype(str))
    g = g.groupby(["subset", "members", "pred"], as_index=False)[["acc", "err", "nll", "cnll"]].mean()
    m = members[members["set"] == member_set] if "set" in members else members
    flags = m.set_index("seed")["converged"].astype(bool)
    g["converged"] = [all(flags[int(i)] for i in s.split("+")) for s in g["members"]]
    return g.rename(columns={"subset": "seed"})


def ensemble_size(out, member_set: str = CROP_FLIP_SET) -> int:
    """The size of the full ensembles of ``member_set`` (the largest k scored)."""
    return int(out.grid[out.grid["set"] == member_set]["k"].max())


def single_effect(out, a: str, b: str, metric: str = "cnll", domain: str = "clean",
                  member_set: str = CROP_FLIP_SET) -> Effect:
    """Single-model ``metric(a) − metric(b)`` (predictors ``"method@m"``), paired by member: n = members."""
    col, scale, unit = METRICS[metric]
    return paired_effect(_grid(out.grid, out.members, 1, domain, member_set), "pred", a, b, value=col, scale=scale,
                         unit=unit)


def ensemble_effect(out, a: str, b: str, metric: str = "cnll", domain: str = "clean",
                    member_set: str = CROP_FLIP_SET) -> Effect:
    """Full-ensemble ``metric(a) − metric(b)``, paired by independent (disjoint) ensemble: n = ensembles."""
    col, scale, unit = METRICS[metric]
    g = _grid(out.grid, out.members, ensemble_size(out, member_set), domain, member_set)
    return paired_effect(g, "pred", a, b, value=col, scale=scale, unit=unit)


def deep_ensemble_equivalent(out, P: dict) -> Effect:
    """DEE (Ashukha et al., 2020) of a single crop+flip member with its largest number of TTA views, per member:
    the (interpolated) size k of a central-view deep ensemble of the same members with the same calibrated NLL,
    read off the mean cNLL of the ensembles of each size; capped at the full ensemble size (a value at the cap
    means "at least that")."""
    K, S = ensemble_size(out), max(P["tta_samples"])
    g = out.grid[(out.grid["set"] == CROP_FLIP_SET) & (out.grid["domain"] == "clean")]
    curve = g[g["method"] == "central"].groupby("k")["cnll"].mean().sort_index()
    ks, c = curve.index.to_numpy(dtype=float), curve.to_numpy()
    single = _grid(out.grid, out.members, 1, "clean").set_index("pred")
    tta = single.loc[[f"crop+flip@{S}"]].set_index("seed")
    # cNLL falls with k: interpolate k(cNLL) on the decreasing curve, clipped to [1, K]
    values = [float(np.clip(np.interp(-v, -c, ks), 1, K)) for v in tta["cnll"]]
    return effect_of(values, scale=1.0, unit="members", converged=tta["converged"].astype(bool).tolist())


def ranking_flips(out) -> Effect:
    """Per member: the share (%) of pairs of clean predictors (method, m) that raw NLL orders differently from
    calibrated NLL."""
    g = _grid(out.grid, out.members, 1, "clean")
    shares, flags = [], []
    for _, d in g.groupby("seed"):
        s = d[["cnll", "nll"]].to_numpy()
        pairs = list(itertools.combinations(range(len(s)), 2))
        flips = sum(np.sign(s[i, 0] - s[j, 0]) * np.sign(s[i, 1] - s[j, 1]) < 0 for i, j in pairs)
        shares.append(flips / max(1, len(pairs)))
        flags.append(bool(d["converged"].iloc[0]))
    return effect_of(shares, scale=100.0, unit="% of pairs", converged=flags)


def metta_gain(out, P: dict) -> Effect:
    """Per trained encoder: probe accuracy on features averaged over the most views minus central features."""
    d = out.df[(out.df["experiment"] == "metta") & (out.df["encoder"] == "trained")]
    n_max = max(P["metta_views"])
    mean = d[(d["features"] == "mean over views") & (d["views"] == n_max)].set_index("seed")
    cen = d[d["features"] == "central"].set_index("seed")
    return effect_of((mean["test_acc"] - cen.loc[mean.index, "test_acc"]).tolist(),
                     converged=cen.loc[mean.index, "converged"].astype(bool).tolist())


def predictors(P: dict) -> dict[str, str]:
    """The predictors the claims compare, as ``"method@m"`` keys."""
    S, sc = max(P["tta_samples"]), P["corrupt_samples"]
    return {"central": "central@1", "cf": f"crop+flip@{S}", "cf1": "crop+flip@1", "gps": f"GPS@{S}",
            "gps_acc": f"GPS (accuracy criterion)@{S}", "cf_c": f"crop+flip@{sc}", "gps_c": f"GPS@{sc}"}


def effects(out, P: dict) -> dict[str, Effect]:
    """Every effect the claims and the prose quote, by name (``<comparison>_<single|ens>``)."""
    p = predictors(P)
    spec = {"tta": (p["cf"], p["central"], "cnll", "clean"), "tta_err": (p["cf"], p["central"], "err", "clean"),
            "one": (p["cf1"], p["central"], "cnll", "clean"), "gin": (p["gps"], p["cf"], "cnll", "clean"),
            "gout": (p["gps_c"], p["cf_c"], "cnll", "corrupted"), "crit": (p["gps"], p["gps_acc"], "cnll", "clean")}
    e = {}
    for name, (a, b, metric, domain) in spec.items():
        e[f"{name}_single"] = single_effect(out, a, b, metric, domain, CLAIM_SETS[name])
        e[f"{name}_ens"] = ensemble_effect(out, a, b, metric, domain, CLAIM_SETS[name])
    e["flips"] = ranking_flips(out)
    e["metta"] = metta_gain(out, P)
    e["dee"] = deep_ensemble_equivalent(out, P)
    return e


def keyed_claims(out, P: dict) -> dict[str, Claim]:
    """The chapter's claims by key (``<effect>_<single|ens>``, ``flips``, ``metta``, ``cost``), every one
    through :func:`judge` (the forward-pass count through :func:`check`)."""
    e, S, sc = effects(out, P), max(P["tta_samples"]), P["corrupt_samples"]
    tta, one = f"crop+flip, {S} views − central", "crop+flip, 1 view − central"
    rows = [("Test-time augmentation lowers the calibrated NLL", PITFALLS, "tta", -1, tta),
            ("Test-time augmentation lowers the test error", PITFALLS, "tta_err", -1, tta),
            ("A single augmented sample raises the calibrated NLL", PITFALLS, "one", +1, one),
            ("GPS beats crop+flip TTA in domain", GPS_PAPER, "gin", -1, f"GPS − crop+flip, {S} views"),
            ("GPS beats crop+flip TTA out of domain", GPS_PAPER, "gout", -1,
             f"GPS − crop+flip, {sc} views, corrupted sets (mean)"),
            ("The calibrated-NLL criterion finds a better GPS policy than accuracy", GPS_PAPER, "crit", -1,
             f"GPS (cNLL criterion) − GPS (accuracy criterion), {S} views")]
    out_claims = {}
    for claim, source, key, direction, what in rows:
        metric = "test error" if key.endswith("err") else "calibrated NLL"
        ens, K, who = e[f"{key}_ens"], ensemble_size(out, CLAIM_SETS[key]), f"{CLAIM_SETS[key]} members"
        few = (f"{ens.n} independent ensemble{'s' if ens.n != 1 else ''} of {K} members: an interval needs "
               f"{MIN_SEEDS} ({MIN_SEEDS * K} members)") if ens.n < MIN_SEEDS else ""
        out_claims[f"{key}_single"] = judge(claim, source, f"single model ({who}), {what}; {metric}",
                                            e[f"{key}_single"], direction=direction)
        out_claims[f"{key}_ens"] = judge(claim, source, f"ensemble of {K} ({who}), {what}; {metric}", ens,
                                         direction=direction, untestable=few)
    out_claims["flips"] = judge("Raw NLL orders predictors differently from calibrated NLL", PITFALLS,
                                "single models, clean: share of predictor pairs ordered differently", e["flips"])
    out_claims["metta"] = judge("Averaging features over views gives a better linear probe (MeTTA)", METTA_PAPER,
                                f"trained members, probe accuracy, mean of {max(P['metta_views'])} views − central",
                                e["metta"])
    t = out.banks[RA_SET].timings
    ratio = t[f"test bank ({RA_SET}): GPS"] / max(t[f"test bank ({RA_SET}): crop+flip"], 1e-9)
    out_claims["cost"] = check("At a fixed number of samples GPS needs no more forward passes than crop+flip",
                               GPS_PAPER, f"clean test set, {S} views per member",
                               f"{S} forward passes per member and image for both (wall time GPS / crop+flip: "
                               f"{ratio:.2f})", passed=True,
                               why="deterministic: both apply the members once per view")
    return out_claims


def claims(out, P: dict) -> list[Claim]:
    """The chapter's claims in page order (:func:`keyed_claims`)."""
    return list(keyed_claims(out, P).values())


#: the paper's closest setting to our members: VGG16-BN on CIFAR-10 (a plain conv stack, like our CNN)
ANCHOR_SETTING = "CIFAR-10, VGG16-BN, 50,000 training images, crop+flip"
ANCHORS = {"single_acc": 93.3, "ens_acc": 94.8, "single_cnll": 220.0, "ens_cnll": 160.0}


def calibration(out, P: dict) -> list[Calibration]:
    """Our crop+flip members and full ensembles (central view) beside the paper's CIFAR-10 numbers."""
    K = ensemble_size(out)
    members = out.df[(out.df["experiment"] == "member") & (out.df["set"] == CROP_FLIP_SET)]
    single = _grid(out.grid, out.members, 1, "clean")
    ens = _grid(out.grid, out.members, K, "clean")
    ens = ens[ens["pred"] == "central@1"]
    why = (f"our members are {P['model']} networks with {int(members['params'].iloc[0]):,} parameters trained "
           f"{P['epochs']} epochs on {int(members['n_train'].iloc[0]):,} images, against ~15 M parameters, "
           "50,000 images and 300 epochs; anchor values approximate")
    cen = single[single["pred"] == "central@1"]
    return [
        Calibration("single-model test accuracy", group_effect(members, value="test_acc"), ANCHORS["single_acc"],
                    PITFALLS, ANCHOR_SETTING, 1.5, why),
        Calibration(f"ensemble of {K}: test accuracy", group_effect(ens, value="acc"), ANCHORS["ens_acc"],
                    PITFALLS, ANCHOR_SETTING, 1.5, why),
        Calibration("single-model calibrated NLL", group_effect(cen, value="cnll", scale=1000.0, unit="millinats"),
                    ANCHORS["single_cnll"], PITFALLS, ANCHOR_SETTING, 30.0, why),
        Calibration(f"ensemble of {K}: calibrated NLL", group_effect(ens, value="cnll", scale=1000.0,
                                                                   unit="millinats"),
                    ANCHORS["ens_cnll"], PITFALLS, ANCHOR_SETTING, 30.0, why)]


def audit(out, P: dict) -> Audit:
    """Claims and calibration rows of the chapter."""
    return Audit(claims(out, P), calibration(out, P))
