"""Profiles and parameter validation; results tables; notebooks expose every knob as a parameter."""
from __future__ import annotations

import ast
import importlib
import json
import pkgutil
from pathlib import Path

import pandas as pd
import pytest

import ibnb.experiments
from ibnb.book import profiles
from ibnb.book import results
from ibnb.book.profiles import ParameterError

for _m in pkgutil.iter_modules(ibnb.experiments.__path__):  # every chapter registers its presets on import
    importlib.import_module(f"ibnb.experiments.{_m.name}")

ROOT = Path(__file__).resolve().parents[1]
NB = "01_architectures"


def test_profiles_resolve_with_overrides_and_none_defaults():
    p = profiles.resolve(NB, {"profile": "smoke", "epochs": None, "lr": 0.01})
    assert p["profile"] == "smoke" and p["epochs"] == profiles.presets(NB)["smoke"]["epochs"] and p["lr"] == 0.01
    p = profiles.resolve(NB, {"model_kw": {"vit": {"depth": 9}}})
    assert p["profile"] == "cpu" and p["model_kw"]["vit"]["depth"] == 9 and "dim" in p["model_kw"]["vit"]


@pytest.mark.parametrize("bad, match", [
    ({"profile": "tpu"}, "Unknown profile"),
    ({"stepz": 3}, "Unknown parameter"),
    ({"epochs": "many"}, "has type str"),
    ({"seeds": 0}, "Inconsistent"),
    ({"models": ["cnn", "transformer9000"]}, "unknown models"),
    ({"permute_n_per_class": 7}, "permute_n_per_class"),
])
def test_bad_parameters_fail_clearly(bad, match):
    with pytest.raises(ParameterError, match=match):
        profiles.resolve(NB, bad)


def test_every_profile_of_every_preset_is_valid():
    for name in profiles._PRESETS:
        for prof in profiles.PROFILES:
            profiles.resolve(name, {"profile": prof})


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


def test_claims_are_written_with_normalised_verdicts(tmp_path, monkeypatch):
    import pandas as pd

    from ibnb.book import results

    monkeypatch.setenv("IBNB_RESULTS", str(tmp_path))
    audit = pd.DataFrame({"claim (paper)": ["a", "b", "c", "d"], "this run": ["1", "2", "3", "—"],
                          "verdict": ["supported (2 seeds)", "contradicts", "inconclusive at this budget",
                                      "not testable here"]})
    results.write_claims(audit, "99_x", "cpu", source="someone2020", rename={"claim (paper)": "claim",
                                                                            "this run": "measurement"})
    back = results.read_all("cpu", claims=True)["99_x"]
    assert back["verdict_class"].tolist() == ["supported", "contradicted", "inconclusive", "not tested"]
    assert set(back["source"]) == {"someone2020"} and set(back["chapter"]) == {"99_x"}
    assert results.read_all("cpu") == {}  # the claims file is not mistaken for a results table
    with pytest.raises(ValueError, match="known wording"):
        results.write_claims(audit.assign(verdict="not supported"), "99_x", "cpu", source="s",
                             rename={"claim (paper)": "claim", "this run": "measurement"})
    with pytest.raises(ValueError, match="lacks columns"):
        results.write_claims(audit, "99_x", "cpu", source="s")


@pytest.mark.parametrize("wording, cls", [
    ("reproduced at this profile", "supported"), ("not reproduced (+4.1 points)", "contradicted"),
    ("not reached at this profile (higher error)", "inconclusive"), ("not resolved (within one std)", "inconclusive"),
    ("consistent (3 seeds)", "supported"), ("not measured: no ResNet-18 run", "not tested"),
    ("not comparable in absolute terms", "not tested"), ("undecided: one seed", "inconclusive"),
    ("partly reproduced (2 of 6)", "inconclusive"), ("not confirmed", "contradicted")])
def test_every_chapters_verdict_wording_has_a_class(wording, cls):
    assert results.verdict_class(wording) == cls
