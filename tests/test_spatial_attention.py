"""Chapter 03: the team's models (parameter counts, shapes, attention maps), the Food-101 loader on a tiny
generated copy in torchvision's layout, masking, the presets and the claims audit."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ibnb.book import profiles
from ibnb.chapters.spatial_attention import claims_audit as audit
from ibnb.chapters.spatial_attention import presets as A
from ibnb.chapters.spatial_attention import sweep
from ibnb.chapters.spatial_attention.attention_maps import mask_pixels, masking_accuracy
from ibnb.core.attention_maps import spatial_attention_maps as stage_maps
from ibnb.core.data import DataError
from ibnb.core.food101 import load_food101
from ibnb.core.models import count_parameters, create_model

from conftest import toy_data


def test_attention_mini_model_has_the_reports_parameter_count():
    # three conv blocks 64/128/256 (padding 1, biases), attention after each, GAP, Linear(256→100)
    assert count_parameters(create_model("team_cnn_sa_mini")) == 1_173_197


def test_ablation_differs_only_by_the_attention_layers():
    sa, deep = create_model("team_cnn_sa_mini"), create_model("team_cnn_deep_mini")
    assert count_parameters(sa) - count_parameters(deep) == 3 * (2 * 7 * 7 + 1)


@pytest.mark.parametrize("name, size, features", [("team_cnn_mini", 64, 4096), ("team_cnn_mini", 32, 1024),
                                                  ("team_cnn_food", 128, 8192)])
def test_flatten_sizes_follow_the_input_size(name, size, features):
    model = create_model(name, image_size=size)
    assert model.in_features == features
    assert model(torch.randn(2, 3, size, size)).shape[1] == (101 if "food" in name else 100)


def test_food_models_resolved_sizes():
    assert count_parameters(create_model("team_cnn_food")) == 1_072_901  # ~1 M, as reported
    sa = create_model("team_cnn_sa_food")
    assert sa.branch_in_features == 16_384 and 9e6 < count_parameters(sa) < 1e7  # ~9 M, as reported
    assert create_model("team_cnn_sa_food", branch_pool=4).branch_in_features == 65_536


@pytest.mark.parametrize("name", ["team_cnn_sa_mini", "team_cnn_sa_food"])
def test_attention_maps_per_stage(name):
    model = create_model(name, num_classes=5, image_size=32, width=4).eval()
    data = toy_data(n_per_class=2, num_classes=5, size=32)
    maps, logits = stage_maps(model, data)
    assert maps.shape == (10, 3 if name == "team_cnn_sa_mini" else 2, 32, 32) and logits.shape == (10, 5)
    assert ((maps > 0) & (maps < 1)).all()


def test_mask_pixels_selects_by_saliency():
    data = toy_data(n_per_class=2, num_classes=2, size=4)
    sal = torch.arange(16.0).view(1, 4, 4).expand(4, 4, 4)
    fill = torch.tensor([round(255 * m) for m in data.mean], dtype=torch.uint8)
    most = mask_pixels(data, sal, 0.25, "most-attended")
    assert (most.x[:, :, 3, :] == fill.view(1, 3, 1)).all() and torch.equal(most.x[:, :, :3], data.x[:, :, :3])
    least = mask_pixels(data, sal, 0.25, "least-attended")
    assert (least.x[:, :, 0, :] == fill.view(1, 3, 1)).all()
    rnd = mask_pixels(data, sal, 0.5, "random", seed=3)
    assert ((rnd.x != data.x).any(1).flatten(1).sum(1) <= 8).all()
    with pytest.raises(ValueError, match="selection"):
        mask_pixels(data, sal, 0.5, "biggest")
    data = toy_data(n_per_class=2, num_classes=2, size=8)
    model = create_model("team_cnn_sa_mini", num_classes=2, image_size=8, width=2).eval()
    table = masking_accuracy(model, {"sa": model}, data, [0.25])
    assert set(table["selection"]) == {"none", "most-attended", "random", "least-attended"}


# ----------------------------------------------------------------------------- Food-101 loader
CLASSES = ["apple_pie", "baby_back_ribs", "caesar_salad"]


@pytest.fixture
def food_root(tmp_path, monkeypatch) -> Path:
    """A tiny Food-101 in torchvision's layout: food-101/images/<class>/<id>.jpg and meta/*.json, classes.txt (the
    loader's split-size check is pointed at the tiny copy's sizes)."""
    from PIL import Image

    import ibnb.core.food101 as food101

    monkeypatch.setattr(food101, "COUNTS", {"train": 3 * len(CLASSES), "test": 2 * len(CLASSES)})
    monkeypatch.setattr(food101, "NUM_CLASSES", len(CLASSES))

    base = tmp_path / "data" / "food101" / "food-101"
    rng = np.random.default_rng(0)
    meta = {"train": {}, "test": {}}
    for c in CLASSES:
        (base / "images" / c).mkdir(parents=True)
        for i in range(5):
            w, h = (40, 30) if i % 2 else (30, 50)  # non-square, like the real images
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(base / "images" / c / f"{i}.jpg")
            meta["train" if i < 3 else "test"].setdefault(c, []).append(f"{c}/{i}")
    (base / "meta").mkdir()
    for split, d in meta.items():
        (base / "meta" / f"{split}.json").write_text(json.dumps(d))
    (base / "meta" / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return tmp_path / "data"


def test_food101_loader_reads_torchvision_layout_and_caches(food_root):
    train = load_food101("train", size=16, root=food_root)
    assert train.x.shape == (9, 3, 16, 16) and train.x.dtype == torch.uint8
    assert train.classes == CLASSES and train.class_counts() == [3, 3, 3] and train.name == "food101"
    test = load_food101("test", size=16, root=food_root)
    assert len(test) == 6 and test.class_counts() == [2, 2, 2]
    # decoded once: the cache answers even when an image is gone (the metadata is unchanged)
    (food_root / "food101" / "food-101" / "images" / CLASSES[0] / "0.jpg").unlink()
    again = load_food101("train", size=16, root=food_root)
    assert torch.equal(again.x, train.x)


def test_food101_missing_data_explains_the_fix(tmp_path):
    with pytest.raises(DataError, match="IBNB_DOWNLOAD=1"):
        load_food101("train", size=16, root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_food101("val", root=tmp_path)


def test_food_experiment_runs_on_the_tiny_copy(food_root):
    p = profiles.resolve(A.NOTEBOOK, {"profile": "smoke", "food": True, "food_size": 16, "food_val_per_class": 1})
    rows, hist = sweep.run_food(p, root=food_root)
    assert set(rows["model"]) == {A.FOOD_PLAIN, A.FOOD_SA} and rows["n_train"].tolist() == [6, 6]
    assert (A.FOOD_SA, 0) in hist and np.isfinite(rows["test_acc"]).all()


def test_length_free_schedule_probe_is_the_runs_own_first_half():
    # the chapter reads the budget-halving probe of a ReduceLROnPlateau run off its first half instead of training
    # it: that is only honest if the half-budget run really is the same, epoch for epoch
    from ibnb.core.convergence import check_convergence
    from ibnb.core.runs import train_or_load
    from ibnb.core.train import TrainConfig

    data, val = toy_data(n_per_class=8, num_classes=3, size=16), toy_data(n_per_class=3, num_classes=3, size=16, seed=1)
    cfg = TrainConfig(epochs=4, batch_size=8, lr=1e-2, optimizer="adamw", schedule="plateau", seed=3)
    kw = {"width": 2}
    _, full, _ = train_or_load("team_cnn_mini", data, val, config=cfg, model_kw=kw, progress=False)
    _, half, _ = train_or_load("team_cnn_mini", data, val, config=dataclasses.replace(cfg, epochs=2),
                               model_kw=kw, progress=False)
    cols = ["train_loss", "val_loss", "val_acc", "lr"]
    np.testing.assert_allclose(full.frame[cols].iloc[:2].to_numpy(float), half.frame[cols].to_numpy(float))
    p = profiles.resolve(A.NOTEBOOK, {"profile": "smoke", "width": 2})
    _, hist, _ = sweep.train(p, "team_cnn_mini", data, val, dict(lr=1e-2, batch_size=8, weight_decay=0.0), 3, 4,
                             probe=True)
    plateau = check_convergence(hist.frame)
    assert (hist.probe is None) == plateau.passed  # probed exactly when the plateau test failed
    if hist.probe is not None:
        pd.testing.assert_frame_equal(hist.probe, hist.frame.iloc[:2].reset_index(drop=True))


# ----------------------------------------------------------------------------- presets and audit
def test_presets_validate():
    for prof in profiles.PROFILES:
        profiles.resolve(A.NOTEBOOK, {"profile": prof})
    with pytest.raises(profiles.ParameterError, match="seeds"):
        profiles.resolve(A.NOTEBOOK, {"seeds": 1})
    with pytest.raises(profiles.ParameterError, match="models"):
        profiles.resolve(A.NOTEBOOK, {"models": ["team_cnn_mini"]})
    assert len(sweep.grid_configs(profiles.resolve(A.NOTEBOOK, {"profile": "gpu"}))) == 12


def _outcome(cifar_acc: dict, pacs_photo: float = 0.6, seeds: int = 3, converged: bool = True, noise=0.005):
    """A synthetic chapter-03 outcome with the given mean CIFAR-10 accuracy per model."""
    rng = np.random.default_rng(0)
    cifar = pd.DataFrame([dict(model=m, seed=s, test_acc=a + noise * rng.standard_normal(), converged=converged)
                          for m, a in cifar_acc.items() for s in range(seeds)])
    pacs = pd.DataFrame([dict(model=m, seed=s, test_acc=pacs_photo + noise * rng.standard_normal(),
                              sketch_acc=0.3 + (0.05 if m == A.SA else 0) + noise * rng.standard_normal(),
                              drop=0.3, sketch_top_share=0.5, converged=converged)
                         for m in A.MODELS for s in range(seeds)])
    faith = pd.DataFrame([dict(model=m, seed=s, selection=sel, fraction=f, acc=acc + noise * rng.standard_normal())
                          for m in A.MODELS for s in range(seeds)
                          for sel, f, acc in (("none", 0.0, 0.5), ("most-attended", 0.3, 0.3),
                                              ("random", 0.3, 0.4), ("least-attended", 0.3, 0.45))])
    out = sweep.Outcome(pd.DataFrame(), {}, cifar, {}, (), faith, pacs, {"photo": 0.25, "sketch": 0.2},
                        {"train": 100, "test": 50, "sketch": 60}, {}, [], None, {}, 2000, 500, 2000, 500)
    return out, profiles.resolve(A.NOTEBOOK, {"profile": "cpu"})


def _verdicts(out, p):
    return {c.claim: c.verdict for c in audit.claims(out, p)}


def test_claims_audit_verdicts_follow_the_numbers():
    v = _verdicts(*_outcome({A.PLAIN: 0.40, A.DEEP: 0.55, A.SA: 0.55}))
    assert v["attention Mini-ImageNet model: 1,173,197 parameters"] == "supported"
    assert v["plain Mini-ImageNet model: 449,188 parameters"] == "contradicted"
    assert v["(CIFAR-10 analogue) the attention model beats the plain model"] == "supported"
    assert v["(implied) the gain comes from attention, not from the added depth"] == "inconclusive"  # SA == deep
    assert v["Food-101 plain model: validation accuracy at most 32 %"] == "not testable at this budget"
    assert v["hiding the most-attended pixels hurts the attention model more than hiding random ones"] == "supported"
    sketch = "trained on photos, the attention model generalises well to sketches (PACS photo → sketch)"
    assert v[sketch] == "supported"
    v = _verdicts(*_outcome({A.PLAIN: 0.40, A.DEEP: 0.55, A.SA: 0.50}))
    assert v["(implied) the gain comes from attention, not from the added depth"] == "contradicted"
    v = _verdicts(*_outcome({A.PLAIN: 0.40, A.DEEP: 0.55, A.SA: 0.55}, seeds=2))
    assert v["(CIFAR-10 analogue) the attention model beats the plain model"] == "not testable at this budget"
    v = _verdicts(*_outcome({A.PLAIN: 0.40, A.DEEP: 0.55, A.SA: 0.55}, converged=False))
    assert v["(CIFAR-10 analogue) the attention model beats the plain model"] == "not testable at this budget"


def test_sketch_claim_is_gated_on_competent_photo_models():
    out, p = _outcome({A.PLAIN: 0.40, A.DEEP: 0.55, A.SA: 0.55}, pacs_photo=0.24)  # below the 25 % majority rate
    claim = [c for c in audit.claims(out, p) if "sketches" in c.claim][0]
    assert claim.verdict == "not testable at this budget" and "majority-class rate" in claim.reason


def test_calibration_states_the_team_numbers_and_the_missing_chapter01_row():
    out, p = _outcome({A.PLAIN: 0.40, A.DEEP: 0.55, A.SA: 0.55})
    cal = audit.calibration(out, p)  # no chapter 01 table in the isolated results folder
    assert [c.published for c in cal] == [35.0, 52.5] and all(c.note == "not the same task" for c in cal)
