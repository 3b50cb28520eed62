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

SOURCE = "bachmann2023scaling"
AUG_GAIN = 10.0        # points: "augmentation adds ~20 points" is tested as "adds more than 10"
OVERFIT_GAP = 10.0     # points of train − validation accuracy that count as overfitting
S_MLP = 54.2           # %: Bachmann et al.'s standard MLP on full CIFAR-10, no augmentation
CAL_TOLERANCE = 5.0    # points
#: the verdicts of the `cpu` profile under the earlier one-standard-deviation rule (2 seeds; commit 19229e2);
#: claims that were split since then carry the verdict of the claim they came from
EARLIER = {"augmentation helps a plain MLP a little": "contradicted",
           "the bottleneck MLP beats the plain MLP": "contradicted",
           "augmentation then adds ~20 points to the bMLP": "contradicted",
           "ResNet-18 is far better from scratch on small data": "supported",
           "a plain MLP overfits at once": "supported", "MLP error falls as a power law in compute": "supported",
           "data exponent much smaller than parameter exponent": "contradicted",
           "MLPs profit from large batches, CNNs do not": "inconclusive",
           "MLPs reach a higher training throughput than ResNet-18": "supported",
           "MLPs need fewer FLOPs per image than ResNet-18": "supported",
           "a convolution is a sparse MLP layer with shared weights": "supported",
           "locality helps at small data": "inconclusive",
           "weight sharing helps on top of locality at small data": "inconclusive",
           "ViTs are more shape-biased than CNNs": "contradicted"}


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
    """Every seed-paired effect the audit and the prose use (``o``: the chapter's Outcome)."""
    lad = o.ladder
    e = {key: paired_effect(lad, "rung", a, b) for key, a, b in (
        ("aug_mlp", "MLP + crop+flip", "MLP"), ("bmlp_vs_mlp", "bMLP", "MLP"),
        ("aug_bmlp", "bMLP + crop+flip", "bMLP"), ("resnet_vs_bmlp", "ResNet-18 + crop+flip", "bMLP + crop+flip"),
        ("cnn_vs_bmlp", "CNN + crop+flip", "bMLP + crop+flip"))}
    mlp = lad[lad["rung"] == "MLP"]
    e["mlp_gap"] = effect_of((mlp["final_train_acc"] - mlp["final_val_acc"]).tolist(),
                             converged=mlp["converged"].tolist())
    e["batch"] = effect_of(batch_interaction(o.batch).tolist(), converged=o.batch["converged"].tolist())
    small = o.prior["n_train"].min()
    e["locality"] = paired_effect(o.prior, "model", "locally_connected", "dense_layer", where={"n_train": small})
    e["sharing"] = paired_effect(o.prior, "model", "conv_layer", "locally_connected", where={"n_train": small})
    e["shape_vit_cnn"] = paired_effect(o.shape, "model", "vit", "cnn", value="shape_index", unit="")
    return e


def claims(o, p: dict) -> list[Claim]:
    """Every claim of the chapter, each through :func:`judge` or (deterministic) :func:`check`."""
    e, K = effects(o, p), o.num_classes
    ladder = f"CIFAR-10, {K * p['ladder_n_per_class']:,} images, {int(o.ladder['epochs'].max())} epochs"
    out = [judge("augmentation helps a plain MLP a little", SOURCE, ladder, e["aug_mlp"], direction=+1),
           judge("the bottleneck MLP beats the plain MLP", SOURCE, ladder, e["bmlp_vs_mlp"], direction=+1),
           judge("augmentation then adds ~20 points to the bMLP", SOURCE, ladder + f"; threshold {AUG_GAIN:g} points",
                 e["aug_bmlp"], direction=+1, threshold=AUG_GAIN),
           judge("ResNet-18 is far better from scratch on small data", SOURCE, ladder, e["resnet_vs_bmlp"],
                 direction=+1),
           judge("a plain MLP overfits at once", SOURCE, ladder + f"; train − validation accuracy above "
                 f"{OVERFIT_GAP:g} points", e["mlp_gap"], direction=+1, threshold=OVERFIT_GAP)]
    grid = o.scaling
    fc, j = o.fits["fit_c"], o.fits["joint"]
    scaling = f"bMLP grid, {len(o.fits['grid'])} cells, {p['scaling_seeds']} seed(s) per cell"
    out.append(with_measurement(
        judge("MLP error falls as a power law in compute", SOURCE, scaling,
              fit_effect(fc.exponent, fc.ci, p["scaling_seeds"], grid), direction=+1),
        f"α_C = {fc.exponent:.3f} {interval(*fc.ci)}, {fc.n} points"))
    if j is not None:
        out.append(with_measurement(
            judge("data exponent much smaller than parameter exponent", SOURCE, scaling + ", two-factor fit",
                  fit_effect(j.gap, j.ci_gap, p["scaling_seeds"], grid), direction=+1),
            f"α_P − α_D = {j.gap:+.3f} {interval(*j.ci_gap)} (α_P = {j.alpha_p:.3f}, "
            f"α_D = {j.alpha_d:.3f}), {j.n} points"))
    bs = sorted(p["batch_sizes"])
    out.append(judge("MLPs profit from large batches, CNNs do not", SOURCE,
                     f"batch {bs[0]} → {bs[-1]} at {p['epochs']} epochs; (bMLP change) − (CNN change)", e["batch"],
                     direction=+1))
    tp = o.throughput
    ratio = float(tp.loc["bmlp", "bench_train_images_per_s"] / tp.loc["resnet18", "bench_train_images_per_s"])
    out.append(judge("MLPs reach a higher training throughput than ResNet-18", SOURCE,
                     f"batch {p['throughput_batch']}, this machine", effect_of([ratio], scale=1.0, unit="×"),
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
    epochs = int(o.ladder["epochs"].max())
    kw = p["model_kw"]["mlp"]
    return [Calibration("plain MLP test accuracy, no augmentation", group_effect(o.ladder, where={"rung": "MLP"}),
                        S_MLP, SOURCE, f"ours: {n:,} images, {epochs} epochs, width {kw['width']} × depth "
                        f"{kw['depth']}; theirs: S-MLP, 50,000 images, long training", CAL_TOLERANCE,
                        note=f"{50_000 / n:.0f}× less data than the anchor")]


def audit(o, p: dict) -> Audit:
    """The chapter's :class:`~ibnb.book.page.Audit`."""
    return Audit(claims(o, p), calibration(o, p))
