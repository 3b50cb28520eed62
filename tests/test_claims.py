"""The book's one verdict rule (ibnb.book.claims.judge), the convergence check and the table formatter."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ibnb.book import claims as C
from ibnb.book.page import Audit, answer_box
from ibnb.book.tables import cell, table
from ibnb.core.convergence import ConvergenceCheck, check_convergence, half_budget


def eff(values, converged=True):
    return C.effect_of(values, scale=1.0, converged=[converged] * len(values))


def test_t_interval_matches_scipy():
    from scipy import stats

    v = [1.0, 2.0, 4.0]
    m, lo, hi, n = C.t_interval(v)
    ref = stats.t.interval(0.95, 2, loc=np.mean(v), scale=stats.sem(v))
    assert n == 3 and m == pytest.approx(7 / 3) and (lo, hi) == pytest.approx(ref)


def test_effect_text_format():
    e = C.Effect(2.9, 1.1, 4.7, 3)
    assert e.text() == "+2.9 [1.1, 4.7] points, n = 3"
    assert C.Effect(2.9, math.nan, math.nan, 1).text() == "+2.9 points, n = 1"


@pytest.mark.parametrize("values, direction, verdict", [
    ([3.0, 2.5, 3.5], 1, C.SUPPORTED),
    ([-3.0, -2.5, -3.5], 1, C.CONTRADICTED),
    ([-3.0, -2.5, -3.5], -1, C.SUPPORTED),
    ([3.0, -2.5, 0.5], 1, C.INCONCLUSIVE),
])
def test_judge_directions(values, direction, verdict):
    assert C.judge("c", "", "s", eff(values), direction=direction).verdict == verdict


def test_judge_needs_three_seeds_and_convergence():
    two = C.judge("c", "", "s", eff([3.0, 3.1]))
    assert two.verdict == C.NOT_TESTABLE and "2 seeds" in two.reason
    stuck = C.judge("c", "", "s", eff([3.0, 3.1, 2.9], converged=False))
    assert stuck.verdict == C.NOT_TESTABLE and "convergence" in stuck.reason
    assert C.judge("c", "", "s", C.effect_of([3, 3.1, 2.9], scale=1)).verdict == C.NOT_TESTABLE  # no record


def test_judge_no_effect_claims_and_gate():
    assert C.judge("c", "", "s", eff([0.1, -0.1, 0.05]), direction=0, margin=1).verdict == C.CONSISTENT
    assert C.judge("c", "", "s", eff([5.0, 5.2, 4.9]), direction=0, margin=1).verdict == C.CONTRADICTED
    assert C.judge("c", "", "s", eff([0.1, 2.0, -1.5]), direction=0, margin=1).verdict == C.INCONCLUSIVE
    gated = C.judge("c", "", "s", eff([3.0, 2.5, 3.5]), gate=(False, "encoder below raw pixels"))
    assert gated.verdict == C.NOT_TESTABLE and gated.reason == "encoder below raw pixels"
    both = C.judge("c", "", "s", eff([3.0, 2.5, 3.5], converged=False), gate=(False, "baselines off"))
    assert both.verdict == C.NOT_TESTABLE and "convergence" in both.reason and both.reason.endswith("baselines off")
    with pytest.raises(ValueError):
        C.judge("c", "", "s", eff([1.0, 1, 1]), direction=0)


def test_paired_effect_pairs_by_seed():
    df = pd.DataFrame({"model": ["a", "b"] * 3, "seed": [0, 0, 1, 1, 2, 2],
                       "test_acc": [0.5, 0.4, 0.6, 0.45, 0.55, 0.5], "converged": [True] * 6})
    e = C.paired_effect(df, "model", "a", "b")
    assert e.n == 3 and e.mean == pytest.approx(100 * np.mean([0.1, 0.15, 0.05]))
    assert e.all_converged and e.runs == 6


def test_write_and_read_claims_store_the_class(tmp_path, monkeypatch):
    monkeypatch.setenv("IBNB_RESULTS", str(tmp_path))
    cl = [C.judge("c", "", "s", eff([3.0, 2.5, 3.5])), C.check("p", "", "s", "1,000", True)]
    C.write_claims(cl, "01_x", "cpu")
    df = C.read_claims("01_x", "cpu")
    assert df["verdict"].tolist() == [C.SUPPORTED, C.SUPPORTED]
    (tmp_path / "01_x" / "cpu-claims.csv").write_text(df.assign(verdict="mostly right").to_csv(index=False))
    with pytest.raises(ValueError, match="unknown verdict"):
        C.read_claims("01_x", "cpu")


def test_convergence_falling_vs_plateau():
    falling = pd.DataFrame({"train_loss": np.linspace(2.0, 1.0, 12), "val_acc": np.linspace(0.2, 0.5, 12)})
    flat = pd.DataFrame({"train_loss": np.r_[np.linspace(2.0, 1.0, 8), [1.0] * 4],
                         "val_acc": np.r_[np.linspace(0.2, 0.5, 8), [0.5, 0.501, 0.499, 0.5]]})
    assert not check_convergence(falling).passed
    assert check_convergence(flat).passed
    no_val = pd.DataFrame({"train_loss": np.r_[np.linspace(2, 1, 8), [0.999] * 4]})
    assert check_convergence(no_val).passed
    assert not check_convergence(no_val.iloc[:3]).passed  # too few epochs
    floor = pd.DataFrame({"train_loss": [1.0, 0.01]})
    assert check_convergence(floor, ConvergenceCheck(train_loss_floor=0.05)).passed


def test_budget_halving_probe_passes_a_saturated_annealed_run_and_only_that():
    """Test 3: an annealed run rises in its last quarter (test 2 fails) whatever its budget; its half-budget probe
    decides. A probe 0.4 points below passes, 3 points below fails and names both tests; no probe, no pass."""
    annealed = pd.DataFrame({"train_loss": np.linspace(2.0, 0.8, 8), "val_acc": np.r_[[0.5] * 6, 0.53, 0.56]})
    assert not check_convergence(annealed).passed
    near = pd.DataFrame({"train_loss": np.linspace(2.0, 0.9, 4), "val_acc": [0.4, 0.45, 0.5, 0.556]})
    ok = check_convergence(annealed, probe=near)
    assert ok.passed and "doubling the budget (4 → 8 epochs)" in ok.reason and "+0.4 points" in ok.reason
    far = near.assign(val_acc=[0.4, 0.45, 0.5, 0.53])
    bad = check_convergence(annealed, probe=far)
    assert not bad.passed and "last 2 of 8 epochs" in bad.reason and "+3.0 points" in bad.reason
    assert not check_convergence(annealed, probe=annealed).passed  # a probe must be shorter than the run
    fell = check_convergence(pd.DataFrame({"train_loss": np.linspace(2.0, 0.8, 8),
                                           "val_acc": [0.5, 0.6, 0.7, 0.72, 0.7, 0.71, 0.7, 0.69]}))
    assert fell.passed and "lost 2.0 points" in fell.reason and "passes" in fell.reason  # a fall reads as one
    no_val = pd.DataFrame({"train_loss": np.linspace(2.0, 1.0, 8)})
    assert check_convergence(no_val, probe=pd.DataFrame({"train_loss": [2.0, 1.5, 1.01]})).passed
    assert not check_convergence(no_val, probe=pd.DataFrame({"train_loss": [2.0, 1.5, 1.2]})).passed
    assert half_budget(5, 1.0) == (2, 0.4) and half_budget(1) is None


def test_table_formatter():
    df = pd.DataFrame({"n_train": [500, 50000], "test_acc": [0.4123, math.nan], "source": ["x|y", ""],
                       "converged": [True, False]}, index=[5, 6])
    md = table(df, percent=("test_acc",))._repr_markdown_()
    assert "training images" in md and "50,000" in md and "41.2" in md and "—" in md
    assert "nan" not in md.lower() and "x\\|y" in md and "| 5 |" not in md and "yes" in md
    assert cell(1234567) == "1,234,567"


def test_answer_box_counts_and_reasons():
    cl = [C.judge("a claim", "", "s", eff([3.0, 2.5, 3.5])), C.judge("b", "", "s", eff([1.0, 2.0]))]
    box = answer_box(Audit(cl), "cpu")._repr_markdown_()
    assert "1 supported" in box and "1 not testable" in box and "2 seeds, fewer than 3" in box
    assert "ibnb-answer" in box


def test_calibration_table_says_a_shared_source_and_setting_once():
    """Columns with one value in every row (of three or more) move above the table; with two rows they stay."""
    from ibnb.book.page import calibration_table

    rows = [C.Calibration(f"model {i} accuracy", eff([70.0 + i, 71.0, 69.0]), 70.0, "atanov2019deep", "same setting", 3.0)
            for i in range(3)]
    md = calibration_table(Audit([], rows)).markdown
    head = md.split("\n\n", 1)
    assert head[0].startswith("All rows share the source {cite:t}`atanov2019deep` and the setting “same setting”")
    assert "| source |" not in head[1] and "| setting |" not in head[1] and "| quantity |" in head[1]
    two = calibration_table(Audit([], rows[:2])).markdown
    assert two.startswith("| quantity | setting |") and "| source |" in two


def test_a_gain_of_exactly_the_tolerance_passes_despite_float_rounding():
    """5 of 500 validation images is exactly 1 point, but 365/500 − 360/500 > 0.01 in floating point."""
    acc = [k / 500 for k in (250, 300, 350, 360, 360, 360, 360, 365)]
    assert acc[-1] - acc[3] > 0.01
    exact = check_convergence(pd.DataFrame({"train_loss": np.linspace(2.0, 0.8, 8), "val_acc": acc}))
    assert exact.passed and "+1.0 points" in exact.reason
    over = check_convergence(pd.DataFrame({"train_loss": np.linspace(2.0, 0.8, 8), "val_acc": acc[:-1] + [366 / 500]}))
    assert not over.passed


def test_effect_text_never_prints_minus_zero_and_judge_gives_nats_three_digits():
    assert C.Effect(0.16, -0.016, 0.34, 3).text() == "+0.2 [0.0, 0.3] points, n = 3"
    nats = C.judge("c", "", "s", C.Effect(0.207, -0.023, 0.436, 3, unit="nats", runs=3, converged=3))
    assert nats.measurement == "+0.207 [-0.023, 0.436] nats, n = 3"
