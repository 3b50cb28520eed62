"""Claims and calibration of the CPU-training page: the issue's acceptance targets, judged by the book's rule."""
from __future__ import annotations

import pandas as pd

from ibnb.book.claims import Calibration, check, group_effect, judge, paired_effect
from ibnb.book.page import Audit

#: the issue's acceptance targets: (accuracy %, training minutes)
TARGETS = ((86.0, 3.0), (93.0, 20.0))
#: fit's overhead over a bare loop that the issue allows, and the share of the matmul peak conv nets should reach
MAX_OVERHEAD, MIN_PEAK_SHARE = 0.05, 0.60
#: airbench94: 94.0 % on CIFAR-10 (Jordan, 2024)
AIRBENCH94_ACC = 94.0
PARITY_MARGIN = 1.0  # points: fp32 and bf16 "land in the same band"


def frontier(df: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy (plain and TTA), training minutes and seeds per recipe and epoch budget."""
    d = df[df["experiment"] == "frontier"]
    return (d.groupby(["recipe", "epochs", "widths"], as_index=False)
             .agg(test_acc=("test_acc", "mean"), tta_acc=("tta_acc", "mean"), train_min=("train_min", "mean"),
                  seeds=("seed", "nunique"), precision=("precision", "first")))


def within_budget(df: pd.DataFrame, minutes: float) -> tuple[str, int] | None:
    """The frontier point (recipe, epochs) with the highest mean accuracy whose mean training time is within
    ``minutes`` (``None`` when no point is)."""
    f = frontier(df)
    f = f[f["train_min"] <= minutes]
    if f.empty:
        return None
    best = f.sort_values("test_acc").iloc[-1]
    return best["recipe"], int(best["epochs"])


def target_claims(df: pd.DataFrame) -> list:
    out = []
    for acc, minutes in TARGETS:
        point = within_budget(df, minutes)
        claim = f"The fast CNN reaches ≥ {acc:g} % test accuracy in ≤ {minutes:g} min of training"
        setting = "full CIFAR-10 test set, this machine"
        if point is None:
            out.append(judge(claim, "jordan2024airbench", setting, None, threshold=acc,
                             untestable=f"no run of this profile finishes within {minutes:g} min"))
            continue
        recipe, epochs = point
        e = group_effect(df, where={"experiment": "frontier", "recipe": recipe, "epochs": epochs})
        out.append(judge(claim, "jordan2024airbench", f"{setting}; {recipe}, {epochs} epochs", e, threshold=acc))
    return out


def parity_claim(df: pd.DataFrame, native: bool) -> object:
    claim = f"bf16 autocast trains to the same accuracy as fp32 (within ±{PARITY_MARGIN:g} points)"
    d = df[df["experiment"] == "parity"]
    if not native or d.empty:
        return judge(claim, "", "parity recipe", None, direction=0, margin=PARITY_MARGIN,
                     untestable="bf16 is not native on this machine (no bf16 units), so it was not run")
    e = paired_effect(d, "precision", "bf16", "fp32")
    return judge(claim, "", f"{d['recipe'].iloc[0]}, {int(d['epochs'].iloc[0])} epochs, paired by seed", e,
                 direction=0, margin=PARITY_MARGIN)


def bench_claims(bench: pd.DataFrame, peak: dict, native: bool) -> list:
    why = "a throughput measurement on this machine (no seed enters it); timings depend on the load"
    worst = bench.loc[bench["fit_overhead"].idxmax()]
    out = [check(f"fit's overhead over a bare loop is ≤ {MAX_OVERHEAD:.0%} for every benchmarked model", "",
                 "every benchmarked model and fast path", f"worst {worst['fit_overhead']:+.1%} ({worst['model']}, "
                 f"{worst['path']})", bool(bench["fit_overhead"].max() <= MAX_OVERHEAD), why=why)]
    conv = bench[bench["conv_net"].astype(bool) & (bench["path"] == "bf16+channels_last")]
    claim = f"Conv nets train at ≥ {MIN_PEAK_SHARE:.0%} of the bf16 matmul peak"
    if not native or conv.empty:
        out.append(judge(claim, "", "bf16 + channels-last", None, untestable="bf16 is not native on this machine"))
    else:
        share = conv["fit_gflop_per_s"] / peak["bf16"]
        best, low = conv.loc[share.idxmax()], conv.loc[share.idxmin()]
        measured = f"best {share.max():.0%} ({best['model']})"
        if len(conv) > 1:
            measured += f", least {share.min():.0%} ({low['model']})"
        out.append(check(claim, "", "bf16 + channels-last, best conv net (over half its FLOPs in convolutions)",
                         f"{measured} of {peak['bf16']:.0f} GFLOP/s", bool(share.max() >= MIN_PEAK_SHARE), why=why))
    return out


def calibration(df: pd.DataFrame) -> list[Calibration]:
    f = frontier(df).sort_values("test_acc")
    best = f.iloc[-1]
    e = group_effect(df, where={"experiment": "frontier", "recipe": best["recipe"], "epochs": int(best["epochs"])},
                     unit="%")
    return [Calibration("test accuracy of the largest fast-CNN run", e, AIRBENCH94_ACC, "jordan2024airbench",
                        f"{best['recipe']} (widths {best['widths']}), {int(best['epochs'])} epochs vs airbench94 "
                        "(64/256/256, ~10 epochs, TTA)", tolerance=6.0,
                        note="narrower widths and fewer epochs than airbench94 on a CPU budget")]


def audit(df: pd.DataFrame, bench: pd.DataFrame, peak: dict, native: bool) -> Audit:
    return Audit(target_claims(df) + [parity_claim(df, native)] + bench_claims(bench, peak, native), calibration(df))
