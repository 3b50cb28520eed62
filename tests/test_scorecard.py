"""The synthesis pages: scorecard effects (seed-paired, Student-t intervals) from results tables, the claims index
and calibration summary read from new-format claims tables, the abstract's tally, the reproduce tables."""
from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest

from ibnb.book import claims as C
from ibnb.book import pages, profiles, reproduce, results, scorecard
from ibnb.core.utils import repo_root


def _arch_table(gap_small: float, gap_large: float, seeds: int = 3, converged: bool | None = True) -> pd.DataFrame:
    rows = []
    for n, gap in ((200, gap_small), (3200, gap_large)):
        for seed in range(seeds):
            noise = 0.001 * seed
            rows.append(dict(model="mlp", augment="none", permuted=False, n_train=n, seed=seed, test_acc=0.3 + noise,
                             dataset="cifar10"))
            rows.append(dict(model="cnn", augment="none", permuted=False, n_train=n, seed=seed,
                             test_acc=0.3 + gap + 2 * noise, dataset="cifar10"))
    df = pd.DataFrame(rows)
    return df if converged is None else df.assign(converged=converged)


def test_effects_are_seed_paired_differences_with_t_intervals():
    eff = scorecard.effects({"01_architectures": _arch_table(0.05, 0.01)})
    cnn = eff[eff["comparison"] == "CNN − MLP"].set_index("n_train")
    m, lo, hi, n = C.t_interval([100 * (0.05 + 0.001 * s) for s in range(3)])
    assert cnn.loc[200, "mean"] == pytest.approx(5.1) and cnn.loc[200, "mean"] == pytest.approx(m)
    assert (cnn.loc[200, "low"], cnn.loc[200, "high"]) == pytest.approx((lo, hi))
    assert cnn.loc[3200, "mean"] == pytest.approx(1.1)
    assert list(cnn["size"]) == ["small", "large"] and set(cnn["n"]) == {3} and set(cnn["runs"]) == {6}
    assert eff[eff["comparison"] == "ViT − CNN"].empty  # no ViT rows: no effect invented
    assert "std" not in eff.columns


def test_direction_is_the_books_one_rule():
    helps = scorecard.effects({"01_architectures": _arch_table(0.05, 0.01)})
    assert scorecard.direction(helps.iloc[-1]) == "helps"
    hurts = scorecard.effects({"01_architectures": _arch_table(-0.05, -0.05)})
    assert scorecard.direction(hurts.iloc[-1]) == "hurts"
    two = scorecard.effects({"01_architectures": _arch_table(0.05, 0.05, seeds=2)})
    assert scorecard.direction(two.iloc[-1]) == "not testable: 2 seeds, fewer than 3"
    unknown = scorecard.effects({"01_architectures": _arch_table(0.05, 0.05, converged=None)})
    assert "convergence check" in scorecard.direction(unknown.iloc[-1])
    row = dict(helps.iloc[-1])
    assert scorecard.direction({**row, "low": -1.0, "high": 3.0}) == "no clear effect"
    nll = {**row, "metric": "cnll", "unit": "nats", "mean": -0.05, "low": -0.08, "high": -0.02}
    assert scorecard.direction(nll) == "helps"  # lower is better
    assert scorecard.direction({**nll, "mean": 0.05, "low": 0.02, "high": 0.08}) == "hurts"


def test_scorecard_table_shows_intervals_through_the_formatter():
    eff = scorecard.effects({"01_architectures": _arch_table(0.05, 0.01)})
    t = scorecard.scorecard_table(eff)
    md = t.markdown
    assert "200 images: +5.1 [" in md and "points, n = 3" in md and "3,200 images" in md
    assert "±" not in md and "nan" not in md.lower() and "std" not in md
    assert md.splitlines()[0] == ("| mechanism | comparison [chapter; data] | smallest training set | "
                                  "largest training set | at the largest set |")
    assert "CNN − MLP [01; cifar10]" in md
    assert t.frame.loc[0, "at the largest set"] == "helps"
    line = scorecard.headline(eff, "architecture")
    assert line.startswith("CNN − MLP (cifar10): helps with 200 training images, +5.1 [")
    assert "points, n = 3; helps with 3,200 training images, +1.1 [" in line
    assert scorecard.headline(eff, "SAM") is None
    assert scorecard.undecided_reason(eff, "SAM") == "not measured at this profile"


def test_only_decided_effects_are_headlined():
    """Two seeds decide nothing: the comparison is left out of the abstract, with the judge's reason; a decided
    size is headlined and an undecided one of the same comparison is not."""
    two = scorecard.effects({"01_architectures": _arch_table(0.05, 0.05, seeds=2)})
    assert scorecard.headline(two, "architecture") is None
    assert scorecard.undecided_reason(two, "architecture") == "not testable: 2 seeds, fewer than 3"
    mixed = scorecard.effects({"01_architectures": _arch_table(0.05, 0.0)})  # +0.1 ± tiny at 3,200: still decided
    spread = mixed.copy()
    spread.loc[spread["n_train"] == 3200, ["low", "high"]] = [-1.0, 1.0]
    line = scorecard.headline(spread, "architecture")
    assert "200 training images" in line and "3,200" not in line
    assert scorecard.undecided_reason(spread, "architecture") == "no clear effect"


def test_forest_plot_is_readable_at_page_width_with_an_outlier():
    import matplotlib.pyplot as plt

    from ibnb.core.plots import PAGE_WIDTH

    eff = scorecard.effects({"01_architectures": _arch_table(0.40, 0.01)})  # a 40-point outlier
    fig = scorecard.forest_plot(eff)
    try:
        fig.canvas.draw()
        assert fig.get_size_inches()[0] <= PAGE_WIDTH + 1e-9
        texts = [t for t in fig.findobj(plt.Text) if t.get_text().strip() and t.get_visible()]
        small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < 9]
        assert not small, f"text below 9 pt: {small}"
        ax = fig.axes[0]
        assert ax.get_xscale() == "symlog"
        x0, x2 = (ax.transAxes.inverted().transform(ax.transData.transform((x, 0)))[0] for x in (0.0, 2.0))
        assert x2 - x0 > 0.05, "a 2-point effect is squashed by the outlier"
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert "architecture" in labels and any(lbl.startswith("CNN − MLP") for lbl in labels)
    finally:
        plt.close(fig)


def _claims(chapter: str, verdicts: list[str]) -> list[C.Claim]:
    return [C.Claim(claim=f"claim {i} with max |M·x − conv(x)| small", source="bachmann2023scaling" if i == 0 else "",
                    setting="CIFAR-10, 200 images", measurement=f"+{i}.0 [0.1, 2.0] points, n = 3", verdict=v,
                    reason="the interval lies wholly > 0" if v == C.SUPPORTED else "2 seeds, fewer than 3",
                    mean=float(i), low=0.1, high=2.0, n_seeds=3, converged=True)
            for i, v in enumerate(verdicts)]


def _calibration() -> C.Calibration:
    return C.Calibration(quantity="CNN test accuracy", ours=C.effect_of([0.61, 0.63, 0.62], unit="%"), published=64.0,
                         source="bachmann2023scaling", setting="CIFAR-10, 3,200 images", tolerance=5.0)


def test_claims_index_reads_new_format_tables_and_fits_a_phone(tmp_path):
    C.write_claims(_claims("01_architectures", [C.SUPPORTED, C.NOT_TESTABLE]), "01_architectures", "cpu")
    C.write_claims(_claims("07_demo", [C.INCONCLUSIVE]), "07_demo", "cpu", section="audit")
    claims, stale = pages.read_claims_all("cpu", results.results_dir())
    assert stale == [] and len(claims) == 3
    idx = pages.claims_index(claims)
    assert list(idx.frame.columns) == ["chapter", "claim", "our measurement", "verdict"]
    assert idx.frame.loc[0, "chapter"] == '<a href="01_architectures.html#claims-audit">01</a>'
    assert idx.frame.loc[2, "chapter"] == '<a href="07_demo.html#audit">07</a>'
    body = idx.markdown.splitlines()[2:]
    assert all(row.count(" | ") == 3 for row in body), "an unescaped | splits a cell"
    assert "max \\|M·x − conv(x)\\|" in idx.markdown
    assert "small {cite:p}`bachmann2023scaling`; *setting:*" in idx.markdown
    assert "**supported** — the interval lies wholly > 0" in idx.markdown
    assert "nan" not in idx.markdown.lower() and "*setting:* CIFAR-10, 200 images" in idx.markdown
    assert isinstance(pages.claims_index(claims.iloc[:0]), pages.Markdown)


def test_old_format_claims_tables_are_named_not_counted(tmp_path):
    root = results.results_dir()
    C.write_claims(_claims("01_architectures", [C.SUPPORTED]), "01_architectures", "cpu")
    (root / "02_old").mkdir(parents=True)
    (root / "02_old" / "cpu-claims.csv").write_text(
        "chapter,section,claim,source,measurement,verdict,verdict_class\n"
        "02_old,claims-audit,x helps,demo2020,+1 ± 0.2 points (2 seeds),supported (2 seeds),supported\n")
    claims, stale = pages.read_claims_all("cpu", root)
    assert stale == ["02_old"] and set(claims["chapter"]) == {"01_architectures"}
    x = pages.load({"results_profile": "cpu", "results_root": ""})
    note = pages.stale_note(x).text
    assert "`02_old`" in note and "python -m ibnb run 02_old --profile cpu" in note and note.startswith(":::{warning}")
    (root / "03_bad").mkdir()
    pd.DataFrame([{**{c: "" for c in pages.CLAIMS_COLUMNS}, "chapter": "03_bad", "claim": "y",
                   "verdict": "supported (2 seeds)"}]).to_csv(root / "03_bad" / "cpu-claims.csv", index=False)
    with pytest.raises(ValueError, match="unknown verdict"):
        pages.read_claims_all("cpu", root)  # the new format with verdict wording is an error, not skipped


def test_calibration_summary_lists_every_chapters_rows():
    C.write_claims(_claims("01_architectures", [C.SUPPORTED]), "01_architectures", "cpu", calibration=[_calibration()])
    cal = pages.read_calibration_all("cpu", results.results_dir())
    assert len(cal) == 1
    t = pages.calibration_summary(cal)
    md = t.markdown
    assert "CNN test accuracy; CIFAR-10, 3,200 images" in md and "64.0 % {cite:p}`bachmann2023scaling`" in md
    assert "-2.0 points (within ±5 points)" in md and "nan" not in md.lower()
    far = C.Calibration("MLP test accuracy", C.effect_of([0.2, 0.3], unit="%"), 60.0, "", "toy", 5.0)
    C.write_claims(_claims("02_x", [C.SUPPORTED]), "02_x", "cpu", calibration=[far])
    md = pages.calibration_summary(pages.read_calibration_all("cpu", results.results_dir())).markdown
    assert "-35.0 points (**outside** ±5 points)" in md and md.count("\n") == 4  # header, rule, two rows
    assert isinstance(pages.calibration_summary(cal.iloc[:0]), pages.Markdown)


def test_tally_sentence_counts_every_class_and_the_reasons_of_the_undecided():
    df = C.claims_frame(_claims("x", [C.SUPPORTED, C.NOT_TESTABLE, C.NOT_TESTABLE, C.CONSISTENT]))
    text = pages.tally_sentence(df)
    assert text.startswith("Of the 4 claims") and "1 are supported" in text and "1 consistent" in text
    assert "2 are not testable at this budget" in text and "not the science" not in text
    assert "(2 for too few seeds)." in text
    claims = _claims("x", [C.SUPPORTED, C.NOT_TESTABLE, C.NOT_TESTABLE, C.NOT_TESTABLE])
    claims[2] = C.Claim(**{**claims[2].__dict__, "reason": "1 of 3 runs did not pass the convergence check"})
    claims[3] = C.Claim(**{**claims[3].__dict__, "reason": "the baselines are off the paper's table"})
    text = pages.tally_sentence(C.claims_frame(claims))
    assert ("(1 for too few seeds, 1 for runs that did not pass the convergence check, 1 for another stated "
            "reason).") in text


def test_pages_numbers_and_tables_from_new_format_tables():
    results.write_results(_arch_table(0.05, 0.01).assign(
        experiment="e", epochs=1, params=1, test_nll=1.0, wall_s=1.0, images_per_s=1.0, device="cpu"),
        "01_architectures", "cpu")
    C.write_claims(_claims("01_architectures", [C.SUPPORTED, C.NOT_TESTABLE, C.CONTRADICTED]), "01_architectures",
                   "cpu", calibration=[_calibration()])
    P = {"results_profile": "cpu", "results_root": ""}
    x = pages.load(P)
    idx = pages.index_numbers(x, P)
    assert idx["abs_claims"] == 3 and "1 contradicted" in idx["abs_tally"].text
    assert idx["abstract_effects"].text.startswith("* **architecture** — CNN − MLP (cifar10): helps with 200 ")
    assert idx["abs_undecided"].text.startswith("Not headlined") and "attention (not measured at this profile)" in \
        idx["abs_undecided"].text
    num = pages.scorecard_numbers(x, P)
    assert (num["n_comparisons"], num["n_helps"], num["c_sup"], num["c_con"], num["n_calibration"]) == (1, 1, 1, 1, 1)
    assert num["stale_md"].text == ""
    tables = pages.scorecard_tables(x, P)
    assert set(tables) == {"effects", "claims", "calibration"}
    shown = [v.text if isinstance(v, pages.Markdown) else str(v) for v in [*num.values(), *idx.values()]]
    shown += [t.markdown for t in tables.values()]
    assert not [s for s in shown if "nan" in s.lower().split() or "± 0.0" in s]
    assert set(pages.scorecard_figures(x, P)) == {"fig_scorecard"}


def test_timing_table_marks_unmeasured_profiles(tmp_path):
    (tmp_path / "timings.csv").write_text(
        "notebook,profile,wall_s,executed_at,device,cpu_threads,commit\n"
        "01_a,cpu,120,2026-01-01T00:00:00Z,cpu (x86_64),2 torch threads / 2 CPUs,abc\n"
        "01_a,smoke,9,2026-01-01T00:00:00Z,cpu (x86_64),2 torch threads / 2 CPUs,abc\n")
    t = reproduce.timing_frame(reproduce.timings(tmp_path), ["01_a", "02_b"])
    assert t.loc[0, "cpu (min)"] == "2.0" and t.loc[0, "gpu (min)"] == "not measured"
    assert t.loc[1, "cpu (min)"] == "not measured" and t.loc[1, "cpu run: device, threads, date"] == "—"
    assert reproduce.timings(tmp_path / "none").empty
    num = reproduce.numbers(reproduce.timings(tmp_path), ["01_a", "02_b", "99_r"], "99_r")
    assert num["cpu_total_min"].text == "2.0" and "`02_b`" in num["cpu_missing"].text
    assert num["smoke_longest"].text == "The longest smoke run took 9 s."
    empty = reproduce.numbers(reproduce.timings(tmp_path / "none"), ["01_a"], "99_r")
    assert empty["smoke_longest"].text == "No smoke run is logged yet."
    assert "| notebook |" in reproduce.timing_table(reproduce.timings(tmp_path), ["01_a"]).markdown


def test_parameter_table_lists_every_knob_in_full(monkeypatch):
    long = {"vit": {"depth": 6, "dim": 64, "heads": 4, "mlp_ratio": 2, "patch": 4, "dropout": 0.0, "note": "a|b"}}
    fake = types.ModuleType("ibnb_fake_presets")
    fake.NOTEBOOK = "98_fake"
    fake.PRESETS = {p: {"epochs": e, "model_kw": long, "models": ["cnn", "mlp", "vit", "mixer", "resnet18"]}
                    for p, e in (("smoke", 1), ("cpu", 8), ("gpu", 100))}
    monkeypatch.setitem(sys.modules, "ibnb_fake_presets", fake)
    monkeypatch.setitem(profiles.PAGES, "98_fake", "ibnb_fake_presets")
    t = reproduce.parameter_table("98_fake")
    assert list(t.frame.columns) == ["parameter", "smoke", "cpu", "gpu"] and len(t.frame) == 3
    row = t.frame[t.frame["parameter"] == "`epochs`"].iloc[0]
    assert (row["smoke"], row["cpu"], row["gpu"]) == ("`1`", "`8`", "`100`")
    assert "…" not in t.markdown and "'mlp_ratio': 2" in t.markdown and "'a\\|b'" in t.markdown
    md = reproduce.parameter_tables(["98_fake", pages.INDEX]).text
    assert "### `98_fake`" in md and "### `00_index`" in md and "`results_root`" in md


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
    assert np.isfinite(eff["mean"].astype(float)).all()
