"""The synthesis pages: scorecard effects from results tables, the claims index, the reproduce tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ibnb.book import reproduce
from ibnb.book import results
from ibnb.book import scorecard
from ibnb.core.utils import repo_root


def _arch_table(gap_small: float, gap_large: float) -> pd.DataFrame:
    rows = []
    for n, gap in ((200, gap_small), (3200, gap_large)):
        for seed in range(3):
            noise = 0.001 * seed
            rows.append(dict(model="mlp", augment="none", permuted=False, n_train=n, seed=seed, test_acc=0.3 + noise,
                             dataset="cifar10"))
            rows.append(dict(model="cnn", augment="none", permuted=False, n_train=n, seed=seed,
                             test_acc=0.3 + gap + 2 * noise, dataset="cifar10"))
    return pd.DataFrame(rows)


def test_effects_are_paired_differences_in_points_by_training_set_size():
    eff = scorecard.effects({"01_architectures": _arch_table(0.05, 0.01)})
    cnn = eff[eff["comparison"] == "CNN − MLP"].set_index("n_train")
    assert cnn.loc[200, "mean"] == pytest.approx(5.1)  # 5 points + mean of the extra seed noise (0.1)
    assert cnn.loc[3200, "mean"] == pytest.approx(1.1)
    assert cnn.loc[200, "std"] == pytest.approx(100 * np.std([0, 0.001, 0.002], ddof=1))
    assert list(cnn["size"]) == ["small", "large"] and set(cnn["n"]) == {3}
    assert eff[eff["comparison"] == "ViT − CNN"].empty  # no ViT rows: no effect invented
    table = scorecard.scorecard_table(eff)
    assert table.loc[0, "at the largest set"] == "helps"
    assert "+5.1" in table.loc[0, "small set"] and "3,200" in table.loc[0, "large set"]
    assert scorecard.headline(eff, "architecture").startswith("CNN − MLP: +5.1")
    worse = scorecard.effects({"01_architectures": _arch_table(-0.05, -0.05)})
    assert scorecard.scorecard_table(worse).loc[0, "at the largest set"] == "hurts"


def test_verdict_needs_more_than_one_std():
    assert scorecard.verdict(1.0, 0.5) == "helps"
    assert scorecard.verdict(-1.0, 0.5) == "hurts"
    assert scorecard.verdict(0.4, 0.5) == "no clear effect"
    assert scorecard.verdict(0.4, float("nan")) == "helps"  # one seed: the sign only


def test_claims_index_links_each_claim_to_its_chapter_section(tmp_path, monkeypatch):
    monkeypatch.setenv("IBNB_RESULTS", str(tmp_path))
    audit = pd.DataFrame({"claim": ["x helps"], "measurement": ["+1 ± 0.2"], "verdict": ["supported"]})
    results.write_claims(audit, "07_demo", "cpu", source="demo2020")
    idx = scorecard.claims_index(results.read_all("cpu", claims=True))
    assert idx.loc[0, "link"] == '<a href="07_demo.html#claims-audit">07</a>'
    assert idx.loc[0, "verdict_class"] == "supported"
    assert scorecard.claims_index({}).empty


def test_timing_table_marks_unmeasured_profiles(tmp_path):
    (tmp_path / "timings.csv").write_text(
        "notebook,profile,wall_s,executed_at,device,cpu_threads,commit\n"
        "01_a,cpu,120,2026-01-01T00:00:00Z,cpu (x86_64),2 torch threads / 2 CPUs,abc\n")
    t = reproduce.timing_table(reproduce.timings(tmp_path), ["01_a", "02_b"])
    assert t.loc[0, "cpu (min)"] == "2.0" and t.loc[0, "gpu (min)"] == "not measured"
    assert t.loc[1, "cpu (min)"] == "not measured"
    assert reproduce.timings(tmp_path / "none").empty


def test_parameter_table_lists_every_knob_of_a_notebook():
    import ibnb.chapters.architectures.sweep as A

    t = reproduce.parameter_table(A.NOTEBOOK)
    assert len(t) == len(A.PRESETS["cpu"]) and list(t.columns) == ["parameter", "smoke", "cpu", "gpu"]
    row = t[t["parameter"] == "`epochs`"].iloc[0]
    assert row["cpu"] == f"`{A.PRESETS['cpu']['epochs']!r}`"


def test_lower_is_better_metrics_flip_the_verdict():
    assert scorecard.verdict(-0.05, 0.01, "cnll") == "helps"
    assert scorecard.verdict(0.05, 0.01, "cnll") == "hurts"


@pytest.mark.parametrize("stem", sorted(scorecard.EXTRACTORS))
def test_every_extractor_reads_its_chapters_committed_table(stem):
    """The committed ``cpu`` table of each chapter gives at least one effect, in known units, with seeds."""
    tables = results.read_all("cpu", root=repo_root() / "book" / "results")  # not the tmp IBNB_RESULTS
    if stem not in tables:
        pytest.fail(f"no committed book/results/{stem}/cpu.csv: run `python -m ibnb run {stem} --profile cpu`")
    eff = scorecard.effects({stem: tables[stem]})
    assert len(eff), f"the {stem} extractor found no comparison in its table (columns: {list(tables[stem].columns)})"
    assert set(eff["unit"]) <= {"points", "nats"} and (eff["n"] >= 1).all()
    assert set(eff["mechanism"].astype(str)) <= set(scorecard.MECHANISMS)
