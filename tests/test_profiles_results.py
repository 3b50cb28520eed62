"""Profiles and parameter validation; results tables; notebooks expose every knob of their presets as a parameter.

Presets are modules listed in ``ibnb.book.profiles.PAGES`` (no registration by import). The generic behaviour of
``resolve`` is tested on a small presets module made here; the real pages' presets are checked for validity at
every profile and against their notebook's ``parameters`` cell.
"""
from __future__ import annotations

import ast
import json
import types
from pathlib import Path

import pandas as pd
import pytest

from ibnb.book import profiles
from ibnb.book import results
from ibnb.book.profiles import ParameterError, require

ROOT = Path(__file__).resolve().parents[1]
NB = "01_architectures"


def _fake_presets() -> types.ModuleType:
    m = types.ModuleType("fake_presets")
    m.NOTEBOOK = "97_fake"
    base = {"epochs": 2, "lr": 0.1, "seeds": 2, "models": ["cnn", "mlp"], "model_kw": {"vit": {"depth": 6, "dim": 64}}}
    m.PRESETS = {"smoke": {**base, "epochs": 1}, "cpu": base, "gpu": {**base, "epochs": 50}}

    def validate(p):
        require(p["seeds"] >= 1, "seeds must be >= 1")
        require(set(p["models"]) <= {"cnn", "mlp", "vit"}, f"unknown models {sorted(set(p['models']) - {'cnn', 'mlp', 'vit'})}")

    m.validate = validate
    return m


def test_profiles_resolve_with_overrides_and_none_defaults():
    mod = _fake_presets()
    p = profiles.resolve(mod, {"profile": "smoke", "epochs": None, "lr": 0.01})
    assert p["profile"] == "smoke" and p["epochs"] == 1 and p["lr"] == 0.01
    p = profiles.resolve(mod, {"model_kw": {"vit": {"depth": 9}}})
    assert p["profile"] == "cpu" and p["model_kw"]["vit"]["depth"] == 9 and p["model_kw"]["vit"]["dim"] == 64
    assert profiles.presets(mod)["gpu"]["epochs"] == 50


@pytest.mark.parametrize("bad, match", [
    ({"profile": "tpu"}, "Unknown profile"),
    ({"stepz": 3}, "Unknown parameter"),
    ({"epochs": "many"}, "has type str"),
    ({"seeds": 0}, "Inconsistent"),
    ({"models": ["cnn", "transformer9000"]}, "unknown models"),
])
def test_bad_parameters_fail_clearly(bad, match):
    with pytest.raises(ParameterError, match=match):
        profiles.resolve(_fake_presets(), bad)


@pytest.mark.parametrize("bad, match", [
    ({"seeds": 0}, "Inconsistent"),
    ({"models": ["cnn", "transformer9000"]}, "unknown models"),
    ({"permute_n_per_class": 7}, "permute_n_per_class"),
])
def test_a_chapters_validator_rejects_inconsistent_knobs(bad, match):
    with pytest.raises(ParameterError, match=match):
        profiles.resolve(NB, bad)


@pytest.mark.parametrize("stem", sorted(profiles.PAGES))
def test_every_profile_of_every_page_is_valid(stem):
    if not (ROOT / "notebooks" / f"{stem}.ipynb").exists():
        pytest.skip(f"notebooks/{stem}.ipynb does not exist yet")
    for prof in profiles.PROFILES:
        profiles.resolve(stem, {"profile": prof})


def _parameters_cell(path: Path) -> dict:
    nb = json.loads(path.read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    tree = ast.parse("".join(cells[0]["source"]))
    return {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign) for t in n.targets}


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_parameters_are_exactly_the_preset_knobs(path):
    params = _parameters_cell(path)
    assert params.get("profile") == profiles.DEFAULT_PROFILE
    assert all(v is None for k, v in params.items() if k != "profile"), "every knob is None in the notebook"
    assert set(params) - {"profile"} == set(profiles.presets(path.stem)["cpu"])


def test_results_round_trip_and_validation(tmp_path):
    row = dict(experiment="e", model="cnn", dataset="cifar10", n_train=10, seed=0, epochs=1, params=5,
               test_acc=0.5, test_nll=1.0, wall_s=1.0, images_per_s=10.0, device="cpu", extra=1)
    path = results.write_results([row, {**row, "seed": 1, "test_acc": 0.7}], "nb", "smoke")
    assert path == tmp_path / "results" / "nb" / "smoke.csv"
    df = results.read_results("nb", "smoke")
    assert list(df.columns[:12]) == results.COLUMNS and df["extra"].tolist() == [1, 1]
    s = results.summarize(df, ["model"])
    assert s["mean"].iloc[0] == pytest.approx(0.6) and s["std"].iloc[0] == pytest.approx(0.1414, abs=1e-3)
    assert not list(path.parent.glob(".*tmp"))
    with pytest.raises(ValueError, match="lack required columns"):
        results.write_results([{"model": "x"}], "nb", "smoke")
    with pytest.raises(ValueError, match="non-finite"):
        results.write_results([{**row, "test_acc": float("nan")}], "nb", "smoke")
    with pytest.raises(FileNotFoundError, match="python -m ibnb run"):
        results.read_results("nb", "gpu")
    assert isinstance(df, pd.DataFrame)


def test_claims_and_calibration_files_are_not_mistaken_for_results_tables(tmp_path):
    from ibnb.book import claims as C

    c = C.judge("x helps", "demo2020", "toy", C.effect_of([0.010, 0.011, 0.012], converged=[True] * 3))
    cal = C.Calibration("baseline", C.effect_of([0.5, 0.6], unit="%"), 55.0, "demo2020", "toy", 5.0)
    C.write_claims([c], "99_x", "cpu", calibration=[cal])
    assert results.read_all("cpu") == {}
    assert C.read_claims("99_x", "cpu")["verdict"].tolist() == [C.SUPPORTED]
