"""Chapter 04: calibration metrics and temperature scaling, TTA ops, corruptions, ensembles, GPS, presets."""
from __future__ import annotations

import math

import pytest
import torch

import ibnb.chapters.tta.sweep as A  # registers the chapter's presets
from ibnb.core import metrics as cal
from ibnb.book import profiles
from ibnb.core.corruptions import CORRUPTIONS, SEVERITIES, corrupt, corrupted
from ibnb.chapters.tta.ensembles import combine, prediction_bank
from ibnb.chapters.tta.gps import greedy_policy_search, greedy_step, policy_loss
from ibnb.core.models import create_model
from ibnb.chapters.tta.policies import CROP_FLIP, OPS, apply_op, random_pool

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
        p = profiles.resolve(A.NOTEBOOK, {"profile": prof})
        assert p["corrupt_samples"] in p["tta_samples"]
    assert profiles.resolve(A.NOTEBOOK, {"profile": "cpu"})["members"] >= 5
    with pytest.raises(profiles.ParameterError, match="tta_samples"):
        profiles.resolve(A.NOTEBOOK, {"tta_samples": [2, 4]})
    with pytest.raises(profiles.ParameterError, match="corruptions"):
        profiles.resolve(A.NOTEBOOK, {"corruptions": ["fog"]})


def test_member_subsets():
    assert A.member_subsets(5, 1, 3) == [(0,), (1,), (2,), (3,), (4,)]
    assert A.member_subsets(5, 5, 3) == [(0, 1, 2, 3, 4)]
    subs = A.member_subsets(5, 2, 3, seed=0)
    assert len(subs) == 3 and len(set(subs)) == 3 and subs == A.member_subsets(5, 2, 3, seed=0)
