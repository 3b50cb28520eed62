"""Chapter 01's claims audit: verdicts follow the numbers of a hand-made sweep table, through judge()."""
from __future__ import annotations

import importlib

import pandas as pd

from ibnb.book import profiles
from ibnb.chapters.architectures import presets
from ibnb.core.reference import REFERENCE_SIZES, epochs_for

A = importlib.import_module("ibnb.chapters.architectures.audit")  # the package's audit() shadows the module name


def _sweep(cnn_lead_small: float, cnn_lead_large: float, aug_gain: float, perm_drop_cnn: float, *, seeds: int = 3,
           converged: bool = True) -> pd.DataFrame:
    rows = []
    for n, lead in ((20, cnn_lead_small), (320, cnn_lead_large)):
        for seed in range(seeds):
            noise = 0.002 * seed
            for aug, gain in (("none", 0.0), ("crop+flip", aug_gain)):
                rows.append(dict(model="mlp", augment=aug, permuted=False, n_per_class=n, seed=seed,
                                 test_acc=0.30 + noise))
                rows.append(dict(model="mixer", augment=aug, permuted=False, n_per_class=n, seed=seed,
                                 test_acc=0.25 + noise))
                rows.append(dict(model="cnn", augment=aug, permuted=False, n_per_class=n, seed=seed,
                                 test_acc=0.30 + lead + gain + 2 * noise))
    for seed in range(seeds):  # the permutation control at 20 images per class
        rows.append(dict(model="mlp", augment="none", permuted=True, n_per_class=20, seed=seed,
                         test_acc=0.30 + 0.002 * seed + 0.001 * (-1) ** seed))
        rows.append(dict(model="cnn", augment="none", permuted=True, n_per_class=20, seed=seed,
                         test_acc=0.30 + cnn_lead_small - perm_drop_cnn + 0.004 * seed))
    df = pd.DataFrame(rows)
    df["converged"] = converged
    df["n_train"] = 10 * df["n_per_class"]
    df["epochs"] = 6
    return df


P = dict(n_per_class=[20, 320], models=["mlp", "mixer", "cnn"], augment_options=["none", "crop+flip"], epochs=6,
         permute_n_per_class=20, seeds=3, min_steps=100)


def _verdicts(df, p=P):
    return {c.claim: c.verdict for c in A.claims(df, p, num_classes=10)}


def test_claims_audit_verdicts_follow_the_numbers():
    v = _verdicts(_sweep(0.05, 0.01, 0.03, 0.05))
    assert v["a CNN beats an MLP when data is scarce"] == "supported"
    assert v["the CNN's lead over the MLP shrinks as the training set grows"] == "supported"
    assert v["MLP-Mixer trails a CNN on small data"] == "supported"
    assert v["crop+flip augmentation improves a CNN trained on 200 images"] == "supported"
    assert v["shuffling pixel positions hurts a CNN"] == "supported"
    assert v["shuffling pixel positions does not change an MLP"] == "consistent"

    flipped = _verdicts(_sweep(-0.05, 0.01, -0.03, -0.05))
    assert flipped["a CNN beats an MLP when data is scarce"] == "contradicted"
    assert flipped["the CNN's lead over the MLP shrinks as the training set grows"] == "contradicted"
    assert flipped["crop+flip augmentation improves a CNN trained on 3,200 images"] == "contradicted"
    assert flipped["shuffling pixel positions hurts a CNN"] == "contradicted"


def test_two_seeds_or_unconverged_runs_are_not_testable():
    two = _verdicts(_sweep(0.05, 0.01, 0.03, 0.05, seeds=2), {**P, "seeds": 2})
    assert set(two.values()) == {"not testable at this budget"}
    stuck = A.claims(_sweep(0.05, 0.01, 0.03, 0.05, converged=False), P, num_classes=10)
    assert {c.verdict for c in stuck} == {"not testable at this budget"}
    assert all("convergence" in c.reason for c in stuck)


def test_calibration_takes_the_best_cnn_at_the_largest_size():
    df = _sweep(0.05, 0.01, 0.03, 0.05)
    cal = A.calibration(df, {**P, "models": ["mlp", "cnn"]}, num_classes=10)
    assert len(cal) == 2 and {c.published for c in cal} == {93.0, 94.0}
    assert abs(cal[0].ours.mean - 100 * (0.30 + 0.01 + 0.03 + 0.004)) < 1e-9  # mean over seeds
    assert not cal[0].within and cal[0].row()["within tolerance"] == "no"


def test_presets_resolve_share_reference_sizes_and_validate():
    for prof in profiles.PROFILES:
        p = profiles.resolve(presets, {"profile": prof})
        assert p["model_kw"] == REFERENCE_SIZES[prof] and p["device"] != "auto"
    cpu = profiles.resolve(presets, {"profile": "cpu"})
    assert epochs_for(200, cpu["batch_size"], cpu["epochs"], cpu["min_steps"]) * (200 // cpu["batch_size"]) >= 100
    import pytest

    with pytest.raises(profiles.ParameterError, match="permute_n_per_class"):
        profiles.resolve(presets, {"permute_n_per_class": 7})
