"""The device check: what the ``gpu`` profile's models train at on a real accelerator, beside the cost model.

    python -m ibnb.book.gpu_check --out DIR [--budget-s 480] [--chapter05]

The cost model (:mod:`ibnb.book.cost`) turns a profile's training FLOPs into hours at an *assumed* sustained rate
(:data:`ibnb.book.cost.GPU_UTIL` of :data:`ibnb.book.cost.GPU_PEAK`). This check measures, on the machine it runs
on, the rate each model of the ``gpu`` presets actually trains at, through the book's own ``fit`` (bf16 autocast
+ channels-last on CUDA) and a bare loop, on random images of the chapter's shape at the chapter's batch size
(:func:`ibnb.core.bench.compare`), and writes one row per model and fast path with the images/s the cost model
assumes (assumed rate / training FLOPs per image) beside the measured ones. Rows are written as they are
measured (write-then-rename), so a run stopped at its limit keeps the rows it finished.

With ``--chapter05`` it then trains chapter 05's LeNet-300-100 pair (dense and Sparse VD, seed 0) at the ``gpu``
profile's own settings (full MNIST, 200 epochs, batch 100) on the real data, if the measured rates say the pair
fits in the time left, and writes that run's results table: a ``gpu`` run of the chapter's code path, measured.

The models' step is the plain cross-entropy step: Sparse VD's KL term and the two views of a self-supervised pair
are not in the survey's rates (the chapter-05 runs have their own step).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from ibnb.book.cost import GPU_PEAK, GPU_UTIL
from ibnb.core.utils import atomic_write

CIFAR, MNIST = (3, 32, 32), (1, 28, 28)


def gpu_models() -> list[dict]:
    """Every model the ``gpu`` presets train, at their size and batch size: ``chapter, model, model_kw,
    batch_size, input_shape``. Read from the presets where they name the size."""
    from ibnb.book.profiles import presets
    from ibnb.chapters.architectures.presets import ARCH, MODELS as ARCH_MODELS
    from ibnb.chapters.spatial_attention.presets import MODELS as TEAM_MODELS
    from ibnb.core.fast_recipe import RECIPES, TRAINING

    rows = []
    arch = presets("01_architectures")["gpu"]
    rows += [dict(chapter="01", model=ARCH.get(m, m), model_kw=arch["model_kw"][m], batch_size=arch["batch_size"],
                  input_shape=CIFAR) for m in ARCH_MODELS if m != "fast_cnn"]
    rows.append(dict(chapter="01", model="fast_cnn", model_kw={"widths": list(RECIPES[arch["fast_recipe"]]["widths"])},
                     batch_size=TRAINING["batch_size"], input_shape=CIFAR))
    mlp = presets("02_mlp_scaling")["gpu"]
    rows.append(dict(chapter="02", model="bmlp", model_kw=mlp["model_kw"]["bmlp"], batch_size=mlp["batch_size"],
                     input_shape=CIFAR))
    team = presets("03_spatial_attention")["gpu"]
    rows += [dict(chapter="03", model=m, model_kw={"width": team["width"], "image_size": 32, "num_classes": 10},
                  batch_size=max(team["grid_batch_size"]),
                  input_shape=CIFAR) for m in TEAM_MODELS]
    tta = presets("04_test_time_augmentation")["gpu"]
    rows.append(dict(chapter="04", model=tta["model"], model_kw=tta["model_kw"], batch_size=tta["batch_size"],
                     input_shape=CIFAR))
    svd = presets("05_sparse_vd")["gpu"]
    rows += [dict(chapter="05", model=m, model_kw={}, batch_size=svd["batch_size"], input_shape=MNIST)
             for m in ("lenet300_100", "lenet300_100_svd", "lenet5_caffe", "lenet5_caffe_svd")]
    ssl = presets("07_self_supervised")["gpu"]
    rows += [dict(chapter="07", model=m, model_kw=ssl["backbone_kw"][m], batch_size=ssl["batch_size"], input_shape=CIFAR)
             for m in ssl["backbones"]]
    sam = presets("08_vit_sam")["gpu"]
    rows += [dict(chapter="08", model=m, model_kw=sam["model_kw"][m], batch_size=sam["batch_size"], input_shape=CIFAR)
             for m in sam["models"]]
    fast = presets("10_cpu_training")["gpu"]
    rows += [dict(chapter="10", model="fast_cnn", model_kw={"widths": list(RECIPES[r]["widths"])},
                  batch_size=TRAINING["batch_size"], input_shape=CIFAR) for r in fast["recipes"]]
    unique = {}
    for r in rows:  # one measurement per model, size and batch; the chapters that train it are listed
        key = (r["model"], json.dumps(r["model_kw"], sort_keys=True), r["batch_size"], r["input_shape"])
        unique[key] = {**r, "chapter": unique[key]["chapter"] + " " + r["chapter"]} if key in unique else r
    return list(unique.values())


def survey(out: Path, deadline: float, steps: int = 30) -> pd.DataFrame:
    """Measure every :func:`gpu_models` row in fp32 and bf16 + channels-last until ``deadline``
    (``time.monotonic()``); write ``out`` after each model."""
    from ibnb.core.bench import PATHS, compare

    rows = []
    for spec in gpu_models():
        if time.monotonic() > deadline:
            print(f"survey: deadline reached before {spec['model']} ({spec['chapter']})", flush=True)
            break
        t0 = time.perf_counter()
        try:
            measured = compare(spec["model"], spec["model_kw"], batch_size=spec["batch_size"], steps=steps, repeats=1,
                               paths=[p for p in PATHS if p[0] in ("fp32", "bf16+channels_last")],
                               input_shape=tuple(spec["input_shape"]))
        except Exception as err:  # one model's failure is a row, not the end of the survey
            rows.append({**spec, "error": f"{type(err).__name__}: {err}"})
            print(f"survey: {spec['model']} failed: {err}", file=sys.stderr, flush=True)
            continue
        for r in measured:
            assumed = GPU_PEAK * GPU_UTIL / (r["train_gflop_per_image"] * 1e9)
            rows.append({**spec, **{k: v for k, v in r.items() if k not in ("model", "model_kw", "batch_size")},
                         "assumed_images_per_s": assumed, "fit_vs_assumed": r["fit_images_per_s"] / assumed})
            print(f"{spec['chapter']} {spec['model']:18s} {json.dumps(spec['model_kw']):38s} {r['path']:20s} "
                  f"fit {r['fit_images_per_s']:9.0f} img/s {r['fit_gflop_per_s'] / 1e3:7.1f} TFLOP/s  bare "
                  f"{r['bare_images_per_s']:9.0f} img/s  assumed {rows[-1]['assumed_images_per_s']:10.0f} img/s",
                  flush=True)
        print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
        atomic_write(out, _frame(rows).to_csv(index=False))
    return _frame(rows)


def _frame(rows: list[dict]) -> pd.DataFrame:
    """The survey's rows as written: ``model_kw`` as JSON, ``input_shape`` as ``CxHxW``."""
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["model_kw"] = frame["model_kw"].map(json.dumps)
        frame["input_shape"] = frame["input_shape"].map(lambda s: "x".join(map(str, s)))
    return frame


def chapter05_pair(out: Path, rates: pd.DataFrame, deadline: float, profile: str = "gpu") -> None:
    """Chapter 05's LeNet-300-100 pair at the ``gpu`` profile, if the survey's rates say it fits before
    ``deadline``; its results table is copied to ``out``."""
    from ibnb.book import gpu_rates
    from ibnb.book.profiles import resolve
    from ibnb.book.results import results_dir
    from ibnb.chapters import sparse_vd

    p = resolve("05_sparse_vd", profile=profile, networks=["lenet300_100"], seeds={"lenet300_100": 1},
                random_label_epochs=0)
    per_s = gpu_rates.fit_rows(rates).set_index("model")["fit_images_per_s"] if len(rates) else pd.Series(dtype=float)
    pair = ("lenet300_100", "lenet300_100_svd")
    if profile != "gpu":  # a test of this script: run whatever the rates say
        need = 0.0
    elif set(pair) <= set(per_s.index):
        need = 1.15 * sum(59_000 * p["epochs"]["lenet300_100"] / per_s[m] for m in pair)
    else:
        need = float("inf")
    left = deadline - time.monotonic()
    print(f"chapter 05 pair: predicted {need:.0f} s (survey rates x 1.15), {left:.0f} s left", flush=True)
    if need > left:
        print("chapter 05 pair: skipped (does not fit)", flush=True)
        return
    t0 = time.perf_counter()
    outcome = sparse_vd.run(p, progress=True)
    wall = time.perf_counter() - t0
    df = outcome.df.assign(pair_wall_s=wall)
    atomic_write(out, df.to_csv(index=False))
    print(df[["model", "error_pct", "compression", "wall_s", "images_per_s"]].to_string(index=False), flush=True)
    print(f"chapter 05 pair: {wall:.0f} s; results dir {results_dir()}", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--budget-s", type=float, default=480.0)
    ap.add_argument("--chapter05", action="store_true")
    ap.add_argument("--profile", default="gpu", help="the chapter-05 pair's profile (smoke: a test of this script)")
    args = ap.parse_args(argv)
    start = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    from ibnb.core.bench import matmul_peak
    from ibnb.core.train import default_device, device_name

    device = default_device()
    peak = matmul_peak(device, n=8192 if device.type == "cuda" else 2048)
    env = {"device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
           "cuda": torch.version.cuda, "matmul_gflop_per_s": peak, "assumed_gflop_per_s": GPU_PEAK * GPU_UTIL / 1e9,
           "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(json.dumps(env), flush=True)
    atomic_write(args.out / "gpu_env.json", json.dumps(env, indent=1))
    rates = survey(args.out / "gpu_throughput.csv", start + 0.45 * args.budget_s)
    if args.chapter05:
        chapter05_pair(args.out / "gpu_05_pair.csv", rates, start + args.budget_s, args.profile)
    print(f"done in {time.monotonic() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
