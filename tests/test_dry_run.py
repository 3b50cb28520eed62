"""The ``gpu`` dry run (``python -m ibnb run NOTEBOOK --profile gpu --dry-run``): every knob is classified, every
chapter's ``gpu`` plan builds and steps, a broken preset fails naming the run, and nothing is written."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from ibnb.book import cost, dryrun
from ibnb.book.guard import RunnerError
from ibnb.book.profiles import PAGES, _module, _presets_of
from ibnb.book.runner import Paths
from ibnb.core.convergence import check_convergence
from ibnb.core.data import ImageData, data_root
from ibnb.core.runs import train_or_load
from ibnb.core.train import TrainConfig

HAVE_FOOD = (data_root() / "food101" / "food-101" / "images").is_dir()
CHAPTERS = sorted(stem for stem, module in PAGES.items() if module != "ibnb.book.pages")


def test_every_knob_on_which_smoke_and_gpu_differ_is_volume_or_shape():
    assert sorted(dryrun.VOLUME) == CHAPTERS and sorted(dryrun.SHAPE) == CHAPTERS
    for stem in CHAPTERS:
        presets = _presets_of(_module(stem), stem)
        differ = {k for k in presets["gpu"] if presets["gpu"][k] != presets["smoke"][k]}
        volume, shape = dryrun.VOLUME[stem], dryrun.SHAPE[stem]
        assert not volume & shape, (stem, volume & shape)
        assert volume | shape <= set(presets["gpu"]), (stem, (volume | shape) - set(presets["gpu"]))
        assert differ <= volume | shape, f"{stem}: classify {sorted(differ - volume - shape)} in ibnb.book.dryrun"


def test_dry_params_take_smoke_volume_and_let_an_override_win():
    p = dryrun.dry_params("05_sparse_vd", "gpu", {"seeds": {"lenet300_100": 2, "lenet5_caffe": 1}})
    smoke = _presets_of(_module("05_sparse_vd"), "05_sparse_vd")["smoke"]
    assert p["profile"] == "gpu" and p["n_per_class"] == smoke["n_per_class"] and p["epochs"] == smoke["epochs"]
    assert p["seeds"] == {"lenet300_100": 2, "lenet5_caffe": 1}
    with pytest.raises(RunnerError, match="no dry run"):
        dryrun.dry_params("09_scorecard", "gpu")


def _tiny(n: int = 40) -> ImageData:
    g = torch.Generator().manual_seed(0)
    return ImageData(torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g),
                     torch.arange(n) % 4, list("abcd"), "tiny", (0.5,), (0.25,))


def test_installed_wrappers_train_two_steps_log_the_planned_run_and_come_off(tmp_path, monkeypatch):
    monkeypatch.setenv("IBNB_RUNS", str(tmp_path / "runs"))
    log = tmp_path / "runs.jsonl"
    uninstall = dryrun.install(log)
    try:
        _, hist, cached = train_or_load("mlp", _tiny(), None, config=TrainConfig(epochs=7, batch_size=32),
                                        model_kw={"width": 16, "depth": 1}, progress=False)
        with pytest.raises(dryrun.DryRunError, match="building model 'no_such_model'"):
            train_or_load("no_such_model", _tiny(), None, config=TrainConfig(epochs=1), progress=False)
    finally:
        uninstall()
    assert not cached and len(hist.frame) == 1  # one epoch instead of seven ...
    (rec,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert rec["epochs"] == 7 and rec["n_train"] == 40 and rec["images_seen"] == 280  # ... the plan is logged
    assert rec["forward_flops"] > 0 and rec["parameters"] > 0
    _, hist, _ = train_or_load("mlp", _tiny(), None, config=TrainConfig(epochs=3, batch_size=32),
                               model_kw={"width": 16, "depth": 1}, progress=False)
    assert len(hist.frame) == 3  # the real fit is back


def test_probe_is_a_cached_run_of_half_the_budget_and_enters_the_convergence_check(tmp_path, monkeypatch):
    monkeypatch.setenv("IBNB_RUNS", str(tmp_path / "runs"))
    cfg = TrainConfig(epochs=6, batch_size=32, warmup_epochs=2.0, schedule="linear")
    kw = dict(model_kw={"width": 16, "depth": 1}, progress=False)
    _, hist, cached = train_or_load("mlp", _tiny(), _tiny(16), config=cfg, probe=True, **kw)
    assert not cached and len(hist.frame) == 6 and len(hist.probe) == 3
    assert len(list((tmp_path / "runs").glob("mlp-*/final.pt"))) == 2  # the probe is a run of its own
    probe_cfg = torch.load(next(p for p in (tmp_path / "runs").glob("mlp-*/final.pt")
                                if torch.load(p, weights_only=False)["config"]["epochs"] == 3),
                           weights_only=False)["config"]
    assert probe_cfg["warmup_epochs"] == 1.0  # the whole schedule is compressed
    assert hist.convergence == check_convergence(hist.frame, probe=hist.probe)  # the check sees the probe
    _, again, cached = train_or_load("mlp", _tiny(), _tiny(16), config=cfg, probe=True, **kw)
    assert cached and again.probe.equals(hist.probe)
    _, plain, _ = train_or_load("mlp", _tiny(), _tiny(16), config=cfg, **kw)
    assert plain.probe is None and "doubling" not in plain.convergence.reason


@pytest.mark.parametrize("stem", CHAPTERS)
def test_gpu_dry_run_builds_and_steps_every_planned_run_and_writes_nothing(stem, tmp_path, monkeypatch):
    paths = Paths.for_repo()
    runs, results = tmp_path / "runs", tmp_path / "results"
    monkeypatch.setenv("IBNB_RUNS", str(runs))
    monkeypatch.setenv("IBNB_RESULTS", str(results))
    before = {p: p.stat().st_mtime_ns for p in (paths.repo / "book").rglob("*") if p.is_file()}
    # without Food-101 on disk the gpu preset of 03 cannot run (test_a_missing_dataset_...); the rest of it can
    overrides = {"food": False} if stem == "03_spatial_attention" and not HAVE_FOOD else None
    (result,) = dryrun.dry_run_notebooks([stem], profile="gpu", overrides=overrides, paths=paths, echo=False)
    assert result.runs, f"{stem}: the dry run trained nothing"
    assert all(r["epochs"] >= 1 and r["images_seen"] >= r["n_train"] for r in result.runs)
    assert not runs.exists() and not results.exists()  # its own temporary cache, deleted
    after = {p: p.stat().st_mtime_ns for p in (paths.repo / "book").rglob("*") if p.is_file()}
    assert after == before  # no page, no results table, no figure


@pytest.mark.skipif(HAVE_FOOD, reason="Food-101 is on disk here")
def test_a_missing_dataset_fails_the_dry_run_with_the_fix():
    with pytest.raises(RunnerError) as err:
        dryrun.dry_run_notebooks(["03_spatial_attention"], profile="gpu", echo=False)
    assert "Food-101 not found" in str(err.value) and "IBNB_DOWNLOAD=1" in str(err.value)


def test_a_broken_gpu_preset_fails_naming_the_run():
    with pytest.raises(RunnerError) as err:  # a source net with -3 filters in its first layer cannot be built
        dryrun.dry_run_notebooks(["06_deep_weight_prior"], profile="gpu", overrides={"width1": -3}, echo=False)
    msg = str(err.value)
    assert "06_deep_weight_prior" in msg and "building model 'dwp_cnn'" in msg and '"width1": -3' in msg


# ----------------------------------------------------------------------------- the cost model
def _rec(model="cnn", per_image=3e6, seen=1000, fwd=1e6, n_val=10, epochs=2):
    return {"model": model, "train_flops_per_image": per_image, "images_seen": seen, "forward_flops": fwd,
            "n_val": n_val, "epochs": epochs}


def test_run_flops_add_the_validation_passes_and_the_summary_adds_the_runs():
    assert cost.run_flops(_rec()) == 3e6 * 1000 + 1e6 * 10 * 2
    assert cost.run_flops(_rec(fwd=None)) == 3e9  # a forward the counter could not see adds nothing
    row = cost.summarise("01_architectures", "gpu", [_rec(), _rec("mlp", per_image=1e6)])
    assert row["runs"] == 2 and row["train_flops"] == pytest.approx(3.02e9 + 1.02e9)
    assert row["largest_run_flops"] == pytest.approx(3.02e9) and row["models"] == "cnn mlp"


def test_estimates_are_merged_one_row_per_notebook_and_profile(tmp_path):
    cost.record([cost.summarise("05_sparse_vd", "cpu", [_rec()]), cost.summarise("05_sparse_vd", "gpu", [_rec()])],
                tmp_path)
    cost.record([cost.summarise("05_sparse_vd", "cpu", [_rec(), _rec()])], tmp_path)
    est = cost.read_estimates(tmp_path)
    assert sorted(est["profile"]) == ["cpu", "gpu"] and int(est.loc[est["profile"] == "cpu", "runs"].iloc[0]) == 2


def test_cost_frame_sets_the_cpu_estimate_beside_the_measured_time():
    est = pd.DataFrame([cost.summarise("05_sparse_vd", "cpu", [_rec(per_image=cost.CPU_RATE * 60 / 1000, fwd=0)]),
                        cost.summarise("05_sparse_vd", "gpu", [_rec(per_image=1e12, fwd=0)])])
    timings = pd.DataFrame([{"notebook": "05_sparse_vd", "profile": "cpu", "wall_s": 240.0}])
    row = cost.cost_frame(est, timings, ["05_sparse_vd", "06_deep_weight_prior"]).iloc[0]
    assert row["cpu est. (min)"] == pytest.approx(1.0) and row["cpu measured (min)"] == pytest.approx(4.0)
    assert row["measured / est."] == pytest.approx(4.0)
    assert row["H100-h (est.)"] == pytest.approx(1e15 / (cost.GPU_PEAK * cost.GPU_UTIL) / 3600)
    assert len(cost.cost_frame(est, timings, ["06_deep_weight_prior"])) == 0  # no estimate: no row
    avx2 = timings.assign(device="cpu (x86_64; AVX2, no bf16)")  # the bf16 rate does not apply: no ratio
    assert cost.cost_frame(est, avx2, ["05_sparse_vd"]).iloc[0]["measured / est."] is None
    assert "timed on a CPU without bf16" in cost.numbers(est, avx2, ["05_sparse_vd"])["cost_sentence"].text


def test_estimate_counts_the_profile_volume_not_the_two_steps_it_trains(tmp_path):
    (row,) = cost.estimate_notebooks(["05_sparse_vd"], profile="smoke", echo=False, save=False)
    smoke = _presets_of(_module("05_sparse_vd"), "05_sparse_vd")["smoke"]
    assert row["runs"] == 7 and row["train_flops"] > 0
    # a LeNet-300-100 update costs ~3 × 266,200 multiply-adds × 2 FLOPs per image; 2 epochs of 300 images at smoke
    dense = 2 * 3 * 266_200 * smoke["epochs"]["lenet300_100"] * 10 * smoke["n_per_class"]
    assert row["largest_run_flops"] >= 0.9 * dense


def test_the_estimate_scales_a_validation_split_it_took_from_smoke_back_to_the_profile():
    presets = _presets_of(_module("04_test_time_augmentation"), "04_test_time_augmentation")
    assert dryrun.VAL_KNOB["04_test_time_augmentation"] in dryrun.estimate_swap("04_test_time_augmentation")
    ran = {"val_per_class": presets["smoke"]["val_per_class"]}
    (scaled,) = cost.scale_validation("04_test_time_augmentation", "gpu", [_rec(n_val=10 * ran["val_per_class"])], ran)
    assert scaled["n_val"] == 10 * presets["gpu"]["val_per_class"]
    (given,) = cost.scale_validation("04_test_time_augmentation", "gpu", [_rec(n_val=40)], {"val_per_class": 4},
                                     {"val_per_class": 4})  # a -p value is what the profile is meant to be
    assert given["n_val"] == 40
    assert cost.scale_validation("05_sparse_vd", "gpu", [_rec(n_val=7)], {})[0]["n_val"] == 7
    # the sweep planner never takes these from smoke: they change the runs' cache keys
    assert not dryrun.UNCOUNTED["04_test_time_augmentation"] & dryrun.EVAL_ONLY["04_test_time_augmentation"]


@pytest.mark.parametrize("flag, says", [("--dry-run", "nothing was written"), ("--estimate", "cost_estimates.csv"),
                                        ("--executor=submitit-local", "run cache"), (None, "nothing was being")])
def test_an_interruption_says_what_it_left_for_the_command_it_stopped(flag, says):
    from ibnb.book.cli import _interrupted_what, make_parser

    args = make_parser().parse_args(["run", "05_sparse_vd"] + ([flag] if flag else []))
    assert says in _interrupted_what(args)


def test_an_estimate_extracts_the_features_of_a_large_set_from_its_first_images_only():
    seen = []

    def real(encoder, data, **kw):
        seen.append(len(data))
        return data.x.flatten(1).float()[:, :3]

    x = torch.arange(40 * 3, dtype=torch.uint8).reshape(40, 3, 1, 1)
    data = ImageData(x=x, y=torch.arange(40) % 10, classes=[str(c) for c in range(10)], name="toy",
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    stand_in = dryrun.make_estimate_features(real, max_images=20)
    assert stand_in(None, data.subset(torch.arange(20))).shape == (20, 3) and seen == [20]  # small: in full
    big = stand_in(None, data)
    assert big.shape == (40, 3) and seen[-1] == dryrun.MAX_IMAGES
    assert torch.equal(big[dryrun.MAX_IMAGES], big[0])


def test_the_frontier_figure_takes_seeds_with_equal_accuracies():
    from ibnb.chapters.cpu_training.figures import frontier_figure

    acc = 0.7  # the mean of three equal values rounds below their minimum
    df = pd.DataFrame([{"experiment": "frontier", "recipe": "r", "epochs": 1, "train_min": 1.0, "test_acc": acc,
                        "tta_acc": acc, "seed": s} for s in range(3)])
    assert df.groupby("epochs")["test_acc"].mean().iloc[0] < acc  # the case matplotlib rejected
    frontier_figure(df)  # a negative error bar raised ValueError


def test_the_cost_sentence_writes_large_totals_without_an_exponent():
    est = pd.DataFrame([cost.summarise("05_sparse_vd", "gpu", [_rec(per_image=1.3e15, seen=1000, fwd=0)])])
    sentence = cost.numbers(est, pd.DataFrame(columns=["notebook", "profile", "wall_s"]),
                            ["05_sparse_vd"])["cost_sentence"].text
    assert "1,300 PFLOP" in sentence and "e+" not in sentence, sentence
