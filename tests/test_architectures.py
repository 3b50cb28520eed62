"""Chapter 01: the claims audit follows the numbers of a hand-made sweep table (through judge()), the calibration
takes the right rows, the search picks the best validation accuracy, and the presets validate their grid."""
from __future__ import annotations

import importlib
from types import SimpleNamespace

import pandas as pd
import pytest

from ibnb.book import profiles
from ibnb.chapters.architectures import presets, sweep

A = importlib.import_module("ibnb.chapters.architectures.audit")  # the package's audit() shadows the module name

SMALL, LARGE, FULL = 20, 320, 640
P = dict(n_per_class=[SMALL, LARGE, FULL], epochs=[40, 10, 5], models=["mlp", "mlp_small", "mixer", "cnn", "fast_cnn"],
         grid={"mlp": {"none": [SMALL, LARGE, FULL]}, "mlp_small": {"none": [SMALL]},
               "mixer": {"none": [SMALL, LARGE]}, "cnn": {"none": [SMALL, LARGE, FULL], "crop+flip": [SMALL, FULL]},
               "fast_cnn": {"recipe": [FULL]}},
         permute_n_per_class=SMALL, permute_models=["mlp", "cnn"], seeds=3, model_kw={"mlp": {"width": 8}})


def _sweep(cnn_lead_small: float, cnn_lead_large: float, aug_gain: float, perm_drop_cnn: float, *, seeds: int = 3,
           converged: bool = True, fast: float = 0.80) -> pd.DataFrame:
    rows = []
    lead = {SMALL: cnn_lead_small, LARGE: cnn_lead_large, FULL: cnn_lead_large}
    for seed in range(seeds):
        noise = 0.002 * seed
        for m, cells in P["grid"].items():
            for aug, sizes in cells.items():
                for n in sizes:
                    acc = {"mlp": 0.30, "mlp_small": 0.28, "mixer": 0.25, "fast_cnn": fast}[m] + noise if m != "cnn" \
                        else 0.30 + lead[n] + (aug_gain if aug == "crop+flip" else 0.0) + 2 * noise
                    rows.append(dict(model=m, augment=aug, permuted=False, n_per_class=n, seed=seed, test_acc=acc,
                                     epochs=dict(zip(P["n_per_class"], P["epochs"]))[n]))
        rows.append(dict(model="mlp", augment="none", permuted=True, n_per_class=SMALL, seed=seed, epochs=40,
                         test_acc=0.30 + noise + 0.001 * (-1) ** seed))
        rows.append(dict(model="cnn", augment="none", permuted=True, n_per_class=SMALL, seed=seed, epochs=40,
                         test_acc=0.30 + cnn_lead_small - perm_drop_cnn + 0.004 * seed))
    df = pd.DataFrame(rows)
    df["converged"] = converged
    df["n_train"] = 10 * df["n_per_class"]
    return df


def _verdicts(df, p=P):
    return {c.claim: c.verdict for c in A.claims(df, p, num_classes=10)}


def test_claims_audit_verdicts_follow_the_numbers():
    v = _verdicts(_sweep(0.05, 0.01, 0.03, 0.05))
    assert v["a CNN beats an MLP when data is scarce"] == "supported"
    assert v["the CNN's lead over the MLP shrinks as the training set grows"] == "supported"
    assert v["MLP-Mixer trails a CNN on small data"] == "supported"
    assert v["crop+flip augmentation improves a CNN trained on 200 images"] == "supported"
    assert v["crop+flip augmentation improves a CNN trained on 6,400 images"] == "supported"
    assert v["shuffling pixel positions hurts a CNN"] == "supported"
    assert v["shuffling pixel positions does not change an MLP"] == "consistent"

    flipped = _verdicts(_sweep(-0.05, 0.01, -0.03, -0.05))
    assert flipped["a CNN beats an MLP when data is scarce"] == "contradicted"
    assert flipped["the CNN's lead over the MLP shrinks as the training set grows"] == "contradicted"
    assert flipped["crop+flip augmentation improves a CNN trained on 6,400 images"] == "contradicted"
    assert flipped["shuffling pixel positions hurts a CNN"] == "contradicted"


def test_the_claims_compare_the_sizes_both_models_were_trained_on():
    assert A.compared_sizes(P) == (SMALL, FULL)
    assert A.aug_sizes(P) == (SMALL, FULL)
    e = A.effects(_sweep(0.05, 0.01, 0.03, 0.05), P)
    assert abs(e["cnn_mlp_large"].mean - 100 * (0.01 + 0.002)) < 1e-9  # cnn 2×noise − mlp noise, mean over seeds
    assert set(k for k in e if k.startswith("matched_")) == {f"matched_{SMALL}"}
    assert abs(e[f"matched_{SMALL}"].mean - 100 * (0.30 + 0.05 - 0.28 + 0.002)) < 1e-9


def test_two_seeds_or_unconverged_runs_are_not_testable():
    two = _verdicts(_sweep(0.05, 0.01, 0.03, 0.05, seeds=2), {**P, "seeds": 2})
    assert set(two.values()) == {"not testable at this budget"}
    stuck = A.claims(_sweep(0.05, 0.01, 0.03, 0.05, converged=False), P, num_classes=10)
    assert {c.verdict for c in stuck} == {"not testable at this budget"}
    assert all("convergence" in c.reason for c in stuck)


def test_calibration_takes_the_best_augmented_cnn_on_the_full_set_and_the_plain_mlp():
    cal = A.calibration(_sweep(0.05, 0.01, 0.03, 0.05, fast=0.80), P, num_classes=10)
    assert [c.published for c in cal] == [93.0, 94.0, A.S_MLP]
    assert "fast CNN" in cal[0].quantity and abs(cal[0].ours.mean - 100 * 0.802) < 1e-9
    assert abs(cal[2].ours.mean - 100 * 0.302) < 1e-9 and not cal[2].within
    slow = A.calibration(_sweep(0.05, 0.01, 0.03, 0.05, fast=0.10), P, num_classes=10)
    assert slow[0].quantity.startswith("best CNN (CNN)")  # the CNN with crop+flip beats a weak recipe run
    assert abs(slow[0].ours.mean - 100 * (0.30 + 0.01 + 0.03 + 0.004)) < 1e-9


def test_search_chooses_each_models_best_validation_accuracy(monkeypatch):
    p = {**profiles.resolve(presets, {"profile": "smoke"}), "lrs": [1e-3, 2e-3, 5e-3], "weight_decays": [0.0, 0.1]}
    best = {"mlp": (2e-3, 0.1), "cnn": (5e-3, 0.0)}

    def fake_load(spec, device):
        lr, wd = spec.config.lr, spec.config.weight_decay
        acc = 0.5 if best.get(spec.model_name, (1e-3, 0.0)) == (lr, wd) else 0.1 + lr
        return None, SimpleNamespace(last={"val_acc": acc}, convergence=SimpleNamespace(passed=True)), True

    monkeypatch.setattr(sweep, "load", fake_load)
    monkeypatch.setattr(sweep, "prefetch", lambda *a, **k: set())
    monkeypatch.setattr(sweep, "run_spec", lambda p, run, pool, val, setting: SimpleNamespace(
        model_name=presets.ARCH.get(run["model"], run["model"]), train=[0] * 10,
        config=SimpleNamespace(lr=setting[0], weight_decay=setting[1], epochs=1)))
    table, chosen, _ = sweep.search(p, None, None)
    assert len(table) == len(sweep.tuned_models(p)) * 6 and table["chosen"].sum() == len(chosen)
    assert chosen["mlp"] == best["mlp"] and chosen["cnn"] == best["cnn"]
    assert chosen["vit"] == (1e-3, 0.0)


def test_the_search_adds_one_learning_rate_past_the_edge_its_best_sits_on(monkeypatch):
    assert sweep.beyond_edge([1e-4, 3e-4, 1e-3, 3e-3, 1e-2], 1e-2) == 3e-2
    assert sweep.beyond_edge([1e-4, 3e-4, 1e-3, 3e-3, 1e-2], 1e-4) == 3e-5
    assert sweep.beyond_edge([1e-4, 3e-4, 1e-3], 3e-4) is None and sweep.beyond_edge([1e-3], 1e-3) is None
    p = {**profiles.resolve(presets, {"profile": "smoke"}), "lrs": [1e-3, 3e-3, 1e-2], "weight_decays": [0.05],
         "lr_extend": 1}
    peak = {"cnn": 0.1, "mlp": 3e-3, "vit": 1e-4}  # beyond the top edge, interior, beyond the bottom edge
    trained = []

    def fake_load(spec, device):
        lr, m = spec.config.lr, spec.model_name
        acc = 0.9 - abs(__import__("math").log(lr / peak.get(m, 3e-3)))
        return None, SimpleNamespace(last={"val_acc": acc}, convergence=SimpleNamespace(passed=True)), True

    monkeypatch.setattr(sweep, "load", fake_load)
    monkeypatch.setattr(sweep, "prefetch", lambda specs, *a, **k: (trained.append(len(specs)), {f"r{len(trained)}"})[1])
    monkeypatch.setattr(sweep, "run_spec", lambda p, run, pool, val, setting: SimpleNamespace(
        model_name=run["model"], train=[0] * 10, config=SimpleNamespace(lr=setting[0], weight_decay=setting[1],
                                                                        epochs=1)))
    table, chosen, names = sweep.search(p, None, None)
    ext = table[table["extended"]]
    assert sorted(zip(ext["model"], ext["lr"])) == [("cnn", 3e-2), ("vit", 3e-4)]
    assert chosen["cnn"] == (3e-2, 0.05) and chosen["vit"] == (3e-4, 0.05) and chosen["mlp"] == (3e-3, 0.05)
    assert trained == [3 * len(sweep.tuned_models(p)), 2] and names == {"r1", "r2"}  # one extra round, both named
    none = sweep.search({**p, "lr_extend": 0}, None, None)[0]
    assert not none["extended"].any() and len(none) == 3 * len(sweep.tuned_models(p))


def test_presets_resolve_and_validate_the_grid():
    for prof in profiles.PROFILES:
        p = profiles.resolve(presets, {"profile": prof})
        assert p["device"] != "auto" and len(p["epochs"]) == len(p["n_per_class"])
        assert sweep.plan(p) and A.compared_sizes(p)[0] < A.compared_sizes(p)[1]
    cpu = profiles.resolve(presets, {"profile": "cpu"})
    assert cpu["seeds"] >= 3 and cpu["test_per_class"] == 0 and max(cpu["n_per_class"]) * 10 >= 49_000
    with pytest.raises(profiles.ParameterError, match="permute_n_per_class"):
        profiles.resolve(presets, {"permute_n_per_class": 7})
    with pytest.raises(profiles.ParameterError, match="lr_extend"):
        profiles.resolve(presets, {"lr_extend": -1})
    with pytest.raises(profiles.ParameterError, match="one per size"):
        profiles.resolve(presets, {"epochs": [10]})
    with pytest.raises(profiles.ParameterError, match="must be one of n_per_class"):
        profiles.resolve(presets, {"grid": {"cnn": {"none": [50, 123]}}})


def test_model_precision_reaches_the_run_config_and_is_validated(monkeypatch):
    p = profiles.resolve(presets, {"profile": "smoke", "model_precision": {"vit": "fp32"}})
    monkeypatch.setattr(sweep, "class_balanced_subset", lambda *a, **k: SimpleNamespace(num_classes=10))
    run = dict(n_per_class=4, augment="none", seed=0, permuted=False)
    spec = {m: sweep.run_spec(p, {**run, "model": m}, None, None, (1e-3, 0.0)) for m in ("vit", "cnn")}
    assert spec["vit"].config.precision == "fp32" and spec["cnn"].config.precision == "auto"
    with pytest.raises(profiles.ParameterError, match="model_precision"):
        profiles.resolve(presets, {"model_precision": {"vit": "fp16"}})


def test_one_probe_per_cell_and_the_cells_other_failing_seeds_share_its_verdict():
    runs = [dict(model=m, n_per_class=n, augment="none", seed=s, permuted=False)
            for m in ("mlp", "cnn") for n in (SMALL, LARGE) for s in range(3)]
    failed = [False, True, True,   False, False, False,   True, False, True,   False, False, False]
    probes = sweep.cell_probes(runs, failed)
    assert sorted(probes) == [1, 6]  # mlp at SMALL (seed 1) and cnn at SMALL (seed 0): the first failing seed each
    assert probes[1] == sweep.cell_of(runs[2]) != sweep.cell_of(runs[3])
    ok = dict(seed=1, converged=True, convergence="doubling the budget gained +0.4 points (passes)")
    bad = dict(seed=0, converged=False, convergence="doubling the budget gained +3.0 points (fails)")
    sibling = dict(seed=2, converged=False, convergence="the last quarter gained +1.5 points (fails)")
    shared = sweep.shared_verdict(sibling, ok)
    assert shared["converged"] and "seed 1" in shared["convergence"] and "+1.5" in shared["convergence"]
    assert sweep.shared_verdict(sibling, bad) == {}  # a failed probe passes no one
    assert sweep.shared_verdict(dict(ok, seed=2), ok) == {}  # a run that passed keeps its own reason


def test_the_calibration_note_states_the_share_of_the_anchors_data():
    assert A._data_note(49_000) == ""  # the validation split's 2 % is no point worth a note
    assert A._data_note(8_000) == "16% of the anchor's 50,000 training images"


def test_the_grid_must_let_the_cnn_be_compared_with_and_without_augmentation():
    with pytest.raises(profiles.ParameterError, match="crop\\+flip"):
        profiles.resolve(presets, {"profile": "cpu", "grid": {**presets.PRESETS["cpu"]["grid"],
                                                               "cnn": {"none": [50, 200], "crop+flip": [800]}}})
    cpu = profiles.resolve(presets, {"profile": "cpu"})
    assert "crop+flip" not in cpu["grid"]["cnn_sa"] and A.aug_sizes(cpu, "cnn_sa") is None
    assert set(A.effects(_sweep(0.05, 0.01, 0.03, 0.05), P)) >= {"aug_cnn", "augsmall_cnn"}
