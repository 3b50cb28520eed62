"""Runs trained in worker processes land in the run cache exactly where the sweep's own calls look for them."""
import math

import pytest
import torch

from ibnb.core.data import ImageData
from ibnb.core.parallel import Run, map_in_workers, prefetch
from ibnb.core.runs import is_cached, load_snapshots, train_or_load
from ibnb.core.train import TrainConfig


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageData(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     torch.randint(0, 10, (n,), generator=g), [str(i) for i in range(10)], "random",
                     (0.5,) * 3, (0.25,) * 3)


def _runs(cfgs, snapshots=False):
    data = _data()
    return [Run("cnn", data, None, c, {"width": 4}, snapshots=snapshots) for c in cfgs]


def test_prefetch_trains_missing_runs_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IBNB_RUNS", str(tmp_path))
    cfgs = [TrainConfig(epochs=2, batch_size=16, seed=s) for s in (0, 1)]
    runs = _runs(cfgs, snapshots=True)
    trained = prefetch(runs + runs[:1], workers=2, device="cpu")  # a duplicate is one job
    assert trained == {r.folder().name for r in runs} and len(trained) == 2
    assert all(is_cached(r.folder(), snapshots=True) for r in runs)
    assert len(load_snapshots(runs[0].folder())) == 2
    _, hist, cached = train_or_load("cnn", runs[0].train, config=cfgs[0], model_kw={"width": 4}, snapshots=True)
    assert cached and len(hist.frame) == 2
    assert prefetch(runs, workers=2, device="cpu") == set()  # nothing left to train
    assert prefetch(_runs([TrainConfig(epochs=1, seed=5)]), workers=1, device="cpu") == set()  # serial: no-op


def test_snapshots_are_the_weights_after_each_epoch(tmp_path, monkeypatch):
    monkeypatch.setenv("IBNB_RUNS", str(tmp_path))
    cfg = TrainConfig(epochs=2, batch_size=16)
    model, _, cached = train_or_load("cnn", _data(), config=cfg, model_kw={"width": 4}, snapshots=True)
    assert not cached
    snaps = load_snapshots(Run("cnn", _data(), None, cfg, {"width": 4}).folder())
    assert len(snaps) == 2
    final = model.state_dict()
    assert all(torch.equal(snaps[-1][k], final[k].cpu()) for k in final)
    assert not all(torch.equal(snaps[0][k], final[k].cpu()) for k in final if final[k].is_floating_point())
    # a run cached without snapshots is trained again when they are asked for
    _, _, cached = train_or_load("cnn", _data(), config=TrainConfig(epochs=1, batch_size=16), model_kw={"width": 4})
    _, _, cached2 = train_or_load("cnn", _data(), config=TrainConfig(epochs=1, batch_size=16), model_kw={"width": 4},
                                  snapshots=True)
    assert not cached and not cached2


def test_a_failing_run_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("IBNB_RUNS", str(tmp_path))
    bad = _runs([TrainConfig(epochs=1, batch_size=16, lr=1e30, optimizer="sgd")])
    with pytest.raises(RuntimeError, match=r"run cnn .*n_train=64.*failed in a worker process: NonFiniteLossError"):
        prefetch(bad + _runs([TrainConfig(epochs=1, batch_size=16, seed=3)]), workers=2, device="cpu")


def _square(x):
    return x * x


def test_map_in_workers_keeps_the_order():
    assert map_in_workers(_square, [(i,) for i in range(5)], workers=2, device="cpu") == [0, 1, 4, 9, 16]
    assert map_in_workers(math.sqrt, [(4.0,)], workers=2, device="cpu") == [2.0]


def test_prefetch_stays_serial_under_a_dry_runs_stand_ins(tmp_path, monkeypatch):
    """Workers would train with the real fit, so a dry run / plan (stand-ins swapped in) trains nothing there."""
    import ibnb.core.train as train_mod

    monkeypatch.setenv("IBNB_RUNS", str(tmp_path))

    def fit(*a, **k):  # a stand-in, as dryrun.make_dry_fit builds one
        raise AssertionError("not called")
    monkeypatch.setattr(train_mod, "fit", fit)
    assert prefetch(_runs([TrainConfig(epochs=1, batch_size=16)]), workers=2, device="cpu") == set()
    assert not any(tmp_path.iterdir())
