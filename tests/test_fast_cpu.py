"""The CPU fast path (precision rule, channels-last guard, autocast following the run), the fast CNN and its
recipe (whitening, translate, lookahead, TTA), the benchmark and the CPU-training page's audit."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn as nn

from conftest import toy_data
from ibnb.core.augment import DeviceLoader, random_translate
from ibnb.core.bench import matmul_peak, training_flops_per_image
from ibnb.core.fast_recipe import LookaheadStep, recipe_run, tta_evaluate
from ibnb.core.models import create_model
from ibnb.core.models.fast_cnn import whitening_weights
from ibnb.core.precision import FastPath, autocast, fast_path, using
from ibnb.core.train import TrainConfig, evaluate, fit


def test_rule_conv_nets_only_and_forcing():
    cnn, mlp = create_model("cnn", width=8), create_model("mlp", width=32, depth=1)
    assert fast_path(mlp, "cpu") == FastPath(False, False)
    assert fast_path(cnn, "cpu", input_shape=(3, 32, 32)).channels_last
    assert fast_path(cnn, "cpu", "bf16").bf16 and not fast_path(cnn, "cpu", "fp32").bf16
    assert not fast_path(cnn, "cpu", channels_last=False).channels_last
    with pytest.raises(ValueError):
        TrainConfig(precision="fp16").validate()


def test_channels_last_guard_keeps_small_channel_convs_contiguous():
    """resnet18 width 4 has a 1x1 stride-2 conv with 4 input channels, whose channels-last weight gradient is
    wrong (and can stall) on PyTorch 2.15 CPUs (found for this issue): such models stay contiguous."""
    assert not fast_path(create_model("resnet18", width=4), "cpu", input_shape=(3, 32, 32)).channels_last
    assert fast_path(create_model("resnet18", width=8), "cpu", input_shape=(3, 32, 32)).channels_last
    assert fast_path(create_model("fast_cnn", widths=(8, 16, 16)), "cpu", input_shape=(3, 32, 32)).channels_last


def test_autocast_follows_the_active_run():
    x = torch.randn(2, 4)
    lin = nn.Linear(4, 4)
    with using(FastPath(True, False)), autocast(x.device):
        assert lin(x).dtype == torch.bfloat16
    with using(FastPath(False, False)), autocast(x.device):
        assert lin(x).dtype == torch.float32
    with autocast(torch.device("cpu")):  # outside a run: the old default (off on CPU)
        assert lin(x).dtype == torch.float32


def test_fit_records_the_fast_path_and_bf16_keeps_fp32_weights():
    data = toy_data()
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=4, image_size=8, width=4, stages=2)
    h = fit(model, data, epochs=1, batch_size=16, progress=False, device="cpu", precision="bf16",
            channels_last=False)
    cols = h.columns()
    assert cols["precision"] == "bf16" and cols["channels_last"] is False
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(b.dtype in (torch.float32, torch.long) for b in model.buffers())


def test_fp32_and_bf16_land_in_the_same_band():
    data = toy_data()
    accs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = create_model("cnn", num_classes=4, image_size=8, width=4, stages=2)
        fit(model, data, epochs=6, batch_size=16, lr=1e-2, progress=False, device="cpu", precision=precision,
            channels_last=False)
        accs[precision] = evaluate(model, data, precision=precision)["acc"]
    assert accs["fp32"] > 0.6 and accs["bf16"] > 0.6
    assert abs(accs["fp32"] - accs["bf16"]) < 0.2


def test_translate_shifts_with_reflection_and_loader_applies_it():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    out = random_translate(x, 2, g)
    assert out.shape == x.shape and torch.equal(random_translate(x, 0, g), x)
    assert set(out.flatten().tolist()) <= set(x.flatten().tolist())  # reflect: no new (black) values
    loader = DeviceLoader(toy_data(), 16, augment="flip+translate")
    xb, _ = next(iter(loader))
    assert xb.shape[1:] == toy_data().x.shape[1:]


def test_whitening_filters_whiten_patches():
    torch.manual_seed(0)
    mix = torch.randn(3, 3)
    x = torch.einsum("ij,njhw->nihw", mix, torch.randn(64, 3, 8, 8))
    w = whitening_weights(x)
    assert w.shape == (24, 3, 2, 2)
    z = torch.nn.functional.conv2d(x, w[:12]).permute(0, 2, 3, 1).reshape(-1, 12)
    cov = torch.cov(z.T)
    assert torch.allclose(cov, torch.eye(12), atol=0.15)


def test_fast_cnn_learns_with_lookahead_and_tta_and_checkpoints_its_slow_weights(tmp_path):
    data = toy_data(n_per_class=16, size=16)
    kw, cfg, step = recipe_run("fast_cnn_s", epochs=3, seed=1, batch_size=16, lr=0.2)
    assert isinstance(step, LookaheadStep)

    def build():
        torch.manual_seed(0)
        return create_model("fast_cnn", num_classes=4, image_size=16, widths=(8, 16, 16))

    ref = build()
    fit(ref, data, None, cfg, step=step, device="cpu", progress=False)
    assert bool(ref.whitened)
    assert tta_evaluate(ref, data)["acc"] > 0.4 and tta_evaluate(ref, data, views="flip+translate")["n"] == len(data)
    ckpt = tmp_path / "c.pt"
    again = build()
    fit(again, data, None, cfg, step=step, device="cpu", progress=False, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=False)["optimizer"]["state"]
    assert any("lookahead_slow" in s for s in state.values())
    for a, b in zip(ref.state_dict().values(), again.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_bench_counts_flops_and_measures_a_peak():
    model = create_model("mlp", width=32, depth=1)
    flops = training_flops_per_image(model, (3, 32, 32), torch.device("cpu"))
    fwd = 2 * (3072 * 32 + 32 * 10)  # backward: weight gradients of both layers, input gradient of the second only
    assert flops == pytest.approx(2 * fwd + 2 * 32 * 10, rel=0.01)
    peak = matmul_peak("cpu", n=256, repeats=1)
    assert peak["fp32"] > 0 and peak["bf16"] > 0


def _bench(rates: dict[str, float], conv=("cnn", "fast_cnn")) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "path": "bf16+channels_last", "fit_gflop_per_s": r, "fit_overhead": 0.01,
                          "conv_net": m in conv} for m, r in rates.items()])


def test_the_peak_claim_looks_at_every_conv_net_the_bench_measured():
    from ibnb.chapters.cpu_training.audit import bench_claims
    peak = {"fp32": 160.0, "bf16": 400.0}
    _, fast = bench_claims(_bench({"cnn": 52.0, "fast_cnn": 260.0, "mlp": 300.0}), peak, native=True)
    assert fast.verdict == "supported" and "65% (fast_cnn)" in fast.measurement and "13% (cnn)" in fast.measurement
    _, slow = bench_claims(_bench({"cnn": 52.0, "fast_cnn": 200.0, "mlp": 300.0}), peak, native=True)
    assert slow.verdict == "contradicted"  # the MLP's 75 % is not a conv net's
    over = bench_claims(_bench({"cnn": 52.0}).assign(fit_overhead=0.08), peak, native=True)[0]
    assert over.verdict == "contradicted" and "+8.0% (cnn" in over.measurement


def test_a_conv_net_is_one_whose_flops_are_mostly_convolutions():
    from ibnb.chapters.cpu_training.presets import BENCH_KW
    from ibnb.chapters.cpu_training.sweep import conv_flop_share
    share = {m: conv_flop_share(create_model(m, **BENCH_KW[m])) for m in ("cnn", "resnet18", "fast_cnn", "vit",
                                                                          "mixer", "mlp")}
    assert min(share["cnn"], share["resnet18"], share["fast_cnn"]) > 0.99
    assert max(share["vit"], share["mixer"]) < 0.2 and share["mlp"] == 0  # a patch embedding is not a conv net


def _frontier(acc: float, minutes: float, seeds: int = 3) -> pd.DataFrame:
    return pd.DataFrame([{"experiment": "frontier", "recipe": "fast_cnn_s", "epochs": 2, "widths": "32/64/64",
                          "seed": s, "test_acc": acc + 0.002 * s, "tta_acc": acc, "train_min": minutes,
                          "precision": "fp32", "converged": True} for s in range(seeds)])


def test_target_claim_flips_with_the_data():
    from ibnb.chapters.cpu_training.audit import target_claims
    good, bad, slow = (target_claims(_frontier(a, m))[0] for a, m in ((0.88, 2.5), (0.80, 2.5), (0.88, 5.0)))
    assert good.verdict == "supported" and bad.verdict == "contradicted"
    assert slow.verdict == "not testable at this budget"


def test_parity_plan_reuses_the_frontier_runs_for_its_bf16_arm(monkeypatch):
    """Where bf16 is native the parity's bf16 arm is requested as ``auto``: the same (recipe, epochs, seed,
    precision) as a frontier run, so the run cache trains it once; without bf16 units there is no parity arm."""
    from ibnb.chapters.cpu_training import sweep
    from ibnb.chapters.cpu_training.presets import PRESETS

    P = {**PRESETS["cpu"], "device": "cpu"}
    key = lambda r: (r["recipe"], r["epochs"], r["seed"], r["precision"])  # noqa: E731
    monkeypatch.setattr(sweep, "bf16_native", lambda device: True)
    runs = sweep.plan(P)
    frontier = {key(r) for r in runs if r["experiment"] == "frontier"}
    parity = [r for r in runs if r["experiment"] == "parity"]
    assert sorted({r["precision"] for r in parity}) == ["auto", "fp32"]
    assert all(key(r) in frontier for r in parity if r["precision"] == "auto")
    assert len(parity) == 2 * P["parity_seeds"]
    monkeypatch.setattr(sweep, "bf16_native", lambda device: False)
    assert not [r for r in sweep.plan(P) if r["experiment"] == "parity"]


def test_cuda_semantics_without_a_gpu():
    """The CUDA branch of the rule (checked without a GPU: it is pure logic): bf16 autocast and channels-last for
    every model, fp32 on request; and a CPU without bf16 units keeps ``auto`` in fp32."""
    import ibnb.core.precision as precision

    for model in (create_model("mlp", width=32, depth=1), create_model("cnn", width=8), create_model("vit")):
        assert fast_path(model, "cuda") == FastPath(True, True)
        assert fast_path(model, "cuda", "fp32") == FastPath(False, True)
    cnn = create_model("cnn", width=8)
    orig = precision.cpu_has_bf16
    try:
        precision.cpu_has_bf16 = lambda: False
        assert fast_path(cnn, "cpu", input_shape=(3, 32, 32)) == FastPath(False, True)
        precision.cpu_has_bf16 = lambda: True
        assert fast_path(cnn, "cpu", input_shape=(3, 32, 32)) == FastPath(True, True)
    finally:
        precision.cpu_has_bf16 = orig


def test_device_selection(monkeypatch):
    from ibnb.core.train import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type in ("cpu", "mps") and resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device(None) == torch.device("cuda")


def test_compile_switch_wraps_the_model_only_when_asked(monkeypatch):
    calls = []

    def fake_compile(model, *args, **kwargs):
        calls.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    data = toy_data()
    for flag in (False, True):
        fit(create_model("cnn", width=4, stages=2, num_classes=4, image_size=8), data, device="cpu",
            config=TrainConfig(epochs=1, batch_size=16, compile=flag), progress=False)
    assert len(calls) == 1
