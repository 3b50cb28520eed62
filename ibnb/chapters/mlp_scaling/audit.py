"""Chapter 02's claims audit: Bachmann et al.'s claims (and two about the convolutional prior) decided by
:func:`ibnb.book.claims.judge` on seed-paired effects, two deterministic checks (:func:`ibnb.book.claims.check`),
and a calibration row for the plain MLP against the paper's S-MLP.

Fitted exponents enter :func:`judge` as an :class:`~ibnb.book.claims.Effect` whose interval is the fit's 95 %
interval and whose ``n`` is the number of seeds per grid cell: a fit over one seed per cell is not a replicated
measurement, so it is not testable at this budget however narrow its interval.
"""
from __future__ import annotations

import dataclasses

import pandas as pd

from ibnb.book.claims import Calibration, Claim, Effect, check, effect_of, group_effect, judge, paired_effect
from ibnb.book.page import Audit
from ibnb.chapters.mlp_scaling.analysis import IDENTITY_TOL, batch_interaction
from ibnb.chapters.mlp_scaling.sweep import RUNG_NAMES, rung_name

SOURCE = "bachmann2023scaling"
AUG_GAIN = 10.0        # points: "augmentation adds ~20 points" is tested as "adds more than 10"
OVERFIT_GAP = 10.0     # points of train − validation accuracy that count as overfitting
S_MLP = 54.2           # %: Bachmann et al.'s standard MLP on full CIFAR-10, no augmentation
CAL_TOLERANCE = 5.0    # points
#: the verdicts of the `cpu` profile under the earlier one-standard-deviation rule (2 seeds; commit 19229e2);
#: claims that were split or reworded since then carry the verdict of the claim they came from
EARLIER = {"augmentation (crop+flip, mixup, label smoothing) helps a plain MLP": "contradicted",
           "the bottleneck MLP beats the plain MLP": "contradicted",
           "augmentation then adds ~20 points to the bMLP": "contradicted",
           "a CNN is far better than the bMLP from scratch on small data": "supported",
           "a plain MLP overfits at once": "supported", "MLP error falls as a power law in compute": "supported",
           "data exponent much smaller than parameter exponent": "contradicted",
           "MLPs profit from large batches, CNNs do not (fixed epochs)": "inconclusive",
           "MLPs profit from large batches, CNNs do not (fixed steps)": "inconclusive",
           "MLPs reach a higher training throughput than ResNet-18": "supported",
           "MLPs need fewer FLOPs per image than ResNet-18": "supported",
           "a convolution is a sparse MLP layer with shared weights": "supported",
           "locality helps at small data": "inconclusive",
           "weight sharing helps on top of locality at small data": "inconclusive",
           "ViTs are more shape-biased than CNNs": "contradicted"}
#: the verdicts of our previous, shorter `cpu` run (3,200 images, 300 steps, one seed per scaling cell, no
#: irreducible-error term; commit c8636df), under the same rule as now
SHORTER = {"augmentation (crop+flip, mixup, label smoothing) helps a plain MLP": "not testable at this budget",
           "the bottleneck MLP beats the plain MLP": "not testable at this budget",
           "augmentation then adds ~20 points to the bMLP": "not testable at this budget",
           "a CNN is far better than the bMLP from scratch on small data": "not testable at this budget",
           "a plain MLP overfits at once": "not testable at this budget",
           "MLP error falls as a power law in compute": "not testable at this budget",
           "data exponent much smaller than parameter exponent": "not testable at this budget",
           "MLPs profit from large batches, CNNs do not (fixed epochs)": "not testable at this budget",
           "MLPs reach a higher training throughput than ResNet-18": "not testable at this budget",
           "MLPs need fewer FLOPs per image than ResNet-18": "supported",
           "a convolution is a sparse MLP layer with shared weights": "supported",
           "locality helps at small data": "inconclusive",
           "weight sharing helps on top of locality at small data": "inconclusive",
           "ViTs are more shape-biased than CNNs": "not testable at this budget"}
#: the ladder's rung pairs (first − second) the effects compare, by effect name
PAIRS = {"aug_mlp": (("mlp", "bachmann"), ("mlp", "none")), "bmlp_vs_mlp": (("bmlp", "none"), ("mlp", "none")),
         "aug_bmlp": (("bmlp", "bachmann"), ("bmlp", "none")), "flip_bmlp": (("bmlp", "crop+flip"), ("bmlp", "none")),
         "aug_cnn": (("cnn", "bachmann"), ("cnn", "none")),
         "cnn_vs_bmlp": (("cnn", "bachmann"), ("bmlp", "bachmann"))}


def fit_effect(value: float, ci: tuple[float, float], n_seeds: int, rows: pd.DataFrame) -> Effect:
    """A fitted quantity as an :class:`Effect` (no scaling, no unit) over the runs in ``rows``."""
    return Effect(value, ci[0], ci[1], n_seeds, "", runs=len(rows), converged=int(rows["converged"].sum()))


def interval(lo: float, hi: float) -> str:
    """``[0.027, 0.052]``, or ``(no interval: too few points)`` when the fit has none."""
    return f"[{lo:.3f}, {hi:.3f}]" if lo == lo and hi == hi else "(no interval: too few points)"


def with_measurement(claim: Claim, text: str) -> Claim:
    """``claim`` with its measurement written out (for fits, whose interval :meth:`Effect.text` cannot show)."""
    return dataclasses.replace(claim, measurement=text)


def effects(o, p: dict) -> dict:
    """Every seed-paired effect the audit and the prose use (``o``: the chapter's Outcome); a ladder pair whose
    rungs the profile does not train is left out."""
    lad, rungs = o.ladder, {tuple(r) for r in p["ladder"]}
    e = {key: paired_effect(lad, "rung", rung_name(*a), rung_name(*b)) for key, (a, b) in PAIRS.items()
         if {a, b} <= rungs}
    mlp = lad[lad["rung"] == rung_name("mlp", "none")]
    e["mlp_gap"] = effect_of((mlp["final_train_acc"] - mlp["final_val_acc"]).tolist(),
                             converged=mlp["converged"].tolist())
    for regime in ("epochs", "steps"):
        d = o.batch[o.batch["regime"] == regime]
        e[f"batch_{regime}"] = effect_of(batch_interaction(o.batch, regime).tolist(), converged=d["converged"].tolist())
    small = o.prior["n_train"].min()
    e["locality"] = paired_effect(o.prior, "model", "locally_connected", "dense_layer", where={"n_train": small})
    e["sharing"] = paired_effect(o.prior, "model", "conv_layer", "locally_connected", where={"n_train": small})
    e["shape_vit_cnn"] = paired_effect(o.shape, "model", "vit", "cnn", value="shape_index", unit="")
    return e


def _size(p: dict, model: str) -> str:
    """``width 256 × depth 2``: a model's size as the profile sets it."""
    return " × ".join(f"{k} {v}" for k, v in p["model_kw"][model].items())


def claims(o, p: dict) -> list[Claim]:
    """Every claim of the chapter, each through :func:`judge` or (deterministic) :func:`check`."""
    e, K = effects(o, p), o.num_classes
    epochs = ", ".join(f"{RUNG_NAMES.get(m, m)} {int(d['epochs'].max())}" for m, d in o.ladder.groupby("model", sort=False))
    ladder = f"CIFAR-10, {K * p['ladder_n_per_class']:,} images, epochs: {epochs}"
    recipe = f"; crop+flip, mixup (α = {p['mixup_alpha']:g}), label smoothing {p['bachmann_smoothing']:g}"
    out = []
    for key, claim, direction, extra in (
            ("aug_mlp", "augmentation (crop+flip, mixup, label smoothing) helps a plain MLP", +1, {}),
            ("bmlp_vs_mlp", "the bottleneck MLP beats the plain MLP", +1, {}),
            ("aug_bmlp", "augmentation then adds ~20 points to the bMLP", +1, {"threshold": AUG_GAIN}),
            ("cnn_vs_bmlp", "a CNN is far better than the bMLP from scratch on small data", +1, {})):
        if key in e:
            note = recipe if key != "bmlp_vs_mlp" else "; no augmentation"
            note += f"; threshold {AUG_GAIN:g} points" if "threshold" in extra else ""
            out.append(judge(claim, SOURCE, ladder + note, e[key], direction=direction, **extra))
    out.append(judge("a plain MLP overfits at once", SOURCE, ladder + f"; train − validation accuracy above "
                     f"{OVERFIT_GAP:g} points", e["mlp_gap"], direction=+1, threshold=OVERFIT_GAP))
    grid, f = o.scaling, o.fits
    scaling = (f"bMLP grid, {len(f['grid'])} cells, {p['scaling_seeds']} seed(s) per cell, E = a·X^(−α) + E∞, "
               f"{f['bootstrap']['n']} bootstrap resamples over seeds")
    if (fc := f["fit_c"]) is not None:
        out.append(with_measurement(
            judge("MLP error falls as a power law in compute", SOURCE, scaling,
                  fit_effect(fc.exponent, fc.ci, p["scaling_seeds"], grid), direction=+1),
            f"α_C = {fc.exponent:.3f} {interval(*fc.ci)}, E∞ = {100 * fc.e_inf:.1f} %, {fc.n} points"))
    if (j := f["joint"]) is not None:
        out.append(with_measurement(
            judge("data exponent much smaller than parameter exponent", SOURCE, scaling + ", two-factor fit",
                  fit_effect(j.gap, j.ci_gap, p["scaling_seeds"], grid), direction=+1),
            f"α_P − α_D = {j.gap:+.3f} {interval(*j.ci_gap)} (α_P = {j.alpha_p:.3f}, "
            f"α_D = {j.alpha_d:.3f}), {j.n} points"))
    bs = sorted(p["batch_sizes"])
    for regime, how in (("epochs", f"{p['batch_epochs']} epochs each"),
                        ("steps", f"the steps of batch {p['batch_size']} at {p['batch_epochs']} epochs each")):
        out.append(judge(f"MLPs profit from large batches, CNNs do not (fixed {regime})", SOURCE,
                         f"{K * p['batch_n_per_class']:,} images, batch {bs[0]} → {bs[-1]} at {how}; "
                         "(bMLP change) − (CNN change)", e[f"batch_{regime}"], direction=+1))
    tp = o.throughput
    ratio = float(tp.loc["bmlp", "bench_train_images_per_s"] / tp.loc["resnet18", "bench_train_images_per_s"])
    out.append(judge("MLPs reach a higher training throughput than ResNet-18", SOURCE,
                     f"batch {p['throughput_batch']}, this machine; bMLP {_size(p, 'bmlp')} vs ResNet-18 "
                     f"{_size(p, 'resnet18')}", effect_of([ratio], scale=1.0, unit="×"),
                     direction=+1, threshold=1.0,
                     untestable="one timing (n = 1) on one machine; needs ≥ 3 repeated timings"))
    f_mlp, f_res = float(tp.loc["bmlp", "flops_per_image"]), float(tp.loc["resnet18", "flops_per_image"])
    out.append(check("MLPs need fewer FLOPs per image than ResNet-18", SOURCE, "this profile's model sizes",
                     f"bMLP {f_mlp / 1e6:.2f} vs ResNet-18 {f_res / 1e6:.2f} MFLOPs per image", f_mlp < f_res,
                     why="counted exactly (deterministic, no seed)"))
    ci = o.conv
    out.append(check("a convolution is a sparse MLP layer with shared weights", SOURCE,
                     f"{ci.matrix.shape[0]:,} × {ci.matrix.shape[1]:,} matrix vs F.conv2d",
                     f"largest absolute difference between M·x and conv(x): {ci.max_error:.1e}; "
                     f"{ci.nonzero_pct:.2f} % of entries non-zero", ci.max_error < IDENTITY_TOL,
                     why=f"identity up to float32 rounding (tolerance {IDENTITY_TOL:g}); no seed enters it"))
    n0 = f"{int(o.prior['n_train'].min()):,} images, {p['seeds']} seeds"
    out.append(judge("locality helps at small data", "neyshabur2020towards", f"locally connected − dense, {n0}",
                     e["locality"], direction=+1))
    out.append(judge("weight sharing helps on top of locality at small data", "neyshabur2020towards",
                     f"convolution − locally connected, {n0}", e["sharing"], direction=+1))
    out.append(judge("ViTs are more shape-biased than CNNs", "geirhos2019imagenet",
                     f"shape index (×100) of ViT − CNN, {p['seeds']} seeds", e["shape_vit_cnn"], direction=+1))
    return out


def calibration(o, p: dict) -> list[Calibration]:
    """The plain MLP without augmentation against Bachmann et al.'s S-MLP on full CIFAR-10."""
    n = o.num_classes * p["ladder_n_per_class"]
    plain = o.ladder[o.ladder["rung"] == rung_name("mlp", "none")]
    epochs = int(plain["epochs"].max())
    kw = p["model_kw"]["mlp"]
    return [Calibration("plain MLP test accuracy, no augmentation", group_effect(plain),
                        S_MLP, SOURCE, f"ours: {n:,} images, {epochs} epochs, width {kw['width']} × depth "
                        f"{kw['depth']}; theirs: S-MLP, 50,000 images, long training", CAL_TOLERANCE,
                        note=f"{50_000 / n:.0f}× less data than the anchor")]


def audit(o, p: dict) -> Audit:
    """The chapter's :class:`~ibnb.book.page.Audit`."""
    return Audit(claims(o, p), calibration(o, p))
