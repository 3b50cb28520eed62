"""SAM, batch mixing ops, sharpness measurements and attention rollout."""
import pytest
import torch
import torch.nn as nn

from ibnb.core import batch_ops as mixing
from ibnb.chapters.vit_sam import sharpness
from ibnb.core.models import create_model
from ibnb.chapters.vit_sam.sam import SAM, SAMStep, frozen_bn_stats
from ibnb.core.batch_ops import MixStep
from ibnb.core.train import fit
from ibnb.chapters.vit_sam.rollout import rollout, vit_rollout_maps

A = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
B = torch.tensor([1.0, -2.0, 0.5])


def quad(w):
    """L(w) = ½ wᵀAw − bᵀw, ∇L = Aw − b."""
    return 0.5 * w @ A @ w - B @ w


def test_one_sam_step_on_a_quadratic_is_ascent_then_descent():
    w0 = torch.tensor([0.7, -0.3, 1.2])
    rho, lr = 0.1, 0.05
    w = nn.Parameter(w0.clone())
    opt = SAM([w], torch.optim.SGD, rho=rho, lr=lr)
    quad(w).backward()

    def closure():
        opt.zero_grad()
        loss = quad(w)
        loss.backward()
        return loss

    opt.step(closure)
    g = A @ w0 - B
    expected = w0 - lr * (A @ (w0 + rho * g / g.norm()) - B)
    assert torch.allclose(w.detach(), expected, atol=1e-6)
    assert not torch.allclose(expected, w0 - lr * g, atol=1e-4)  # differs from the plain SGD step


def test_two_step_api_matches_closure_and_asam_differs():
    w0 = torch.tensor([0.7, -0.3, 1.2])
    out = {}
    for adaptive in (False, True):
        w = nn.Parameter(w0.clone())
        opt = SAM(torch.optim.SGD([w], lr=0.05), rho=0.1, adaptive=adaptive, eta=0.0)
        quad(w).backward()
        opt.first_step(zero_grad=True)
        quad(w).backward()
        opt.second_step(zero_grad=True)
        out[adaptive] = w.detach().clone()
    g = A @ w0 - B
    assert torch.allclose(out[False], w0 - 0.05 * (A @ (w0 + 0.1 * g / g.norm()) - B), atol=1e-6)
    e = w0 ** 2 * g * (0.1 / (w0.abs() * g).norm())  # ASAM: ρ T² g / ‖T g‖ with T = |w|
    assert torch.allclose(out[True], w0 - 0.05 * (A @ (w0 + e) - B), atol=1e-6)


@pytest.mark.parametrize("rho", [0.01, 0.05, 0.5])
def test_perturbation_has_norm_rho_and_weights_are_restored(rho):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    opt = SAM(torch.optim.SGD(model.parameters(), lr=0.0), rho=rho)
    before = [p.detach().clone() for p in model.parameters()]
    nn.functional.cross_entropy(model(x), y).backward()
    norm = opt.first_step(zero_grad=True)
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert moved.norm().item() == pytest.approx(rho, rel=1e-5)
    assert norm.item() == pytest.approx(rho, rel=1e-5)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.second_step(zero_grad=True)  # lr = 0: the base step changes nothing, so w must be exactly restored
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p.detach(), b)


def test_sam_shares_param_groups_with_base_for_schedulers():
    w = nn.Parameter(torch.zeros(2))
    base = torch.optim.AdamW([w], lr=1.0)
    opt = SAM(base, rho=0.05)
    torch.optim.lr_scheduler.LambdaLR(base, lambda s: 0.5)  # sets lr = 1.0 * 0.5 on the base
    assert opt.param_groups[0]["lr"] == base.param_groups[0]["lr"] == 0.5


def test_frozen_bn_stats_keeps_running_statistics():
    bn = nn.BatchNorm2d(3)
    bn(torch.randn(8, 3, 4, 4) + 2)
    mean, tracked = bn.running_mean.clone(), bn.num_batches_tracked.clone()
    with frozen_bn_stats(bn):
        bn(torch.randn(8, 3, 4, 4) * 5 - 3)
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.num_batches_tracked, tracked)
    assert bn.momentum == 0.1
    bn(torch.randn(8, 3, 4, 4) * 5 - 3)
    assert not torch.equal(bn.running_mean, mean)


def test_power_iteration_finds_the_top_eigenvalue_of_a_known_quadratic():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6))
    eig = torch.tensor([4.0, 2.5, 1.0, 0.5, -0.3, 0.1])
    h = q @ torch.diag(eig) @ q.T
    lam, _ = sharpness.power_iteration(lambda v: [h @ v[0]], [torch.zeros(6)], iters=200, tol=1e-10)
    assert lam == pytest.approx(4.0, rel=1e-4)
    # the same through double back-propagation of a quadratic "model": Hessian of ½ wᵀHw is H
    w = nn.Parameter(torch.randn(6))
    loss = 0.5 * w @ h @ w
    grads = torch.autograd.grad(loss, [w], create_graph=True)
    hvp = lambda v: [t.detach() for t in torch.autograd.grad(grads, [w], grad_outputs=v, retain_graph=True)]
    lam2, _ = sharpness.power_iteration(hvp, [w], iters=200, tol=1e-10)
    assert lam2 == pytest.approx(4.0, rel=1e-4)


def test_sharpness_measurements_on_a_small_network_restore_weights():
    torch.manual_seed(0)
    model = create_model("vit", dim=16, depth=1, heads=2)
    x, y = torch.randn(12, 3, 32, 32), torch.randint(0, 10, (12,))
    before = [p.detach().clone() for p in model.parameters()]
    s = sharpness.pga_sharpness(model, x, y, rho=0.05, steps=3)
    assert s["sharpness"] >= s["one_step"] - 1e-6 and s["sharpness"] > 0
    h = sharpness.top_hessian_eigenvalue(model, x, y, iters=5)
    assert h["eigenvalue"] == h["eigenvalue"]  # finite, not NaN
    sl = sharpness.loss_slice(model, x, y, [-0.5, 0.0, 0.5])
    assert sl[1] == pytest.approx(s["loss"], rel=1e-5)
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p.detach(), b)
    d = sharpness.filter_normalized_direction(model)
    w = dict(model.named_parameters())["embed.proj.weight"]
    i = [n for n, _ in model.named_parameters()].index("embed.proj.weight")
    assert torch.allclose(d[i].flatten(1).norm(dim=1), w.flatten(1).norm(dim=1), rtol=1e-4)


def test_mixup_and_cutout_are_seeded_and_correct():
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    a = mixing.Mixup(alpha=1.0, num_classes=10, seed=3)(x, y)
    b = mixing.Mixup(alpha=1.0, num_classes=10, seed=3)(x, y)
    assert torch.equal(a[0], b[0]) and torch.allclose(a[1].sum(1), torch.ones(8))
    c = mixing.Cutout(size=8, seed=0, mean=(0.5,) * 3, std=(0.25,) * 3)
    xc, yc = c(torch.ones(4, 3, 32, 32), y[:4])  # normalised 1 = pixel 0.75; the cut is mid-grey = normalised 0
    zeros = (xc[:, 0].abs() < 1e-6).flatten(1).sum(1)
    assert torch.equal(yc, y[:4]) and (zeros > 0).all() and (zeros <= 64).all()
    assert (xc.abs() < 1e-6).all(dim=1).flatten(1).sum(1).equal(zeros)  # same square in every channel
    again, _ = mixing.Cutout(size=8, seed=0, mean=(0.5,) * 3, std=(0.25,) * 3)(torch.ones(4, 3, 32, 32), y[:4])
    assert torch.equal(xc, again)  # seeded


def test_train_steps_are_frozen_dataclasses_keyed_by_their_fields():
    from ibnb.core.train import step_key
    a = SAMStep(rho=0.05, mix=mixing.Mixup(seed=1, alpha=1.0, num_classes=10))
    assert step_key(a) == "SAMStep(rho=0.05, adaptive=False, eta=0.01, mix=Mixup(seed=1, alpha=1.0, num_classes=10), " \
                          "label_smoothing=0.0)"
    assert step_key(SAMStep(rho=0.1)) != step_key(SAMStep(rho=0.05)) != step_key(SAMStep(rho=0.05, adaptive=True))
    assert step_key(MixStep(mix=mixing.Cutout(seed=0))) != step_key(MixStep(mix=mixing.Cutout(seed=1)))
    with pytest.raises(ValueError, match="rho"):
        SAMStep(rho=0.0)


def test_sam_step_trains_through_fit_and_logs_sharpness():
    torch.manual_seed(0)
    from ibnb.core.data import ImageData
    data = ImageData(torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8), torch.arange(64) % 10,
                     classes=[str(i) for i in range(10)], name="toy", mean=(0.5,) * 3, std=(0.25,) * 3)
    model = create_model("cnn", width=4, stages=2)
    hist = fit(model, data, epochs=2, batch_size=16, progress=False, device="cpu",
               step=SAMStep(rho=0.05, mix=mixing.Cutout(size=8, mean=data.mean, std=data.std)))
    assert "train_sharpness" in hist.frame and (hist.frame["train_perturbed_loss"] > 0).all()


def test_rollout_is_row_stochastic_and_maps_are_in_unit_range():
    a = torch.softmax(torch.randn(2, 3, 5, 5), dim=-1)
    r = rollout([a, a])
    assert torch.allclose(r.sum(-1), torch.ones(2, 5), atol=1e-5)
    from ibnb.core.data import ImageData
    data = ImageData(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.arange(4),
                     classes=[str(i) for i in range(10)], name="toy", mean=(0.5,) * 3, std=(0.25,) * 3)
    for pool in ("cls", "mean"):
        maps, logits = vit_rollout_maps(create_model("vit", dim=16, depth=2, heads=2, pool=pool), data)
        assert maps.shape == (4, 1, 32, 32) and logits.shape == (4, 10)
        assert maps.min() >= 0 and maps.max() <= 1 + 1e-6


# ----------------------------------------------------------------------------- the claims audit
def _outcome(sam_gain: float, seeds: int = 3, converged: bool = True, sharp_change: float = -0.01):
    """A synthetic chapter-08 outcome: SAM ρ = 0.05 is ``sam_gain`` above AdamW for both models (plus seed noise)."""
    import numpy as np
    import pandas as pd

    from ibnb.book import profiles
    from ibnb.chapters.vit_sam import presets
    from ibnb.chapters.vit_sam.sweep import ADAMW, MATCHED, Outcome, main_configs

    P = profiles.resolve(presets, {"profile": "smoke", "seeds": seeds})
    rng = np.random.default_rng(0)
    rows, hists, sharp = [], {}, []
    for seed in range(seeds):
        for m in P["models"]:
            for c in main_configs(P):
                if seed not in c["seeds"]:
                    continue
                gain = sam_gain if c["rho"] == 0.05 else 0.0
                rows.append(dict(model=m, seed=seed, method=c["method"], rho=c["rho"], adaptive=False, mix="none",
                                 base=c["base"],
                                 test_acc=0.4 + gain + 0.002 * rng.standard_normal(), converged=converged,
                                 steps=30, grad_evals=30, wall_s=1.0, params=100, cached=False))
                hists[m, c["method"], seed] = pd.DataFrame({"epoch": [1, 2], "train_sharpness": [0.02, 0.02 + sharp_change]})
            for method, s in ((ADAMW, 0.2), ("sam ρ=0.05", 0.2 + sharp_change)):
                for stage in ("end", MATCHED):
                    sharp.append(dict(model=m, method=method, seed=seed, train_loss=1.0, stage=stage, epoch=3,
                                      pga_sharpness=s + 1e-3 * seed, hessian_top=10 * s + 1e-3 * seed,
                                      converged=converged))
    main = pd.DataFrame(rows)
    mix = pd.DataFrame([dict(model=P["mix_model"], seed=s, method=f"{meth}+{op}", rho=r, mix=op, adaptive=False,
                             test_acc=0.4 + 0.002 * rng.standard_normal(), converged=converged)
                        for s in range(seeds) for op in P["mixes"] for meth, r in ((ADAMW, 0.0), ("sam ρ=0.05", 0.05))])
    from ibnb.chapters.vit_sam.search import Search

    out = Outcome(main, hists, mix, pd.DataFrame(sharp), pd.DataFrame(), {}, {"vit": Search(pd.DataFrame())},
                  pd.DataFrame(), None, 60, 30, 50)
    return out, P


def test_rho_default_claim_needs_sam_to_beat_the_base_optimiser():
    from ibnb.chapters.vit_sam import claims_audit as A

    def verdicts(out, P):
        return {c.claim: c.verdict for c in A.claims(out, P)}
    v = verdicts(*_outcome(+0.05))
    rho = [k for k in v if k.startswith("ρ = 0.05 is a good default")]
    assert len(rho) == 2 and all(v[k] == "supported" for k in rho)
    assert v["SAM finds flatter minima: lower worst-case sharpness (ViT)"] == "supported"
    assert v["SAM finds flatter minima at matched training loss: lower top Hessian eigenvalue (CNN)"] == "supported"
    assert v["SAM lowers test error (ViT, SGD base, equal steps)"] == "supported"
    assert v["ASAM lowers test error (CNN, SGD base, equal steps)"] == "not testable at this budget"  # 1 seed
    assert v["sharpness decreases during SAM training (CNN)"] == "supported"
    v = verdicts(*_outcome(-0.05, sharp_change=+0.01))  # SAM at ρ = 0.05 below AdamW: contradicted, however close
    assert all(v[k] == "contradicted" for k in rho)
    assert v["SAM finds flatter minima: lower worst-case sharpness (ViT)"] == "contradicted"
    v = verdicts(*_outcome(+0.05, seeds=2))
    assert all(v[k] == "not testable at this budget" for k in rho)
    v = verdicts(*_outcome(+0.05, converged=False))
    assert all(v[k] == "not testable at this budget" for k in rho)
    assert v["a ViT is worse than a CNN when trained on small data"] == "not testable at this budget"


def test_calibration_rows_carry_the_published_sam_gain_and_vit_number():
    from ibnb.chapters.vit_sam import claims_audit as A

    out, P = _outcome(+0.008)
    cal = A.calibration(out, P)
    assert cal[0].published == pytest.approx(0.8) and cal[0].within
    assert cal[1].published == pytest.approx(91.38) and not cal[1].within


def test_optuna_search_replays_its_trials_and_reruns_the_chosen_setting():
    """Seeded TPE: a second search over the same cached runs proposes the same trials (all from the cache); four
    trials give fANOVA importances over the three hyperparameters; the chosen setting is re-run with every seed."""
    from ibnb.book.profiles import resolve
    from ibnb.chapters.vit_sam.search import run_chosen, run_search
    from ibnb.core.bench import random_data

    p = resolve("08_vit_sam", profile="smoke", search_trials=4, device="cpu")
    pool, val, test = random_data(200), random_data(30), random_data(30)
    first, again = run_search(p, pool, val, "cnn"), run_search(p, pool, val, "cnn")
    assert len(first.trials) == 4 and first.trials[["lr", "weight_decay", "rho"]].equals(
        again.trials[["lr", "weight_decay", "rho"]])
    assert again.trials["cached"].all() and not first.trials["cached"].any()
    assert set(first.importances) == {"lr", "weight_decay", "rho"}
    assert abs(sum(first.importances.values()) - 1) < 1e-6
    chosen = run_chosen(p, pool, val, test, {"cnn": first})
    assert len(chosen) == p["seeds"] and (chosen["lr"] == first.best["lr"]).all()
    assert (chosen["experiment"] == "searched").all() and (chosen["n_test"] == 30).all()
    few = run_search(resolve("08_vit_sam", profile="smoke", search_trials=2, device="cpu"), pool, val, "vit")
    assert few.importances == {} and "fewer than" in few.importance_note


def test_matched_snapshot_finds_the_epoch_at_the_other_runs_loss(tmp_path, monkeypatch):
    """The snapshot whose loss on the batch is closest to a target: a target equal to epoch 1's loss picks epoch 1
    (and leaves the model holding epoch 1's weights); the final loss picks the last epoch."""
    from ibnb.book.profiles import resolve
    from ibnb.chapters.vit_sam.sweep import batch_loss, matched_snapshot, run_spec, train
    from ibnb.core.bench import random_data

    monkeypatch.setenv("IBNB_RUNS", str(tmp_path))
    p = resolve("08_vit_sam", profile="smoke", device="cpu")
    data = random_data(64)
    net, _, _ = train(p, "cnn", data, None, seed=0, epochs=3, snapshots=True)
    folder = run_spec(p, "cnn", data, None, seed=0, epochs=3, snapshots=True).folder()
    x, y = data.x[:32].float().div(255), data.y[:32]
    final = batch_loss(net, x, y)
    probe, _, _ = train(p, "cnn", data, None, seed=0, epochs=3, snapshots=True)
    epoch, loss = matched_snapshot(probe, folder, x, y, final)
    assert epoch == 3 and loss == pytest.approx(final)
    from ibnb.core.runs import load_snapshots
    probe.load_state_dict(load_snapshots(folder)[0])
    first = batch_loss(probe, x, y)
    epoch, loss = matched_snapshot(probe, folder, x, y, first)
    assert epoch == 1 and batch_loss(probe, x, y) == pytest.approx(first) and abs(first - final) > 1e-4


def test_sharpness_figures_colour_methods_by_name_not_by_row_order():
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.colors import to_hex

    import importlib

    from ibnb.chapters.vit_sam.sweep import ADAMW

    figures = importlib.import_module("ibnb.chapters.vit_sam.figures")  # the package's figures() shadows the name

    rows = [dict(model="cnn", method=m, train_loss=1.0, pga_sharpness=0.1, hessian_top=1.0)
            for m in ("sam ρ=0.05", ADAMW)]  # SAM first: the order that swapped the colours
    fig = figures.sharpness_figure(pd.DataFrame(rows))
    bars = {c.get_label(): to_hex(c.patches[0].get_facecolor()) for c in fig.axes[0].containers
            if hasattr(c, "patches")}
    assert bars[ADAMW] == to_hex(figures.GREY) and bars["sam ρ=0.05"] == to_hex(figures.RED)
    assert figures.method_color("sgd+sam ρ=0.05") == figures.RED and figures.method_color("sgd") == figures.GREY
    plt.close(fig)


def test_chapter_08_model_precision_reaches_the_run_config_and_is_validated():
    from types import SimpleNamespace

    import pytest

    from ibnb.book import profiles
    from ibnb.chapters.vit_sam import presets, sweep

    p = profiles.resolve(presets, {"profile": "smoke", "model_precision": {"vit": "fp32"}})
    data = SimpleNamespace(mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=10)
    cfg = {m: sweep.run_spec(p, m, data, None, seed=0, epochs=1).config for m in ("vit", "cnn")}
    assert cfg["vit"].precision == "fp32" and cfg["cnn"].precision == "auto"
    assert profiles.resolve(presets, {"profile": "cpu"})["model_precision"] == {"vit": "fp32"}
    with pytest.raises(profiles.ParameterError, match="model_precision"):
        profiles.resolve(presets, {"model_precision": {"vit": "fp16"}})


def test_chapter_08_probes_each_failing_cell_once_and_shares_a_passing_verdict(monkeypatch):
    from types import SimpleNamespace

    import pandas as pd

    from ibnb.book import profiles
    from ibnb.chapters.vit_sam import presets, sweep
    from ibnb.core.train import TrainConfig

    p = profiles.resolve(presets, {"profile": "smoke"})
    rows = [dict(experiment="sam", model=m, method=meth, seed=s, converged=ok, convergence="own reason")
            for m, meth, oks in (("cnn", "adamw", (True, False, False)), ("cnn", "sam ρ=0.05", (False, False, True)),
                                 ("vit", "adamw", (True, True, True)))
            for s, ok in enumerate(oks)]
    specs = [SimpleNamespace(model_name=r["model"], train=None, val=None, model_kw={}, step=None, snapshots=False,
                             config=TrainConfig(epochs=8, seed=r["seed"])) for r in rows]
    from ibnb.core import probes

    monkeypatch.setattr(probes, "probe_run", lambda s: SimpleNamespace(config=SimpleNamespace(epochs=4), step=None,
                                                                      seed=s.config.seed))
    prefetched = []
    monkeypatch.setattr(probes, "prefetch", lambda runs, *a, **k: prefetched.extend(runs) or set())
    passes = {("cnn", 1): True, ("cnn", 0): False}  # the adamw cell's probe (seed 1) passes, SAM's (seed 0) fails

    def fake_train_or_load(model, *a, config, probe, **k):
        assert probe
        ok = passes[(model, config.seed)]
        return None, SimpleNamespace(convergence=SimpleNamespace(columns=lambda: {
            "converged": ok, "convergence": f"doubling ({'passes' if ok else 'fails'})"})), True

    monkeypatch.setattr(probes, "train_or_load", fake_train_or_load)
    out = sweep.probe_cells(p, pd.DataFrame(rows), specs)
    assert [r.seed for r in prefetched] == [1, 0] and out["probed"].tolist() == [False, True, False, True, False, False, False, False, False]
    adamw = out[(out["model"] == "cnn") & (out["method"] == "adamw")]
    assert adamw["converged"].all() and "the cell's budget probe (seed 1)" in adamw["convergence"].iloc[2]
    assert adamw["convergence"].iloc[0] == "own reason"  # a run that passed keeps its own reason
    sam = out[out["method"] == "sam ρ=0.05"]
    assert sam["converged"].tolist() == [False, False, True]  # a failed probe passes no one
    off = sweep.probe_cells({**p, "probe": False}, pd.DataFrame(rows), specs)
    assert not off["probed"].any() and off["converged"].tolist() == [r["converged"] for r in rows]


def test_the_size_sweep_compares_vit_and_cnn_only_where_both_were_trained():
    import importlib

    import pandas as pd

    audit = importlib.import_module("ibnb.chapters.vit_sam.claims_audit")
    rows = [dict(model=m, n_train=n, seed=s, augment="none", converged=True, test_acc=acc + 0.01 * s)
            for s in range(3) for m, n, acc in (("vit", 500, 0.30), ("cnn", 500, 0.40), ("vit", 8000, 0.50),
                                                ("cnn", 8000, 0.55), ("cnn", 49000, 0.77))]
    arch = pd.DataFrame(rows)
    assert audit.shared_sizes(arch) == [500, 8000]  # the CNN's full-set runs have no ViT partner
    gap = audit.size_gap(arch)
    assert gap["large"].mean == pytest.approx(-5.0) and gap["change"].mean == pytest.approx(5.0)
