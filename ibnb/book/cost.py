"""The cost model: how many training runs a notebook makes at a profile, how many FLOPs they take, and the hours
that implies (``python -m ibnb run NOTEBOOK --profile gpu --estimate``).

The estimate executes the notebook the way the dry run does (:mod:`ibnb.book.dryrun`: a temporary copy, every
training run for two steps on a few images, nothing written), but at the profile's own volume: only the knobs
that change evaluation work alone (:data:`ibnb.book.dryrun.EVAL_ONLY`: test images, TTA views, policy pools,
benchmark steps) and the uncounted work (:data:`ibnb.book.dryrun.UNCOUNTED`: chapter 06's kernel VAE, chapter
04's MeTTA probe split and validation split, whose per-epoch passes are scaled back to the profile's size) take
``smoke``'s values, and the frozen features of any set of more than 2,048 images are the features of its first
16, repeated (:func:`ibnb.book.dryrun.make_estimate_features`). So every training run the profile would make is built at its real size
and counted:

* **training FLOPs per image** are counted by ``torch.utils.flop_counter`` over two real updates of the run
  (its own step: SAM's second pass, both views of a self-supervised pair and Sparse VD's variance path are in it),
  less the validation forward passes;
* **per run**: that × the images the run would see (epochs × training images), plus its per-epoch validation
  forward passes (forward FLOPs × validation images × epochs).

Not counted: evaluation (test sets, TTA views, policy search, Hessians, benchmarks), data loading, and chapter
06's kernel VAE (a small MLP on 3×3 and 7×7 kernels). Hours are **estimates** at stated sustained rates:
:data:`CPU_RATE` (this 2-core machine's measured bf16 rate on conv nets, issue 14) and :data:`GPU_UTIL` of an
H100 SXM's dense bf16 peak :data:`GPU_PEAK`. Small models (MLPs, LeNets) run far below the CPU rate on two cores
(per-step overhead, not FLOPs, bounds them), so the ``cpu`` estimate is checked against the measured ``cpu``
wall time on the reproduce page, chapter by chapter.
"""
from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ibnb.book.tables import Table, table
from ibnb.core.utils import atomic_write

#: dense bf16 peak of an H100 SXM (FLOP/s) and the sustained share assumed for the GPU-hours
GPU_PEAK, GPU_UTIL = 989e12, 0.40
#: sustained bf16 training rate assumed for the CPU-hours: ~200 GFLOP/s, measured on this 2-core Zen 4 for conv nets
CPU_RATE = 200e9
COLUMNS = ["notebook", "profile", "runs", "train_flops", "largest_run_flops", "models", "overrides", "estimated_at",
           "commit"]
FILE = "cost_estimates.csv"


def run_flops(rec: dict) -> float:
    """Training FLOPs of one planned run (a dry-run record): update FLOPs per image × images seen, plus the
    validation forward passes of every epoch."""
    return (rec["train_flops_per_image"] * rec["images_seen"]
            + (rec["forward_flops"] or 0.0) * rec["n_val"] * rec["epochs"])


def scale_validation(stem: str, profile: str, runs: list[dict], ran_with: dict, overrides: dict | None = None
                     ) -> list[dict]:
    """The records with each run's validation images scaled back to the profile's split where the estimate took
    the split's size from ``smoke`` (:data:`ibnb.book.dryrun.VAL_KNOB`): × (intended value / value it ran with)."""
    from ibnb.book.dryrun import VAL_KNOB
    from ibnb.book.profiles import _module, _presets_of

    knob = VAL_KNOB.get(stem)
    if knob is None:
        return runs
    intended = (overrides or {}).get(knob, _presets_of(_module(stem), stem)[profile][knob])
    factor = intended / ran_with[knob]
    return [{**r, "n_val": r["n_val"] * factor} for r in runs]


def summarise(stem: str, profile: str, runs: list[dict], commit: str = "", overrides: dict | None = None) -> dict:
    """One row of the estimates table from the records of one notebook's estimate (``overrides``: the ``-p``
    values it ran with, shown beside it: such an estimate is not quite the profile's)."""
    flops = [run_flops(r) for r in runs]
    return {"notebook": stem, "profile": profile, "runs": len(runs), "train_flops": float(sum(flops)),
            "largest_run_flops": float(max(flops, default=0.0)), "models": " ".join(sorted({r["model"] for r in runs})),
            "overrides": " ".join(f"{k}={v!r}" for k, v in sorted((overrides or {}).items())),
            "estimated_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "commit": commit}


def estimates_path(results_root: Path | str | None = None) -> Path:
    from ibnb.book.results import results_dir

    return Path(results_root) / FILE if results_root is not None else results_dir() / FILE


def read_estimates(results_root: Path | str | None = None) -> pd.DataFrame:
    """The recorded estimates (an empty frame with the columns when there are none)."""
    path = estimates_path(results_root)
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    from ibnb.book.results import read_table

    return read_table(path, required=COLUMNS, numeric=["runs", "train_flops", "largest_run_flops"])


def record(rows: list[dict], results_root: Path | str | None = None) -> Path:
    """Merge ``rows`` into the estimates table (one row per notebook and profile), written atomically."""
    old = read_estimates(results_root)
    new = pd.DataFrame(rows, columns=COLUMNS)
    keep = old[~(old["notebook"] + "/" + old["profile"]).isin(new["notebook"] + "/" + new["profile"])]
    df = pd.concat([keep, new], ignore_index=True) if len(keep) else new
    df = df.sort_values(["notebook", "profile"]).reset_index(drop=True)
    return atomic_write(estimates_path(results_root), df[COLUMNS].to_csv(index=False))


def _sig(x: float) -> str:
    """Three significant digits without an exponent: 1,264, 72.3, 0.0508."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def hours(flops: float, rate: float) -> float:
    return flops / rate / 3600


def line(row: dict) -> str:
    """One terminal line per estimate."""
    f = row["train_flops"]
    return (f"{row['notebook']} at {row['profile']}: {row['runs']} training runs, {f / 1e15:.3g} PFLOP "
            f"(largest run {row['largest_run_flops'] / 1e15:.3g} PFLOP) -> est. {hours(f, CPU_RATE):.3g} h on this CPU "
            f"at {CPU_RATE / 1e9:.0f} GFLOP/s, {hours(f, GPU_PEAK * GPU_UTIL):.3g} H100-h at {GPU_UTIL:.0%} of "
            f"{GPU_PEAK / 1e12:.0f} TFLOP/s (estimates)")


def estimate_notebooks(names: Sequence[str], *, profile: str, overrides: dict[str, Any] | None = None, paths=None,
                       echo: bool = True, save: bool = True) -> list[dict]:
    """Estimate every selected chapter at ``profile``, print a line each and merge them into the table."""
    from ibnb.book import dryrun
    from ibnb.book.guard import RunnerError
    from ibnb.book.provenance import git_commit
    from ibnb.book.runner import Paths, find_notebooks

    paths = paths or Paths.for_repo()
    rows, failed = [], []
    for src in find_notebooks(names, paths.notebooks):
        if src.stem not in dryrun.VOLUME:
            continue
        if echo:
            print(f"{src.stem}: estimating {profile} ...", flush=True)
        try:
            dry = dryrun.dry_run_notebook(src, profile=profile, overrides=overrides, cwd=paths.repo,
                                          swap=dryrun.estimate_swap(src.stem), estimate=True)
        except RunnerError as err:  # reported, and the next notebook is estimated
            failed.append(str(err))
            if echo:
                print(f"error: {err}", file=sys.stderr, flush=True)
            continue
        runs = scale_validation(src.stem, profile, dry.runs, dry.params, overrides)
        rows.append(summarise(src.stem, profile, runs, git_commit(paths.repo), overrides))
        if echo:
            print(line(rows[-1]), flush=True)
        if save:  # each notebook as soon as it is counted: an interruption keeps the finished ones
            path = record(rows[-1:], paths.results_dir)
            if echo:
                print(f"recorded in {path.relative_to(paths.repo) if path.is_relative_to(paths.repo) else path}")
    if failed:
        raise RunnerError(f"no {profile} estimate for {len(failed)} notebook(s):\n" + "\n".join(failed))
    return rows


def cost_frame(estimates: pd.DataFrame, timings: pd.DataFrame, notebooks: list[str]) -> pd.DataFrame:
    """Per chapter: runs and training FLOPs at ``cpu`` with the estimated and the measured hours (and their
    ratio), and at ``gpu`` with the estimated H100-hours."""
    rows = []
    for stem in notebooks:
        est = {p: estimates[(estimates["notebook"] == stem) & (estimates["profile"] == p)] for p in ("cpu", "gpu")}
        if not any(len(e) for e in est.values()):
            continue
        cpu, gpu = est["cpu"], est["gpu"]
        changed = [f"`{p}` with `{e['overrides'].iloc[0]}`" for p, e in est.items()
                   if len(e) and isinstance(e["overrides"].iloc[0], str) and e["overrides"].iloc[0]]
        row: dict[str, Any] = {"notebook": f"`{stem}`" + (f" ({'; '.join(changed)})" if changed else "")}
        measured = timings[(timings["notebook"] == stem) & (timings["profile"] == "cpu")]
        if len(cpu):
            f = float(cpu["train_flops"].iloc[0])
            row.update({"cpu runs": int(cpu["runs"].iloc[0]), "cpu TFLOP": f / 1e12,
                        "cpu est. (min)": hours(f, CPU_RATE) * 60})
            if len(measured):
                wall = float(measured["wall_s"].iloc[0]) / 60
                # the rate is a bf16 rate: a chapter timed on a CPU without bf16 does not check it
                bf16 = "device" not in measured or "no bf16" not in str(measured["device"].iloc[0])
                row.update({"cpu measured (min)": wall,
                            "measured / est.": wall / (hours(f, CPU_RATE) * 60) if bf16 else None})
        if len(gpu):
            f = float(gpu["train_flops"].iloc[0])
            row.update({"gpu runs": int(gpu["runs"].iloc[0]), "gpu PFLOP": f / 1e15,
                        "H100-h (est.)": hours(f, GPU_PEAK * GPU_UTIL), "H100 (s, est.)": f / (GPU_PEAK * GPU_UTIL)})
        rows.append(row)
    cols = ["notebook", "cpu runs", "cpu TFLOP", "cpu est. (min)", "cpu measured (min)", "measured / est.",
            "gpu runs", "gpu PFLOP", "H100-h (est.)", "H100 (s, est.)"]
    frame = pd.DataFrame(rows, columns=cols)
    for col in ("cpu runs", "gpu runs"):  # whole numbers, with "—" (None) where a profile has no estimate
        frame[col] = pd.Series([int(v) if pd.notna(v) else None for v in frame[col]], dtype=object)
    return frame


def cost_table(estimates: pd.DataFrame, timings: pd.DataFrame, notebooks: list[str]) -> Table:
    """The reproduce page's table (the hours column is left to the sentence; seconds read better per chapter)."""
    return table(cost_frame(estimates, timings, notebooks).drop(columns=["H100-h (est.)"]))


def numbers(estimates: pd.DataFrame, timings: pd.DataFrame, notebooks: list[str]) -> dict:
    """The sentence the reproduce page quotes: totals of the ``cpu`` estimate beside the measured ``cpu`` time
    (the chapters that have both) and of the ``gpu`` estimate."""
    from ibnb.book.page import Markdown

    rates = {"cost_cpu_rate": Markdown(f"{CPU_RATE / 1e9:.0f}"), "cost_gpu_util": Markdown(f"{GPU_UTIL:.0%}"),
             "cost_gpu_peak": Markdown(f"{GPU_PEAK / 1e12:.0f}")}
    frame = cost_frame(estimates, timings, notebooks)
    if frame.empty:
        return {**rates, "cost_sentence": Markdown("No estimate is recorded yet: `python -m ibnb run --profile cpu --estimate` "
                                          "and `--profile gpu --estimate` write them.")}
    both = frame.dropna(subset=["cpu est. (min)", "cpu measured (min)", "measured / est."])
    no_bf16 = frame[frame["cpu measured (min)"].notna() & frame["measured / est."].isna()]["notebook"].tolist()
    parts = []
    if len(both):
        est, wall = both["cpu est. (min)"].sum(), both["cpu measured (min)"].sum()
        ratios = both["measured / est."]
        parts.append(f"For the {len(both)} chapters with both, the FLOP count predicts {est:.0f} min of `cpu` training "
                     f"at {CPU_RATE / 1e9:.0f} GFLOP/s and the chapters took {wall:.0f} min (measured / estimated "
                     f"{wall / est:.1f} in all, {ratios.min():.1f} to {ratios.max():.1f} by chapter).")
    if no_bf16:
        parts.append(f"Left out of that check, and shown without a ratio: {', '.join(no_bf16)}, timed on a CPU "
                     "without bf16 units, where the bf16 rate does not apply.")
    gpu = frame.dropna(subset=["H100-h (est.)"])
    if len(gpu):
        parts.append(f"The `gpu` profile of the {len(gpu)} chapters estimated needs {_sig(gpu['gpu PFLOP'].sum())} "
                     f"PFLOP of training, about {gpu['H100-h (est.)'].sum():,.1f} H100-hours at {GPU_UTIL:.0%} of the dense "
                     "bf16 peak (an estimate at that assumed rate; the rates measured on a GPU, below, are lower).")
    chapters = [s for s in notebooks if s in set(estimates["notebook"])]
    for prof in ("cpu", "gpu"):
        lacking = [s for s in chapters if not ((estimates["notebook"] == s) & (estimates["profile"] == prof)).any()]
        if lacking:
            names = ", ".join(f"`{s}`" for s in lacking)
            parts.append(f"No `{prof}` estimate is recorded yet for {names}: `python -m ibnb run NOTEBOOK --profile "
                         f"{prof} --estimate` writes one, and an estimate that fails names its cause.")
    return {**rates, "cost_sentence": Markdown(" ".join(parts))}
