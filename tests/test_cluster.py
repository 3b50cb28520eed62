"""Sweeps through submitit (``--executor submitit-local``, real subprocesses): the same results table as the
serial path, every run trained by a job, and a failed job named without an executed page."""
from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from ibnb.book import cluster
from ibnb.book.guard import RunnerError
from ibnb.book.runner import Paths, run_notebooks
from ibnb.core.data import ImageData
from ibnb.core.models import create_model
from ibnb.core.train import TrainConfig
from ibnb.core.utils import atomic_torch_save

pytest.importorskip("submitit")
TIMING = {"wall_s", "images_per_s", "train_s", "device"}


def _paths(tmp_path, name: str) -> Paths:
    repo = Paths.for_repo()
    return Paths(repo=repo.repo, notebooks=repo.notebooks, experiments=tmp_path / name / "experiments",
                 results=tmp_path / name / "results")


def test_submitit_local_sweep_gives_the_serial_results_table(tmp_path, monkeypatch, capsys):
    stem, tables = "05_sparse_vd", {}
    for name in ("serial", "sweep"):
        paths = _paths(tmp_path, name)
        paths.experiments.mkdir(parents=True)
        monkeypatch.setenv("IBNB_RUNS", str(tmp_path / name / "runs"))
        monkeypatch.setenv("IBNB_RESULTS", str(paths.results))
        if name == "serial":
            run_notebooks([stem], profile="smoke", paths=paths, progress=False, echo=False)
        else:
            cluster.run_on_cluster([stem], profile="smoke", paths=paths, executor="local", gpus_per_job=0)
        assert (paths.experiments / f"{stem}.ipynb").exists()
        tables[name] = pd.read_csv(paths.results / stem / "smoke.csv")
    out = capsys.readouterr().out
    assert "wave 1: 7 run(s) missing" in out and "wave 2: 0 run(s) missing" in out  # every run came from a job
    assert not tables["serial"]["cached"].any() and tables["sweep"]["cached"].all()  # the notebook trained nothing
    keep = [c for c in tables["serial"].columns if c not in TIMING | {"cached"}]
    pd.testing.assert_frame_equal(tables["serial"][keep], tables["sweep"][keep])  # bit for bit on this CPU


def _tiny(n: int = 16) -> ImageData:
    g = torch.Generator().manual_seed(0)
    return ImageData(torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g), torch.arange(n) % 2,
                     ["a", "b"], "tiny", (0.5,), (0.25,))


def test_a_failed_job_is_retried_then_named_and_nothing_is_kept(tmp_path):
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    model = create_model("mlp", num_classes=2, in_channels=1, image_size=8, width=8, depth=1)
    for spec, cfg in ((good, TrainConfig(epochs=1, batch_size=8)),
                      (bad, dataclasses.replace(TrainConfig(epochs=1), epochs=0))):  # epochs 0 fails in the job
        atomic_torch_save({"model": model, "folder": str(tmp_path / "runs" / spec.stem), "train": _tiny(), "val": None,
                           "config": cfg, "step": None, "desc": f"mlp-{spec.stem}", "meta": None}, spec)
    ex = cluster.make_executor("local", tmp_path / "submitit", gpus_per_job=0)
    with pytest.raises(RunnerError) as err:
        cluster.run_jobs(ex, [good, bad], retries=1, echo=False)
    msg = str(err.value)
    assert "1 training job(s) failed after 2 attempt(s)" in msg and "mlp-bad" in msg and "epochs must be >= 1" in msg
    assert (tmp_path / "runs" / "good" / "final.pt").exists() and not (tmp_path / "runs" / "bad" / "final.pt").exists()
