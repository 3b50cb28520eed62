"""Chapter 04: calibration metrics and temperature scaling, TTA ops, corruptions, ensembles, GPS, presets, and the
claims audit (verdicts that flip when the data flip)."""
from __future__ import annotations

import importlib
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from ibnb.book import profiles
from ibnb.book.claims import CONTRADICTED, NOT_TESTABLE, SUPPORTED
from ibnb.chapters.tta import presets
from ibnb.chapters.tta.banks import member_subsets
from ibnb.chapters.tta.ensembles import combine, prediction_bank
from ibnb.chapters.tta.gps import greedy_policy_search, greedy_step, policy_loss
from ibnb.chapters.tta.policies import CROP_FLIP, random_pool
from ibnb.core import metrics as cal
from ibnb.core.corruptions import CORRUPTIONS, SEVERITIES, corrupt, corrupted
from ibnb.core.image_ops import OPS, apply_op
from ibnb.core.models import create_model

# the package exposes the contract function audit(); the module of the same name holds the claims
tta_audit = importlib.import_module("ibnb.chapters.tta.audit")

from conftest import toy_data


def _toy_classifier(n=20_000, c=5, seed=0):
    """True logits and labels drawn from softmax(true logits): a perfectly calibrated predictor."""
    g = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(n, c, generator=g)
    y = torch.multinomial(logits.softmax(-1), 1, generator=g).squeeze(1)
    return logits, y


# ----------------------------------------------------------------------------- calibration
def test_temperature_scaling_lowers_nll_of_a_miscalibrated_model():
    logits, y = _toy_classifier()
    over = 4.0 * logits  # over-confident: the right ranking, far too sharp
    t = cal.fit_temperature(over[:10_000], y[:10_000])  # fit on a "validation" half
    assert 3.5 < float(t) < 4.5
    raw, fixed = cal.nll(over[10_000:], y[10_000:]), cal.nll(over[10_000:], y[10_000:], t)
    assert float(fixed) < float(raw) - 0.5
    s = cal.calibrated_scores(over[:10_000], y[:10_000], over[10_000:], y[10_000:])
    assert float(s["cnll"]) == pytest.approx(float(fixed), abs=1e-5) and float(s["cece"]) < float(s["ece"])
    # the accuracy does not change with the temperature
    assert float(s["acc"]) == pytest.approx(float(cal.accuracy(over[10_000:], y[10_000:])))


def test_temperature_fit_is_the_nll_minimiser_and_batched():
    logits, y = _toy_classifier(4000, 4, seed=1)
    batch = torch.stack([0.5 * logits, logits, 3 * logits])
    t = cal.fit_temperature(batch, y)
    assert t.shape == (3,)
    grid = torch.exp(torch.linspace(-3, 3, 601))
    for i in range(3):
        best = grid[cal.nll(batch[i].expand(len(grid), -1, -1), y, grid).argmin()]
        assert float(t[i]) == pytest.approx(float(best), rel=0.02)


def test_ece_of_a_perfectly_calibrated_predictor_is_near_zero():
    logits, y = _toy_classifier(200_000)
    assert float(cal.ece(logits, y)) < 0.01
    assert float(cal.ece(4 * logits, y)) > 0.1  # an over-confident one is far off
    r = cal.reliability(logits, y, 10)
    filled = r["count"] > 1000
    assert torch.allclose(r["accuracy"][filled], r["confidence"][filled], atol=0.02)
    assert int(r["count"].sum()) == len(y)


def test_metrics_on_a_hand_made_example():
    logp = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]]))
    y = torch.tensor([0, 1, 1])
    assert float(cal.accuracy(logp, y)) == pytest.approx(2 / 3)
    assert float(cal.nll(logp, y)) == pytest.approx(-(math.log(0.7) + math.log(0.8) + math.log(0.3)) / 3, rel=1e-5)
    brier = ((0.3 ** 2 + 0.2 ** 2 + 0.1 ** 2) + (0.1 ** 2 + 0.2 ** 2 + 0.1 ** 2) + (0.6 ** 2 + 0.7 ** 2 + 0.1 ** 2)) / 3
    assert float(cal.brier(logp, y)) == pytest.approx(brier, rel=1e-5)
    # one bin (0, 1]: |mean correct - mean confidence|
    assert float(cal.ece(logp, y, n_bins=1)) == pytest.approx(abs(2 / 3 - (0.7 + 0.8 + 0.6) / 3), rel=1e-5)


# ----------------------------------------------------------------------------- GPS
def test_gps_greedy_step_picks_the_best_candidate():
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    onehot = torch.nn.functional.one_hot(y, 3).float()
    quality = [0.4, 0.9, 0.6, 0.2]  # probability each candidate puts on the true class
    cand = torch.stack([torch.log(q * onehot + (1 - q) / 2 * (1 - onehot)) for q in quality])
    for crit in ("cnll", "nll"):
        j, losses = greedy_step(None, 0, cand, y, crit)
        assert j == 1 and losses.shape == (4,)
    # with a current policy, the step scores the *averaged* prediction of policy + candidate
    current = cand[3]
    j, losses = greedy_step(current, 1, cand, y, "nll")
    brute = torch.stack([policy_loss(torch.log((current.exp() + c.exp()) / 2), y, "nll") for c in cand])
    assert j == 1 and torch.allclose(losses, brute, atol=1e-5)
    chosen, trace = greedy_policy_search(cand, y, 3, "cnll")
    assert chosen[0] == 1 and len(trace) == 3


def test_gps_accuracy_criterion_prefers_the_more_accurate_candidate():
    y = torch.tensor([0, 1, 0, 1])
    right = torch.log(torch.tensor([[0.6, 0.4], [0.4, 0.6], [0.6, 0.4], [0.4, 0.6]]))
    wrong_confident = torch.log(torch.tensor([[0.99, 0.01], [0.99, 0.01], [0.99, 0.01], [0.99, 0.01]]))
    j, _ = greedy_step(None, 0, torch.stack([wrong_confident, right]), y, "acc")
    assert j == 1


# ----------------------------------------------------------------------------- corruptions
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruptions_are_seeded_and_keep_shape_dtype_range(name):
    x = toy_data(4, 3, size=16).x
    for s in SEVERITIES:
        a, b = corrupt(x, name, s, seed=0), corrupt(x, name, s, seed=0)
        assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b)
    if "noise" in name:
        assert not torch.equal(corrupt(x, name, 3, seed=0), corrupt(x, name, 3, seed=1))
    mild, harsh = ((corrupt(x, name, s).float() - x.float()).abs().mean() for s in (1, 5))
    assert harsh > mild


def test_corrupted_sets_are_cached_and_bad_arguments_fail(tmp_path):
    data = toy_data(2, 3, size=16)
    first = corrupted(data, "gaussian_noise", 2, seed=3)
    files = list((tmp_path / "cache" / "corruptions").glob("*.pt"))
    assert len(files) == 1 and first.meta["severity"] == 2 and torch.equal(first.y, data.y)
    assert torch.equal(corrupted(data, "gaussian_noise", 2, seed=3).x, first.x)
    with pytest.raises(KeyError, match="Unknown corruption"):
        corrupt(data.x, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(data.x, "jpeg", 6)


# ----------------------------------------------------------------------------- TTA ops and ensembles
@pytest.mark.parametrize("name", sorted(OPS))
def test_tta_ops_are_deterministic_and_keep_shape_and_range(name):
    x = toy_data(2, 3, size=16).x.float() / 255
    outs = [apply_op(x, name, 0.7, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(outs[0], outs[1]) and outs[0].shape == x.shape and outs[0].dtype == x.dtype
    assert float(outs[0].min()) >= 0 and float(outs[0].max()) <= 1 + 1e-6
    if name not in ("flip", "autocontrast"):  # zero magnitude is the identity
        assert torch.allclose(apply_op(x, name, 0.0, torch.Generator()), x, atol=1e-6)


def test_translate_is_an_exact_pixel_shift():
    x = torch.rand(2, 3, 10, 10)
    out = apply_op(x, "translate_x", 0.2)  # round(0.2 * 0.3 * 10) = 1 pixel
    assert torch.allclose(out[..., 1:], x[..., :-1], atol=1e-5) or torch.allclose(out[..., :-1], x[..., 1:], atol=1e-5)


def test_random_pool_is_seeded_and_well_formed():
    pool = random_pool(20, (2, 3), seed=4)
    assert pool == random_pool(20, (2, 3), seed=4) and pool != random_pool(20, (2, 3), seed=5)
    assert all(len(s.ops) in (2, 3) and len({n for n, _ in s.ops}) == len(s.ops) for s in pool)
    assert all(-1 <= m <= 1 for s in pool for _, m in s.ops)
    assert "crop+flip" in pool[0].describe()


def test_prediction_bank_is_reproducible_and_combine_averages_probabilities():
    data = toy_data(3, 4, size=8)
    torch.manual_seed(0)
    models = [create_model("cnn", num_classes=4, width=2, stages=2) for _ in range(2)]
    a = prediction_bank(models, data, [None, CROP_FLIP, CROP_FLIP], seed=1)
    b = prediction_bank(models, data, [None, CROP_FLIP, CROP_FLIP], seed=1)
    assert a.shape == (2, 3, len(data), 4) and torch.equal(a, b)
    assert not torch.equal(a[0, 1], a[0, 2])  # independent random views
    manual = torch.log(a[:, :2].exp().mean((0, 1)))
    assert torch.allclose(combine(a, None, 2), manual, atol=1e-5)
    assert torch.allclose(combine(a, [1], 1), a[1, 0], atol=1e-6)
    stacked = torch.stack([a, b])  # leading dimension kept (e.g. one per corrupted set)
    assert combine(stacked, [0], 2).shape == (2, len(data), 4)
    feats = prediction_bank(models[:1], data, [None], features=True)
    assert feats.shape[:3] == (1, 1, len(data))


# ----------------------------------------------------------------------------- presets
def test_presets_resolve_and_validate():
    for prof in profiles.PROFILES:
        p = profiles.resolve(presets, {"profile": prof})
        assert p["corrupt_samples"] in p["tta_samples"]
        assert p["device"] != "auto"  # resolved once, by resolve()
    assert profiles.resolve(presets, {"profile": "cpu"})["members"] >= 5
    with pytest.raises(profiles.ParameterError, match="tta_samples"):
        profiles.resolve(presets, {"tta_samples": [2, 4]})
    with pytest.raises(profiles.ParameterError, match="corruptions"):
        profiles.resolve(presets, {"corruptions": ["fog"]})
    assert profiles.presets(presets.NOTEBOOK) == profiles.presets(presets)  # the page map points here


def test_member_subsets():
    assert member_subsets(5, 1, 3) == [(0,), (1,), (2,), (3,), (4,)]
    assert member_subsets(5, 5, 3) == [(0, 1, 2, 3, 4)]
    assert member_subsets(15, 5, 3, ensemble_size=5) == [tuple(range(0, 5)), tuple(range(5, 10)),
                                                           tuple(range(10, 15))]  # disjoint: independent
    subs = member_subsets(5, 2, 3, seed=0)
    assert len(subs) == 3 and len(set(subs)) == 3 and subs == member_subsets(5, 2, 3, seed=0)


# ----------------------------------------------------------------------------- claims audit
P_FAKE = dict(members=5, tta_samples=[1, 4], corrupt_samples=4, metta_views=[1, 4], model="cnn", epochs=12)


def _fake_outcome(tta_gain: float, converged=(True,) * 5, noise: float = 0.002, seed: int = 0, ensembles: int = 1,
                  gps_gain: float = 0.0):
    """A score grid of two member sets: ``ensembles`` disjoint crop+flip ensembles of 5 members (their members
    and full ensembles) in which crop+flip (4 views) changes the calibrated NLL by ``-tta_gain`` nats against the
    central view (plus noise), and 5 RandAugment members where GPS changes it by a further ``-gps_gain``."""
    rng = np.random.default_rng(seed)
    rows = []
    preds = [("central", 1), ("crop+flip", 1), ("crop+flip", 4), ("GPS", 4), ("GPS (accuracy criterion)", 4)]
    n_cf = 5 * ensembles
    for member_set, n in (("crop+flip", n_cf), ("RandAugment", 5)):
        units = [(1, i, str(i)) for i in range(n)] + [
            (5, e, "+".join(str(i) for i in range(5 * e, 5 * e + 5))) for e in range(n // 5)]
        for k, subset, members in units:
            base = 1.5 - 0.1 * (k > 1) + rng.normal(0, 0.01)
            for method, m in preds:
                if method.startswith("GPS") and member_set == "crop+flip":
                    continue
                shift = -tta_gain if method != "central" and m == 4 else 0.0
                shift -= gps_gain if method == "GPS" else 0.0
                for domain, sev in (("clean", 0), ("gaussian_noise", 3)):
                    cnll = base + shift + rng.normal(0, noise) + 0.5 * (domain != "clean")
                    rows.append(dict(set=member_set, domain=domain, severity=sev, method=method, m=m, k=k,
                                     subset=subset, members=members, acc=0.45 - shift / 10,
                                     nll=cnll + 0.05 * (method == "central"), cnll=cnll))
    conv = list(converged) + [True] * (n_cf - len(converged))
    members = pd.DataFrame({"set": ["crop+flip"] * n_cf + ["RandAugment"] * 5,
                            "seed": list(range(n_cf)) + list(range(5)), "converged": conv + [True] * 5})
    metta = pd.DataFrame([dict(experiment="metta", encoder="trained", seed=s, features=f, views=v, test_acc=a,
                               converged=True)
                          for s in range(2) for f, v, a in (("central", 1, 0.40), ("mean over views", 4, 0.42))])
    member_rows = members.assign(experiment="member", test_acc=0.45, params=19_954, n_train=5000)
    timings = {"test bank (RandAugment): GPS": 1.1, "test bank (RandAugment): crop+flip": 1.0}
    return SimpleNamespace(grid=pd.DataFrame(rows), members=members, df=pd.concat([member_rows, metta]),
                           banks={"RandAugment": SimpleNamespace(timings=timings)})


def test_audit_verdicts_flip_with_the_data():
    better = tta_audit.keyed_claims(_fake_outcome(0.03), P_FAKE)
    assert better["tta_single"].verdict == SUPPORTED and better["tta_single"].n_seeds == 5
    assert better["tta_single"].mean == pytest.approx(-30, abs=3)  # millinats
    assert "millinats, n = 5" in better["tta_single"].measurement
    worse = tta_audit.keyed_claims(_fake_outcome(-0.03), P_FAKE)
    assert worse["tta_single"].verdict == CONTRADICTED
    # one member that did not pass its convergence check: no verdict
    unconv = tta_audit.keyed_claims(_fake_outcome(0.03, converged=(True,) * 4 + (False,)), P_FAKE)
    assert unconv["tta_single"].verdict == NOT_TESTABLE and "convergence" in unconv["tta_single"].reason
    # GPS is judged on the RandAugment members: a GPS gain there is supported, none is not
    gps = tta_audit.keyed_claims(_fake_outcome(0.03, gps_gain=0.02), P_FAKE)
    assert gps["gin_single"].verdict == SUPPORTED and "RandAugment members" in gps["gin_single"].setting
    assert tta_audit.keyed_claims(_fake_outcome(0.03, gps_gain=-0.02), P_FAKE)["gin_single"].verdict == CONTRADICTED


def test_ensemble_rows_need_three_independent_ensembles():
    c = tta_audit.keyed_claims(_fake_outcome(0.03), P_FAKE)
    assert c["tta_ens"].verdict == NOT_TESTABLE and "1 independent ensemble of 5" in c["tta_ens"].reason
    assert c["tta_ens"].n_seeds == 1  # the measurement is still reported
    three = tta_audit.keyed_claims(_fake_outcome(0.03, ensembles=3), P_FAKE)
    assert three["tta_ens"].verdict == SUPPORTED and three["tta_ens"].n_seeds == 3
    assert three["tta_single"].n_seeds == 15
    assert c["metta"].verdict == NOT_TESTABLE  # two encoders
    assert c["cost"].verdict == SUPPORTED and "deterministic" in c["cost"].reason


def test_deep_ensemble_equivalent_reads_the_ensemble_curve():
    out = _fake_outcome(0.05)  # TTA lowers cNLL by 0.05 nats; the ensemble of 5 by ~0.1
    e = tta_audit.deep_ensemble_equivalent(out, P_FAKE)
    assert e.n == 5 and 1 < e.mean < 5  # between one member and the full ensemble
    none = tta_audit.deep_ensemble_equivalent(_fake_outcome(-0.05), P_FAKE)
    assert none.mean == pytest.approx(1.0)  # worse than one member: clipped at 1


def test_ranking_flips_counts_pairs_ordered_differently():
    out = _fake_outcome(0.03)
    e = tta_audit.ranking_flips(out)
    assert e.n == 5 and 0 <= e.mean <= 100
    same = _fake_outcome(0.03)
    same.grid["nll"] = same.grid["cnll"]  # raw NLL = calibrated NLL: no pair flips
    assert tta_audit.ranking_flips(same).mean == 0


def test_calibration_rows_compare_members_with_the_paper():
    rows = tta_audit.calibration(_fake_outcome(0.03), P_FAKE)
    assert [r.published for r in rows] == [tta_audit.ANCHORS[k] for k in ("single_acc", "ens_acc", "single_cnll",
                                                                           "ens_cnll")]
    assert rows[0].ours.n == 5 and rows[0].ours.mean == pytest.approx(45.0) and not rows[0].within


# ----------------------------------------------------------------------------- RandAugment members
def test_randaugment_draws_the_gps_pool_ops_reproducibly():
    import random

    from ibnb.chapters.tta.policies import POOL_OPS
    from ibnb.chapters.tta.randaugment import RA_OPS, rand_augment

    assert RA_OPS == POOL_OPS  # the members are trained on the operations GPS searches over
    x = torch.rand(64, 3, 16, 16)
    a = rand_augment(x, random.Random(1), torch.Generator().manual_seed(1), n_ops=2, group=16)
    b = rand_augment(x, random.Random(1), torch.Generator().manual_seed(1), n_ops=2, group=16)
    c = rand_augment(x, random.Random(2), torch.Generator().manual_seed(2), n_ops=2, group=16)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert not torch.equal(a, x)


def test_randaugment_step_trains_and_is_keyed_by_its_fields():
    from ibnb.chapters.tta.members import RA_SET, member_config
    from ibnb.core.train import step_key

    p = profiles.resolve(presets, {"profile": "smoke"})
    q = dict(p, data_mean=(0.5, 0.5, 0.5), data_std=(0.25, 0.25, 0.25))
    cfg, step = member_config(q, 3, RA_SET)
    assert step.seed == 3 and step.n_ops == p["ra_ops"] and "RandAugmentStep" in step_key(step)
    assert cfg.warmup_epochs == pytest.approx(p["warmup_fraction"] * p["epochs"])
    torch.manual_seed(0)
    model = create_model("fast_cnn", num_classes=10, widths=(8, 8, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(40, 3, 32, 32), torch.randint(0, 10, (40,))
    out = step(model, opt, x, y, 0)
    assert torch.isfinite(out.loss) and opt.state[next(model.parameters())]["randaugment_count"] == 1
