"""What chapter 04's page quotes: :func:`numbers` (glued by name) and :func:`tables` (through the one formatter)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ibnb.book.claims import NOT_TESTABLE, group_effect, tally
from ibnb.book.page import Markdown
from ibnb.book.tables import Table, table
from ibnb.chapters.tta import audit as _audit
from ibnb.chapters.tta.banks import METHODS, policy_length
from ibnb.chapters.tta.members import CROP_FLIP_SET, RA_SET, set_size
from ibnb.chapters.tta.policies import CROP_FLIP, POOL_OPS
from ibnb.core.image_ops import OPS

#: verdict counts of this chapter's 13 rows at profile ``cpu`` under the earlier one-standard-deviation rule
#: (commit 19229e2, ``book/results/04_test_time_augmentation/cpu-claims.csv``)
EARLIER = {"rows": 13, "supported": 3, "contradicted": 7, "inconclusive": 3}


def _mean(grid: pd.DataFrame, **where) -> pd.DataFrame:
    d = grid
    for col, v in where.items():
        d = d[d[col] == v]
    return d


def _metta_numbers(out, P: dict) -> dict:
    d, n_max = out.metta, max(P["metta_views"])
    n = {"n_enc": P["metta_members"], "n_views_max": n_max, "n_probe": len(out.splits.probe),
         "probe_source": Markdown("held-out training images that the ensemble never saw" if out.splits.probe_held_out
                                  else "of the ensemble's own training images (no held-out images are left)")}
    for kind, tag in (("trained", "tr"), ("untrained", "un")):
        e = d[d["encoder"] == kind]
        n[f"metta_{tag}_central"] = float(100 * e[e["features"] == "central"]["probe_acc"].mean())
        n[f"metta_{tag}_meanmax"] = float(100 * e[(e["features"] == "mean over views") & (e["views"] == n_max)][
            "probe_acc"].mean())
    it = d[(d["encoder"] == "trained") & (d["features"] == "interpolation")].groupby("alpha")["probe_acc"].mean()
    n["metta_best_alpha"], n["metta_best_acc"] = float(it.idxmax()), float(100 * it.max())
    n["untrained_phrase"] = Markdown("averaging views also helps features that were never trained"
                                     if n["metta_un_meanmax"] > n["metta_un_central"]
                                     else "for features that were never trained, averaging views does not help")
    return n


def _k_equiv(out, P: dict) -> Markdown:
    """The smallest ensemble with crop+flip TTA whose calibrated NLL matches the full central ensemble."""
    K, S = _audit.ensemble_size(out), max(P["tta_samples"])
    g = out.grid[(out.grid["domain"] == "clean") & (out.grid["set"] == CROP_FLIP_SET)]
    by_k = _mean(g, method="crop+flip", m=S).groupby("k")["cnll"].mean()
    ref = float(_mean(g, method="central", k=K)["cnll"].mean())
    better = [int(k) for k, v in by_k.items() if v <= ref]
    who = (f"an ensemble of {min(better)} member{'s' if min(better) > 1 else ''}" if better else "no ensemble size")
    return Markdown(f"with crop+flip TTA, {who} (mean over member subsets) already matches the calibrated NLL of "
                    f"the full central ensembles of {K} ({1000 * ref:.0f} millinats, mean over ensembles)")


def numbers(out, P: dict) -> dict:
    """Every number the page quotes, by glue name."""
    members, K = out.members, _audit.ensemble_size(out)
    cf, ra = members[members["set"] == CROP_FLIP_SET], members[members["set"] == RA_SET]
    tr = np.asarray(out.banks[RA_SET].traces["GPS"])
    half, total = len(tr) // 2, tr[0] - tr[-1]
    n = {"n_val": len(out.splits.val), "n_search": len(out.splits.search), "n_train": len(out.splits.train),
         "n_test": len(out.splits.test), "n_cf": set_size(P, CROP_FLIP_SET), "n_ens": P["ensembles"],
         "n_ra": set_size(P, RA_SET), "ra_ops": P["ra_ops"], "warmup_pct": float(100 * P["warmup_fraction"]),
         "momentum": float(P["momentum"]), "label_smoothing": float(P["label_smoothing"]),
         "lookahead_md": Markdown("with lookahead (every 5 steps the slow weights move half-way to the fast ones)"
                                  if P["lookahead"] else "without lookahead"),
         "cf_acc": Markdown(group_effect(cf.assign(test_acc=_member_acc(out, cf)), value="test_acc")
                            .text(signed=False)),
         "ra_acc": Markdown(group_effect(ra.assign(test_acc=_member_acc(out, ra)), value="test_acc")
                            .text(signed=False)),
         "n_cf_converged": int(cf["converged"].sum()), "n_ra_converged": int(ra["converged"].sum()),
         "n_ctest": len(out.splits.ctest), "n_corruptions": len(P["corruptions"]), "n_severities": len(P["severities"]),
         "K": K, "model_md": Markdown(f"`{P['model']}` (`{P['model_kw']}`)"), "params": int(members["params"].iloc[0]),
         "optimizer_md": Markdown({"adamw": "AdamW", "sgd": "SGD with Nesterov momentum"}[P["optimizer"]]),
         "pad": CROP_FLIP.pad, "lr": float(P["lr"]), "wd": float(P["weight_decay"]), "batch_size": P["batch_size"],
         "epochs": P["epochs"], "n_cached": int(members["cached"].sum()), "n_members": len(members),
         "n_converged": int(members["converged"].sum()),
         "bins": P["ece_bins"], "gps_pool": P["gps_pool"], "policy_len": policy_length(P),
         "gps_ops_md": Markdown(" or ".join(str(v) for v in P["gps_ops"])), "S": max(P["tta_samples"]),
         "sc": P["corrupt_samples"], "gps_half": half,
         "gps_half_frac": float(100 * (tr[0] - tr[half - 1]) / total) if total > 0 and half > 0 else 100.0,
         "k_equiv_phrase": _k_equiv(out, P),
         **{f"earlier_{k}": v for k, v in EARLIER.items()}}
    n.update({f"e_{k}": Markdown(e.text()) for k, e in _audit.effects(out, P).items()})
    keyed = _audit.keyed_claims(out, P)
    n.update({f"v_{k}": Markdown(f"*{c.verdict}*") for k, c in keyed.items()})
    n.update(n_claims=len(keyed), n_not_testable=tally(keyed.values())[NOT_TESTABLE],
             n_decided=sum(c.decided for c in keyed.values()))
    cal = _audit.calibration(out, P)
    n.update(cal_single_acc=Markdown(cal[0].ours.text(signed=False)), cal_acc_gap=float(-cal[0].difference),
             cal_single_cnll=Markdown(cal[2].ours.text(signed=False)), cal_cnll_gap=float(cal[2].difference),
             cal_anchor_acc=float(cal[0].published))
    n.update(_metta_numbers(out, P))
    return n


def _member_acc(out, rows: pd.DataFrame) -> list[float]:
    """Central-view test accuracy of each member row (from the score grid)."""
    g = out.grid[(out.grid["domain"] == "clean") & (out.grid["method"] == "central") & (out.grid["k"] == 1)]
    acc = g.set_index(["set", "subset"])["acc"]
    return [float(acc[(st, sd)]) for st, sd in zip(rows["set"], rows["seed"])]


def _summary(out, P: dict, domain: str) -> Table:
    """Error and calibrated NLL per member set and predictor: single models (mean and interval over members) and
    the full ensembles (mean and interval over independent ensembles)."""
    S, sc = max(P["tta_samples"]), P["corrupt_samples"]
    ms = [1, S] if domain == "clean" else [1, sc]
    g = out.grid[out.grid["domain"] == "clean"] if domain == "clean" else out.grid[out.grid["domain"] != "clean"]
    g = g.groupby(["set", "k", "subset", "method", "m"], as_index=False)[["acc", "cnll", "nll", "temperature"]].mean()
    g = g.assign(err=1 - g["acc"], converged=True)
    rows = []
    for member_set in (CROP_FLIP_SET, RA_SET):
        K = _audit.ensemble_size(out, member_set)
        for method in METHODS:
            for m in ([1] if method == "central" else ms):
                one, ens = (_mean(g, set=member_set, method=method, m=m, k=k) for k in (1, K))
                if not len(one):
                    continue
                rows.append({"members": f"{member_set} (ensembles of {K})", "predictor": method,
                             "views per member": m,
                             "single model: error (%)": group_effect(one, value="err").text(signed=False),
                             "single model: cNLL (millinats)": group_effect(one, value="cnll", scale=1000.0,
                                                                            unit="").text(digits=0, signed=False),
                             "ensemble: error (%)": group_effect(ens, value="err").text(signed=False),
                             "ensemble: cNLL (millinats)": group_effect(ens, value="cnll", scale=1000.0,
                                                                        unit="").text(digits=0, signed=False),
                             "ensemble: raw NLL (millinats)": float(1000 * ens["nll"].mean()),
                             "ensemble temperature": float(ens["temperature"].mean())})
    d = pd.DataFrame(rows)
    return table(d, digits={c: (2 if "temperature" in c else 0 if "millinats" in c else 1) for c in d.columns})


def tables(out, P: dict) -> dict:
    """The chapter's tables by name (all through :func:`ibnb.book.tables.table`)."""
    m = out.df[out.df["experiment"] == "member"]
    members = table(m[["set", "ensemble", "seed", "test_acc", "test_nll", "converged", "convergence", "wall_s",
                       "images_per_s", "cached"]],
                    columns={"set": "training augmentation", "ensemble": "ensemble", "seed": "member (seed)",
                             "test_acc": "test accuracy (%)", "test_nll": "test NLL (nats)",
                             "images_per_s": "training images/s",
                             "converged": "converged", "convergence": "convergence check", "wall_s": "wall time (s)",
                             "cached": "from the run cache"}, percent=("test_acc",), digits={"test_nll": 3})
    b = out.banks[RA_SET]
    pol = b.policies["GPS"]
    policy = table(pd.DataFrame({"step": np.arange(1, len(pol) + 1), "sub-policy": [b.pool[j].describe() for j in pol],
                                 "validation cNLL after the step (nats)": b.traces["GPS"]}), digits=4)
    ops = table(pd.DataFrame([{"operation": name, "signed magnitude": bool(OPS[name][1]),
                               "what it does": OPS[name][0].__doc__.strip().splitlines()[0]} for name in POOL_OPS]))
    d = out.metta.groupby(["encoder", "features", "views", "alpha"], as_index=False, sort=False)["probe_acc"].agg(
        ["mean", "count"])
    metta = table(d.rename(columns={"encoder": "encoder", "features": "features", "views": "views N",
                                    "alpha": "a", "mean": "probe accuracy (%)", "count": "encoders"}),
                  percent=("probe accuracy (%)",), digits={"a": 2, "probe accuracy (%)": 1})
    timing = table(pd.DataFrame({"part": list(out.timings), "wall time (s)": list(out.timings.values())}))
    return {"members": members, "policy": policy, "ops": ops, "clean": _summary(out, P, "clean"),
            "corrupted": _summary(out, P, "corrupted"), "metta": metta, "timing": timing}
