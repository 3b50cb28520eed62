"""Prediction banks, the greedy policies and the score grid of chapter 04.

All predictions of one set of members are computed once into device-resident banks
(:mod:`ibnb.chapters.tta.ensembles`): every member on every view of the validation split (central and crop+flip
views and, for the set behind the GPS claims, the GPS pool on the search part of the split), of the clean test
set and of each corrupted test set. Every predictor of the chapter (method, number of views ``m``, ensemble size
``k``, member subset) is an average over a slice of a bank, scored with its own temperature (fitted on its
validation predictions) by :func:`score_grid`.
"""
from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass, field, replace

import pandas as pd
import torch

from ibnb.chapters.tta.ensembles import combine, prediction_bank
from ibnb.chapters.tta.gps import greedy_policy_search
from ibnb.chapters.tta.members import Splits
from ibnb.chapters.tta.policies import CENTRAL, CROP_FLIP, random_pool
from ibnb.core import metrics as cal
from ibnb.core.corruptions import corrupted

METHODS = ("central", "crop+flip", "GPS", "GPS (accuracy criterion)")

@dataclass
class Banks:
    """Log-probability banks ``(K, S, N, C)`` per method, for validation, clean test and corrupted sets."""

    val: dict[str, torch.Tensor] = field(default_factory=dict)
    val_y: dict[str, torch.Tensor] = field(default_factory=dict)  # labels of each validation bank
    test: dict[str, torch.Tensor] = field(default_factory=dict)
    corrupt: dict[str, torch.Tensor] = field(default_factory=dict)  # method -> (sets, K, S, N, C)
    corrupt_keys: list[tuple[str, int]] = field(default_factory=list)  # (corruption, severity) per set
    pool: list = field(default_factory=list)
    policies: dict[str, list[int]] = field(default_factory=dict)
    traces: dict[str, list[float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def policy_length(p: dict) -> int:
    """Number of greedy steps: enough sub-policies for the largest clean and corrupted view counts."""
    return max(max(p["tta_samples"]), p["corrupt_samples"])


def build_banks(p: dict, models, splits: Splits, gps: bool = True, tag: str = "") -> Banks:
    """Every prediction one set of members needs: central / crop+flip banks on validation, clean test and every
    corrupted test set and, with ``gps``, the GPS pool on the search split, the greedy policies and their banks.
    ``tag`` names the set in the timings and the view seeds."""
    b, seed, bs = Banks(), p["aug_seed"], p["eval_batch_size"]
    length = policy_length(p)
    if gps:
        tick = time.perf_counter()
        b.pool = random_pool(p["gps_pool"], tuple(p["gps_ops"]), seed=seed)
        pool_val = prediction_bank(models, splits.search, b.pool, seed=seed, set_name=f"gps-pool{tag}", batch_size=bs)
        cand = cal.log_mean_prob(pool_val, dim=0)  # (M, N, C): every candidate averaged over the members
        ys = splits.search.y.to(cand.device)
        for crit, method in (("cnll", "GPS"), ("acc", "GPS (accuracy criterion)")):
            b.policies[method], b.traces[method] = greedy_policy_search(cand, ys, length, crit)
            b.val[method], b.val_y[method] = pool_val[:, b.policies[method]], ys  # the search's own draws
        b.timings[f"GPS search{tag} (pool on validation)"] = time.perf_counter() - tick

    tick = time.perf_counter()
    s_max = max(p["tta_samples"])
    views = {"central": [CENTRAL], "crop+flip": [CROP_FLIP] * s_max}  # test views
    val_views = {"central": [CENTRAL], "crop+flip": [CROP_FLIP] * length}  # length >= corrupt_samples
    for name, v in val_views.items():
        b.val[name] = prediction_bank(models, splits.val, v, seed=seed, set_name=f"val-{name}{tag}", batch_size=bs)
        b.val_y[name] = splits.val.y
    for name, v in {**views, **{m: [b.pool[j] for j in b.policies[m][:s_max]] for m in b.policies}}.items():
        t0 = time.perf_counter()
        b.test[name] = prediction_bank(models, splits.test, v, seed=seed, set_name=f"test-{name}{tag}", batch_size=bs)
        b.timings[f"test bank{tag}: {name}"] = time.perf_counter() - t0
    b.timings[f"validation and clean-test banks{tag}"] = time.perf_counter() - tick

    tick = time.perf_counter()
    sc = p["corrupt_samples"]
    cviews = {"central": [CENTRAL], "crop+flip": [CROP_FLIP] * sc}
    if gps:
        cviews["GPS"] = [b.pool[j] for j in b.policies["GPS"][:sc]]
    b.corrupt_keys = list(itertools.product(p["corruptions"], p["severities"]))
    sets = [corrupted(splits.ctest, c, s, seed=seed) for c, s in b.corrupt_keys]
    # all corrupted sets as one batch of images (fewer, larger forward passes), split again afterwards
    joint = replace(splits.ctest, x=torch.cat([d.x for d in sets]), y=torch.cat([d.y for d in sets]))
    n = len(splits.ctest)
    for name, v in cviews.items():
        bank = prediction_bank(models, joint, v, seed=seed, set_name=f"corrupted-{name}{tag}", batch_size=bs)
        b.corrupt[name] = bank.unflatten(2, (len(sets), n)).permute(2, 0, 1, 3, 4).contiguous()
    b.timings[f"corrupted test banks{tag}"] = time.perf_counter() - tick
    return b


def member_subsets(n_members: int, k: int, n_subsets: int, seed: int = 0,
                   ensemble_size: int | None = None) -> list[tuple[int, ...]]:
    """Ensembles of size ``k`` drawn from ``n_members`` members that form independent ensembles of
    ``ensemble_size`` (default: all of them): every single member for k = 1, the disjoint ensembles
    (members ``e·K … e·K + K − 1``) for k = ``ensemble_size``, otherwise ``n_subsets`` distinct random subsets
    (seeded) of all the members."""
    K = ensemble_size or n_members
    if k == 1:
        return [(i,) for i in range(n_members)]
    if k == K:
        return [tuple(range(e * K, (e + 1) * K)) for e in range(n_members // K)]
    every = list(itertools.combinations(range(n_members), k))
    if len(every) <= n_subsets:
        return every
    return sorted(random.Random(seed * 1000 + k).sample(every, n_subsets))


def _floats(d: dict) -> dict:
    return {k: float(v) for k, v in d.items()}


def score_grid(p: dict, banks: Banks, splits: Splits, n_members: int) -> pd.DataFrame:
    """Scores of every (domain, severity, method, TTA samples m, ensemble size k, member subset).

    Clean test: every m of ``tta_samples`` for single models and the full ensemble, m in {1, max} for the
    other ensemble sizes. Corrupted sets: m in {1, ``corrupt_samples``}. The temperature of each predictor is
    fitted on its own validation predictions (clean data) and reused unchanged on the corrupted sets, as a
    deployed model would be. ``n_members`` members form ``n_members // members`` independent ensembles."""
    K, bins = min(p["members"], n_members), p["ece_bins"]
    s_max, sc = max(p["tta_samples"]), p["corrupt_samples"]
    dev = banks.test["central"].device
    yt, yc = (d.y.to(dev) for d in (splits.test, splits.ctest))
    rows = []
    for k in range(1, K + 1):
        m_clean = set(p["tta_samples"]) if k in (1, K) else {1, s_max}
        for subset_id, members in enumerate(member_subsets(n_members, k, p["member_subsets"], p["aug_seed"], K)):
            key = dict(k=k, subset=subset_id, members="+".join(map(str, members)))
            for method in [m for m in METHODS if m in banks.test]:
                m_corrupt = {1, sc} if method in banks.corrupt else set()
                for m in sorted({1} if method == "central" else m_clean | m_corrupt):
                    yv = banks.val_y[method].to(dev)
                    t = cal.fit_temperature(combine(banks.val[method], members, m), yv)
                    if m in m_clean:
                        rows.append(dict(domain="clean", severity=0, method=method, m=m, **key, **_floats(
                            cal.scores(combine(banks.test[method], members, m), yt, t, bins))))
                    if m in m_corrupt:  # every corrupted set at once: leading dimension = set
                        sc_sets = cal.scores(combine(banks.corrupt[method], members, m), yc, t, bins)
                        sc_sets = {name: v.expand(len(banks.corrupt_keys)).tolist() for name, v in sc_sets.items()}
                        for i, (c, s) in enumerate(banks.corrupt_keys):
                            rows.append(dict(domain=c, severity=s, method=method, m=m, **key,
                                             **{name: v[i] for name, v in sc_sets.items()}))
    return pd.DataFrame(rows)
