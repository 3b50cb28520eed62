"""Chapter 02 (MLP scaling): conv-as-matrix identity, FLOP counts, new models, probes, power-law fits, presets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import pandas as pd

from ibnb.book import profiles
from ibnb.chapters.mlp_scaling import analysis, presets, probes, scaling
from ibnb.chapters.mlp_scaling import sweep as A
from ibnb.core import flops
from ibnb.core.reference import REFERENCE_SIZES
from ibnb.core.models import count_parameters, create_model
from ibnb.core.models.locally_connected import LocallyConnected2d

from conftest import toy_data


# --- a convolution is a constrained MLP ---------------------------------------------------------------
@pytest.mark.parametrize("c_in, c_out, k, stride, pad, hw", [
    (1, 1, 3, 1, 1, (8, 8)), (3, 8, 5, 2, 2, (32, 32)), (2, 3, 3, 2, 0, (9, 7)), (3, 4, 1, 1, 0, (5, 5)),
])
def test_conv_matrix_times_input_equals_conv2d(c_in, c_out, k, stride, pad, hw):
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, k, stride, pad)
    M, shared = flops.conv_as_matrix(conv, hw)
    x = torch.randn(5, c_in, *hw)
    ref = F.conv2d(x, conv.weight, conv.bias, stride, pad)
    out = x.flatten(1) @ M.T + conv.bias.detach().repeat_interleave(ref.shape[2] * ref.shape[3])
    assert M.shape == (ref[0].numel(), x[0].numel())
    torch.testing.assert_close(out, ref.flatten(1), rtol=1e-5, atol=1e-5)
    # every structural non-zero copies a kernel entry, and the zeros are exactly the entries outside windows
    assert torch.equal(M != 0, (shared >= 0) & (conv.weight.flatten()[shared.clamp_min(0)] != 0))


def test_conv_matrix_sparsity_and_sharing_counts():
    conv = nn.Conv2d(1, 1, 3, padding=1)
    M, shared = flops.conv_as_matrix(conv, (8, 8))
    # 8x8 outputs, 9 taps each, minus the taps falling on the zero padding (4 sides x 8 x 3 - 4 corners overlap)
    assert int((shared >= 0).sum()) == 64 * 9 - (4 * 8 * 3 - 4)
    assert flops.distinct_weights(shared) == 9
    # an interior output row holds each of the 9 shared weights exactly once
    row = shared[3 * 8 + 3]
    assert sorted(row[row >= 0].tolist()) == list(range(9))
    with pytest.raises(ValueError):
        flops.conv_as_matrix(nn.Conv2d(2, 2, 3, groups=2), (5, 5))


# --- FLOP counter --------------------------------------------------------------------------------------
def test_flops_hand_counts():
    # plain MLP on 3x32x32: 3072->64->64->10, 2 FLOPs per multiply-accumulate
    assert flops.flops_per_image(create_model("mlp", width=64, depth=2), (3, 32, 32)) == 2 * (3072 * 64 + 64 * 64 + 64 * 10)
    # bMLP: embedding, per block d->4d->d, head
    d, L = 16, 3
    assert flops.flops_per_image(create_model("bmlp", width=d, depth=L), (3, 32, 32)) == \
        2 * (3072 * d + L * 2 * d * 4 * d + d * 10)
    # one conv layer 3->8, 5x5, stride 2 on 32x32 -> 8x16x16 outputs of 75 MACs; head 8*8*8 -> 10
    conv_macs = 8 * 16 * 16 * 3 * 25
    assert flops.flops_per_image(create_model("conv_layer"), (3, 32, 32)) == 2 * (conv_macs + 512 * 10)
    # the locally connected layer does the same arithmetic as the conv (different weights per position)
    assert flops.flops_per_image(create_model("locally_connected"), (3, 32, 32)) == 2 * (conv_macs + 512 * 10)
    assert flops.flops_per_image(create_model("dense_layer"), (3, 32, 32)) == 2 * (3072 * 2048 + 512 * 10)
    # ViT: patch embedding conv + per block qkv, out, MLP, and the two attention products (2 n^2 d)
    dim, depth, n = 16, 1, 64 + 1
    vit = create_model("vit", dim=dim, depth=depth, heads=2, mlp_ratio=2.0)
    expected = 64 * 3 * 16 * dim + depth * (n * dim * 3 * dim + n * dim * dim + 2 * n * dim * 2 * dim + 2 * n * n * dim) + dim * 10
    assert flops.flops_per_image(vit, (3, 32, 32)) == 2 * expected


@pytest.mark.parametrize("name, kw", [("mlp", {"width": 32, "depth": 2}), ("bmlp", {"width": 16, "depth": 2}),
                                      ("cnn", {"width": 4}), ("resnet18", {"width": 2}),
                                      ("vit", {"dim": 16, "depth": 1, "heads": 2}), ("locally_connected", {})])
def test_flops_match_torch_flop_counter(name, kw):
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(name, **kw).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    assert flops.flops_per_image(model, (3, 32, 32)) == counter.get_total_flops()


def test_throughput_reports_positive_rates():
    r = flops.throughput(create_model("bmlp", width=8, depth=1), batch_size=4, steps=2)
    assert r["train_images_per_s"] > 0 and r["infer_images_per_s"] > 0 and r["flops_per_image"] > 0


# --- models --------------------------------------------------------------------------------------------
def test_bmlp_parameter_count_and_blindness_to_pixel_order():
    d, L = 8, 2
    model = create_model("bmlp", width=d, depth=L)
    per_block = 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    assert count_parameters(model) == (3072 * d + d) + L * per_block + 2 * d + (d * 10 + 10)
    # permuting the input pixels and the embedding's columns alike leaves the output unchanged
    perm = torch.randperm(3072, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    out = model(x)
    with torch.no_grad():
        model.embed.weight.copy_(model.embed.weight[:, perm])
    torch.testing.assert_close(model(x.flatten(1)[:, perm].view_as(x)), out, rtol=1e-4, atol=1e-5)


def test_locally_connected_with_tied_weights_is_the_convolution():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    lc = LocallyConnected2d(3, 4, 9, 3, stride=2, padding=1)
    with torch.no_grad():
        lc.weight.copy_(conv.weight.flatten(1).T.expand_as(lc.weight))
        lc.bias.copy_(conv.bias.view(4, 1, 1).expand_as(lc.bias))
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(lc(x), conv(x), rtol=1e-5, atol=1e-5)


def test_one_layer_models_share_shapes_and_nest_in_parameters():
    nets = {m: create_model(m) for m in ("conv_layer", "locally_connected", "dense_layer")}
    x = torch.randn(2, 3, 32, 32)
    assert {tuple(n.first(x).shape) for n in nets.values()} == {(2, 8, 16, 16)}
    p = {m: count_parameters(n) for m, n in nets.items()}
    assert p["conv_layer"] < p["locally_connected"] < p["dense_layer"]
    assert p["locally_connected"] - 5130 == 16 * 16 * 75 * 8 + 8 * 16 * 16  # per-position weights + biases


# --- probes --------------------------------------------------------------------------------------------
def test_patch_shuffle_permutes_whole_tiles():
    data = toy_data(n_per_class=2, num_classes=2, size=8)
    out = probes.patch_shuffle(data, 2, seed=1)
    assert out.x.dtype == torch.uint8 and out.x.shape == data.x.shape
    tiles = lambda t: sorted(t[:, i:i + 4, j:j + 4].flatten().tolist() for i in (0, 4) for j in (0, 4))
    for a, b in zip(data.x, out.x):
        assert tiles(a) == tiles(b)
    assert torch.equal(probes.patch_shuffle(data, 1).x, data.x)
    many = toy_data(n_per_class=30, num_classes=2, size=8)
    moved = (probes.patch_shuffle(many, 2).x != many.x).flatten(1).any(1)
    assert moved.all()  # no image keeps its original tile order
    with pytest.raises(ValueError):
        probes.patch_shuffle(data, 3)


def test_low_pass_and_edges():
    data = toy_data(n_per_class=2, num_classes=2, size=16)
    lp = probes.low_pass(data, 1.5)
    assert lp.x.shape == data.x.shape and lp.x.float().std() < data.x.float().std()
    assert abs(lp.x.float().mean() - data.x.float().mean()) < 2
    flat = data.subset(torch.arange(1))
    flat.x[:] = 100
    e = probes.edges(flat)
    assert e.x.shape == flat.x.shape and int(e.x.min()) == 255  # no edges: all white
    assert probes.retained(0.55, 0.55, 0.1) == 1.0 and probes.retained(0.1, 0.55, 0.1) == 0.0
    assert set(probes.probe_set(data, (2, 4))) == {"clean", "shuffle 2×2", "shuffle 4×4", "low-pass", "edges"}


# --- fits ----------------------------------------------------------------------------------------------
def test_saturating_fit_recovers_exponent_and_floor():
    x = np.array([1e3, 3e3, 1e4, 3e4, 1e5])
    fit = scaling.fit_saturating(x, 0.5 * (x / 1e3) ** -0.4 + 0.2)
    assert fit.exponent == pytest.approx(0.4, abs=1e-3) and fit.e_inf == pytest.approx(0.2, abs=1e-3)
    assert fit.prefactor == pytest.approx(0.5, abs=1e-3) and fit.n == 5 and fit.r2 > 0.999
    assert np.allclose(fit.predict(x), 0.5 * (x / 1e3) ** -0.4 + 0.2, rtol=1e-3)
    # a pure power law (no floor) is found with E∞ at zero, a flat curve with a zero exponent
    pure = scaling.fit_saturating(x, 2.0 * x ** -0.3)
    assert pure.exponent == pytest.approx(0.3, abs=1e-2) and pure.e_inf < 1e-3
    with pytest.raises(ValueError):
        scaling.fit_saturating(x[:2], [0.5, 0.4])


def test_two_factor_saturating_fit_and_frontier():
    p, d = np.meshgrid([1e4, 1e5, 1e6], [1e2, 1e3, 1e4])
    e = 0.3 * (p / 1e4) ** -0.5 + 0.2 * (d / 1e2) ** -0.2 + 0.1
    j = scaling.fit_two_factor(p.ravel(), d.ravel(), e.ravel())
    assert j.alpha_p == pytest.approx(0.5, abs=0.02) and j.alpha_d == pytest.approx(0.2, abs=0.02) and j.n == 9
    assert j.e_inf == pytest.approx(0.1, abs=0.02) and j.gap == pytest.approx(0.3, abs=0.04)
    df = pd.DataFrame({"train_flops": [1, 2, 3, 4, 5], "test_error": [0.9, 0.95, 0.8, 0.85, 0.7]})
    assert scaling.pareto_frontier(df)["train_flops"].tolist() == [1, 3, 5]


def _grid_runs(noise: float, seeds: int, alpha_p=0.5, alpha_d=0.2, rng_seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(rng_seed)
    rows = []
    for w, params in ((64, 2e5), (128, 4e5), (256, 1e6), (512, 3e6)):
        for n in (1250, 2500, 5000, 10000):
            for s in range(seeds):
                e = (0.3 * (params / 2e5) ** -alpha_p + 0.2 * (n / 1250) ** -alpha_d + 0.25) * np.exp(
                    noise * rng.standard_normal())
                rows.append(dict(size=f"d={w}, L=2", params=params, n_train=n, seed=s, test_error=e,
                                 train_flops=params * n * 30, converged=True))
    return pd.DataFrame(rows)


def test_scaling_fits_bootstrap_over_seeds_and_say_what_they_resolve():
    fits = analysis.scaling_fits(_grid_runs(0.01, 3), seed=0, n_boot=200)
    j, fp = fits["joint"], fits["fit_p"]
    assert j.ci_gap[0] > 0 and j.ci_p[0] <= j.alpha_p <= j.ci_p[1]  # the parameter exponent is the larger
    assert fp is not None and fp.ci[0] <= fp.exponent <= fp.ci[1] and scaling.resolved(j.alpha_p, j.ci_p)
    assert fits["bootstrap"] == dict(n=200, failed=0, seeds=3)
    again = analysis.scaling_fits(_grid_runs(0.01, 3), seed=0, n_boot=200)
    assert again["joint"].ci_gap == j.ci_gap  # seeded: the same resamples
    # one seed per cell: nothing to resample, the interval collapses to the point
    one = analysis.scaling_fits(_grid_runs(0.01, 1), seed=0, n_boot=50)["joint"]
    assert one.ci_gap[0] == pytest.approx(one.ci_gap[1]) == pytest.approx(one.gap)
    assert not scaling.resolved(one.alpha_p, one.ci_p)  # a collapsed interval resolves nothing
    # noisy seeds: wide intervals, and an exponent whose interval reaches zero is not resolved
    assert not scaling.resolved(0.1, (-0.05, 0.3)) and not scaling.resolved(0.1, (0.01, 0.2))
    assert scaling.resolved(0.4, (0.3, 0.5))


# --- presets and helpers -------------------------------------------------------------------------------
def test_presets_resolve_and_validate():
    for prof in profiles.PROFILES:
        p = profiles.resolve(presets, {"profile": prof})
        assert len(p["batch_sizes"]) >= 2 and len(p["scaling_n_per_class"]) >= 2 and p["batch_size"] in p["batch_sizes"]
    cpu = profiles.presets(presets)["cpu"]
    assert len(cpu["scaling_sizes"]) >= 4 and len(cpu["batch_sizes"]) >= 3 and cpu["seeds"] >= 3
    assert cpu["scaling_seeds"] >= 3 and cpu["test_per_class"] == 0
    assert {tuple(r) for r in cpu["ladder"]} >= {("mlp", "none"), ("mlp", "bachmann"), ("bmlp", "none"),
                                                 ("bmlp", "bachmann"), ("cnn", "none"), ("cnn", "bachmann")}
    for bad, says in (({"lr_rule": "cubic"}, "lr_rule"), ({"probe_grids": [3]}, "probe_grids"),
                      ({"batch_sizes": [32, 512]}, "base batch_size"), ({"ladder": [["mlp", "cutmix"]]}, "recipes"),
                      ({"lrs": {"mlp": 0}}, "lrs")):
        with pytest.raises(profiles.ParameterError, match=says):
            profiles.resolve(presets, bad)


def test_shared_models_use_the_reference_sizes():
    # chapter 02 trains the reference sizes at smoke and gpu, as chapter 01 does (identical runs are loaded from
    # the run cache); at cpu it takes chapter 01's width-16 CNN and times a full-width ResNet-18
    from ibnb.chapters.architectures import presets as arch

    for prof in profiles.PROFILES:
        for m in ("mlp", "vit") if prof == "cpu" else ("mlp", "cnn", "vit", "resnet18"):
            assert presets.PRESETS[prof]["model_kw"][m] == REFERENCE_SIZES[prof][m]
            if prof != "cpu":
                assert arch.PRESETS[prof]["model_kw"][m] == REFERENCE_SIZES[prof][m]
    assert presets.PRESETS["cpu"]["model_kw"]["cnn"] == arch.PRESETS["cpu"]["model_kw"]["cnn"]


def test_lr_rule_and_epochs():
    p = profiles.resolve(presets, {"profile": "cpu"})
    assert A.lr_for(p["batch_size"], p, "cnn") == p["lrs"]["cnn"]
    assert A.lr_for(4 * p["batch_size"], p, "mlp") == pytest.approx(2 * p["lrs"]["mlp"])
    assert A.model_lr(p, "bmlp") == p["lrs"]["bmlp"] and A.model_lr({**p, "lrs": {}}, "bmlp") == p["lr"]
    assert A.run_epochs(200, p) * (200 // p["batch_size"]) >= p["min_steps"]
    # the fixed-steps regime: as many steps at every batch as the base batch takes in batch_epochs
    n = 10 * p["batch_n_per_class"]
    base = p["batch_epochs"] * (n // p["batch_size"])
    for b in p["batch_sizes"]:
        assert abs(A.steps_epochs(n, b, p) * (n // b) - base) <= n // b


def test_batch_interaction_per_regime():
    rows = [dict(model=m, batch_size=b, seed=s, regime=r, test_acc=acc + 0.001 * s + (0.1 if r == "steps" else 0))
            for r in ("epochs", "steps") for s in range(3)
            for m, b, acc in (("bmlp", 64, 0.40), ("bmlp", 512, 0.45), ("cnn", 64, 0.50), ("cnn", 512, 0.40))]
    for regime in ("epochs", "steps"):
        assert analysis.batch_interaction(pd.DataFrame(rows), regime).tolist() == pytest.approx([0.15] * 3)
    eff = analysis.batch_effect(pd.DataFrame(rows))
    assert eff.loc[("steps", "cnn"), "change"] == pytest.approx(-0.10)


def test_the_plan_shares_runs_between_sections_and_keys_the_recipe():
    lab = A.Lab.__new__(A.Lab)
    lab.p, lab.K = profiles.resolve(presets, {"profile": "cpu"}), 10
    plan = lab.plan()
    p = lab.p
    # the probe models trained with the probe recipe are the ladder's rungs where the ladder has them
    assert {k for k in plan["probe"] if k.model != "vit"} <= set(plan["ladder"])
    # the two batch regimes share the run at the base batch and differ elsewhere
    half = len(plan["batch"]) // 2
    epochs, steps = plan["batch"][:half], plan["batch"][half:]
    shared = set(epochs) & set(steps)
    assert shared and all(k.batch_size == p["batch_size"] for k in shared)
    assert len(plan["scaling"]) == len(p["scaling_sizes"]) * len(p["scaling_n_per_class"]) * p["scaling_seeds"]
    rec = {k.recipe for k in plan["ladder"] if k.model == "bmlp"}
    assert rec == {"none", "crop+flip", "bachmann"} and len({k.cell for k in plan["ladder"]}) == len(p["ladder"])


def test_the_bachmann_recipe_trains_with_mixup_and_label_smoothing():
    from types import SimpleNamespace

    from ibnb.core.batch_ops import Mixup

    lab = A.Lab.__new__(A.Lab)
    lab.p, lab.K = profiles.resolve(presets, {"profile": "smoke"}), 10
    lab.pool, lab.val = toy_data(n_per_class=8, num_classes=10, size=32), None
    key = lab.key("bmlp", 4, "bachmann", 1, epochs=2)
    spec = lab.spec(key)
    assert spec.config.augment == "crop+flip" and spec.config.label_smoothing == lab.p["bachmann_smoothing"]
    assert isinstance(spec.step.mix, Mixup) and spec.step.mix.seed == 1 and spec.step.label_smoothing == 0.3
    plain = lab.spec(lab.key("bmlp", 4, "none", 1, epochs=2))
    assert plain.step is None and plain.config.augment == "none" and plain.config.label_smoothing == 0.0
    assert spec.folder() != plain.folder()  # the recipe keys the run cache


def test_conv_identity_of_the_prior_layer():
    ci = analysis.conv_identity({"channels": 4, "kernel_size": 5, "stride": 2})
    assert ci.max_error < analysis.IDENTITY_TOL and ci.matrix.shape == (4 * 16 * 16, 3 * 32 * 32)
    assert ci.distinct == 4 * 3 * 25 and ci.local_weights > ci.distinct and 0 < ci.nonzero_pct < 5


def test_fit_claims_need_replicated_converged_grids():
    import importlib

    from ibnb.book.claims import judge

    audit = importlib.import_module("ibnb.chapters.mlp_scaling.audit")  # the package's audit() shadows the name
    rows = pd.DataFrame({"converged": [True] * 6})
    up = judge("c", "", "", audit.fit_effect(0.2, (0.1, 0.3), 3, rows), direction=+1)
    down = judge("c", "", "", audit.fit_effect(-0.2, (-0.3, -0.1), 3, rows), direction=+1)
    one_seed = judge("c", "", "", audit.fit_effect(0.2, (0.1, 0.3), 1, rows), direction=+1)
    stuck = judge("c", "", "", audit.fit_effect(0.2, (0.1, 0.3), 3, rows.assign(converged=False)), direction=+1)
    assert (up.verdict, down.verdict) == ("supported", "contradicted")
    assert one_seed.verdict == stuck.verdict == "not testable at this budget"
    assert audit.with_measurement(up, "α = 0.2").measurement == "α = 0.2"
    assert "no interval" in audit.interval(float("nan"), float("nan"))
