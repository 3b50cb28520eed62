"""Chapter 04 — augmentation as a prior at test time: TTA for ensembles, Greedy Policy Search, MeTTA.

One deep ensemble of ``members`` classifiers (same data, different seeds, trained with crop+flip) is
evaluated with three kinds of test-time views: the central image, random crop+flip views, and the views of a
policy found by Greedy Policy Search (GPS) on a validation split carved from the training set. Every
predictor is scored by accuracy, raw NLL, Brier, ECE and the *calibrated* NLL (temperature fitted on the same
predictor's validation predictions), in domain and on CIFAR-10-C-style corrupted test sets. MeTTA compares
linear probes on central vs view-averaged penultimate features.

All predictions are computed once into device-resident prediction banks (:mod:`ibnb.chapters.tta.ensembles`); every
number of the chapter is a slice of a bank.
"""
from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ibnb.core import metrics as cal
from ibnb.core.corruptions import CORRUPTIONS, SEVERITIES, corrupted
from ibnb.core.data import DATASETS, ImageData, balanced_indices, class_balanced_subset, load_dataset, split_off
from ibnb.chapters.tta.ensembles import combine, prediction_bank
from ibnb.chapters.tta.gps import CRITERIA, greedy_policy_search
from ibnb.core.models import count_parameters, create_model, list_models
from ibnb.book.profiles import register_presets, require
from ibnb.book.results import paired_difference
from ibnb.core.runs import train_or_load
from ibnb.core.train import device_name
from ibnb.chapters.tta.policies import CENTRAL, CROP_FLIP, POOL_OPS, random_pool
from ibnb.core.utils import seed_everything

NOTEBOOK = "04_test_time_augmentation"
METHODS = ("central", "crop+flip", "GPS", "GPS (accuracy criterion)")

_COMMON = dict(dataset="cifar10", model="cnn", train_augment="crop+flip", optimizer="adamw", lr=2e-3,
               weight_decay=0.05, schedule="cosine", label_smoothing=0.0, corruptions=list(CORRUPTIONS),
               severities=list(SEVERITIES), gps_ops=[2, 3], metta_views=[1, 10, 32],
               metta_alphas=[0.0, 0.25, 0.5, 0.75, 1.0], probe_C=1.0, ece_bins=15, aug_seed=0,
               device="auto", compile=False, eval_batch_size=256)
PRESETS = {
    "smoke": {**_COMMON, "model_kw": {"width": 4}, "members": 2, "n_per_class": 10, "val_per_class": 4,
              "test_per_class": 4, "corrupt_per_class": 2, "epochs": 1, "batch_size": 32, "tta_samples": [1, 2],
              "corrupt_samples": 2, "gps_pool": 4, "member_subsets": 1, "metta_members": 1,
              "probe_per_class": 4},
    "cpu": {**_COMMON, "model_kw": {"width": 8}, "members": 5, "n_per_class": 500, "val_per_class": 50,
            "test_per_class": 100, "corrupt_per_class": 20, "epochs": 12, "batch_size": 128,
            "tta_samples": [1, 2, 4, 8, 16], "corrupt_samples": 4, "gps_pool": 40, "member_subsets": 4,
            "metta_members": 2, "probe_per_class": 50},
    "gpu": {**_COMMON, "model": "resnet18", "model_kw": {"width": 64}, "members": 5, "n_per_class": 4500,
            "val_per_class": 500, "test_per_class": 0, "corrupt_per_class": 200, "epochs": 100, "batch_size": 256,
            "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "tta_samples": [1, 2, 4, 8, 16, 32],
            "corrupt_samples": 8, "gps_pool": 500, "member_subsets": 10, "metta_members": 3,
            "probe_per_class": 500, "eval_batch_size": 2000},
}


def _validate(p: dict) -> None:
    require(p["model"] in list_models(), f"unknown model {p['model']!r}; available: {list_models()}")
    require(p["dataset"] in DATASETS, f"unknown dataset {p['dataset']!r}")
    require(p["members"] >= 1 and 1 <= p["metta_members"] <= p["members"], "need 1 <= metta_members <= members")
    require(min(p["n_per_class"], p["val_per_class"], p["epochs"], p["batch_size"], p["gps_pool"],
                p["member_subsets"], p["probe_per_class"], p["corrupt_samples"]) >= 1,
            "n_per_class, val_per_class, epochs, batch_size, gps_pool, member_subsets, probe_per_class and "
            "corrupt_samples must be >= 1")
    require(p["test_per_class"] >= 0 and p["corrupt_per_class"] >= 0, "test_per_class, corrupt_per_class >= 0")
    t = p["tta_samples"]
    require(len(t) >= 1 and t[0] == 1 and all(a < b for a, b in zip(t, t[1:])),
            "tta_samples must be increasing and start at 1 (the single-sample case)")
    require(p["corrupt_samples"] in t, "corrupt_samples must be one of tta_samples (for the clean reference)")
    require(set(p["corruptions"]) <= set(CORRUPTIONS), f"corruptions must be among {CORRUPTIONS}")
    require(set(p["severities"]) <= set(SEVERITIES) and p["severities"], f"severities must be among {SEVERITIES}")
    require(set(p["gps_ops"]) <= {1, 2, 3, 4} and p["gps_ops"], "gps_ops: sub-policy lengths among 1..4")
    require(all(v >= 1 for v in p["metta_views"]) and 1 in p["metta_views"], "metta_views must include 1")
    require(all(0 <= a <= 1 for a in p["metta_alphas"]), "metta_alphas must lie in [0, 1]")
    require(p["train_augment"] in ("none", "crop+flip", "crop", "flip"), "train_augment: none/crop/flip/crop+flip")


register_presets(NOTEBOOK, PRESETS, _validate)


# ----------------------------------------------------------------------------- data and members
@dataclass
class Splits:
    train: ImageData
    val: ImageData            # carved from the training pool: temperatures and the GPS search
    test: ImageData
    ctest: ImageData          # the (nested) test subset that is corrupted
    probe: ImageData          # MeTTA linear-probe training set
    probe_held_out: bool      # probe images are unused by the ensemble (else: its own training images)


def load_splits(p: dict) -> Splits:
    pool, val = split_off(load_dataset(p["dataset"], "train"), p["val_per_class"], seed=10_000)
    idx = balanced_indices(pool, p["n_per_class"], seed=0)
    train = pool.subset(idx, n_per_class=p["n_per_class"], subset_seed=0)
    mask = torch.ones(len(pool), dtype=torch.bool)
    mask[idx] = False
    rest = pool.subset(torch.nonzero(mask).flatten())
    held_out = min(rest.class_counts() or [0]) >= p["probe_per_class"]
    probe = class_balanced_subset(rest if held_out else train, min(p["probe_per_class"], p["n_per_class"])
                                  if not held_out else p["probe_per_class"], seed=1)
    full_test = load_dataset(p["dataset"], "test")
    test = class_balanced_subset(full_test, p["test_per_class"], seed=0) if p["test_per_class"] else full_test
    # the same seed draws nested subsets, so the corrupted images are a subset of the clean test images
    ctest = class_balanced_subset(full_test, p["corrupt_per_class"], seed=0) if p["corrupt_per_class"] else full_test
    return Splits(train, val, test, ctest, probe, held_out)


def train_members(p: dict, splits: Splits):
    """Train (or load from the run cache) the ensemble; returns (models, one results row per member)."""
    device = None if p["device"] == "auto" else p["device"]
    models, rows = [], []
    for seed in range(p["members"]):
        model, hist, cached = train_or_load(
            p["model"], splits.train, None, model_kw=p["model_kw"], device=device, progress=False,
            epochs=p["epochs"], batch_size=p["batch_size"], optimizer=p["optimizer"], lr=p["lr"],
            weight_decay=p["weight_decay"], schedule=p["schedule"], label_smoothing=p["label_smoothing"],
            augment=p["train_augment"], seed=seed, compile=p["compile"])
        models.append(model)
        rows.append(dict(seed=seed, params=count_parameters(model), wall_s=hist.wall_s,
                         images_per_s=hist.images_per_s, cached=cached,
                         device=device_name(next(model.parameters()).device)))
    return models, pd.DataFrame(rows)


# ----------------------------------------------------------------------------- prediction banks and GPS
@dataclass
class Banks:
    """Log-probability banks ``(K, S, N, C)`` per method, for validation, clean test and corrupted sets."""

    val: dict[str, torch.Tensor] = field(default_factory=dict)
    test: dict[str, torch.Tensor] = field(default_factory=dict)
    corrupt: dict[str, torch.Tensor] = field(default_factory=dict)  # method -> (sets, K, S, N, C)
    corrupt_keys: list[tuple[str, int]] = field(default_factory=list)  # (corruption, severity) per set
    pool: list = field(default_factory=list)
    policies: dict[str, list[int]] = field(default_factory=dict)
    traces: dict[str, list[float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def policy_length(p: dict) -> int:
    return max(max(p["tta_samples"]), p["corrupt_samples"])


def build_banks(p: dict, models, splits: Splits) -> Banks:
    """Every prediction the chapter needs: the GPS pool on the validation set, the greedy policies, and
    central / crop+flip / GPS banks on validation, clean test and every corrupted test set."""
    b, seed, bs = Banks(), p["aug_seed"], p["eval_batch_size"]
    tick = time.perf_counter()
    b.pool = random_pool(p["gps_pool"], tuple(p["gps_ops"]), seed=seed)
    pool_val = prediction_bank(models, splits.val, b.pool, seed=seed, set_name="gps-pool", batch_size=bs)
    cand = cal.log_mean_prob(pool_val, dim=0)  # (M, N, C): every candidate averaged over the members
    length, yv = policy_length(p), splits.val.y.to(cand.device)
    for crit, method in (("cnll", "GPS"), ("acc", "GPS (accuracy criterion)")):
        b.policies[method], b.traces[method] = greedy_policy_search(cand, yv, length, crit)
        b.val[method] = pool_val[:, b.policies[method]]  # the search's own validation draws
    b.timings["GPS search (pool on validation)"] = time.perf_counter() - tick

    tick = time.perf_counter()
    s_max = max(p["tta_samples"])
    views = {"central": [CENTRAL], "crop+flip": [CROP_FLIP] * s_max}  # test views
    val_views = {"central": [CENTRAL], "crop+flip": [CROP_FLIP] * length}  # length >= corrupt_samples
    for name, v in val_views.items():
        b.val[name] = prediction_bank(models, splits.val, v, seed=seed, set_name=f"val-{name}", batch_size=bs)
    for name, v in {**views, **{m: [b.pool[j] for j in b.policies[m][:s_max]] for m in METHODS[2:]}}.items():
        t0 = time.perf_counter()
        b.test[name] = prediction_bank(models, splits.test, v, seed=seed, set_name=f"test-{name}", batch_size=bs)
        b.timings[f"test bank: {name}"] = time.perf_counter() - t0
    b.timings["validation and clean-test banks (all methods)"] = time.perf_counter() - tick

    tick = time.perf_counter()
    sc = p["corrupt_samples"]
    cviews = {"central": [CENTRAL], "crop+flip": [CROP_FLIP] * sc, "GPS": [b.pool[j] for j in b.policies["GPS"][:sc]]}
    b.corrupt_keys = list(itertools.product(p["corruptions"], p["severities"]))
    sets = [corrupted(splits.ctest, c, s, seed=seed) for c, s in b.corrupt_keys]
    # all corrupted sets as one batch of images (fewer, larger forward passes), split again afterwards
    joint = replace(splits.ctest, x=torch.cat([d.x for d in sets]), y=torch.cat([d.y for d in sets]))
    n = len(splits.ctest)
    for name, v in cviews.items():
        bank = prediction_bank(models, joint, v, seed=seed, set_name=f"corrupted-{name}", batch_size=bs)
        b.corrupt[name] = bank.unflatten(2, (len(sets), n)).permute(2, 0, 1, 3, 4).contiguous()
    b.timings["corrupted test banks"] = time.perf_counter() - tick
    return b


def member_subsets(n_members: int, k: int, n_subsets: int, seed: int = 0) -> list[tuple[int, ...]]:
    """Ensembles of size ``k``: every single member for k = 1, all members for k = K, otherwise
    ``n_subsets`` distinct random subsets (seeded)."""
    if k == 1:
        return [(i,) for i in range(n_members)]
    every = list(itertools.combinations(range(n_members), k))
    if len(every) <= n_subsets:
        return every
    return sorted(random.Random(seed * 1000 + k).sample(every, n_subsets))


def _floats(d: dict) -> dict:
    return {k: float(v) for k, v in d.items()}


def score_grid(p: dict, banks: Banks, splits: Splits) -> pd.DataFrame:
    """Scores of every (domain, severity, method, TTA samples m, ensemble size k, member subset).

    Clean test: every m of ``tta_samples`` for single models and the full ensemble, m in {1, max} for the
    other ensemble sizes. Corrupted sets: m in {1, ``corrupt_samples``}. The temperature of each predictor is
    fitted on its own validation predictions (clean data) and reused unchanged on the corrupted sets, as a
    deployed model would be."""
    K, bins = p["members"], p["ece_bins"]
    s_max, sc = max(p["tta_samples"]), p["corrupt_samples"]
    dev = banks.test["central"].device
    yv, yt, yc = (d.y.to(dev) for d in (splits.val, splits.test, splits.ctest))
    rows = []
    for k in range(1, K + 1):
        m_clean = set(p["tta_samples"]) if k in (1, K) else {1, s_max}
        for subset_id, members in enumerate(member_subsets(K, k, p["member_subsets"], p["aug_seed"])):
            key = dict(k=k, subset=subset_id, members="+".join(map(str, members)))
            for method in METHODS:
                m_corrupt = set() if method == "GPS (accuracy criterion)" else {1, sc}
                for m in sorted({1} if method == "central" else m_clean | m_corrupt):
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


# ----------------------------------------------------------------------------- comparisons
def per_image_loss(logp: torch.Tensor, y: torch.Tensor, temperature=None, metric: str = "cnll") -> torch.Tensor:
    """Per-example loss ``(..., N)`` of predictions ``(..., N, C)``: ``cnll``/``nll`` (nats) or ``err`` (0/1)."""
    if metric == "err":
        return (logp.argmax(-1) != y).float()
    if metric == "cnll" and temperature is not None:
        logp = logp / temperature
    return -logp.log_softmax(-1).gather(-1, y.expand(logp.shape[:-1]).unsqueeze(-1)).squeeze(-1)


def ensemble_difference(p: dict, banks: Banks, splits: Splits, a: tuple[str, int], b: tuple[str, int],
                        metric: str = "cnll", domain: str = "clean") -> tuple[float, float]:
    """Full-ensemble difference ``metric(a) − metric(b)`` (methods with their TTA sample counts) on the
    clean test set or averaged over all corrupted sets: (mean over test images, its standard error)."""
    dev = banks.test["central"].device
    yv = splits.val.y.to(dev)
    bank, y = (banks.test, splits.test.y) if domain == "clean" else (banks.corrupt, splits.ctest.y)
    y = y.to(dev)
    la, lb = (per_image_loss(combine(bank[n], None, m), y, cal.fit_temperature(combine(banks.val[n], None, m), yv),
                             metric) for n, m in (a, b))
    d = (la - lb).flatten()
    return float(d.mean()), float(d.std() / len(d) ** 0.5)


def verdict(mean: float, err: float, expected_sign: int) -> str:
    """``agrees`` / ``contradicts`` the claim that the difference has ``expected_sign`` (−1: lower is
    better), or ``inconclusive`` when it is within one standard error (or std) of zero; a NaN error (one
    sample) gives the direction only, flagged as such."""
    if err != err:
        return ("agrees" if np.sign(mean) == expected_sign else "contradicts") + " (one sample, no error bar)"
    if abs(mean) <= err:
        return "inconclusive (within one standard error)"
    return "agrees" if np.sign(mean) == expected_sign else "contradicts"


def single_model_difference(grid: pd.DataFrame, a: tuple[str, int], b: tuple[str, int], metric: str = "cnll",
                            domain: str = "clean") -> tuple[float, float]:
    """Single-model difference ``metric(a) − metric(b)`` paired by member: (mean, std over members).
    ``domain="corrupted"`` first averages over every corrupted set. ``metric="err"`` is the error rate."""
    g = grid[grid["k"] == 1]
    g = g[g["domain"] == "clean"] if domain == "clean" else g[g["domain"] != "clean"]
    g = g.assign(err=1 - g["acc"], pred=g["method"] + "@" + g["m"].astype(str), model="single")
    g = g.groupby(["model", "subset", "pred"], as_index=False)[metric].mean().rename(columns={"subset": "seed"})
    d = paired_difference(g, "pred", f"{a[0]}@{a[1]}", f"{b[0]}@{b[1]}", by="model", value=metric).iloc[0]
    return float(d["mean"]), float(0.0 if d["std"] != d["std"] else d["std"])


def ranking_flips(grid: pd.DataFrame, k_values: list[int], other: str = "nll") -> tuple[int, int]:
    """Among the clean predictors (method, m) of each ensemble size in ``k_values`` (means over member
    subsets): how many pairs does ``other`` (``nll`` or ``err``) order differently from the calibrated NLL?
    Returns (flipped pairs, pairs)."""
    g = grid[(grid["domain"] == "clean") & grid["k"].isin(k_values)].assign(err=lambda d: 1 - d["acc"])
    flips = pairs = 0
    for _, d in g.groupby("k"):
        s = d.groupby(["method", "m"])[["cnll", other]].mean().to_numpy()
        for i, j in itertools.combinations(range(len(s)), 2):
            pairs += 1
            flips += int(np.sign(s[i, 0] - s[j, 0]) * np.sign(s[i, 1] - s[j, 1]) < 0)
    return flips, pairs


def claims(p: dict, banks: Banks, splits: Splits, grid: pd.DataFrame, metta_df: pd.DataFrame) -> pd.DataFrame:
    """The claims audit: one row per (claim, setting) with our measurement and a computed verdict.

    Differences are "method − reference" in calibrated NLL (nats) unless stated; single models: mean ± std
    over members (paired by member); ensembles: mean ± standard error over test images."""
    K, S, sc = p["members"], max(p["tta_samples"]), p["corrupt_samples"]
    rows = []

    def add(claim, setting, mean, err, sign, what, unit="nats", scale=1.0, kind="std over members"):
        rows.append(dict(claim=claim, setting=setting, mean=mean, err=err, expected="lower" if sign < 0 else "higher",
                         measurement=f"{what}: {scale * mean:+.3f} ± {scale * err:.3f} {unit} ({kind})",
                         verdict=verdict(mean, err, sign)))

    cf, cen, gps, gps_acc = ("crop+flip", S), ("central", 1), ("GPS", S), ("GPS (accuracy criterion)", S)
    tta_claim = "TTA improves ensembles"
    add(tta_claim, f"ensemble of {K}, clean", *ensemble_difference(p, banks, splits, cf, cen), -1,
        f"cNLL, crop+flip ({S} views) − central", kind="s.e. over test images")
    add(tta_claim, f"ensemble of {K}, clean", *ensemble_difference(p, banks, splits, cf, cen, "err"), -1,
        f"error, crop+flip ({S} views) − central", unit="points", scale=100, kind="s.e. over test images")
    one = "A single augmented sample hurts"
    add(one, "single model, clean", *single_model_difference(grid, ("crop+flip", 1), cen), +1,
        "cNLL, crop+flip (1 view) − central")
    add(one, f"ensemble of {K}, clean", *ensemble_difference(p, banks, splits, ("crop+flip", 1), cen), +1,
        "cNLL, crop+flip (1 view per member) − central", kind="s.e. over test images")
    gin = "GPS beats crop+flip TTA in domain"
    add(gin, "single model, clean", *single_model_difference(grid, gps, cf), -1, f"cNLL, GPS − crop+flip ({S} views)")
    add(gin, f"ensemble of {K}, clean", *ensemble_difference(p, banks, splits, gps, cf), -1,
        f"cNLL, GPS − crop+flip ({S} views)", kind="s.e. over test images")
    gout = "GPS beats crop+flip TTA out of domain"
    add(gout, "single model, corrupted (mean)", *single_model_difference(grid, ("GPS", sc), ("crop+flip", sc), domain="corrupted"),
        -1, f"cNLL, GPS − crop+flip ({sc} views)")
    add(gout, f"ensemble of {K}, corrupted (mean)",
        *ensemble_difference(p, banks, splits, ("GPS", sc), ("crop+flip", sc), domain="corrupted"), -1,
        f"cNLL, GPS − crop+flip ({sc} views)", kind="s.e. over corrupted test images")
    crit = "Calibrated log-likelihood is a better GPS criterion than accuracy"
    add(crit, "single model, clean", *single_model_difference(grid, gps, gps_acc), -1,
        f"cNLL, GPS (cNLL criterion) − GPS (accuracy criterion), {S} views")
    add(crit, f"ensemble of {K}, clean", *ensemble_difference(p, banks, splits, gps, gps_acc), -1,
        f"cNLL, GPS (cNLL criterion) − GPS (accuracy criterion), {S} views", kind="s.e. over test images")
    n_max = max(p["metta_views"])
    tr = metta_df[metta_df["encoder"] == "trained"]
    gain = (tr[(tr["features"] == "mean over views") & (tr["views"] == n_max)].set_index("seed")["probe_acc"]
            - tr[tr["features"] == "central"].set_index("seed")["probe_acc"])
    add("MeTTA gives better features for a linear probe", f"{len(gain)} trained encoder(s)", float(gain.mean()),
        float("nan" if len(gain) < 2 else gain.std()), +1, f"probe accuracy, mean of {n_max} views − central",
        unit="points", scale=100, kind="std over encoders")
    flips, pairs = ranking_flips(grid, [1, K], "nll")
    eflips, _ = ranking_flips(grid, [1, K], "err")
    rows.append(dict(claim="Raw NLL and accuracy mislead; compare by calibrated NLL", setting="clean, k = 1 and k = K",
                     mean=flips, err=0.0, expected="flips > 0",
                     measurement=f"{flips} of {pairs} predictor pairs are ordered differently by raw NLL than by "
                                 f"calibrated NLL ({eflips} by error)",
                     verdict="agrees" if flips > 0 else "not observed (raw and calibrated NLL agree)"))
    ratio = banks.timings["test bank: GPS"] / banks.timings["test bank: crop+flip"]
    rows.append(dict(claim="GPS costs no more than crop+flip at a fixed number of samples", setting="clean test banks",
                     mean=ratio, err=0.0, expected="ratio ≈ 1",
                     measurement=f"same number of forward passes; wall time GPS / crop+flip = {ratio:.2f}",
                     verdict="agrees" if ratio < 1.25 else "partly: the augmentation ops add wall time on this device"))
    out = pd.DataFrame(rows)
    out["source"] = out["claim"].map(lambda c: "ashukha2021mean" if c.startswith("MeTTA")
                                     else "lyzhov2020greedy" if "GPS" in c else "ashukha2020pitfalls")
    return out


# ----------------------------------------------------------------------------- MeTTA
def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 C: float = 1.0) -> tuple[float, float]:
    """Multinomial logistic regression (scikit-learn, L-BFGS, inverse L2 strength ``C``) on features
    standardised with the training statistics; returns (test accuracy, test NLL in nats)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    mu, sd = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xtr, xte = (((x - mu) / sd).double().cpu().numpy() for x in (train_x, test_x))
    ytr, yte = train_y.cpu().numpy(), test_y.cpu().numpy()
    clf = LogisticRegression(C=C, max_iter=1000).fit(xtr, ytr)
    return float(clf.score(xte, yte)), float(log_loss(yte, clf.predict_proba(xte), labels=clf.classes_))


def metta(p: dict, models, splits: Splits) -> pd.DataFrame:
    """Linear-probe accuracy of central vs view-averaged penultimate features (random crop+flip views), for
    ``metta_members`` trained members and one untrained (randomly initialised) network of the same kind, plus
    the interpolation ``(1 − a)·mean + a·central`` at the largest number of views."""
    n_max = max(p["metta_views"])
    device = next(models[0].parameters()).device
    seed_everything(10_000)
    untrained = create_model(p["model"], num_classes=splits.train.num_classes, in_channels=splits.train.shape[0],
                             image_size=splits.train.shape[1], **p["model_kw"]).to(device)
    encoders = [("trained", i, models[i]) for i in range(p["metta_members"])] + [("untrained", 0, untrained)]
    views = [CENTRAL] + [CROP_FLIP] * n_max
    rows = []
    for kind, seed, enc in encoders:
        feats = {}
        for part, data in (("probe", splits.probe), ("test", splits.test)):
            f = prediction_bank([enc], data, views, seed=p["aug_seed"], set_name=f"metta-{part}-{kind}{seed}",
                                batch_size=p["eval_batch_size"], features=True)[0]
            feats[part] = (f[0], f[1:])  # central (N, D), views (n_max, N, D)
        ytr, yte = splits.probe.y.to(device), splits.test.y.to(device)

        def probe(make):
            return linear_probe(make(*feats["probe"]), ytr, make(*feats["test"]), yte, p["probe_C"])

        central = probe(lambda c, v: c)
        rows.append(dict(encoder=kind, seed=seed, features="central", views=1, alpha=1.0,
                         probe_acc=central[0], probe_nll=central[1]))
        mean = {n: probe(lambda c, v: v[:n].mean(0)) for n in sorted(set(p["metta_views"]) | {n_max})}
        rows += [dict(encoder=kind, seed=seed, features="mean over views", views=n, alpha=0.0, probe_acc=r[0],
                      probe_nll=r[1]) for n, r in mean.items() if n in p["metta_views"]]
        for a in p["metta_alphas"]:  # a = 0: the mean over all views; a = 1: the central feature
            r = mean[n_max] if a == 0 else central if a == 1 else probe(lambda c, v: (1 - a) * v.mean(0) + a * c)
            rows.append(dict(encoder=kind, seed=seed, features="interpolation", views=n_max, alpha=a,
                             probe_acc=r[0], probe_nll=r[1]))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- results table
def results_table(p: dict, members: pd.DataFrame, grid: pd.DataFrame, metta_df: pd.DataFrame,
                  splits: Splits) -> pd.DataFrame:
    """One tidy table: a row per trained member, per scored predictor and per MeTTA probe."""
    base = dict(model=p["model"], dataset=p["dataset"], n_train=len(splits.train), epochs=p["epochs"],
                params=int(members["params"].iloc[0]), device=members["device"].iloc[0])
    rows = [dict(experiment="member", **base, seed=r.seed, test_acc=np.nan, test_nll=np.nan, wall_s=r.wall_s,
                 images_per_s=r.images_per_s, cached=r.cached) for r in members.itertuples()]
    member_rows = pd.DataFrame(rows)
    clean_single = grid[(grid.domain == "clean") & (grid.method == "central") & (grid.k == 1)].set_index("subset")
    member_rows["test_acc"] = clean_single.loc[member_rows["seed"], "acc"].to_numpy()
    member_rows["test_nll"] = clean_single.loc[member_rows["seed"], "nll"].to_numpy()
    g = grid.rename(columns={"acc": "test_acc", "nll": "test_nll", "subset": "seed"})
    g = g.assign(experiment="tta", wall_s=np.nan, images_per_s=np.nan, **base)
    mt = metta_df.rename(columns={"probe_acc": "test_acc", "probe_nll": "test_nll"})
    mt = mt.assign(experiment="metta", wall_s=np.nan, images_per_s=np.nan, **base)
    return pd.concat([member_rows, g, mt], ignore_index=True)
