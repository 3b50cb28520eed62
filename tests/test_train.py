"""The training loop: learning, resume equivalence, NaN stop, schedules, load-or-train cache."""
from __future__ import annotations

import pytest
from dataclasses import dataclass
import torch

from ibnb.core.models import create_model
from ibnb.core.runs import train_or_load
from ibnb.core.train import NonFiniteLossError, TrainConfig, evaluate, fit
from conftest import toy_data


def small_cnn():
    torch.manual_seed(0)
    return create_model("cnn", num_classes=4, image_size=8, width=4, stages=2)


def test_fit_learns_and_records_history():
    data = toy_data()
    model = small_cnn()
    hist = fit(model, data, data, epochs=6, batch_size=16, lr=1e-2, progress=False, device="cpu")
    f = hist.frame
    assert list(f["epoch"]) == list(range(1, 7))
    for col in ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr", "wall_s", "images_per_s"):
        assert col in f
    assert f["train_loss"].iloc[-1] < f["train_loss"].iloc[0]
    assert evaluate(model, data)["acc"] > 0.6
    assert hist.images_per_s > 0 and hist.wall_s > 0


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    data = toy_data()
    kw = dict(epochs=4, batch_size=16, lr=5e-3, augment="crop+flip", seed=3, progress=False, device="cpu")
    reference = small_cnn()
    fit(reference, data, **kw)

    ckpt = tmp_path / "ckpt.pt"
    model = small_cnn()
    calls = {"n": 0}

    def interrupt(*_):
        calls["n"] += 1
        if calls["n"] == 17:  # in epoch 3 (8 steps per epoch)
            raise KeyboardInterrupt
    handle = model.register_forward_pre_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        fit(model, data, checkpoint=ckpt, **kw)
    handle.remove()
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2
    resumed = small_cnn()
    hist = fit(resumed, data, checkpoint=ckpt, **kw)
    assert len(hist.frame) == 4
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_checkpoint_of_another_config_is_refused(tmp_path):
    data = toy_data()
    fit(small_cnn(), data, epochs=1, batch_size=16, checkpoint=tmp_path / "c.pt", progress=False, device="cpu")
    with pytest.raises(ValueError, match="different configuration"):
        fit(small_cnn(), data, epochs=2, batch_size=16, checkpoint=tmp_path / "c.pt", progress=False, device="cpu")


def test_non_finite_loss_stops_with_clear_error():
    data = toy_data()
    model = small_cnn()
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="Lower the learning rate"):
        fit(model, data, epochs=2, batch_size=16, progress=False, device="cpu")


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "plateau", "constant"])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_optimizers_and_schedules_run(schedule, optimizer):
    hist = fit(small_cnn(), toy_data(8), toy_data(4, seed=1), epochs=2, batch_size=8, lr=1e-2, schedule=schedule,
               optimizer=optimizer, label_smoothing=0.1, progress=False, device="cpu")
    assert len(hist.frame) == 2 and hist.frame["train_loss"].notna().all()


def test_bad_training_config_is_rejected():
    for bad in (dict(optimizer="adam"), dict(schedule="step"), dict(epochs=0), dict(lr=0), dict(augment="rot")):
        with pytest.raises(ValueError):
            TrainConfig(**bad).validate()


def test_evaluate_metrics_are_consistent():
    data = toy_data()
    out = evaluate(small_cnn(), data, return_logits=True)
    assert 0 <= out["acc"] <= out["top5"] <= 1 and out["nll"] > 0 and out["logits"].shape == (128, 4)


def test_train_or_load_reuses_and_retrains_corrupt_cache(tmp_path):
    data = toy_data()
    kw = dict(model_kw={"width": 4, "stages": 2}, progress=False, device="cpu")
    cfg = TrainConfig(epochs=1, batch_size=16)
    m1, h1, cached1 = train_or_load("cnn", data, config=cfg, **kw)
    m2, h2, cached2 = train_or_load("cnn", data, config=cfg, **kw)
    assert (cached1, cached2) == (False, True)
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert h1.frame.equals(h2.frame)
    _, _, cached3 = train_or_load("cnn", data, config=TrainConfig(epochs=1, batch_size=16, seed=1), **kw)
    assert not cached3  # another seed is another run
    for final in (tmp_path / "runs").glob("cnn-*/final.pt"):
        final.write_bytes(b"not a checkpoint")
    _, _, cached4 = train_or_load("cnn", data, config=cfg, **kw)
    assert not cached4


@dataclass(frozen=True)
class MseToOneHot:
    """A custom objective for the hook tests: squared error to one-hot targets, logging two terms."""

    reg: float = 1e-3

    def __call__(self, model, opt, x, y, epoch):
        from ibnb.core.train import StepOutput

        out = model(x)
        target = torch.nn.functional.one_hot(y, out.shape[1]).float()
        err = (out - target).pow(2).mean()
        reg = self.reg * out.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        (err + reg).backward()
        opt.step()
        return StepOutput((err + reg).detach(), None, {"err": err.detach(), "reg": reg.detach(),
                                                       "epoch": torch.tensor(float(epoch))})


def test_custom_train_step_logs_terms_and_epoch_position():
    data = toy_data()
    hist = fit(small_cnn(), data, epochs=3, batch_size=16, progress=False, device="cpu", step=MseToOneHot())
    f = hist.frame
    assert hist.config["step"] == "MseToOneHot(reg=0.001)"
    assert f["train_acc"].isna().all()  # the step returned no logits
    assert (f["train_loss"] - f["train_err"] - f["train_reg"]).abs().max() < 1e-5
    assert f["train_err"].iloc[-1] < f["train_err"].iloc[0]
    # the fractional epoch handed to the step averages to epoch + (steps-1)/(2*steps) in each epoch
    steps = len(data) // 16
    expected = [e + (steps - 1) / (2 * steps) for e in range(3)]
    assert f["train_epoch"].tolist() == pytest.approx(expected, abs=1e-6)


def test_custom_train_step_must_be_a_frozen_dataclass_and_keys_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IBNB_RUNS", str(tmp_path))
    data = toy_data()
    with pytest.raises(TypeError, match="frozen dataclass"):
        fit(small_cnn(), data, epochs=1, progress=False, device="cpu", step=lambda *a: None)
    kw = dict(model_kw={"width": 4, "stages": 2}, config=TrainConfig(epochs=1, batch_size=16), progress=False,
              device="cpu")
    _, h_ce, _ = train_or_load("cnn", data, **kw)
    _, h_mse, cached = train_or_load("cnn", data, step=MseToOneHot(), **kw)
    _, _, cached_other = train_or_load("cnn", data, step=MseToOneHot(reg=1e-2), **kw)
    assert not cached and not cached_other and "train_err" in h_mse.frame and "train_err" not in h_ce.frame
    assert len(list(tmp_path.iterdir())) == 3  # a step's fields key the run


def test_the_validation_split_keys_the_run_cache(tmp_path):
    """A cached run's history (validation curve, convergence check) depends on its validation split, so another
    split is another run; the same split is a cache hit."""
    data, val_a, val_b = toy_data(), toy_data(n_per_class=8, seed=1), toy_data(n_per_class=8, seed=2)
    kw = dict(model_kw={"width": 4, "stages": 2}, progress=False, device="cpu", config=TrainConfig(epochs=1, batch_size=16))
    assert not train_or_load("cnn", data, val_a, **kw)[2]
    assert train_or_load("cnn", data, val_a, **kw)[2]
    assert not train_or_load("cnn", data, val_b, **kw)[2]
